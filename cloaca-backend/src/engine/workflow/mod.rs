//! Workflows: their structure ([`dag`]), how contexts merge ([`merge`]), their
//! retry rules ([`retry`]), when a task runs or is skipped ([`rules`]), the
//! workflows this process can run ([`registry`]) and pictures of them
//! ([`picture`]).

mod dag;
mod merge;
mod picture;
mod registry;
mod retry;
mod rules;

pub(crate) use dag::{frontier_context, Dag, Graph, TaskSpec, WorkflowSpec};
pub(crate) use merge::merge;
pub(crate) use picture::{render, PictureFormat, TaskPaint};
pub(crate) use registry::{AttemptInfo, AttemptSlot, Cancellation, Registry, SlotError, Slots, TaskBody, Workflow, Workflows};
pub(crate) use retry::{Backoff, Jitter, RetryCondition, RetryPolicy, TaskFailure};
pub(crate) use rules::{Operator, SkipReason, TaskState, TriggerRule};

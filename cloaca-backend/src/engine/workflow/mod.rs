//! Workflows: their structure ([`dag`]), their retry rules ([`retry`]) and
//! the workflows this process can run ([`registry`]).

mod dag;
mod registry;
mod retry;

pub(crate) use dag::{frontier_context, merge, Dag, TaskSpec, WorkflowSpec};
pub(crate) use registry::{AttemptInfo, Cancellation, Registry, TaskBody, Workflow, Workflows};
pub(crate) use retry::{Backoff, RetryCondition, RetryPolicy, TaskFailure};

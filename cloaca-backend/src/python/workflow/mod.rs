//! Defining workflows from Python: `@cloaca.task` ([`decorator`]), the Python
//! callable a task runs and its callbacks ([`body`]), the `TaskHandle` a task
//! may ask for ([`handle`]), and `WorkflowBuilder` / `Workflow` /
//! `register_workflow_constructor` ([`builder`]), and the retry value objects
//! of `@cloaca.task(retry=...)` ([`retry`]).

mod body;
mod builder;
pub(crate) mod decorator;
pub(crate) mod handle;
pub(crate) mod retry;

pub(crate) use builder::{register_workflow_constructor, PyWorkflow, PyWorkflowBuilder};

//! Defining workflows from Python: `@cloaca.task` ([`decorator`]), the Python
//! callable a task runs ([`body`]), and `WorkflowBuilder` / `Workflow` /
//! `register_workflow_constructor` ([`builder`]), and the retry value objects
//! of `@cloaca.task(retry=...)` ([`retry`]).

mod body;
mod builder;
pub(crate) mod decorator;
pub(crate) mod retry;

pub(crate) use builder::{register_workflow_constructor, PyWorkflow, PyWorkflowBuilder};

//! Defining workflows from Python: `@cloaca.task` ([`decorator`]), the Python
//! callable a task runs ([`body`]), and `WorkflowBuilder` / `Workflow` /
//! `register_workflow_constructor` ([`builder`]).

mod body;
mod builder;
pub(crate) mod decorator;

pub(crate) use builder::{register_workflow_constructor, PyWorkflow, PyWorkflowBuilder};

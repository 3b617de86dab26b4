//! Defining workflows from Python: `@cloaca.task` ([`decorator`]), the Python
//! callable a task runs and its callbacks ([`body`]), the `TaskHandle` a task
//! may ask for ([`handle`]), `WorkflowBuilder` / `Workflow` /
//! `register_workflow_constructor` ([`builder`]), the retry value objects
//! of `@cloaca.task(retry=...)` ([`retry`]) and the rule builders of
//! `@cloaca.task(trigger_rules=...)` ([`trigger_rules`]).

mod body;
mod builder;
pub(crate) mod decorator;
pub(crate) mod handle;
pub(crate) mod retry;
pub(crate) mod trigger_rules;

pub(crate) use builder::{register_workflow_constructor, PyWorkflow, PyWorkflowBuilder};

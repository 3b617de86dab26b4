//! The Python surface of cloaca: thin wrappers over `crate::engine`.
//!
//! [`register_api`] is the one place a symbol is registered. PyO3's
//! `add_function` / `add_class` / `add` append each name to the module's
//! `__all__`, and the wrapper package and the dispatcher export exactly that
//! list, so registering here is all it takes to reach `import cloaca`.
//! Backend-only symbols are registered under `#[cfg(feature = ...)]` and must
//! be declared in `[tool.cloaca.backend-only]` of the top-level pyproject.toml.

//!
//! The layer mirrors the engine: [`errors`] (the exception hierarchy),
//! [`context`] and [`json`] (values), [`workflow`] (tasks and workflows),
//! [`trigger`] (event triggers),
//! [`runner`] (runners, results, settings, schedules), [`vars`] (values
//! from the environment) and, on PostgreSQL,
//! [`tenants`]. It uses only the engine's face (`crate::engine::*`).

mod context;
mod errors;
mod json;
mod logging;
mod runner;
mod smoke;
#[cfg(feature = "postgres")]
mod tenants;
mod threads;
mod trigger;
mod vars;
mod workflow;

use pyo3::prelude::*;

use crate::engine::Backend;

/// Registers every public symbol of the API on the extension module `m`.
pub(crate) fn register_api(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("__backend__", Backend::CURRENT.name())?;
    m.add_function(wrap_pyfunction!(get_backend, m)?)?;
    m.add_function(wrap_pyfunction!(smoke::hello_world, m)?)?;
    m.add_class::<smoke::HelloClass>()?;
    m.add_class::<context::PyContext>()?;
    m.add_function(wrap_pyfunction!(workflow::decorator::task, m)?)?;
    m.add_class::<workflow::decorator::TaskDecorator>()?;
    m.add_class::<workflow::handle::TaskHandle>()?;
    m.add_class::<workflow::PyWorkflowBuilder>()?;
    m.add_class::<workflow::PyWorkflow>()?;
    m.add_function(wrap_pyfunction!(workflow::register_workflow_constructor, m)?)?;
    m.add_class::<workflow::retry::PyRetryPolicy>()?;
    m.add_class::<workflow::retry::PyRetryPolicyBuilder>()?;
    m.add_class::<workflow::retry::PyBackoffStrategy>()?;
    m.add_class::<workflow::retry::PyRetryCondition>()?;
    m.add_function(wrap_pyfunction!(workflow::retry::set_default_retry_policy, m)?)?;
    m.add_function(wrap_pyfunction!(workflow::trigger_rules::context_value, m)?)?;
    m.add_function(wrap_pyfunction!(workflow::trigger_rules::task_success, m)?)?;
    m.add_function(wrap_pyfunction!(workflow::trigger_rules::task_failed, m)?)?;
    m.add_function(wrap_pyfunction!(workflow::trigger_rules::task_skipped, m)?)?;
    m.add_function(wrap_pyfunction!(workflow::trigger_rules::all_of, m)?)?;
    m.add_function(wrap_pyfunction!(workflow::trigger_rules::any_of, m)?)?;
    m.add_function(wrap_pyfunction!(workflow::trigger_rules::none_of, m)?)?;
    m.add_function(wrap_pyfunction!(workflow::trigger_rules::always, m)?)?;
    m.add_function(wrap_pyfunction!(trigger::trigger, m)?)?;
    m.add_class::<trigger::PyTriggerResult>()?;
    m.add_class::<trigger::TriggerDecorator>()?;
    m.add_class::<runner::PyDefaultRunnerConfig>()?;
    m.add_class::<runner::PyDefaultRunner>()?;
    m.add_class::<runner::PyExecutionHandle>()?;
    m.add_class::<runner::PyPipelineResult>()?;
    // The current original bindings' name for the same class.
    m.add("WorkflowResult", m.getattr("PipelineResult")?)?;
    m.add_class::<runner::PyTaskRecord>()?;
    m.add_class::<runner::PyExecutionEvent>()?;
    m.add_function(wrap_pyfunction!(vars::var, m)?)?;
    m.add_function(wrap_pyfunction!(vars::var_or, m)?)?;
    errors::register(m)?;
    crate::engine::set_worker_scope(threads::with_thread_state);
    // Multi-tenancy is a Postgres feature (schemas and roles).
    #[cfg(feature = "postgres")]
    m.add_class::<tenants::PyDatabaseAdmin>()?;
    #[cfg(feature = "postgres")]
    m.add_class::<tenants::PyTenantConfig>()?;
    #[cfg(feature = "postgres")]
    m.add_class::<tenants::PyTenantCredentials>()?;
    // Not exported: stops open runners before the interpreter is torn down
    // under their worker threads.
    let py = m.py();
    py.import("atexit")?.call_method1("register", (wrap_pyfunction!(runner::shutdown_all_runners, py)?,))?;
    Ok(())
}

/// Returns the name of the database backend this module was built for:
/// `"sqlite"` or `"postgres"`.
#[pyfunction]
fn get_backend() -> &'static str {
    Backend::CURRENT.name()
}

//! `@cloaca.task`: declares a Python function as a task of the workflow
//! whose `with WorkflowBuilder(...)` block is open.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::body::{PythonTask, TaskDef, TASK_ID_ATTR, WORKFLOW_ATTR};
use super::builder::declare_task;
use crate::engine::{Backoff, RetryCondition, RetryPolicy, TaskSpec};
use crate::python::errors::to_py;

/// Declares a task; use as `@cloaca.task(...)` inside a
/// `with cloaca.WorkflowBuilder(name):` block. Returns the function itself.
#[pyfunction]
#[pyo3(signature = (id=None, dependencies=None, retry_attempts=0, retry_backoff="exponential",
    retry_delay_ms=1000, retry_max_delay_ms=30000, retry_condition="all_errors", retry_jitter=true,
    timeout_seconds=None))]
#[allow(clippy::too_many_arguments)]
pub fn task(
    py: Python<'_>,
    id: Option<Bound<'_, PyAny>>,
    dependencies: Option<Bound<'_, PyAny>>,
    retry_attempts: i64,
    retry_backoff: &str,
    retry_delay_ms: i64,
    retry_max_delay_ms: i64,
    retry_condition: &str,
    retry_jitter: bool,
    timeout_seconds: Option<f64>,
) -> PyResult<Py<PyAny>> {
    let non_negative = |name: &str, value: i64| -> PyResult<u64> {
        u64::try_from(value).map_err(|_| PyValueError::new_err(format!("{name}={value} is not accepted: it must be 0 or more")))
    };
    let retries = non_negative("retry_attempts", retry_attempts)?;
    let retry = RetryPolicy {
        retries: u32::try_from(retries).map_err(|_| PyValueError::new_err(format!("retry_attempts={retries} is too large")))?,
        backoff: retry_backoff.parse::<Backoff>().map_err(to_py)?,
        delay_ms: non_negative("retry_delay_ms", retry_delay_ms)?,
        max_delay_ms: non_negative("retry_max_delay_ms", retry_max_delay_ms)?,
        jitter: retry_jitter,
        condition: RetryCondition::parse(retry_condition).map_err(to_py)?,
    };
    let timeout = match timeout_seconds {
        Some(t) if !(t.is_finite() && t > 0.0) => {
            return Err(PyValueError::new_err(format!(
                "timeout_seconds={t} is not accepted: it must be a number of seconds above 0, or None"
            )))
        }
        Some(t) => Some(Duration::from_secs_f64(t)),
        None => None,
    };
    // `@cloaca.task` without parentheses passes the function as `id`.
    let (id, bare_function) = match id {
        Some(obj) if obj.is_callable() && obj.extract::<String>().is_err() => (None, Some(obj)),
        Some(obj) => (Some(obj.extract::<String>().map_err(|_| PyTypeError::new_err("task id must be a str"))?), None),
        None => (None, None),
    };
    let dependencies = match dependencies {
        None => Vec::new(),
        Some(deps) => deps.try_iter()?.map(|d| dependency_id(&d?)).collect::<PyResult<Vec<_>>>()?,
    };
    let decorator = TaskDecorator { id, dependencies, retry, timeout };
    match bare_function {
        Some(function) => decorator.decorate(py, function),
        None => Ok(Py::new(py, decorator)?.into_any()),
    }
}

/// A dependency given as a task id or a decorated function.
fn dependency_id(dep: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(id) = dep.extract::<String>() {
        return Ok(id);
    }
    if dep.is_callable() {
        if let Ok(id) = dep.getattr(TASK_ID_ATTR).and_then(|a| a.extract::<String>()) {
            return Ok(id);
        }
        let name = dep.getattr("__name__").map(|n| n.to_string()).unwrap_or_else(|_| dep.to_string());
        return Err(PyValueError::new_err(format!(
            "dependency {name:?} is a function that is not a cloaca task; decorate it with @cloaca.task \
             first, or name the dependency by its task id"
        )));
    }
    let type_name = dep.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    Err(PyTypeError::new_err(format!("a dependency must be a task id (str) or a decorated task function, not {type_name}")))
}

/// What `@cloaca.task(...)` returns: applied to the function, it registers it.
#[pyclass(module = "cloaca")]
pub struct TaskDecorator {
    id: Option<String>,
    dependencies: Vec<String>,
    retry: RetryPolicy,
    timeout: Option<Duration>,
}

impl TaskDecorator {
    fn decorate(&self, py: Python<'_>, function: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if !function.is_callable() {
            let type_name = function.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            return Err(PyTypeError::new_err(format!("@cloaca.task decorates a function, not {type_name}")));
        }
        let id = match &self.id {
            Some(id) => id.clone(),
            None => function.getattr("__name__")?.extract::<String>()?,
        };
        if id.is_empty() {
            return Err(PyValueError::new_err("a task id must not be empty"));
        }
        let is_async = py.import("inspect")?.call_method1("iscoroutinefunction", (&function,))?.is_truthy()?;
        let spec = TaskSpec { id: id.clone(), dependencies: self.dependencies.clone(), retry: self.retry.clone(), timeout: self.timeout };
        let body = Arc::new(PythonTask::new(id.clone(), function.clone().unbind(), is_async));
        let workflow_name = declare_task(py, TaskDef { spec, body })?;
        // Plain functions take attributes; a callable that refuses them
        // (a builtin, a bound method) is still registered under its id.
        let _ = function.setattr(TASK_ID_ATTR, &id);
        let _ = function.setattr(WORKFLOW_ATTR, workflow_name);
        Ok(function.unbind())
    }
}

#[pymethods]
impl TaskDecorator {
    fn __call__(&self, py: Python<'_>, function: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.decorate(py, function)
    }
}

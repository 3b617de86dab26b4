//! `@cloaca.task`: declares a Python function as a task of the workflow
//! whose `with WorkflowBuilder(...)` block is open.

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::body::{Callbacks, PythonTask, TaskDef, TASK_ID_ATTR, WORKFLOW_ATTR};
use super::builder::declare_task;
use super::retry::{default_policy, extract_policy};
use super::trigger_rules::extract_rule;
use crate::engine::{Backoff, Jitter, RetryCondition, RetryPolicy, TaskSpec, TriggerRule};
use crate::python::errors::to_py;

/// Declares a task; use as `@cloaca.task(...)` inside a
/// `with cloaca.WorkflowBuilder(name):` block. Returns the function itself.
#[pyfunction]
#[pyo3(signature = (id=None, dependencies=None, retry_attempts=None, retry_backoff=None,
    retry_delay_ms=None, retry_max_delay_ms=None, retry_condition=None, retry_jitter=None,
    timeout_seconds=None, retry=None, trigger_rules=None, invokes=None, post_invocation=None, on_success=None,
    on_failure=None))]
#[allow(clippy::too_many_arguments)]
pub fn task(
    py: Python<'_>,
    id: Option<Bound<'_, PyAny>>,
    dependencies: Option<Bound<'_, PyAny>>,
    retry_attempts: Option<i64>,
    retry_backoff: Option<&str>,
    retry_delay_ms: Option<i64>,
    retry_max_delay_ms: Option<i64>,
    retry_condition: Option<&str>,
    retry_jitter: Option<bool>,
    timeout_seconds: Option<f64>,
    retry: Option<Bound<'_, PyAny>>,
    trigger_rules: Option<Bound<'_, PyAny>>,
    invokes: Option<Bound<'_, PyAny>>,
    post_invocation: Option<Bound<'_, PyAny>>,
    on_success: Option<Bound<'_, PyAny>>,
    on_failure: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    for (name, value) in [("invokes", &invokes), ("post_invocation", &post_invocation)] {
        if value.is_some() {
            return Err(PyValueError::new_err(format!(
                "{name}= is not supported: computation graphs are unsupported in cloaca; declare the graph's \
                 steps as tasks with dependencies instead"
            )));
        }
    }
    let keywords = RetryKeywords {
        attempts: retry_attempts,
        backoff: retry_backoff,
        delay_ms: retry_delay_ms,
        max_delay_ms: retry_max_delay_ms,
        condition: retry_condition,
        jitter: retry_jitter,
    };
    let retry = match retry {
        Some(policy) => {
            let policy = extract_policy("retry=", &policy)?;
            let given = keywords.given();
            if !given.is_empty() {
                return Err(PyValueError::new_err(format!(
                    "retry= cannot be combined with the retry_* keyword arguments (got: {}); give the whole \
                     policy with retry=RetryPolicy.builder()...build(), or only the keywords",
                    given.join(", ")
                )));
            }
            policy
        }
        None => match default_policy() {
            Some(policy) if keywords.given().is_empty() => policy,
            _ => keywords.policy()?,
        },
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
    let rule = trigger_rules.map(|rule| extract_rule(&rule)).transpose()?;
    let on_success = callback("on_success", "(task_id, context)", on_success)?;
    let on_failure = callback("on_failure", "(task_id, error, context)", on_failure)?;
    let decorator = TaskDecorator { id, dependencies, retry, timeout, rule, on_success, on_failure };
    match bare_function {
        Some(function) => decorator.decorate(py, function),
        None => Ok(Py::new(py, decorator)?.into_any()),
    }
}

/// The `retry_*` keywords of `@task`; None is "not given".
struct RetryKeywords<'a> {
    attempts: Option<i64>,
    backoff: Option<&'a str>,
    delay_ms: Option<i64>,
    max_delay_ms: Option<i64>,
    condition: Option<&'a str>,
    jitter: Option<bool>,
}

impl RetryKeywords<'_> {
    /// The names of the keywords given, in the order of the signature.
    fn given(&self) -> Vec<&'static str> {
        [
            ("retry_attempts", self.attempts.is_some()),
            ("retry_backoff", self.backoff.is_some()),
            ("retry_delay_ms", self.delay_ms.is_some()),
            ("retry_max_delay_ms", self.max_delay_ms.is_some()),
            ("retry_condition", self.condition.is_some()),
            ("retry_jitter", self.jitter.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }

    /// The policy the keywords give, each one not given at its default:
    /// `retry_attempts` retries after the first attempt (0), exponential
    /// backoff from 1000 ms capped at 30000 ms, jitter, every error.
    fn policy(&self) -> PyResult<RetryPolicy> {
        let non_negative = |name: &str, value: i64| -> PyResult<u64> {
            u64::try_from(value).map_err(|_| PyValueError::new_err(format!("{name}={value} is not accepted: it must be 0 or more")))
        };
        let defaults = RetryPolicy::default();
        let retries = non_negative("retry_attempts", self.attempts.unwrap_or(0))?;
        Ok(RetryPolicy {
            retries: u32::try_from(retries).map_err(|_| PyValueError::new_err(format!("retry_attempts={retries} is too large")))?,
            backoff: match self.backoff {
                Some(b) => b.parse::<Backoff>().map_err(to_py)?,
                None => defaults.backoff,
            },
            delay_ms: match self.delay_ms {
                Some(d) => non_negative("retry_delay_ms", d)?,
                None => defaults.delay_ms,
            },
            max_delay_ms: match self.max_delay_ms {
                Some(d) => non_negative("retry_max_delay_ms", d)?,
                None => defaults.max_delay_ms,
            },
            jitter: match self.jitter {
                Some(false) => Jitter::Off,
                Some(true) => Jitter::Shorten,
                None => defaults.jitter,
            },
            condition: match self.condition {
                Some(c) => RetryCondition::parse(c).map_err(to_py)?,
                None => defaults.condition,
            },
        })
    }
}

/// A callback keyword's value: None, or something callable.
fn callback(keyword: &str, arguments: &str, value: Option<Bound<'_, PyAny>>) -> PyResult<Option<Py<PyAny>>> {
    match value {
        Some(v) if v.is_none() => Ok(None),
        Some(v) if !v.is_callable() => {
            let type_name = v.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            Err(PyTypeError::new_err(format!("{keyword}= must be a callable taking {arguments}, or None; got {type_name}")))
        }
        other => Ok(other.map(Bound::unbind)),
    }
}

/// Whether the engine passes `function` a TaskHandle: its second positional
/// parameter is named `handle` or `task_handle`. A callable without a code
/// object (a `functools.partial`, an object with `__call__`) takes none.
fn takes_handle(function: &Bound<'_, PyAny>) -> bool {
    let Ok(code) = function.getattr("__code__") else {
        return false;
    };
    let positional = code.getattr("co_argcount").and_then(|n| n.extract::<usize>()).unwrap_or(0);
    positional >= 2
        && code
            .getattr("co_varnames")
            .and_then(|names| names.get_item(1))
            .and_then(|name| name.extract::<String>())
            .is_ok_and(|name| name == "handle" || name == "task_handle")
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
    rule: Option<TriggerRule>,
    on_success: Option<Py<PyAny>>,
    on_failure: Option<Py<PyAny>>,
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
        let spec = TaskSpec {
            id: id.clone(),
            dependencies: self.dependencies.clone(),
            retry: self.retry.clone(),
            timeout: self.timeout,
            rule: self.rule.clone(),
        };
        // Callbacks are not part of the spec, so not of the workflow's version.
        let callbacks = Callbacks {
            on_success: self.on_success.as_ref().map(|c| c.clone_ref(py)),
            on_failure: self.on_failure.as_ref().map(|c| c.clone_ref(py)),
        };
        let body = Arc::new(PythonTask::new(id.clone(), function.clone().unbind(), is_async, takes_handle(&function), callbacks));
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

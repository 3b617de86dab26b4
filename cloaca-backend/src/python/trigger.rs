//! `@cloaca.trigger` and `cloaca.TriggerResult`: event triggers defined in
//! Python. A definition goes to the engine's process-wide list; runners
//! register and poll it (see `engine::triggers`).

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBool;

use crate::engine::{parse_poll_interval, PollOutcome, TriggerDef, TriggerDefinitions, TriggerForm, TriggerPoll, DEFAULT_POLL_INTERVAL};
use crate::python::context::PyContext;

/// Declares an event trigger; use as `@cloaca.trigger(on="workflow", poll_interval="30s")`.
/// Returns a TriggerDecorator, which returns the function unchanged.
#[pyfunction]
#[pyo3(signature = (*, name=None, on=None, poll_interval=None, cron=None, timezone=None, allow_concurrent=false))]
pub fn trigger(
    name: Option<String>,
    on: Option<String>,
    poll_interval: Option<String>,
    cron: Option<String>,
    timezone: Option<String>,
    allow_concurrent: bool,
) -> PyResult<TriggerDecorator> {
    let form = match (cron, poll_interval) {
        (Some(cron), Some(interval)) => {
            return Err(PyValueError::new_err(format!(
                "cron={cron:?} and poll_interval={interval:?} cannot be given together: a trigger is either polled \
                 every poll_interval or fired on a cron expression; give one of them"
            )))
        }
        (Some(expression), None) => {
            if on.is_none() {
                return Err(PyValueError::new_err(format!(
                    "cron={expression:?} needs on=: the cron form of a trigger starts the workflow named by on=, \
                     e.g. @cloaca.trigger(on=\"nightly_report\", cron=\"0 3 * * *\")"
                )));
            }
            // Checked when a runner registers it, as the original bindings do.
            TriggerForm::Cron { expression, timezone: timezone.unwrap_or_else(|| "UTC".to_string()) }
        }
        (None, interval) => {
            let interval = interval.as_deref().unwrap_or(DEFAULT_POLL_INTERVAL);
            TriggerForm::Poll { interval_ms: parse_poll_interval(interval).map_err(PyValueError::new_err)? }
        }
    };
    Ok(TriggerDecorator { name, on, form, allow_concurrent })
}

/// What `@cloaca.trigger(...)` returns: applied to a function, it defines
/// the trigger in this process and returns the function unchanged.
#[pyclass(module = "cloaca", frozen)]
pub struct TriggerDecorator {
    name: Option<String>,
    on: Option<String>,
    form: TriggerForm,
    allow_concurrent: bool,
}

#[pymethods]
impl TriggerDecorator {
    fn __call__(&self, function: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if !function.is_callable() {
            let type_name = function.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            return Err(PyTypeError::new_err(format!("@cloaca.trigger decorates a function, not {type_name}")));
        }
        let name = match &self.name {
            Some(name) => name.clone(),
            None => function
                .getattr("__name__")
                .and_then(|n| n.extract::<String>())
                .map_err(|_| PyTypeError::new_err("@cloaca.trigger: this callable has no __name__; give the trigger a name with name="))?,
        };
        if name.is_empty() {
            return Err(PyValueError::new_err("name=\"\" is not accepted: a trigger name must not be empty"));
        }
        let poll = Arc::new(PythonPoll { function: function.clone().unbind() });
        TriggerDefinitions::global().define(TriggerDef {
            name,
            on: self.on.clone(),
            form: self.form.clone(),
            allow_concurrent: self.allow_concurrent,
            poll,
        });
        Ok(function.unbind())
    }

    fn __repr__(&self) -> String {
        format!("TriggerDecorator(name={:?}, on={:?})", self.name, self.on)
    }
}

/// A poll function: called with no arguments on a thread of its own, with
/// the GIL only while it runs.
struct PythonPoll {
    function: Py<PyAny>,
}

impl TriggerPoll for PythonPoll {
    fn poll(&self) -> Result<PollOutcome, String> {
        Python::try_attach(|py| {
            let returned = self.function.bind(py).call0().map_err(|e| {
                let type_name = e.get_type(py).name().map(|n| n.to_string()).unwrap_or_default();
                format!("{type_name}: {}", e.value(py))
            })?;
            outcome_of(&returned)
        })
        .unwrap_or_else(|| Err("the interpreter is shutting down".to_string()))
    }
}

/// A TriggerResult, or a bool (True fires, False skips); anything else is a poll error.
fn outcome_of(returned: &Bound<'_, PyAny>) -> Result<PollOutcome, String> {
    if let Ok(result) = returned.cast::<PyTriggerResult>() {
        return Ok(result.get().outcome.clone());
    }
    if let Ok(flag) = returned.cast::<PyBool>() {
        return Ok(if flag.is_true() { PollOutcome::Fire(None) } else { PollOutcome::Skip });
    }
    let shown = returned.repr().map(|r| r.to_string()).unwrap_or_default();
    Err(format!("the poll function returned {shown}; return a cloaca.TriggerResult (TriggerResult.fire(...) or .skip()) or a bool"))
}

/// What a poll function returns: `TriggerResult.fire(context)` to start the
/// trigger's workflow, `TriggerResult.skip()` when its condition is not met.
#[pyclass(name = "TriggerResult", module = "cloaca", frozen)]
pub struct PyTriggerResult {
    outcome: PollOutcome,
}

#[pymethods]
impl PyTriggerResult {
    /// The condition is not met: nothing starts.
    #[staticmethod]
    fn skip() -> Self {
        PyTriggerResult { outcome: PollOutcome::Skip }
    }

    /// Start the workflow with `context` (a Context or a dict, copied now;
    /// None for none) plus the keys trigger_name and triggered_at.
    #[staticmethod]
    #[pyo3(signature = (context=None))]
    fn fire(context: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let context = match context.filter(|c| !c.is_none()) {
            None => None,
            Some(c) => Some(PyContext::from_argument(Some(c))?),
        };
        Ok(PyTriggerResult { outcome: PollOutcome::Fire(context) })
    }

    /// True for a fire.
    fn is_fire_result(&self) -> bool {
        matches!(self.outcome, PollOutcome::Fire(_))
    }

    /// True for a skip.
    fn is_skip_result(&self) -> bool {
        matches!(self.outcome, PollOutcome::Skip)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(match &self.outcome {
            PollOutcome::Skip => "TriggerResult.Skip".to_string(),
            PollOutcome::Fire(None) => "TriggerResult.Fire(None)".to_string(),
            PollOutcome::Fire(Some(context)) => {
                let context = Bound::new(py, PyContext::from_map(context.clone()))?;
                format!("TriggerResult.Fire({})", context.repr()?)
            }
        })
    }
}

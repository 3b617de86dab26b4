//! The Python shapes of event triggers and the executions their fires
//! started: plain dicts with RFC 3339 UTC times, with the original
//! bindings' keys, and their error phrases.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::cron::prefixed;
use crate::engine::{rfc3339, TriggerRecord, TriggerRun};

/// The first words of every error of each trigger method, as the original bindings word them.
pub(crate) const LIST: &str = "Failed to list trigger schedules";
pub(crate) const GET: &str = "Failed to get trigger schedule";
pub(crate) const UPDATE: &str = "Failed to update trigger";
pub(crate) const HISTORY: &str = "Failed to get trigger execution history";

/// `error` with the method's `prefix`, as a ValueError (which the original
/// bindings raise for a database error too): a class that is not one is
/// replaced by a ValueError caused by it.
pub(crate) fn failed(prefix: &str, error: PyErr) -> PyErr {
    let error = prefixed(prefix, error);
    Python::attach(|py| {
        if error.is_instance_of::<PyValueError>(py) || error.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
            return error;
        }
        let message = error.value(py).str().map(|s| s.to_string()).unwrap_or_default();
        let replaced = PyValueError::new_err(message);
        replaced.set_cause(py, Some(error));
        replaced
    })
}

pub(crate) fn schedule_dict<'py>(py: Python<'py>, t: &TriggerRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", &t.id)?;
    d.set_item("trigger_name", &t.trigger_name)?;
    d.set_item("workflow_name", &t.workflow_name)?;
    d.set_item("poll_interval_ms", t.poll_interval_ms)?;
    d.set_item("allow_concurrent", t.allow_concurrent)?;
    d.set_item("enabled", t.enabled)?;
    d.set_item("last_poll_at", t.last_poll_at.map(rfc3339))?;
    d.set_item("created_at", rfc3339(t.created_at))?;
    d.set_item("updated_at", rfc3339(t.updated_at))?;
    Ok(d)
}

pub(crate) fn run_dict<'py>(py: Python<'py>, r: &TriggerRun) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", &r.id)?;
    d.set_item("schedule_id", &r.schedule_id)?;
    d.set_item("context_hash", &r.context_hash)?;
    d.set_item("workflow_execution_id", &r.execution_id)?;
    d.set_item("started_at", rfc3339(r.started_at))?;
    d.set_item("completed_at", r.completed_at.map(rfc3339))?;
    d.set_item("created_at", rfc3339(r.created_at))?;
    // Beyond the original bindings' keys: the execution's status now.
    d.set_item("status", r.status.map(|s| s.display_name()))?;
    Ok(d)
}

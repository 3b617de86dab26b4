//! The Python shapes of cron schedules, their history and stats: plain
//! dicts with RFC 3339 UTC times, as the original bindings returned.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::engine::{rfc3339, CronRun, CronStats, ScheduleRecord};
use crate::python::errors::raise;
use crate::python::json;

/// The first words of every error of each cron method, as the original
/// bindings word them, so that handlers matching on them keep working.
pub(crate) const REGISTER: &str = "Failed to register cron workflow";
pub(crate) const REGISTER_INSTANCE: &str = "Failed to register workflow instance";
pub(crate) const LIST: &str = "Failed to list cron schedules";
pub(crate) const GET: &str = "Failed to get cron schedule";
/// Of `update_cron_schedule` and `set_cron_schedule_enabled`.
pub(crate) const UPDATE: &str = "Failed to update cron schedule";
pub(crate) const DELETE: &str = "Failed to delete cron schedule";
pub(crate) const HISTORY: &str = "Failed to get cron execution history";
pub(crate) const STATS: &str = "Failed to get cron execution stats";

/// `error` as an exception of the same class whose message starts with
/// `prefix: ` (a signal's KeyboardInterrupt is left as it is).
pub(crate) fn prefixed(prefix: &str, error: PyErr) -> PyErr {
    Python::attach(|py| {
        if error.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py) {
            return error;
        }
        let value = error.value(py);
        // The message as given: str() of a KeyError would quote it.
        let message = match value.getattr("args").and_then(|a| a.get_item(0)).and_then(|m| m.extract::<String>()) {
            Ok(message) => message,
            Err(_) => value.str().map(|s| s.to_string()).unwrap_or_default(),
        };
        PyErr::from_type(error.get_type(py), format!("{prefix}: {message}"))
    })
}

/// Refuses a schedule id that is not one (ids are UUIDs) with
/// ScheduleNotFoundError, whose message says "Invalid schedule ID".
pub(crate) fn check_schedule_id(id: &str) -> PyResult<()> {
    match uuid::Uuid::try_parse(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(raise(
            "ScheduleNotFoundError",
            format!(
                "Invalid schedule ID: {id:?} is not a schedule id (a UUID, as register_cron_workflow returns); \
                 no cron schedule has it"
            ),
        )),
    }
}

pub(crate) fn schedule_dict<'py>(py: Python<'py>, s: &ScheduleRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", &s.id)?;
    d.set_item("workflow_name", &s.workflow_name)?;
    d.set_item("cron_expression", &s.cron_expression)?;
    d.set_item("timezone", &s.timezone)?;
    d.set_item("enabled", s.enabled)?;
    // Missed ticks are started (the most recent cron_max_catchup_executions).
    d.set_item("catchup_policy", "run_all")?;
    d.set_item("next_run_at", rfc3339(s.next_run_at))?;
    d.set_item("last_run_at", s.last_run_at.map(rfc3339))?;
    d.set_item("skipped_ticks", s.skipped_ticks)?;
    d.set_item("created_at", rfc3339(s.created_at))?;
    d.set_item("updated_at", rfc3339(s.updated_at))?;
    d.set_item("instance_name", s.instance_name.as_deref())?;
    d.set_item("params", s.params.as_ref().map(|p| json::object_to_py(py, p)).transpose()?)?;
    Ok(d)
}

pub(crate) fn run_dict<'py>(py: Python<'py>, r: &CronRun) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", r.id)?;
    d.set_item("schedule_id", &r.schedule_id)?;
    d.set_item("workflow_name", &r.workflow_name)?;
    d.set_item("scheduled_time", rfc3339(r.scheduled_time))?;
    d.set_item("claimed_at", rfc3339(r.claimed_at))?;
    d.set_item("execution_id", &r.execution_id)?;
    // The original bindings' name for the same id.
    d.set_item("pipeline_execution_id", &r.execution_id)?;
    // The current original bindings' name for it.
    d.set_item("workflow_execution_id", &r.execution_id)?;
    d.set_item("attempt", r.attempt)?;
    d.set_item("status", r.status.display_name())?;
    d.set_item("created_at", rfc3339(r.claimed_at))?;
    d.set_item("updated_at", rfc3339(r.updated_at))?;
    Ok(d)
}

pub(crate) fn stats_dict<'py>(py: Python<'py>, s: &CronStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("total_executions", s.total)?;
    d.set_item("successful_executions", s.completed)?;
    d.set_item("failed_executions", s.failed)?;
    d.set_item("running_executions", s.unfinished)?;
    d.set_item("lost_executions", s.lost)?;
    // A percentage, as in the original.
    let rate = if s.total > 0 { s.completed as f64 * 100.0 / s.total as f64 } else { 0.0 };
    d.set_item("success_rate", rate)?;
    Ok(d)
}

/// `since` as unix ms: an RFC 3339 string with an offset, or a datetime
/// (a naive one is taken as UTC).
pub(crate) fn since_ms(py: Python<'_>, since: &Bound<'_, PyAny>) -> PyResult<i64> {
    time_ms(py, since, "since", true)
}

/// The time argument `name` as unix ms: an RFC 3339 string with an offset,
/// or a datetime. A naive datetime is taken as UTC with `naive_as_utc`, and
/// refused otherwise (where guessing its zone could delete the wrong rows).
pub(crate) fn time_ms(py: Python<'_>, value: &Bound<'_, PyAny>, name: &str, naive_as_utc: bool) -> PyResult<i64> {
    let accepted = if naive_as_utc {
        "give an RFC 3339 time with an offset such as \"2026-01-01T00:00:00Z\", or a datetime.datetime"
    } else {
        "give an RFC 3339 time with an offset such as \"2026-01-01T00:00:00Z\", or a datetime.datetime with a tzinfo"
    };
    if let Ok(text) = value.cast::<PyString>() {
        let text = text.to_cow()?;
        return chrono::DateTime::parse_from_rfc3339(&text)
            .map(|t| t.timestamp_millis())
            .map_err(|e| PyValueError::new_err(format!("Invalid datetime format: {name}={text:?} is not accepted ({e}); {accepted}")));
    }
    let datetime = py.import("datetime")?;
    if value.is_instance(&datetime.getattr("datetime")?)? {
        // A tzinfo whose utcoffset() is None makes the datetime naive too.
        let naive = value.call_method0("utcoffset")?.is_none();
        let aware = if !naive {
            value.clone()
        } else if naive_as_utc {
            let kwargs = PyDict::new(py);
            kwargs.set_item("tzinfo", datetime.getattr("timezone")?.getattr("utc")?)?;
            value.call_method("replace", (), Some(&kwargs))?
        } else {
            let shown = value.repr().map(|r| r.to_string()).unwrap_or_default();
            return Err(PyValueError::new_err(format!("{name}={shown} is not accepted: it has no time zone; {accepted}")));
        };
        let seconds: f64 = aware.call_method0("timestamp")?.extract()?;
        return Ok((seconds * 1000.0).round() as i64);
    }
    let type_name = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    Err(PyTypeError::new_err(format!("{name} has type {type_name}; {accepted}")))
}

/// Checks the paging arguments of the listing methods (executions, schedules, history).
pub(crate) fn check_page(limit: i64, offset: i64) -> PyResult<()> {
    if limit <= 0 {
        return Err(PyValueError::new_err(format!("limit={limit} is not accepted: it must be an int above 0")));
    }
    if offset < 0 {
        return Err(PyValueError::new_err(format!("offset={offset} is not accepted: it must be an int of 0 or more")));
    }
    Ok(())
}

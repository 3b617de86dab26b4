//! `TaskRecord` and `ExecutionEvent`: what `get_execution_tasks`,
//! `get_execution_events` and `PipelineResult.tasks` return.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::engine::{rfc3339, ExecutionEvent, TaskRecord};

/// One task of an execution: its state and its latest attempt.
#[pyclass(name = "TaskRecord", module = "cloaca", frozen)]
pub struct PyTaskRecord {
    record: TaskRecord,
}

impl From<TaskRecord> for PyTaskRecord {
    fn from(record: TaskRecord) -> Self {
        PyTaskRecord { record }
    }
}

#[pymethods]
impl PyTaskRecord {
    #[getter]
    fn task_id(&self) -> &str {
        &self.record.task_id
    }

    /// "Pending", "Ready", "Paused", "Running", "Completed", "Failed", "Skipped" or "Cancelled".
    #[getter]
    fn status(&self) -> &'static str {
        self.record.status.display_name()
    }

    /// Attempts started since the execution began (or since its last retry_execution).
    #[getter]
    fn attempts(&self) -> i64 {
        self.record.attempts
    }

    /// When the latest attempt started (RFC 3339, UTC), or None.
    #[getter]
    fn started_at(&self) -> Option<String> {
        self.record.started_at.map(rfc3339)
    }

    /// When the latest attempt ended (RFC 3339, UTC), or None.
    #[getter]
    fn finished_at(&self) -> Option<String> {
        self.record.finished_at.map(rfc3339)
    }

    /// How long the latest attempt took, in milliseconds, once it ended.
    #[getter]
    fn duration_ms(&self) -> Option<i64> {
        self.record.duration_ms()
    }

    /// The exception type of the latest failed attempt, or None.
    #[getter]
    fn error_type(&self) -> Option<&str> {
        self.record.error_type.as_deref()
    }

    /// The exception message of the latest failed attempt, or None.
    #[getter]
    fn error_message(&self) -> Option<&str> {
        self.record.error_message.as_deref()
    }

    /// The traceback text of the latest failed attempt, or None.
    #[getter]
    fn error_traceback(&self) -> Option<&str> {
        self.record.error_traceback.as_deref()
    }

    /// The id of the runner that ran (or runs) the latest attempt (`DefaultRunner.runner_id`), or None.
    #[getter]
    fn runner(&self) -> Option<&str> {
        self.record.runner.as_deref()
    }

    /// When a failed task is tried again (RFC 3339, UTC), or None.
    #[getter]
    fn next_retry_at(&self) -> Option<String> {
        self.record.next_retry_at.map(rfc3339)
    }

    /// Why a Skipped task was skipped: "trigger_rule" (its own trigger rule
    /// was false), "upstream_failed" (a dependency failed; default rule only)
    /// or "stopped" (its execution was stopped); None for any other status.
    #[getter]
    fn skip_reason(&self) -> Option<&str> {
        self.record.skip_reason.as_deref()
    }

    /// The record as a dict with the attribute names as keys.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("task_id", self.task_id())?;
        dict.set_item("status", self.status())?;
        dict.set_item("attempts", self.attempts())?;
        dict.set_item("started_at", self.started_at())?;
        dict.set_item("finished_at", self.finished_at())?;
        dict.set_item("duration_ms", self.duration_ms())?;
        dict.set_item("error_type", self.error_type())?;
        dict.set_item("error_message", self.error_message())?;
        dict.set_item("error_traceback", self.error_traceback())?;
        dict.set_item("runner", self.runner())?;
        dict.set_item("next_retry_at", self.next_retry_at())?;
        dict.set_item("skip_reason", self.skip_reason())?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        format!("TaskRecord(task_id={:?}, status={:?}, attempts={})", self.record.task_id, self.status(), self.record.attempts)
    }
}

/// One entry of an execution's history.
#[pyclass(name = "ExecutionEvent", module = "cloaca", frozen)]
pub struct PyExecutionEvent {
    event: ExecutionEvent,
}

impl From<ExecutionEvent> for PyExecutionEvent {
    fn from(event: ExecutionEvent) -> Self {
        PyExecutionEvent { event }
    }
}

#[pymethods]
impl PyExecutionEvent {
    /// When it happened (RFC 3339, UTC, millisecond precision).
    #[getter]
    fn time(&self) -> String {
        rfc3339(self.event.at)
    }

    /// What happened: "execution_created", "task_ready", "attempt_claimed", "attempt_succeeded",
    /// "attempt_failed", "attempt_cancelled", "retry_scheduled", "lease_expired", "execution_paused",
    /// "execution_resumed", "execution_cancelled", "execution_retried" or "execution_finished".
    #[getter]
    fn kind(&self) -> &'static str {
        self.event.kind.name()
    }

    /// The task it concerns, or None for an event of the whole execution.
    #[getter]
    fn task_id(&self) -> Option<&str> {
        self.event.task_id.as_deref()
    }

    /// The attempt's number (within its round), or None.
    #[getter]
    fn attempt(&self) -> Option<i64> {
        self.event.attempt
    }

    /// The runner that did it, or None.
    #[getter]
    fn runner(&self) -> Option<&str> {
        self.event.runner.as_deref()
    }

    /// More about it (an error, a status, a retry time), or None.
    #[getter]
    fn detail(&self) -> Option<&str> {
        self.event.detail.as_deref()
    }

    /// The event as a dict with the attribute names as keys.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("time", self.time())?;
        dict.set_item("kind", self.kind())?;
        dict.set_item("task_id", self.task_id())?;
        dict.set_item("attempt", self.attempt())?;
        dict.set_item("runner", self.runner())?;
        dict.set_item("detail", self.detail())?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        let task = self.event.task_id.as_deref().map(|t| format!(", task_id={t:?}")).unwrap_or_default();
        format!("ExecutionEvent(time={:?}, kind={:?}{task})", self.time(), self.kind())
    }
}

//! `ExecutionHandle` and `PipelineResult`, and the Ctrl-C check of every
//! blocking wait.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::records::PyTaskRecord;
use crate::engine::{rfc3339, ExecutionRecord, Result as EngineResult, Runner, TaskRecord};
use crate::python::context::PyContext;
use crate::python::errors::to_py;

/// Lets a blocking wait end on Ctrl-C: while the GIL is released, Python
/// cannot raise KeyboardInterrupt, so the wait asks here between slices.
#[derive(Default)]
pub(crate) struct SignalCheck {
    raised: Option<PyErr>,
}

impl SignalCheck {
    pub(crate) fn keep_waiting(&mut self) -> bool {
        match Python::attach(|py| py.check_signals()) {
            Ok(()) => true,
            Err(e) => {
                self.raised = Some(e);
                false
            }
        }
    }

    /// The wait's result, or the exception a signal handler raised.
    pub(crate) fn result(self, runner: &Arc<Runner>, record: EngineResult<ExecutionRecord>) -> PyResult<PyPipelineResult> {
        if let Some(raised) = self.raised {
            return Err(raised);
        }
        record.map(|r| PyPipelineResult::new(r, runner)).map_err(to_py)
    }
}

/// A running (or finished) execution started by `execute_async`.
#[pyclass(name = "ExecutionHandle", module = "cloaca", frozen)]
pub struct PyExecutionHandle {
    runner: Arc<Runner>,
    execution_id: String,
}

impl PyExecutionHandle {
    pub(crate) fn new(runner: Arc<Runner>, execution_id: String) -> Self {
        PyExecutionHandle { runner, execution_id }
    }
}

#[pymethods]
impl PyExecutionHandle {
    #[getter]
    fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// "Pending", "Running", "Paused", "Completed", "Failed" or "Cancelled".
    fn status(&self, py: Python<'_>) -> PyResult<&'static str> {
        let record = py.detach(|| self.runner.record(&self.execution_id)).map_err(to_py)?;
        Ok(record.status.display_name())
    }

    /// Waits for the execution to finish; raises TimeoutError after
    /// `timeout` seconds (the execution goes on).
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PyPipelineResult> {
        let timeout = match timeout {
            None => None,
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => return Err(PyValueError::new_err(format!("timeout={t} is not accepted: use seconds >= 0, or None"))),
        };
        let mut signal = SignalCheck::default();
        let record = py.detach(|| self.runner.wait_with(&self.execution_id, timeout, &mut || signal.keep_waiting()));
        signal.result(&self.runner, record)
    }

    /// Cancels the execution (see `DefaultRunner.cancel_execution`).
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        crate::python::logging::refresh_levels(py);
        py.detach(|| self.runner.cancel_execution(&self.execution_id)).map_err(to_py)
    }

    fn __repr__(&self) -> String {
        format!("ExecutionHandle(execution_id={:?})", self.execution_id)
    }
}

/// The outcome (or current state) of an execution; exported as both
/// `PipelineResult` and `WorkflowResult` (one class).
#[pyclass(name = "PipelineResult", module = "cloaca", frozen)]
pub struct PyPipelineResult {
    record: ExecutionRecord,
    /// Where `tasks` is read from, on first use: most results are never asked.
    runner: Arc<Runner>,
    tasks: OnceLock<Vec<TaskRecord>>,
}

impl PyPipelineResult {
    pub(crate) fn new(record: ExecutionRecord, runner: &Arc<Runner>) -> Self {
        PyPipelineResult { record, runner: runner.clone(), tasks: OnceLock::new() }
    }
}

#[pymethods]
impl PyPipelineResult {
    /// The execution's tasks as TaskRecords, in topological order, as they
    /// stood when first asked (read from the database then, while the
    /// runner is open).
    #[getter]
    fn tasks(&self, py: Python<'_>) -> PyResult<Vec<PyTaskRecord>> {
        if self.tasks.get().is_none() {
            let read = py.detach(|| self.runner.task_records(&self.record.id)).map_err(to_py)?;
            let _ = self.tasks.set(read);
        }
        Ok(self.tasks.get().map(|t| t.iter().cloned().map(PyTaskRecord::from).collect()).unwrap_or_default())
    }

    /// "Completed", "Failed" or "Cancelled" once finished; "Pending", "Running" or "Paused" before.
    #[getter]
    fn status(&self) -> &'static str {
        self.record.status.display_name()
    }

    /// The context the execution ended with (its input while unfinished).
    #[getter]
    fn final_context(&self) -> PyContext {
        PyContext::from_map(self.record.final_context.clone().unwrap_or_else(|| self.record.input.clone()))
    }

    /// None on success; on failure the failed task, its exception and traceback.
    #[getter]
    fn error_message(&self) -> Option<&str> {
        self.record.error_message.as_deref()
    }

    /// When the execution was started (RFC 3339, UTC).
    #[getter]
    fn start_time(&self) -> String {
        rfc3339(self.record.created_at)
    }

    /// When it finished (RFC 3339, UTC), or None.
    #[getter]
    fn end_time(&self) -> Option<String> {
        self.record.finished_at.map(rfc3339)
    }

    #[getter]
    fn execution_id(&self) -> &str {
        &self.record.id
    }

    #[getter]
    fn workflow_name(&self) -> &str {
        &self.record.workflow_name
    }

    /// `WorkflowResult(status=<status>, error=<message or None>)`, as the
    /// current original bindings show their result class.
    fn __repr__(&self) -> String {
        format!(
            "WorkflowResult(status={}, error={})",
            self.record.status.display_name(),
            self.record.error_message.as_deref().unwrap_or("None")
        )
    }
}

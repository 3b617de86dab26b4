//! `TaskHandle`: what a task that asks for one gets as its second argument,
//! to give its concurrency slot back while it waits (`defer_until`). The
//! slot bookkeeping is the engine's ([`AttemptSlot`]); this wraps it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::engine::{lock, AttemptSlot, Level, SlotError, Topic};
use crate::python::logging;

/// Which attempt a handle belongs to, for the records it logs.
pub(crate) struct HandleOwner {
    pub(crate) task_id: String,
    pub(crate) execution_id: String,
    pub(crate) workflow: String,
}

/// Passed as `handle` (or `task_handle`) to a task whose second positional
/// parameter has that name; usable until the task returns.
#[pyclass(module = "cloaca", frozen)]
pub struct TaskHandle {
    /// `None` once the body has returned.
    slot: Mutex<Option<AttemptSlot>>,
    /// A body that enforces its own time limit (an async task) stops
    /// waiting at it; a plain one is timed out by the runner.
    deadline: Option<Instant>,
    deferring: AtomicBool,
    owner: HandleOwner,
}

impl TaskHandle {
    pub(crate) fn new(slot: AttemptSlot, deadline: Option<Instant>, owner: HandleOwner) -> Self {
        TaskHandle { slot: Mutex::new(Some(slot)), deadline, deferring: AtomicBool::new(false), owner }
    }

    /// Ends the handle's use: the body returned.
    pub(crate) fn consume(&self) {
        lock(&self.slot).take();
    }

    fn slot(&self) -> PyResult<AttemptSlot> {
        lock(&self.slot).clone().ok_or_else(|| PyValueError::new_err("TaskHandle has already been consumed"))
    }

    fn deferral_failed(py: Python<'_>, error: SlotError) -> PyErr {
        let message = format!("defer_until failed: {error}");
        if error == SlotError::TimeLimitPassed {
            // The class the task's own timeout raises, so that the attempt
            // is recorded as timed out.
            if let Ok(timeout) = py.import("asyncio").and_then(|a| a.getattr("TimeoutError")) {
                if let Ok(raised) = timeout.call1((message.clone(),)) {
                    return PyErr::from_value(raised);
                }
            }
        }
        PyValueError::new_err(message)
    }

    /// Prints and logs a condition that raised; it counts as false.
    fn condition_failed(&self, py: Python<'_>, error: &PyErr) {
        let value = error.value(py);
        let type_name = value.get_type().qualname().map(|n| n.to_string()).unwrap_or_default();
        let text = format!("{type_name}: {value}");
        let _ = py
            .import("sys")
            .and_then(|sys| sys.getattr("stderr")?.call_method1("write", (format!("[cloaca] defer_until condition error: {text}\n"),)));
        let owner = &self.owner;
        let message = format!(
            "defer_until condition of task {:?} of execution {} raised {text}; it counts as false",
            owner.task_id, owner.execution_id
        );
        logging::log(py, Level::Warning, Topic::Task, &message, Some(&owner.execution_id), Some(&owner.workflow), Some(&owner.task_id));
    }

    fn wait_until(&self, py: Python<'_>, slot: &AttemptSlot, condition: &Bound<'_, PyAny>, interval: Duration) -> PyResult<()> {
        py.detach(|| slot.release()).map_err(|e| Self::deferral_failed(py, e))?;
        loop {
            py.detach(|| slot.pause(interval, self.deadline)).map_err(|e| Self::deferral_failed(py, e))?;
            match condition.call0().and_then(|result| result.is_truthy()) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => self.condition_failed(py, &e),
            }
        }
        py.detach(|| slot.reacquire()).map_err(|e| Self::deferral_failed(py, e))
    }
}

#[pymethods]
impl TaskHandle {
    /// Gives the task's concurrency slot back, calls `condition()` every
    /// `poll_interval_ms` until it returns a true value (an exception
    /// counts as false), then waits for a slot and returns.
    #[pyo3(signature = (condition, poll_interval_ms=1000))]
    fn defer_until(&self, py: Python<'_>, condition: Bound<'_, PyAny>, poll_interval_ms: i64) -> PyResult<()> {
        let slot = self.slot()?;
        let interval = u64::try_from(poll_interval_ms).map_err(|_| {
            PyValueError::new_err(format!("poll_interval_ms={poll_interval_ms} is not accepted: it must be 0 or more milliseconds"))
        })?;
        if !condition.is_callable() {
            let type_name = condition.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            return Err(PyTypeError::new_err(format!("defer_until's condition must be a callable taking no arguments, not {type_name}")));
        }
        if self.deferring.swap(true, Ordering::SeqCst) {
            return Err(PyValueError::new_err("defer_until is already waiting on this TaskHandle (called from its condition?)"));
        }
        let result = self.wait_until(py, &slot, &condition, Duration::from_millis(interval));
        self.deferring.store(false, Ordering::SeqCst);
        result
    }

    /// True while the task holds one of the runner's `max_concurrent_tasks` slots.
    fn is_slot_held(&self) -> PyResult<bool> {
        Ok(self.slot()?.is_held())
    }

    fn __repr__(&self) -> String {
        let state = if lock(&self.slot).is_some() { "active" } else { "consumed" };
        format!("TaskHandle(task_id={:?}, {state})", self.owner.task_id)
    }
}

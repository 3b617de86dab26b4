//! The Python side of a task: the callable the engine runs, and what a
//! declaration records about it.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::engine::{AttemptInfo, Context, Level, TaskBody, TaskFailure, TaskSpec, Topic};
use crate::python::context::PyContext;
use crate::python::logging;

/// Attribute set on a decorated function: its task id.
pub(crate) const TASK_ID_ATTR: &str = "__cloaca_task_id__";
/// Attribute set on a decorated function: the workflow it was declared in.
pub(crate) const WORKFLOW_ATTR: &str = "__cloaca_workflow__";

/// A declared task: its spec and the Python function that implements it.
pub(crate) struct TaskDef {
    pub(crate) spec: TaskSpec,
    pub(crate) body: Arc<PythonTask>,
}

/// A task implemented by a Python callable.
pub(crate) struct PythonTask {
    task_id: String,
    function: Py<PyAny>,
    is_async: bool,
}

thread_local! {
    /// One event loop per worker thread runs its async tasks.
    static EVENT_LOOP: RefCell<Option<Py<PyAny>>> = const { RefCell::new(None) };
}

impl PythonTask {
    pub(crate) fn new(task_id: String, function: Py<PyAny>, is_async: bool) -> Self {
        PythonTask { task_id, function, is_async }
    }

    fn call<'py>(
        &self,
        py: Python<'py>,
        attempt: &AttemptInfo<'_>,
        ctx: &Bound<'py, PyContext>,
        timeout: Duration,
    ) -> PyResult<Bound<'py, PyAny>> {
        let returned = self.function.bind(py).call1((ctx,))?;
        let inspect = py.import("inspect")?;
        if !inspect.call_method1("isawaitable", (&returned,))?.is_truthy()? {
            return Ok(returned);
        }
        let asyncio = py.import("asyncio")?;
        let event_loop = EVENT_LOOP.with(|cell| -> PyResult<Py<PyAny>> {
            let mut slot = cell.borrow_mut();
            if let Some(l) = slot.as_ref() {
                return Ok(l.clone_ref(py));
            }
            let l = asyncio.call_method0("new_event_loop")?.unbind();
            *slot = Some(l.clone_ref(py));
            Ok(l)
        })?;
        let limited = asyncio.call_method1("wait_for", (returned, timeout.as_secs_f64()))?;
        let task = event_loop.bind(py).call_method1("create_task", (limited,))?;
        // Cancelling the execution cancels the coroutine from whichever
        // thread learns of it; the loop is thread-safe only through this call.
        let (cancel_loop, cancel_task) = (event_loop.clone_ref(py), task.clone().unbind());
        attempt.cancellation.on_cancel(Box::new(move || {
            Python::attach(|py| {
                if let Ok(cancel) = cancel_task.bind(py).getattr("cancel") {
                    let _ = cancel_loop.bind(py).call_method1("call_soon_threadsafe", (cancel,));
                }
            })
        }));
        event_loop.bind(py).call_method1("run_until_complete", (task,))
    }

    fn run_held(
        &self,
        py: Python<'_>,
        attempt: &AttemptInfo<'_>,
        input: Context,
        timeout: Duration,
        started: Instant,
    ) -> Result<Context, TaskFailure> {
        let ctx = Bound::new(py, PyContext::from_map(input)).map_err(|e| self.failure(py, &e, started, timeout))?;
        let returned = self.call(py, attempt, &ctx, timeout).map_err(|e| self.failure(py, &e, started, timeout))?;
        if returned.is_none() {
            return Ok(std::mem::take(&mut ctx.borrow_mut().data));
        }
        if let Ok(out) = returned.cast::<PyContext>() {
            return Ok(out.borrow().data.clone());
        }
        let type_name = returned.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        Err(TaskFailure {
            error_type: "TypeError".into(),
            message: format!("task {:?} returned {type_name}; a task must return its Context or None", self.task_id),
            traceback: None,
            transient: false,
        })
    }

    fn failure(&self, py: Python<'_>, error: &PyErr, started: Instant, timeout: Duration) -> TaskFailure {
        let value = error.value(py);
        let error_type = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
        let is_timeout = py.import("asyncio").and_then(|a| a.getattr("TimeoutError")).is_ok_and(|t| value.is_instance(&t).unwrap_or(false));
        if self.is_async && is_timeout && started.elapsed() >= timeout {
            return TaskFailure::timed_out(&self.task_id, timeout.as_secs_f64());
        }
        let transient = is_timeout || value.is_instance_of::<pyo3::exceptions::PyOSError>();
        let traceback = py
            .import("traceback")
            .and_then(|tb| tb.call_method1("format_exception", (value.get_type(), value, error.traceback(py))))
            .and_then(|lines| lines.extract::<Vec<String>>())
            .map(|lines| lines.concat())
            .ok();
        TaskFailure { error_type, message: value.to_string(), traceback, transient }
    }
}

impl TaskBody for PythonTask {
    fn run(&self, attempt: &AttemptInfo<'_>, input: Context, timeout: Duration) -> Result<Context, TaskFailure> {
        Python::attach(|py| {
            // Per-attempt detail is logged here, where the GIL is held anyway.
            if !logging::enabled(py, Level::Debug, Topic::Task) {
                return self.run_held(py, attempt, input, timeout, Instant::now());
            }
            let debug = |message: String| {
                let (execution, workflow) = (Some(attempt.execution_id), Some(attempt.workflow));
                logging::log(py, Level::Debug, Topic::Task, &message, execution, workflow, Some(attempt.task_id));
            };
            let what = format!("task {:?} of execution {} (attempt {})", self.task_id, attempt.execution_id, attempt.attempt);
            debug(format!("{what} started"));
            let started = Instant::now();
            let result = self.run_held(py, attempt, input, timeout, started);
            let took = started.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok(_) => debug(format!("{what} succeeded in {took:.1} ms")),
                Err(failure) => debug(format!("{what} raised {}: {} after {took:.1} ms", failure.error_type, failure.message)),
            }
            result
        })
    }

    fn enforces_timeout(&self) -> bool {
        self.is_async
    }
}

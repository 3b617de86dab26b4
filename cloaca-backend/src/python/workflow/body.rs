//! The Python side of a task: the callable the engine runs, and what a
//! declaration records about it.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::handle::{HandleOwner, TaskHandle};
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
    /// The function's second positional parameter is `handle` or `task_handle`.
    takes_handle: bool,
    callbacks: Callbacks,
}

/// `on_success(task_id, context)` and `on_failure(task_id, error, context)`.
#[derive(Default)]
pub(crate) struct Callbacks {
    pub(crate) on_success: Option<Py<PyAny>>,
    pub(crate) on_failure: Option<Py<PyAny>>,
}

/// The attempt's time limit passed while a callback was awaited.
struct TimeLimitPassed;

thread_local! {
    /// One event loop per worker thread runs its async tasks.
    static EVENT_LOOP: RefCell<Option<Py<PyAny>>> = const { RefCell::new(None) };
}

impl PythonTask {
    pub(crate) fn new(task_id: String, function: Py<PyAny>, is_async: bool, takes_handle: bool, callbacks: Callbacks) -> Self {
        PythonTask { task_id, function, is_async, takes_handle, callbacks }
    }

    fn call<'py>(
        &self,
        py: Python<'py>,
        attempt: &AttemptInfo<'_>,
        ctx: &Bound<'py, PyContext>,
        handle: Option<&Bound<'py, TaskHandle>>,
        timeout: Duration,
    ) -> PyResult<Bound<'py, PyAny>> {
        let function = self.function.bind(py);
        let returned = match handle {
            Some(handle) => function.call1((ctx, handle))?,
            None => function.call1((ctx,))?,
        };
        await_if_needed(py, attempt, returned, timeout)
    }

    fn run_held(
        &self,
        py: Python<'_>,
        attempt: &AttemptInfo<'_>,
        input: Context,
        timeout: Duration,
        started: Instant,
    ) -> Result<Context, TaskFailure> {
        // on_failure gets the input as the attempt got it, not as the body left it.
        let kept_input = self.callbacks.on_failure.is_some().then(|| input.clone());
        let ctx = Bound::new(py, PyContext::from_map(input)).map_err(|e| self.failure(py, &e, started, timeout))?;
        let handle = match self.takes_handle {
            true => Some(self.handle(py, attempt, started + timeout).map_err(|e| self.failure(py, &e, started, timeout))?),
            false => None,
        };
        let called = self.call(py, attempt, &ctx, handle.as_ref(), timeout);
        if let Some(handle) = &handle {
            handle.get().consume();
        }
        let returned = match called {
            Ok(returned) => returned,
            Err(e) => {
                let failure = self.failure(py, &e, started, timeout);
                if let (Some(callback), Some(input)) = (&self.callbacks.on_failure, kept_input) {
                    if !self.timed_out(py, &e, started, timeout) && self.callbacks_apply(attempt) {
                        let error = format!("Python task execution failed: {}", describe(py, &e));
                        let args = (self.task_id.as_str(), error, PyContext::from_map(input));
                        if self.callback(py, attempt, "on_failure", callback, args, started + timeout).is_err() {
                            return Err(TaskFailure::timed_out(&self.task_id, timeout.as_secs_f64()));
                        }
                    }
                }
                return Err(failure);
            }
        };
        let output = if returned.is_none() {
            std::mem::take(&mut ctx.borrow_mut().data)
        } else if let Ok(out) = returned.cast::<PyContext>() {
            out.borrow().data.clone()
        } else {
            let type_name = returned.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            return Err(TaskFailure {
                error_type: "TypeError".into(),
                message: format!("task {:?} returned {type_name}; a task must return its Context or None", self.task_id),
                traceback: None,
                transient: false,
            });
        };
        if let Some(callback) = &self.callbacks.on_success {
            if self.callbacks_apply(attempt) {
                let args = (self.task_id.as_str(), PyContext::from_map(output.clone()));
                if self.callback(py, attempt, "on_success", callback, args, started + timeout).is_err() {
                    return Err(TaskFailure::timed_out(&self.task_id, timeout.as_secs_f64()));
                }
            }
        }
        Ok(output)
    }

    fn handle<'py>(&self, py: Python<'py>, attempt: &AttemptInfo<'_>, deadline: Instant) -> PyResult<Bound<'py, TaskHandle>> {
        let owner = HandleOwner {
            task_id: self.task_id.clone(),
            execution_id: attempt.execution_id.to_string(),
            workflow: attempt.workflow.to_string(),
        };
        Bound::new(py, TaskHandle::new(attempt.slot.clone(), self.is_async.then_some(deadline), owner))
    }

    /// Callbacks run for attempts whose outcome counts: not for one the
    /// runner already recorded as timed out or will not record (it stopped
    /// during a deferral), nor in a cancelled execution.
    fn callbacks_apply(&self, attempt: &AttemptInfo<'_>) -> bool {
        !attempt.cancellation.is_requested() && !attempt.slot.outcome_is_discarded()
    }

    /// Calls a callback, awaiting what it returns if that is awaitable. What
    /// it raises is printed, logged and swallowed.
    fn callback<'py>(
        &self,
        py: Python<'py>,
        attempt: &AttemptInfo<'_>,
        which: &str,
        callback: &Py<PyAny>,
        args: impl pyo3::call::PyCallArgs<'py>,
        deadline: Instant,
    ) -> Result<(), TimeLimitPassed> {
        let called = callback.bind(py).call1(args).and_then(|returned| {
            let left = deadline.saturating_duration_since(Instant::now());
            await_if_needed(py, attempt, returned, left)
        });
        let Err(error) = called else { return Ok(()) };
        if is_asyncio_timeout(py, &error) && Instant::now() >= deadline {
            return Err(TimeLimitPassed);
        }
        let text = describe(py, &error);
        let _ = py.import("sys").and_then(|sys| {
            sys.getattr("stderr")?
                .call_method1("write", (format!("[cloaca] {which} callback failed for task '{}': {text}\n", self.task_id),))
        });
        let message = format!(
            "{which} callback of task {:?} of execution {} (attempt {}) failed: {text}",
            self.task_id, attempt.execution_id, attempt.attempt
        );
        logging::log(py, Level::Error, Topic::Task, &message, Some(attempt.execution_id), Some(attempt.workflow), Some(attempt.task_id));
        Ok(())
    }

    /// The error is the body's own time limit (an async body's wait_for).
    fn timed_out(&self, py: Python<'_>, error: &PyErr, started: Instant, timeout: Duration) -> bool {
        self.is_async && is_asyncio_timeout(py, error) && started.elapsed() >= timeout
    }

    fn failure(&self, py: Python<'_>, error: &PyErr, started: Instant, timeout: Duration) -> TaskFailure {
        let value = error.value(py);
        let error_type = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
        if self.timed_out(py, error, started, timeout) {
            return TaskFailure::timed_out(&self.task_id, timeout.as_secs_f64());
        }
        let transient = is_asyncio_timeout(py, error) || value.is_instance_of::<pyo3::exceptions::PyOSError>();
        let traceback = py
            .import("traceback")
            .and_then(|tb| tb.call_method1("format_exception", (value.get_type(), value, error.traceback(py))))
            .and_then(|lines| lines.extract::<Vec<String>>())
            .map(|lines| lines.concat())
            .ok();
        TaskFailure { error_type, message: value.to_string(), traceback, transient }
    }
}

fn is_asyncio_timeout(py: Python<'_>, error: &PyErr) -> bool {
    py.import("asyncio").and_then(|a| a.getattr("TimeoutError")).is_ok_and(|t| error.value(py).is_instance(&t).unwrap_or(false))
}

/// `"<ExcType>: <message>"`, the type by its qualified name.
fn describe(py: Python<'_>, error: &PyErr) -> String {
    let value = error.value(py);
    let type_name = value.get_type().qualname().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".into());
    format!("{type_name}: {value}")
}

/// Runs `returned` to its end on this thread's event loop within `timeout`
/// if it is awaitable (an async task or callback); returns it otherwise.
fn await_if_needed<'py>(
    py: Python<'py>,
    attempt: &AttemptInfo<'_>,
    returned: Bound<'py, PyAny>,
    timeout: Duration,
) -> PyResult<Bound<'py, PyAny>> {
    // What a plain task returns (None or its Context) is never awaitable:
    // asking `inspect` for every attempt was a tenth of a no-op task's time.
    if returned.is_none() || returned.is_instance_of::<PyContext>() {
        return Ok(returned);
    }
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

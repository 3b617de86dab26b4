//! The exception hierarchy (defined in Python, in `errors.py`, so that each
//! class can also derive from the builtin the API raised before) and the
//! mapping of engine errors to it.

use pyo3::exceptions::{PyKeyboardInterrupt, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::engine::{Error, ErrorKind};

/// Every class `errors.py` defines, as exported.
const CLASSES: &[&str] = &[
    "CloacaError",
    "InvalidUrlError",
    "DatabaseUnavailableError",
    "SchemaVersionError",
    "DatabaseError",
    "InvalidWorkflowError",
    "ConfigurationError",
    "WorkflowNotFoundError",
    "ExecutionNotFoundError",
    "ExecutionStateError",
    "IdempotencyKeyError",
    "WaitTimeoutError",
    "InvalidScheduleError",
    "ScheduleNotFoundError",
    "TenantError",
    "RunnerShutDownError",
    "RunnerCreationError",
];

static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    MODULE
        .get_or_try_init(py, || {
            let code = pyo3::ffi::c_str!(include_str!("errors.py"));
            Ok::<_, PyErr>(PyModule::from_code(py, code, c"cloaca/errors.py", c"cloaca._errors")?.unbind())
        })
        .map(|m| m.bind(py))
}

/// Adds every exception class to the extension module `m`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let errors = module(m.py())?;
    for name in CLASSES {
        let class = errors.getattr(*name)?;
        // Shown as cloaca.X in tracebacks, whatever backend raised it.
        class.setattr("__module__", "cloaca")?;
        m.add(*name, class)?;
    }
    Ok(())
}

/// The class `name` of the hierarchy.
pub(crate) fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    Ok(module(py)?.getattr(name)?.cast_into::<PyType>()?)
}

/// An exception of class `name` with `message`.
pub(crate) fn raise(name: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| match class(py, name) {
        Ok(class) => PyErr::from_type(class, message),
        Err(e) => e,
    })
}

/// `error`, raised while a runner was being created, as a
/// `RunnerCreationError` ("Failed to create DefaultRunner: ..."), which is
/// also of the error's own class (a TypeError stays as it is).
pub(crate) fn creation_failure(error: PyErr) -> PyErr {
    Python::attach(|py| {
        let converted = module(py).and_then(|m| m.getattr("runner_creation_error")?.call1((error.value(py),)));
        match converted {
            Ok(value) => PyErr::from_value(value),
            Err(e) => e,
        }
    })
}

/// The exception class of an engine error's kind.
fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidUrl => "InvalidUrlError",
        ErrorKind::Unavailable => "DatabaseUnavailableError",
        ErrorKind::SchemaTooNew => "SchemaVersionError",
        ErrorKind::Database => "DatabaseError",
        ErrorKind::InvalidWorkflow => "InvalidWorkflowError",
        ErrorKind::InvalidSetting => "ConfigurationError",
        ErrorKind::InvalidArgument => "",
        ErrorKind::UnknownWorkflow => "WorkflowNotFoundError",
        ErrorKind::UnknownExecution => "ExecutionNotFoundError",
        ErrorKind::InvalidExecutionState => "ExecutionStateError",
        ErrorKind::IdempotencyConflict => "IdempotencyKeyError",
        ErrorKind::WaitTimedOut => "WaitTimeoutError",
        ErrorKind::InvalidSchedule => "InvalidScheduleError",
        ErrorKind::UnknownSchedule => "ScheduleNotFoundError",
        ErrorKind::InvalidInstance => "",
        #[cfg(feature = "postgres")]
        ErrorKind::InvalidTenant => "TenantError",
        ErrorKind::ShutDown => "RunnerShutDownError",
        ErrorKind::Interrupted => "",
    }
}

/// The Python exception for an engine error; the message is the error's sentence.
pub(crate) fn to_py(error: Error) -> PyErr {
    match error.kind() {
        // The Python layer raises the pending signal's exception instead.
        ErrorKind::Interrupted => PyKeyboardInterrupt::new_err(error.to_string()),
        // A malformed argument value raises a plain ValueError, as the
        // arguments checked in the Python layer do (see docs/api.md).
        // So does a refused workflow instance name or param.
        ErrorKind::InvalidArgument | ErrorKind::InvalidInstance => PyValueError::new_err(error.to_string()),
        kind => raise(class_name(kind), error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_the_mapping_names_is_defined_in_errors_py() {
        let source = include_str!("errors.py");
        for name in CLASSES {
            assert!(source.contains(&format!("class {name}(")), "{name} is defined in errors.py");
        }
        for kind in [ErrorKind::InvalidUrl, ErrorKind::Database, ErrorKind::ShutDown] {
            assert!(CLASSES.contains(&class_name(kind)), "{kind:?}");
        }
    }
}

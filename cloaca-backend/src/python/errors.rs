//! Maps engine errors to the Python exceptions the API contract names.

use pyo3::exceptions::{PyKeyError, PyKeyboardInterrupt, PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::PyErr;

use crate::engine::error::EngineError;

/// The Python exception for an engine error; the message is the error's sentence.
pub fn to_py(error: EngineError) -> PyErr {
    let message = error.to_string();
    match error {
        EngineError::InvalidUrl { .. }
        | EngineError::Unavailable { .. }
        | EngineError::SchemaTooNew { .. }
        | EngineError::InvalidWorkflow(_)
        | EngineError::InvalidConfig { .. }
        | EngineError::UnknownWorkflow { .. }
        | EngineError::InvalidSchedule(_)
        | EngineError::InvalidTenant(_)
        | EngineError::ShutDown => PyValueError::new_err(message),
        EngineError::UnknownExecution(_) | EngineError::UnknownSchedule(_) => PyKeyError::new_err(message),
        EngineError::WaitTimedOut { .. } => PyTimeoutError::new_err(message),
        // The Python layer raises the pending signal's exception instead.
        EngineError::Interrupted => PyKeyboardInterrupt::new_err(message),
        // A failure of an open database in mid-operation: not the caller's input.
        EngineError::Database { .. } => PyRuntimeError::new_err(message),
    }
}

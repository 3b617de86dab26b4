//! Background reports through Python's `logging`: the `cloaca` logger and
//! its children, with a `NullHandler`, so a program that configures no
//! logging sees nothing and one that does sees cloaca's records.

use std::sync::Arc;

use pyo3::prelude::*;

use crate::engine::{Level, Reporter};

/// Adds a `NullHandler` to the `cloaca` logger (a library's manners: the
/// program decides where records go).
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let logging = py.import("logging")?;
    let handler = logging.getattr("NullHandler")?.call0()?;
    logging.call_method1("getLogger", ("cloaca",))?.call_method1("addHandler", (handler,))?;
    Ok(())
}

/// A reporter that logs to `cloaca.runner`, for the runner's background threads.
pub(crate) fn runner_reporter() -> Reporter {
    Arc::new(|level, message| {
        // During interpreter shutdown there is nobody to tell.
        let _ = Python::try_attach(|py| -> PyResult<()> {
            let logger = py.import("logging")?.call_method1("getLogger", ("cloaca.runner",))?;
            let method = match level {
                Level::Warning => "warning",
                Level::Error => "error",
            };
            logger.call_method1(method, ("%s", message))?;
            Ok(())
        });
    })
}

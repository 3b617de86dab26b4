//! `var(name)` / `var_or(name, default)`: configuration values a workflow
//! reads from the environment variables `CLOACINA_VAR_<name>`, the prefix
//! the original bindings use, so that programs written for them find theirs.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;

/// The prefix of every variable's environment name.
const PREFIX: &str = "CLOACINA_VAR_";

/// The value of `CLOACINA_VAR_<name>`, read now (never cached); None when it
/// is unset, not UTF-8, or `name` cannot be part of an environment name.
fn lookup(name: &str) -> Option<String> {
    // NUL or '=' cannot occur in an environment variable's name; asking the
    // OS about one would be refused (or misread), so such a name is unset.
    if name.contains(['\0', '=']) {
        return None;
    }
    std::env::var(format!("{PREFIX}{name}")).ok()
}

/// The value of the environment variable `CLOACINA_VAR_<name>` (`name` as
/// given, case-sensitive), read at every call; KeyError when it is unset or
/// not valid UTF-8.
#[pyfunction]
pub(crate) fn var(name: &str) -> PyResult<String> {
    lookup(name).ok_or_else(|| PyKeyError::new_err(format!("required variable '{name}' not set (expected env var {PREFIX}{name})")))
}

/// The value of `CLOACINA_VAR_<name>`, or `default` when `var(name)` would raise.
#[pyfunction]
pub(crate) fn var_or(name: &str, default: &str) -> String {
    lookup(name).unwrap_or_else(|| default.to_string())
}

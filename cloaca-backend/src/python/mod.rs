//! The Python surface of cloaca: thin wrappers over `crate::engine`.
//!
//! [`register_api`] is the one place a symbol is registered. PyO3's
//! `add_function` / `add_class` / `add` append each name to the module's
//! `__all__`, and the wrapper package and the dispatcher export exactly that
//! list, so registering here is all it takes to reach `import cloaca`.
//! Backend-only symbols are registered under `#[cfg(feature = ...)]` and must
//! be declared in `[tool.cloaca.backend-only]` of the top-level pyproject.toml.

mod smoke;

use pyo3::prelude::*;

use crate::engine::backend::Backend;

/// Registers every public symbol of the API on the extension module `m`.
pub fn register_api(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("__backend__", Backend::CURRENT.name())?;
    m.add_function(wrap_pyfunction!(get_backend, m)?)?;
    m.add_function(wrap_pyfunction!(smoke::hello_world, m)?)?;
    m.add_class::<smoke::HelloClass>()?;
    Ok(())
}

/// Returns the name of the database backend this module was built for:
/// `"sqlite"` or `"postgres"`.
#[pyfunction]
fn get_backend() -> &'static str {
    Backend::CURRENT.name()
}

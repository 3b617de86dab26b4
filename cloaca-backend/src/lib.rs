//! cloaca's Rust core, compiled once per database backend.
//!
//! Exactly one of the cargo features `sqlite` and `postgres` selects the
//! backend. The extension module name (`cloaca_sqlite` / `cloaca_postgres`)
//! follows from it; both entry points register the same API through
//! [`python::register_api`], so a symbol is added in one place only.

#[cfg(all(feature = "sqlite", feature = "postgres"))]
compile_error!(
    "cloaca-backend: the features `sqlite` and `postgres` are mutually exclusive; \
     build one backend at a time (angreal cloaca build --backend sqlite|postgres)"
);

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!(
    "cloaca-backend: enable exactly one backend feature, `sqlite` or `postgres` \
     (angreal cloaca build --backend sqlite|postgres does this for you)"
);

mod engine;
mod python;

use pyo3::prelude::*;

/// Entry point of the `cloaca_sqlite` extension module.
#[cfg(feature = "sqlite")]
#[pymodule]
fn cloaca_sqlite(m: &Bound<'_, PyModule>) -> PyResult<()> {
    python::register_api(m)
}

/// Entry point of the `cloaca_postgres` extension module.
#[cfg(feature = "postgres")]
#[pymodule]
fn cloaca_postgres(m: &Bound<'_, PyModule>) -> PyResult<()> {
    python::register_api(m)
}

//! The workflow engine: a plain Rust library, independent of Python.
//!
//! The PyO3 layer in `crate::python` stays a thin shell over it so that the
//! engine's logic is tested with `cargo test` alone.

pub mod backend;

//! Smoke symbols: the smallest function and class that travel the whole chain
//! (Rust -> extension -> wrapper -> dispatcher), used to prove the pipeline.

use pyo3::prelude::*;

const GREETING: &str = "Hello from Cloaca backend!";
const CLASS_MESSAGE: &str = "Hello from HelloClass!";

/// Returns a fixed greeting; proves a function reaches `import cloaca`.
#[pyfunction]
pub fn hello_world() -> &'static str {
    GREETING
}

/// A minimal class; proves a class reaches `import cloaca`.
#[pyclass(module = "cloaca", frozen)]
pub struct HelloClass {
    message: String,
}

#[pymethods]
impl HelloClass {
    #[new]
    fn new() -> Self {
        HelloClass { message: CLASS_MESSAGE.to_owned() }
    }

    /// Returns the class's message.
    fn get_message(&self) -> &str {
        &self.message
    }

    fn __repr__(&self) -> String {
        format!("HelloClass(message='{}')", self.message)
    }
}

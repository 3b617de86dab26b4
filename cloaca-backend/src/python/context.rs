//! `cloaca.Context`: the JSON object a workflow's tasks share.

use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;

use super::json;
use crate::engine::Context as Map;

/// A JSON object shared by a workflow's tasks. Values must be JSON values:
/// str, int (64-bit), float (finite), bool, None, list and dict with str keys.
#[pyclass(name = "Context", module = "cloaca")]
#[derive(Clone, Default)]
pub struct PyContext {
    pub data: Map,
}

impl PyContext {
    pub fn from_map(data: Map) -> Self {
        PyContext { data }
    }

    /// A context from what a caller passes: a Context, a dict or None.
    pub fn from_argument(value: Option<&Bound<'_, PyAny>>) -> PyResult<Map> {
        let Some(value) = value.filter(|v| !v.is_none()) else {
            return Ok(Map::new());
        };
        if let Ok(ctx) = value.cast::<PyContext>() {
            return Ok(ctx.borrow().data.clone());
        }
        if let Ok(dict) = value.cast::<PyDict>() {
            return json::to_object(dict, "");
        }
        let type_name = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        Err(PyTypeError::new_err(format!("a context must be a cloaca.Context, a dict or None, not {type_name}")))
    }
}

fn missing(key: &str) -> PyErr {
    PyKeyError::new_err(key.to_string())
}

#[pymethods]
impl PyContext {
    /// Creates a context, optionally from a dict of JSON values.
    #[new]
    #[pyo3(signature = (data=None))]
    fn new(data: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        if let Some(d) = data.filter(|d| !d.is_none()) {
            if d.cast::<PyDict>().is_err() {
                let type_name = d.get_type().name().map(|n| n.to_string()).unwrap_or_default();
                return Err(PyTypeError::new_err(format!("Context(data) takes a dict or None, not {type_name}")));
            }
        }
        Ok(PyContext { data: Self::from_argument(data)? })
    }

    /// The value of `key`, or `default` when it is absent.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(&self, py: Python<'py>, key: &str, default: Option<Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
        match self.data.get(key) {
            Some(v) => json::to_py(py, v),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// Sets `key` to `value`, inserting or overwriting.
    fn set(&mut self, key: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let value = json::to_value(value, &key)?;
        self.data.insert(key, value);
        Ok(())
    }

    /// Adds `key`; raises ValueError if it already exists.
    fn insert(&mut self, key: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.data.contains_key(&key) {
            return Err(PyValueError::new_err(format!("key {key:?} already exists in the context; use set() or update() to change it")));
        }
        self.set(key, value)
    }

    /// Changes an existing `key`; raises KeyError if it does not exist.
    fn update(&mut self, key: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.data.contains_key(&key) {
            return Err(PyKeyError::new_err(format!("key {key:?} is not in the context; use set() or insert() to add it")));
        }
        self.set(key, value)
    }

    /// Removes `key` and returns its value, or None when it was absent.
    fn remove<'py>(&mut self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        match self.data.remove(key) {
            Some(v) => json::to_py(py, &v),
            None => Ok(py.None().into_bound(py)),
        }
    }

    fn __getitem__<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyAny>> {
        self.data.get(key).map(|v| json::to_py(py, v)).unwrap_or_else(|| Err(missing(key)))
    }

    fn __setitem__(&mut self, key: String, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set(key, value)
    }

    fn __delitem__(&mut self, key: &str) -> PyResult<()> {
        self.data.remove(key).map(|_| ()).ok_or_else(|| missing(key))
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> bool {
        key.extract::<String>().is_ok_and(|k| self.data.contains_key(&k))
    }

    fn __len__(&self) -> usize {
        self.data.len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // Iterate over a snapshot of the keys, as dict views do not allow
        // mutation during iteration either.
        let keys = PyList::new(py, self.data.keys())?;
        keys.as_any().try_iter().map(|it| it.into_any())
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyContext>().is_ok_and(|o| o.borrow().data == self.data)
    }

    /// A new dict with the context's contents.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        json::object_to_py(py, &self.data)
    }

    /// Sets every key of `data` (a dict of JSON values).
    fn update_from_dict(&mut self, data: &Bound<'_, PyDict>) -> PyResult<()> {
        let incoming = json::to_object(data, "")?;
        self.data.extend(incoming);
        Ok(())
    }

    /// The context as a JSON object text.
    fn to_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.data).map_err(|e| PyValueError::new_err(format!("cannot write the context as JSON: {e}")))
    }

    /// A context from a JSON object text; ValueError for invalid JSON or a non-object.
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Self> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(data)) => Ok(PyContext { data }),
            Ok(other) => {
                let kind = match other {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                Err(PyValueError::new_err(format!("Context.from_json needs a JSON object, got {kind}")))
            }
            Err(e) => Err(PyValueError::new_err(format!("Context.from_json got invalid JSON: {e}"))),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("Context({})", self.to_dict(py)?.repr()?))
    }
}

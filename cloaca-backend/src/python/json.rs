//! Conversion between Python objects and JSON values, with errors that name
//! the offending key and type.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// Deeper nesting than this is refused: it is almost always a cycle, and
/// serde_json reads back at most 128 levels, so everything accepted here can
/// be stored and loaded again.
const MAX_DEPTH: usize = 120;

/// A JSON value from a Python object; `path` names where it sits (`key`, `key[2].inner`).
pub fn to_value(obj: &Bound<'_, PyAny>, path: &str) -> PyResult<Value> {
    to_value_at(obj, path, 0)
}

/// A JSON object from a Python dict with str keys.
pub fn to_object(dict: &Bound<'_, PyDict>, path: &str) -> PyResult<Map<String, Value>> {
    object_at(dict, path, 0)
}

fn not_json(path: &str, obj: &Bound<'_, PyAny>, why: &str) -> PyErr {
    let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    PyTypeError::new_err(format!(
        "context value at {path:?} has type {type_name}, which {why}; a Context holds only JSON values: \
         str, int, float, bool, None, list and dict with str keys"
    ))
}

fn to_value_at(obj: &Bound<'_, PyAny>, path: &str, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyTypeError::new_err(format!(
            "context value at {path:?} is nested more than {MAX_DEPTH} levels deep (does it contain itself?)"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: True is an int in Python but must stay a bool.
    if let Ok(b) = obj.cast_exact::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Ok(Value::from(v));
        }
        if let Ok(v) = i.extract::<u64>() {
            return Ok(Value::from(v));
        }
        return Err(not_json(path, obj, "holds an integer outside the 64-bit range JSON numbers keep exactly (-2**63 .. 2**64-1)"));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| not_json(path, obj, &format!("holds {v}, which JSON cannot represent")));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return list.iter().enumerate().map(|(i, item)| to_value_at(&item, &format!("{path}[{i}]"), depth + 1)).collect();
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return tuple.iter().enumerate().map(|(i, item)| to_value_at(&item, &format!("{path}[{i}]"), depth + 1)).collect();
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        return object_at(dict, path, depth + 1).map(Value::Object);
    }
    Err(not_json(path, obj, "is not JSON-representable"))
}

fn object_at(dict: &Bound<'_, PyDict>, path: &str, depth: usize) -> PyResult<Map<String, Value>> {
    let mut map = Map::new();
    for (key, value) in dict.iter() {
        let Ok(key) = key.cast::<PyString>() else {
            let key_type = key.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
            return Err(PyTypeError::new_err(format!(
                "context key {} at {path:?} has type {key_type}; JSON object keys must be str",
                key.repr().map(|r| r.to_string()).unwrap_or_default()
            )));
        };
        let key = key.to_cow()?.into_owned();
        let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let value = to_value_at(&value, &child, depth)?;
        map.insert(key, value);
    }
    Ok(map)
}

/// The Python object for a JSON value.
pub fn to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => object_to_py(py, map)?.into_any(),
    })
}

/// A Python dict for a JSON object.
pub fn object_to_py<'py>(py: Python<'py>, map: &Map<String, Value>) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (k, v) in map {
        dict.set_item(k, to_py(py, v)?)?;
    }
    Ok(dict)
}

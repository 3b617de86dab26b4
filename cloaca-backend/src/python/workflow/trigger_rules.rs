//! `trigger_rules=`: the builders (`context_value`, `task_success`, ...,
//! `all_of`, `always`), which return plain dicts, and the reading of such a
//! dict into the engine's rule when a task is decorated.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use serde_json::{json, Value};

use crate::engine::{Operator, TriggerRule};
use crate::python::json::{to_py, to_value};

/// A JSON value from a builder's argument; `what` names it in the error.
fn json_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Value> {
    to_value(obj, what).map_err(|e| PyValueError::new_err(format!("{what} not JSON-serializable: {}", e.value(obj.py()))))
}

fn dict<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyDict>> {
    Ok(to_py(py, value)?.cast_into::<PyDict>()?)
}

/// A condition on a context key of the task's input: true when the value
/// under `key` compares to `value` by `operator` (Equals, NotEquals,
/// GreaterThan, LessThan, Contains, NotContains, Exists, NotExists, in any
/// case, with or without underscores, or `==`, `eq`, `!=`, `ne`, `>`, `gt`,
/// `<`, `lt`). `value` is required and ignored by Exists / NotExists.
#[pyfunction]
pub fn context_value<'py>(py: Python<'py>, key: &str, operator: &str, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let value = json_of(&value, "context_value: value")?;
    let Some(op) = Operator::from_alias(operator) else {
        let normalised: String = operator.to_lowercase().chars().filter(|&c| c != '_').collect();
        return Err(PyValueError::new_err(format!(
            "context_value: unknown operator {operator:?} (read as {normalised:?}); accepted: {} (any case, \
             underscores ignored), or ==, eq, !=, ne, >, gt, <, lt",
            Operator::accepted()
        )));
    };
    dict(py, &json!({"type": "ContextValue", "key": key, "operator": op.name(), "value": value}))
}

/// A condition true when the named task completed.
#[pyfunction]
pub fn task_success<'py>(py: Python<'py>, task_name: &str) -> PyResult<Bound<'py, PyDict>> {
    dict(py, &json!({"type": "TaskSuccess", "task_name": task_name}))
}

/// A condition true when the named task failed (its retries used up).
#[pyfunction]
pub fn task_failed<'py>(py: Python<'py>, task_name: &str) -> PyResult<Bound<'py, PyDict>> {
    dict(py, &json!({"type": "TaskFailed", "task_name": task_name}))
}

/// A condition true when the named task was skipped (for any reason).
#[pyfunction]
pub fn task_skipped<'py>(py: Python<'py>, task_name: &str) -> PyResult<Bound<'py, PyDict>> {
    dict(py, &json!({"type": "TaskSkipped", "task_name": task_name}))
}

fn combined<'py>(py: Python<'py>, kind: &str, conditions: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyDict>> {
    let mut list = Vec::with_capacity(conditions.len());
    for (i, condition) in conditions.iter().enumerate() {
        list.push(json_of(&condition, &format!("trigger rule condition {i}"))?);
    }
    dict(py, &json!({"type": kind, "conditions": list}))
}

/// A rule true when every condition is (and when there are none).
#[pyfunction]
#[pyo3(signature = (*conditions))]
pub fn all_of<'py>(py: Python<'py>, conditions: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyDict>> {
    combined(py, "All", conditions)
}

/// A rule true when at least one condition is (never, when there are none).
#[pyfunction]
#[pyo3(signature = (*conditions))]
pub fn any_of<'py>(py: Python<'py>, conditions: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyDict>> {
    combined(py, "Any", conditions)
}

/// A rule true when no condition is (and when there are none).
#[pyfunction]
#[pyo3(signature = (*conditions))]
pub fn none_of<'py>(py: Python<'py>, conditions: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyDict>> {
    combined(py, "None", conditions)
}

/// The rule that always holds: the task runs once every dependency has
/// finished, whatever their outcome.
#[pyfunction]
pub fn always(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    dict(py, &json!({"type": "Always"}))
}

/// Reads `@cloaca.task(trigger_rules=...)`.
pub(crate) fn extract_rule(obj: &Bound<'_, PyAny>) -> PyResult<TriggerRule> {
    let value = json_of(obj, "@cloaca.task(trigger_rules=...): the rule is")?;
    TriggerRule::from_json(&value).map_err(|why| {
        PyValueError::new_err(format!(
            "@cloaca.task(trigger_rules=...): invalid trigger rule: {why}. Build one with cloaca.always(), \
             cloaca.all_of(...), cloaca.any_of(...), cloaca.none_of(...) or a single condition \
             (cloaca.task_success / task_failed / task_skipped / context_value)"
        ))
    })
}

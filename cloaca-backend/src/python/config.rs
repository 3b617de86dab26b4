//! `DefaultRunnerConfig`: every runner setting, described once in [`FIELDS`]
//! (name, kind, default, meaning); the constructor, attributes, `to_dict` and
//! validation all read that table.

use std::collections::BTreeMap;
use std::time::Duration;

use pyo3::exceptions::{PyAttributeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt};

use crate::engine::runner::RunnerConfig;
use crate::engine::scheduler::CronConfig;

/// What values a field takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// An int above 0.
    PositiveInt,
    /// An int or float above 0 (seconds).
    PositiveSeconds,
    /// Positive seconds, or None for "no limit".
    OptionalSeconds,
    /// An int or float above 0 (minutes).
    PositiveMinutes,
    Bool,
}

impl Kind {
    fn accepted(self) -> &'static str {
        match self {
            Kind::PositiveInt => "an int above 0",
            Kind::PositiveSeconds => "a number of seconds above 0",
            Kind::OptionalSeconds => "a number of seconds above 0, or None for no limit",
            Kind::PositiveMinutes => "a number of minutes above 0",
            Kind::Bool => "True or False",
        }
    }
}

/// A field's default, as Python will see it.
#[derive(Clone, Copy, Debug)]
enum Initial {
    Int(i64),
    Bool(bool),
}

struct Field {
    name: &'static str,
    kind: Kind,
    default: Initial,
}

const fn field(name: &'static str, kind: Kind, default: Initial) -> Field {
    Field { name, kind, default }
}

/// Every setting, in the order `to_dict` lists them.
const FIELDS: &[Field] = &[
    field("max_concurrent_tasks", Kind::PositiveInt, Initial::Int(4)),
    field("executor_poll_interval_ms", Kind::PositiveInt, Initial::Int(100)),
    field("scheduler_poll_interval_ms", Kind::PositiveInt, Initial::Int(100)),
    field("task_timeout_seconds", Kind::PositiveSeconds, Initial::Int(300)),
    field("pipeline_timeout_seconds", Kind::OptionalSeconds, Initial::Int(3600)),
    field("db_pool_size", Kind::PositiveInt, Initial::Int(10)),
    field("enable_recovery", Kind::Bool, Initial::Bool(true)),
    field("enable_cron_scheduling", Kind::Bool, Initial::Bool(true)),
    field("cron_poll_interval_seconds", Kind::PositiveSeconds, Initial::Int(30)),
    field("cron_max_catchup_executions", Kind::PositiveInt, Initial::Int(100)),
    field("cron_enable_recovery", Kind::Bool, Initial::Bool(true)),
    field("cron_recovery_interval_seconds", Kind::PositiveSeconds, Initial::Int(300)),
    // A float is accepted beyond the original's int (tests use seconds).
    field("cron_lost_threshold_minutes", Kind::PositiveMinutes, Initial::Int(10)),
    field("cron_max_recovery_age_seconds", Kind::PositiveSeconds, Initial::Int(86400)),
    field("cron_max_recovery_attempts", Kind::PositiveInt, Initial::Int(3)),
    // Beyond the original API: how long a claimed task's lease lasts.
    field("task_lease_seconds", Kind::PositiveSeconds, Initial::Int(30)),
];

fn find(name: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.name == name)
}

/// Checks `value` for `field`; returns it as stored.
fn validate(py: Python<'_>, field: &Field, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let shown = value.repr().map(|r| r.to_string()).unwrap_or_default();
    let wrong_type = || {
        let type_name = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        PyTypeError::new_err(format!("{}={shown} has type {type_name}; {} must be {}", field.name, field.name, field.kind.accepted()))
    };
    let out_of_range =
        || PyValueError::new_err(format!("{}={shown} is not accepted: {} must be {}", field.name, field.name, field.kind.accepted()));
    let is_bool = value.is_instance_of::<PyBool>();
    match field.kind {
        Kind::Bool => {
            if !is_bool {
                return Err(wrong_type());
            }
        }
        Kind::PositiveInt => {
            if is_bool || !value.is_instance_of::<PyInt>() {
                return Err(wrong_type());
            }
            if value.extract::<i64>().map_or(true, |v| v <= 0) {
                return Err(out_of_range());
            }
        }
        Kind::PositiveSeconds | Kind::OptionalSeconds | Kind::PositiveMinutes => {
            if value.is_none() && field.kind == Kind::OptionalSeconds {
                return Ok(py.None());
            }
            if is_bool || !(value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>()) {
                return Err(wrong_type());
            }
            let seconds = value.extract::<f64>().map_err(|_| out_of_range())?;
            if !(seconds.is_finite() && seconds > 0.0 && seconds < 1e12) {
                return Err(out_of_range());
            }
        }
    }
    Ok(value.clone().unbind())
}

/// Settings of a `DefaultRunner`. Every field is optional in the
/// constructor and readable and writable as an attribute.
#[pyclass(name = "DefaultRunnerConfig", module = "cloaca")]
pub struct PyDefaultRunnerConfig {
    values: BTreeMap<&'static str, Py<PyAny>>,
}

impl PyDefaultRunnerConfig {
    fn defaults(py: Python<'_>) -> PyResult<Self> {
        let mut values = BTreeMap::new();
        for f in FIELDS {
            let value = match f.default {
                Initial::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
                Initial::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
            };
            values.insert(f.name, value);
        }
        Ok(PyDefaultRunnerConfig { values })
    }

    fn seconds(&self, py: Python<'_>, name: &str) -> PyResult<Option<Duration>> {
        let value = self.values[name].bind(py);
        if value.is_none() {
            return Ok(None);
        }
        Ok(Some(Duration::from_secs_f64(value.extract::<f64>()?)))
    }

    /// A field that cannot be None (validation guarantees a positive number).
    fn required_seconds(&self, py: Python<'_>, name: &str) -> PyResult<Duration> {
        Ok(Duration::from_secs_f64(self.values[name].bind(py).extract::<f64>()?))
    }

    fn int(&self, py: Python<'_>, name: &str) -> PyResult<i64> {
        self.values[name].bind(py).extract()
    }

    fn flag(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        self.values[name].bind(py).extract()
    }

    /// The engine's view of these settings.
    pub fn to_engine(&self, py: Python<'_>) -> PyResult<RunnerConfig> {
        Ok(RunnerConfig {
            max_concurrent_tasks: self.int(py, "max_concurrent_tasks")? as usize,
            poll_interval: Duration::from_millis(self.int(py, "executor_poll_interval_ms")? as u64),
            task_timeout: self.required_seconds(py, "task_timeout_seconds")?,
            pipeline_timeout: self.seconds(py, "pipeline_timeout_seconds")?,
            enable_recovery: self.flag(py, "enable_recovery")?,
            lease: self.required_seconds(py, "task_lease_seconds")?,
            cron: CronConfig {
                enabled: self.flag(py, "enable_cron_scheduling")?,
                poll_interval: self.required_seconds(py, "cron_poll_interval_seconds")?,
                max_catchup: self.int(py, "cron_max_catchup_executions")? as usize,
                enable_recovery: self.flag(py, "cron_enable_recovery")?,
                recovery_interval: self.required_seconds(py, "cron_recovery_interval_seconds")?,
                lost_threshold: self.required_seconds(py, "cron_lost_threshold_minutes")? * 60,
                max_recovery_age: self.required_seconds(py, "cron_max_recovery_age_seconds")?,
                max_recovery_attempts: self.int(py, "cron_max_recovery_attempts")?,
            },
        })
    }

    pub fn pool_size(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.int(py, "db_pool_size")? as usize)
    }

    pub fn default_config(py: Python<'_>) -> PyResult<Self> {
        Self::defaults(py)
    }
}

#[pymethods]
impl PyDefaultRunnerConfig {
    /// Settings with defaults; pass any field as a keyword to change it.
    #[new]
    #[pyo3(signature = (**kwargs))]
    fn new(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut config = Self::defaults(py)?;
        for (key, value) in kwargs.into_iter().flat_map(|k| k.iter()) {
            let key: String = key.extract()?;
            let field = find(&key).ok_or_else(|| {
                let names: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
                PyTypeError::new_err(format!("DefaultRunnerConfig has no field {key:?}; its fields are: {}", names.join(", ")))
            })?;
            config.values.insert(field.name, validate(py, field, &value)?);
        }
        Ok(config)
    }

    /// The default settings.
    #[staticmethod]
    fn default(py: Python<'_>) -> PyResult<Self> {
        Self::defaults(py)
    }

    fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        match find(name) {
            Some(f) => Ok(self.values[f.name].clone_ref(py)),
            None => Err(PyAttributeError::new_err(format!("DefaultRunnerConfig has no field {name:?}"))),
        }
    }

    fn __setattr__(&mut self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let field = find(name).ok_or_else(|| PyAttributeError::new_err(format!("DefaultRunnerConfig has no field {name:?}")))?;
        self.values.insert(field.name, validate(py, field, value)?);
        Ok(())
    }

    fn __dir__(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = FIELDS.iter().map(|f| f.name).collect();
        names.extend(["to_dict", "default"]);
        names
    }

    /// Every field and its value, in declaration order.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for f in FIELDS {
            dict.set_item(f.name, self.values[f.name].bind(py))?;
        }
        Ok(dict)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let parts: PyResult<Vec<String>> =
            FIELDS.iter().map(|f| Ok(format!("{}={}", f.name, self.values[f.name].bind(py).repr()?))).collect();
        Ok(format!("DefaultRunnerConfig({})", parts?.join(", ")))
    }
}

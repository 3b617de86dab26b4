//! `DefaultRunnerConfig`: the engine's runner settings table
//! (`crate::engine::SETTINGS`) as a Python object. The constructor,
//! attributes, `to_dict()`, `settings()` and validation all read that table.

use std::collections::BTreeMap;

use pyo3::exceptions::{PyAttributeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList};

use crate::engine::{find_setting, setting_aliases, Backend, Refused, RunnerConfig, SettingValue, SETTINGS};
use crate::python::errors::to_py;

/// A Python value as a setting value; None for a type no setting takes.
fn setting_value(value: &Bound<'_, PyAny>) -> Option<SettingValue> {
    if value.is_none() {
        Some(SettingValue::None)
    } else if value.is_instance_of::<PyBool>() {
        value.extract().ok().map(SettingValue::Bool)
    } else if value.is_instance_of::<PyInt>() {
        // An int beyond 64 bits is out of every setting's range, as i64::MIN is.
        Some(SettingValue::Int(value.extract().unwrap_or(i64::MIN)))
    } else if value.is_instance_of::<PyFloat>() {
        value.extract().ok().map(SettingValue::Number)
    } else {
        None
    }
}

/// The value as Python shows it.
fn to_python(py: Python<'_>, value: SettingValue) -> PyResult<Py<PyAny>> {
    Ok(match value {
        SettingValue::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        SettingValue::Number(f) => f.into_pyobject(py)?.into_any().unbind(),
        SettingValue::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
        SettingValue::None => py.None(),
    })
}

/// Checks `value` for the setting `name`; returns it as stored.
fn validate(name: &'static str, value: &Bound<'_, PyAny>) -> PyResult<(SettingValue, Py<PyAny>)> {
    let setting = find_setting(name).expect("a name of the table");
    let shown = value.repr().map(|r| r.to_string()).unwrap_or_default();
    let wrong_type = || {
        let type_name = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        PyTypeError::new_err(format!("{name}={shown} has type {type_name}; {name} must be {}", setting.kind.accepted()))
    };
    let checked = setting_value(value).ok_or_else(wrong_type)?;
    match setting.check_as(name, checked, &shown) {
        Ok(()) => Ok((checked, value.clone().unbind())),
        Err(Refused::WrongType) => Err(wrong_type()),
        Err(Refused::OutOfRange(error)) => Err(to_py(error)),
    }
}

/// Settings of a `DefaultRunner`. Every field is optional in the
/// constructor and readable and writable as an attribute.
#[pyclass(name = "DefaultRunnerConfig", module = "cloaca")]
pub(crate) struct PyDefaultRunnerConfig {
    /// What Python sees (the objects as given) and what the engine gets.
    values: BTreeMap<&'static str, (SettingValue, Py<PyAny>)>,
}

impl PyDefaultRunnerConfig {
    fn defaults(py: Python<'_>) -> PyResult<Self> {
        let mut values = BTreeMap::new();
        for s in SETTINGS {
            values.insert(s.name, (s.current_default(), to_python(py, s.current_default())?));
        }
        Ok(PyDefaultRunnerConfig { values })
    }

    /// The engine's view of these settings.
    pub(crate) fn to_engine(&self, _py: Python<'_>) -> PyResult<RunnerConfig> {
        let values = self.values.iter().map(|(name, (value, _))| (*name, *value)).collect();
        Ok(RunnerConfig::from_values(&values))
    }

    pub(crate) fn default_config(py: Python<'_>) -> PyResult<Self> {
        Self::defaults(py)
    }

    /// A copy of these settings.
    pub(crate) fn clone_config(&self, py: Python<'_>) -> PyResult<Self> {
        Ok(PyDefaultRunnerConfig { values: self.values.iter().map(|(k, (v, o))| (*k, (*v, o.clone_ref(py)))).collect() })
    }

    fn set(&mut self, name: &str, value: &Bound<'_, PyAny>, unknown: impl FnOnce() -> PyErr) -> PyResult<()> {
        let setting = find_setting(name).ok_or_else(unknown)?;
        let used = setting_aliases(setting.name).find(|alias| *alias == name).unwrap_or(setting.name);
        self.values.insert(setting.name, validate(used, value)?);
        Ok(())
    }
}

#[pymethods]
impl PyDefaultRunnerConfig {
    /// Settings with defaults; pass any field as a keyword to change it.
    #[new]
    #[pyo3(signature = (**kwargs))]
    fn new(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut config = Self::defaults(py)?;
        // The keyword (of a setting's names) that set each setting, and its value.
        let mut given: BTreeMap<&'static str, (String, Bound<'_, PyAny>)> = BTreeMap::new();
        for (key, value) in kwargs.into_iter().flat_map(|k| k.iter()) {
            let key: String = key.extract()?;
            if let Some(setting) = find_setting(&key) {
                if let Some((earlier, earlier_value)) = given.get(setting.name) {
                    if !earlier_value.eq(&value)? {
                        return Err(PyValueError::new_err(format!(
                            "{earlier}={} and {key}={} name the same setting with different values: give one of them",
                            earlier_value.repr()?,
                            value.repr()?
                        )));
                    }
                }
                given.insert(setting.name, (key.clone(), value.clone()));
            }
            config.set(&key, &value, || {
                let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
                PyTypeError::new_err(format!("DefaultRunnerConfig has no field {key:?}; its fields are: {}", names.join(", ")))
            })?;
        }
        Ok(config)
    }

    /// The default settings.
    #[staticmethod]
    fn default(py: Python<'_>) -> PyResult<Self> {
        Self::defaults(py)
    }

    fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        match find_setting(name) {
            Some(s) => Ok(self.values[s.name].1.clone_ref(py)),
            None => Err(PyAttributeError::new_err(format!("DefaultRunnerConfig has no field {name:?}"))),
        }
    }

    fn __setattr__(&mut self, py: Python<'_>, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let _ = py;
        self.set(name, value, || PyAttributeError::new_err(format!("DefaultRunnerConfig has no field {name:?}")))
    }

    fn __dir__(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = SETTINGS.iter().flat_map(|s| std::iter::once(s.name).chain(setting_aliases(s.name))).collect();
        names.extend(["to_dict", "default", "settings"]);
        names
    }

    /// Every setting of the table: a list of dicts with its `name`, Python
    /// `type`, `default` (on this backend), `defaults` (by backend), its
    /// `aliases`, the values it `accepted` and its `doc` line, in the order
    /// of `to_dict()` (an alias is listed with its setting, not as a row).
    #[staticmethod]
    fn settings(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
        let list = PyList::empty(py);
        for s in SETTINGS {
            let entry = PyDict::new(py);
            entry.set_item("name", s.name)?;
            entry.set_item("type", s.kind.python_type())?;
            entry.set_item("default", to_python(py, s.current_default())?)?;
            let defaults = PyDict::new(py);
            for backend in [Backend::Sqlite, Backend::Postgres] {
                defaults.set_item(backend.name(), to_python(py, s.default_on(backend))?)?;
            }
            entry.set_item("defaults", defaults)?;
            entry.set_item("aliases", setting_aliases(s.name).collect::<Vec<_>>())?;
            entry.set_item("accepted", s.kind.accepted())?;
            entry.set_item("doc", s.doc)?;
            list.append(entry)?;
        }
        Ok(list)
    }

    /// Every field and its value, in declaration order; an alias follows its
    /// setting, with the same value.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for s in SETTINGS {
            dict.set_item(s.name, self.values[s.name].1.bind(py))?;
            for alias in setting_aliases(s.name) {
                dict.set_item(alias, self.values[s.name].1.bind(py))?;
            }
        }
        Ok(dict)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let parts: PyResult<Vec<String>> =
            SETTINGS.iter().map(|s| Ok(format!("{}={}", s.name, self.values[s.name].1.bind(py).repr()?))).collect();
        Ok(format!("DefaultRunnerConfig({})", parts?.join(", ")))
    }
}

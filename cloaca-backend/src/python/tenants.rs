//! `DatabaseAdmin`, `TenantConfig` and `TenantCredentials` (postgres only):
//! thin wrappers over the engine's tenant administration.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::engine::{validate_name, validate_password, DatabaseAdmin, DatabaseUrl, TenantCredentials};
use crate::python::errors::to_py;

/// What `DatabaseAdmin.create_tenant` makes: a schema and the login role
/// that owns it. The names are checked here, before any SQL is sent.
#[pyclass(name = "TenantConfig", module = "cloaca", frozen)]
pub struct PyTenantConfig {
    #[pyo3(get)]
    schema_name: String,
    #[pyo3(get)]
    username: String,
    /// None: create_tenant generates a strong one.
    #[pyo3(get)]
    password: Option<String>,
}

#[pymethods]
impl PyTenantConfig {
    #[new]
    #[pyo3(signature = (schema_name, username, password=None))]
    fn new(schema_name: &str, username: &str, password: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        validate_name("schema name", schema_name).map_err(to_py)?;
        validate_name("username", username).map_err(to_py)?;
        let password = match password {
            Some(p) if !p.is_none() => {
                let text: String = p.extract().map_err(|_| {
                    let type_name = p.get_type().name().map(|n| n.to_string()).unwrap_or_default();
                    PyTypeError::new_err(format!("password has type {type_name}; give a str, or None to generate one"))
                })?;
                validate_password(&text).map_err(to_py)?;
                Some(text)
            }
            _ => None,
        };
        Ok(PyTenantConfig { schema_name: schema_name.to_string(), username: username.to_string(), password })
    }

    fn __repr__(&self) -> String {
        let password = if self.password.is_some() { "'***'" } else { "None" };
        format!("TenantConfig(schema_name={:?}, username={:?}, password={password})", self.schema_name, self.username)
    }
}

/// A created tenant: its names, password and a URL to connect as it.
#[pyclass(name = "TenantCredentials", module = "cloaca", frozen)]
pub struct PyTenantCredentials {
    inner: TenantCredentials,
}

#[pymethods]
impl PyTenantCredentials {
    #[getter]
    fn username(&self) -> &str {
        &self.inner.username
    }

    #[getter]
    fn password(&self) -> &str {
        &self.inner.password
    }

    #[getter]
    fn schema_name(&self) -> &str {
        &self.inner.schema_name
    }

    /// The admin's URL with the tenant's user and password: pass it with
    /// `schema_name` to `DefaultRunner.with_schema`.
    #[getter]
    fn connection_string(&self) -> &str {
        &self.inner.connection_string
    }

    fn __repr__(&self) -> String {
        format!("TenantCredentials(schema_name={:?}, username={:?}, password='***')", self.inner.schema_name, self.inner.username)
    }
}

/// Creates and removes tenants, connected as a role that may create roles
/// and schemas in the database.
#[pyclass(name = "DatabaseAdmin", module = "cloaca", frozen)]
pub struct PyDatabaseAdmin {
    admin: DatabaseAdmin,
}

#[pymethods]
impl PyDatabaseAdmin {
    #[new]
    fn new(py: Python<'_>, admin_database_url: &str) -> PyResult<Self> {
        let url = match DatabaseUrl::parse(admin_database_url).map_err(to_py)? {
            DatabaseUrl::Postgres(url) => url,
            #[allow(unreachable_patterns)]
            _ => return Err(PyValueError::new_err(format!("DatabaseAdmin needs a postgresql:// URL, not {admin_database_url:?}"))),
        };
        let admin = py.detach(|| DatabaseAdmin::connect(&url)).map_err(to_py)?;
        Ok(PyDatabaseAdmin { admin })
    }

    /// Creates the tenant's schema and login role in one transaction and
    /// returns its credentials; ValueError (nothing created) when either exists.
    fn create_tenant(&self, py: Python<'_>, config: &Bound<'_, PyAny>) -> PyResult<PyTenantCredentials> {
        let config = config.cast::<PyTenantConfig>().map_err(|_| {
            let type_name = config.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            PyTypeError::new_err(format!("create_tenant needs a cloaca.TenantConfig, not {type_name}"))
        })?;
        let config = config.get();
        let inner =
            py.detach(|| self.admin.create_tenant(&config.schema_name, &config.username, config.password.as_deref())).map_err(to_py)?;
        Ok(PyTenantCredentials { inner })
    }

    /// Drops a tenant's schema (with all its tables) and its role; refuses
    /// with ValueError, dropping nothing, a pair create_tenant did not make.
    fn remove_tenant(&self, py: Python<'_>, schema_name: &str, username: &str) -> PyResult<()> {
        py.detach(|| self.admin.remove_tenant(schema_name, username)).map_err(to_py)
    }

    fn __repr__(&self) -> String {
        format!("DatabaseAdmin({:?})", self.admin.target())
    }
}

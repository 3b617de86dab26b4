//! `DefaultRunner`: a runner over one database, and the registry of open
//! runners that interpreter exit shuts down.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::config::PyDefaultRunnerConfig;
use super::cron;
use super::records::{PyExecutionEvent, PyTaskRecord};
use super::results::{PyExecutionHandle, PyPipelineResult, SignalCheck};
use super::triggers;
use crate::engine::{
    lock, now_ms, redact, Backend, DatabaseUrl, Error, ExecutionStatus, PictureFormat, PruneFilter, Registry, Result as EngineResult,
    Runner, Store,
};
use crate::python::context::PyContext;
use crate::python::errors::{creation_failure, raise, to_py};
use crate::python::logging;

/// Runners not yet shut down, so that interpreter exit can stop them
/// before Python is torn down under their worker threads.
fn live_runners() -> &'static Mutex<Vec<Weak<Runner>>> {
    static LIVE: OnceLock<Mutex<Vec<Weak<Runner>>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(Vec::new()))
}

/// Shuts down every runner still open; registered with `atexit`.
#[pyfunction]
pub(crate) fn shutdown_all_runners(py: Python<'_>) {
    let runners: Vec<Arc<Runner>> = {
        let mut live = lock(live_runners());
        let found = live.iter().filter_map(Weak::upgrade).collect();
        live.clear();
        found
    };
    py.detach(|| runners.iter().for_each(|r| r.shutdown()));
}

/// Runs registered workflows durably against one database.
#[pyclass(name = "DefaultRunner", module = "cloaca")]
pub struct PyDefaultRunner {
    runner: Mutex<Option<Arc<Runner>>>,
    database_url: String,
}

impl PyDefaultRunner {
    fn open(py: Python<'_>, database_url: &str, schema: Option<&str>, config: &PyDefaultRunnerConfig) -> PyResult<Self> {
        let url = DatabaseUrl::parse(database_url).map_err(to_py)?;
        let engine_config = config.to_engine(py)?;
        let runner = py
            .detach(|| -> EngineResult<Runner> {
                let store = Arc::new(Store::open(&url, schema, engine_config.pool_size, engine_config.database_outage_timeout, now_ms())?);
                Runner::start(store, Registry::global(), engine_config, logging::runner_reporter())
            })
            .map_err(to_py)?;
        let runner = Arc::new(runner);
        lock(live_runners()).push(Arc::downgrade(&runner));
        Ok(PyDefaultRunner { runner: Mutex::new(Some(runner)), database_url: database_url.to_string() })
    }

    fn runner(&self) -> PyResult<Arc<Runner>> {
        lock(&self.runner).clone().ok_or_else(|| to_py(Error::ShutDown))
    }

    /// The runner, for a call that logs: the loggers' levels are read
    /// first, so a level set just before the call applies to its records.
    fn logging_runner(&self, py: Python<'_>) -> PyResult<Arc<Runner>> {
        let runner = self.runner()?;
        logging::refresh_levels(py);
        Ok(runner)
    }
}

#[pymethods]
impl PyDefaultRunner {
    /// Opens (creating or migrating) the database at `database_url` and
    /// starts the runner's workers, which also resume interrupted executions.
    #[new]
    fn new(py: Python<'_>, database_url: &str) -> PyResult<Self> {
        Self::open(py, database_url, None, &PyDefaultRunnerConfig::default_config(py)?).map_err(creation_failure)
    }

    /// Like `DefaultRunner(database_url)`, with settings.
    #[staticmethod]
    fn with_config(py: Python<'_>, database_url: &str, config: &Bound<'_, PyAny>) -> PyResult<Self> {
        let config = runner_config(config, "with_config")?;
        Self::open(py, database_url, None, &config.borrow()).map_err(creation_failure)
    }

    /// Like `DefaultRunner(database_url)` with every table in the Postgres
    /// schema `schema` (created if missing): runners of different schemas
    /// share a database without seeing each other's state. Postgres only.
    #[staticmethod]
    #[pyo3(signature = (database_url, schema, config=None))]
    fn with_schema(py: Python<'_>, database_url: &str, schema: &str, config: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let config = match config {
            Some(config) => runner_config(config, "with_schema")?.borrow().clone_config(py)?,
            None => PyDefaultRunnerConfig::default_config(py)?,
        };
        let create = || {
            // Before any connection: the backend, then the name, are the caller's first problems.
            if Backend::CURRENT != Backend::Postgres {
                return Err(PyValueError::new_err(format!(
                    "with_schema: schema multi-tenancy requires PostgreSQL (the postgres backend: pip install cloaca[postgres]); \
                     this is the {} backend, whose database holds one set of tables: use a separate database file per tenant instead",
                    Backend::CURRENT.name()
                )));
            }
            if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
                return Err(PyValueError::new_err(format!(
                    "with_schema: schema multi-tenancy requires PostgreSQL: {:?} is not a postgres:// or postgresql:// URL",
                    redact(database_url)
                )));
            }
            let schema = schema_name(schema)?;
            Self::open(py, database_url, Some(&schema), &config)
        };
        create().map_err(creation_failure)
    }

    /// Runs the registered workflow `workflow_name` on `context` (a Context,
    /// a dict or None) and returns its result once it has finished. With an
    /// `idempotency_key` that already started this workflow (from any
    /// process), waits for and returns that execution instead of starting
    /// another.
    #[pyo3(signature = (workflow_name, context=None, idempotency_key=None))]
    fn execute(
        &self,
        py: Python<'_>,
        workflow_name: &str,
        context: Option<&Bound<'_, PyAny>>,
        idempotency_key: Option<&str>,
    ) -> PyResult<PyPipelineResult> {
        let input = PyContext::from_argument(context)?;
        check_key(idempotency_key)?;
        let runner = self.logging_runner(py)?;
        let mut signal = SignalCheck::default();
        let record = py.detach(|| runner.execute_with(workflow_name, &input, idempotency_key, &mut || signal.keep_waiting()));
        signal.result(&runner, record)
    }

    /// Starts the workflow and returns at once with a handle to wait on.
    /// With an `idempotency_key` that already started this workflow, returns
    /// a handle to that execution instead.
    #[pyo3(signature = (workflow_name, context=None, idempotency_key=None))]
    fn execute_async(
        &self,
        py: Python<'_>,
        workflow_name: &str,
        context: Option<&Bound<'_, PyAny>>,
        idempotency_key: Option<&str>,
    ) -> PyResult<PyExecutionHandle> {
        let input = PyContext::from_argument(context)?;
        check_key(idempotency_key)?;
        let runner = self.logging_runner(py)?;
        let execution_id = py.detach(|| runner.start_execution(workflow_name, &input, idempotency_key)).map_err(to_py)?;
        Ok(PyExecutionHandle::new(runner, execution_id))
    }

    /// The current state of any execution in this database.
    fn get_execution(&self, py: Python<'_>, execution_id: &str) -> PyResult<PyPipelineResult> {
        let runner = self.runner()?;
        let record = py.detach(|| runner.record(execution_id)).map_err(to_py)?;
        Ok(PyPipelineResult::new(record, &runner))
    }

    /// The tasks of any execution in this database, as TaskRecords in
    /// topological order.
    fn get_execution_tasks(&self, py: Python<'_>, execution_id: &str) -> PyResult<Vec<PyTaskRecord>> {
        let runner = self.runner()?;
        let records = py.detach(|| runner.task_records(execution_id)).map_err(to_py)?;
        Ok(records.into_iter().map(PyTaskRecord::from).collect())
    }

    /// The history of any execution in this database, as ExecutionEvents,
    /// oldest first.
    fn get_execution_events(&self, py: Python<'_>, execution_id: &str) -> PyResult<Vec<PyExecutionEvent>> {
        let runner = self.runner()?;
        let events = py.detach(|| runner.events(execution_id)).map_err(to_py)?;
        Ok(events.into_iter().map(PyExecutionEvent::from).collect())
    }

    /// Cancels an unfinished execution, from any process: no task of it
    /// starts afterwards, running async tasks are cancelled, a running plain
    /// task runs to its end and its outcome is discarded; the execution and
    /// its unfinished tasks become "Cancelled".
    fn cancel_execution(&self, py: Python<'_>, execution_id: &str) -> PyResult<()> {
        let runner = self.logging_runner(py)?;
        py.detach(|| runner.cancel_execution(execution_id)).map_err(to_py)
    }

    /// Pauses an unfinished execution: no new task of it is claimed (running
    /// ones finish and are recorded) until `resume_execution`; the pause is
    /// stored, so it outlives runner restarts. Pausing a paused execution
    /// changes nothing.
    fn pause_execution(&self, py: Python<'_>, execution_id: &str) -> PyResult<()> {
        let runner = self.logging_runner(py)?;
        py.detach(|| runner.pause_execution(execution_id)).map_err(to_py)
    }

    /// Resumes a paused execution: its held tasks become claimable again.
    /// Resuming an unfinished execution that is not paused changes nothing.
    fn resume_execution(&self, py: Python<'_>, execution_id: &str) -> PyResult<()> {
        let runner = self.logging_runner(py)?;
        py.detach(|| runner.resume_execution(execution_id)).map_err(to_py)
    }

    /// Runs a Failed or Cancelled execution again from where it stopped:
    /// completed tasks keep their outputs and do not run; failed, skipped and
    /// cancelled tasks run again with fresh attempt counts (earlier attempts
    /// stay in the events). Returns a handle to wait on.
    fn retry_execution(&self, py: Python<'_>, execution_id: &str) -> PyResult<PyExecutionHandle> {
        let runner = self.logging_runner(py)?;
        py.detach(|| runner.retry_execution(execution_id)).map_err(to_py)?;
        Ok(PyExecutionHandle::new(runner, execution_id.to_string()))
    }

    /// A picture of an execution in `format` ("mermaid" or "dot"): its
    /// workflow's graph with each task coloured by its state and labelled
    /// with its duration and attempts.
    #[pyo3(signature = (execution_id, format="mermaid"))]
    fn render_execution(&self, py: Python<'_>, execution_id: &str, format: &str) -> PyResult<String> {
        let format = PictureFormat::parse(format).map_err(to_py)?;
        let runner = self.runner()?;
        py.detach(|| runner.render_execution(execution_id, format)).map_err(to_py)
    }

    /// This runner's id, as TaskRecord.runner and ExecutionEvent.runner name it.
    #[getter]
    fn runner_id(&self) -> PyResult<String> {
        Ok(self.runner()?.id().to_string())
    }

    /// What the database holds: backend, database (the URL without its
    /// password), schema_version, executions (a count per status),
    /// task_executions and cron_schedules.
    fn get_database_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let runner = self.runner()?;
        let (_, counts) = py.detach(|| runner.database_counts()).map_err(to_py)?;
        let info = PyDict::new(py);
        info.set_item("backend", Backend::CURRENT.name())?;
        info.set_item("database", redact(&self.database_url))?;
        info.set_item("schema_version", counts.schema_version)?;
        let executions = PyDict::new(py);
        for (status, count) in &counts.executions {
            executions.set_item(status, count)?;
        }
        info.set_item("executions", executions)?;
        info.set_item("task_executions", counts.task_executions)?;
        info.set_item("cron_schedules", counts.cron_schedules)?;
        Ok(info)
    }

    /// Executions in this database, newest first, optionally filtered.
    #[pyo3(signature = (workflow_name=None, status=None, limit=100))]
    fn list_executions(
        &self,
        py: Python<'_>,
        workflow_name: Option<String>,
        status: Option<String>,
        limit: i64,
    ) -> PyResult<Vec<PyPipelineResult>> {
        let status = match status.as_deref() {
            None => None,
            Some(s) => Some(ExecutionStatus::from_display(s).ok_or_else(|| {
                PyValueError::new_err(format!("status={s:?} is not accepted: use one of {}", ExecutionStatus::accepted()))
            })?),
        };
        cron::check_page(limit, 0)?;
        let runner = self.runner()?;
        let records = py.detach(|| runner.list_executions(workflow_name.as_deref(), status, limit)).map_err(to_py)?;
        Ok(records.into_iter().map(|r| PyPipelineResult::new(r, &runner)).collect())
    }

    /// Schedules the registered workflow `workflow_name` on a cron
    /// expression (5 fields, or 6 with seconds first) in an IANA time zone;
    /// returns the schedule's id. Each tick starts one execution.
    #[pyo3(signature = (workflow_name, cron_expression, timezone="UTC"))]
    fn register_cron_workflow(&self, py: Python<'_>, workflow_name: &str, cron_expression: &str, timezone: &str) -> PyResult<String> {
        let register = || {
            let runner = self.runner()?;
            let record = py.detach(|| runner.schedules().register(workflow_name, cron_expression, timezone)).map_err(to_py)?;
            Ok(record.id)
        };
        register().map_err(|e| cron::prefixed(cron::REGISTER, e))
    }

    /// Schedules a named instance of the registered workflow
    /// `workflow_name`: every tick's execution starts from a snapshot of
    /// `params` (a Context, a dict, or None for none), then the keys every tick sets.
    /// Returns the schedule's id; `(workflow_name, instance_name)` is unique.
    #[pyo3(signature = (workflow_name, instance_name, cron_expression, timezone, params))]
    fn register_workflow_instance(
        &self,
        py: Python<'_>,
        workflow_name: &str,
        instance_name: &str,
        cron_expression: &str,
        timezone: &str,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let params = PyContext::from_argument(params)?;
        let register = || {
            let runner = self.runner()?;
            let record = py
                .detach(|| runner.schedules().register_instance(workflow_name, instance_name, cron_expression, timezone, params))
                .map_err(to_py)?;
            Ok(record.id)
        };
        register().map_err(|e| cron::prefixed(cron::REGISTER_INSTANCE, e))
    }

    /// Schedules in this database, oldest first, as dicts. None for an
    /// argument means its default (False, 100, 0).
    #[pyo3(signature = (enabled_only=None, limit=None, offset=None))]
    fn list_cron_schedules<'py>(
        &self,
        py: Python<'py>,
        enabled_only: Option<bool>,
        limit: Option<i64>,
        offset: Option<i64>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let list = || -> PyResult<Vec<Bound<'py, PyDict>>> {
            let (limit, offset) = (limit.unwrap_or(100), offset.unwrap_or(0));
            cron::check_page(limit, offset)?;
            let runner = self.runner()?;
            let records = py.detach(|| runner.schedules().list(enabled_only.unwrap_or(false), limit, offset)).map_err(to_py)?;
            records.iter().map(|r| cron::schedule_dict(py, r)).collect()
        };
        list().map_err(|e| cron::prefixed(cron::LIST, e))
    }

    /// One schedule as a dict; ScheduleNotFoundError when there is none with this id.
    fn get_cron_schedule<'py>(&self, py: Python<'py>, schedule_id: &str) -> PyResult<Bound<'py, PyDict>> {
        let get = || {
            cron::check_schedule_id(schedule_id)?;
            let runner = self.runner()?;
            let record = py.detach(|| runner.schedules().get(schedule_id)).map_err(to_py)?;
            cron::schedule_dict(py, &record)
        };
        get().map_err(|e| cron::prefixed(cron::GET, e))
    }

    /// Replaces a schedule's expression (and time zone; None keeps it).
    /// The next tick is computed from now.
    #[pyo3(signature = (schedule_id, cron_expression, timezone=None))]
    fn update_cron_schedule(&self, py: Python<'_>, schedule_id: &str, cron_expression: &str, timezone: Option<&str>) -> PyResult<()> {
        let update = || {
            cron::check_schedule_id(schedule_id)?;
            let runner = self.runner()?;
            py.detach(|| runner.schedules().update(schedule_id, cron_expression, timezone)).map(|_| ()).map_err(to_py)
        };
        update().map_err(|e| cron::prefixed(cron::UPDATE, e))
    }

    /// Enables or disables a schedule; re-enabled, it starts from the next
    /// tick after now (ticks missed while disabled are not caught up).
    fn set_cron_schedule_enabled(&self, py: Python<'_>, schedule_id: &str, enabled: bool) -> PyResult<()> {
        let set_enabled = || {
            cron::check_schedule_id(schedule_id)?;
            let runner = self.runner()?;
            py.detach(|| runner.schedules().set_enabled(schedule_id, enabled)).map(|_| ()).map_err(to_py)
        };
        set_enabled().map_err(|e| cron::prefixed(cron::UPDATE, e))
    }

    /// Deletes a schedule and its history; executions it started go on.
    fn delete_cron_schedule(&self, py: Python<'_>, schedule_id: &str) -> PyResult<()> {
        let delete = || {
            cron::check_schedule_id(schedule_id)?;
            let runner = self.runner()?;
            py.detach(|| runner.schedules().delete(schedule_id)).map_err(to_py)
        };
        delete().map_err(|e| cron::prefixed(cron::DELETE, e))
    }

    /// The executions a schedule's ticks started, newest tick first, as
    /// dicts. None for `limit` or `offset` means its default (100, 0).
    #[pyo3(signature = (schedule_id, limit=None, offset=None))]
    fn get_cron_execution_history<'py>(
        &self,
        py: Python<'py>,
        schedule_id: &str,
        limit: Option<i64>,
        offset: Option<i64>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let history = || -> PyResult<Vec<Bound<'py, PyDict>>> {
            let (limit, offset) = (limit.unwrap_or(100), offset.unwrap_or(0));
            cron::check_page(limit, offset)?;
            cron::check_schedule_id(schedule_id)?;
            let runner = self.runner()?;
            let runs = py.detach(|| runner.schedules().history(schedule_id, limit, offset)).map_err(to_py)?;
            runs.iter().map(|r| cron::run_dict(py, r)).collect()
        };
        history().map_err(|e| cron::prefixed(cron::HISTORY, e))
    }

    /// Counts of the executions of ticks scheduled at or after `since` (an
    /// RFC 3339 string or a datetime); success_rate is a percentage.
    fn get_cron_execution_stats<'py>(&self, py: Python<'py>, since: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let stats = || {
            let since = cron::since_ms(py, since)?;
            let runner = self.runner()?;
            let stats = py.detach(|| runner.schedules().stats(since)).map_err(to_py)?;
            cron::stats_dict(py, &stats)
        };
        stats().map_err(|e| cron::prefixed(cron::STATS, e))
    }

    /// Event triggers registered in this database, as dicts: newest first,
    /// paged; with `enabled_only`, every enabled one oldest first (`limit`
    /// and `offset` are then ignored). None means False / 100 / 0.
    #[pyo3(signature = (enabled_only=None, limit=None, offset=None))]
    fn list_trigger_schedules<'py>(
        &self,
        py: Python<'py>,
        enabled_only: Option<bool>,
        limit: Option<i64>,
        offset: Option<i64>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let list = || -> PyResult<Vec<Bound<'py, PyDict>>> {
            let enabled_only = enabled_only.unwrap_or(false);
            let (limit, offset) = (limit.unwrap_or(100), offset.unwrap_or(0));
            if !enabled_only {
                cron::check_page(limit, offset)?;
            }
            let runner = self.runner()?;
            let records = py.detach(|| runner.triggers().list(enabled_only, limit, offset)).map_err(to_py)?;
            records.iter().map(|r| triggers::schedule_dict(py, r)).collect()
        };
        list().map_err(|e| triggers::failed(triggers::LIST, e))
    }

    /// One trigger as a dict, or None when none has this name.
    fn get_trigger_schedule<'py>(&self, py: Python<'py>, trigger_name: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let get = || -> PyResult<Option<Bound<'py, PyDict>>> {
            let runner = self.runner()?;
            let record = py.detach(|| runner.triggers().get(trigger_name)).map_err(to_py)?;
            record.map(|r| triggers::schedule_dict(py, &r)).transpose()
        };
        get().map_err(|e| triggers::failed(triggers::GET, e))
    }

    /// Enables or disables a trigger (stored: it outlives restarts); its
    /// polling runner reads the flag before each poll. An unknown name
    /// changes nothing.
    fn set_trigger_enabled(&self, py: Python<'_>, trigger_name: &str, enabled: bool) -> PyResult<()> {
        let set = || {
            let runner = self.runner()?;
            py.detach(|| runner.triggers().set_enabled(trigger_name, enabled)).map_err(to_py)
        };
        set().map_err(|e| triggers::failed(triggers::UPDATE, e))
    }

    /// The executions a trigger's fires started, newest first, as dicts;
    /// [] for an unknown name. None means 100 / 0.
    #[pyo3(signature = (trigger_name, limit=None, offset=None))]
    fn get_trigger_execution_history<'py>(
        &self,
        py: Python<'py>,
        trigger_name: &str,
        limit: Option<i64>,
        offset: Option<i64>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let history = || -> PyResult<Vec<Bound<'py, PyDict>>> {
            let (limit, offset) = (limit.unwrap_or(100), offset.unwrap_or(0));
            cron::check_page(limit, offset)?;
            let runner = self.runner()?;
            let runs = py.detach(|| runner.triggers().history(trigger_name, limit, offset)).map_err(to_py)?;
            runs.iter().map(|r| triggers::run_dict(py, r)).collect()
        };
        history().map_err(|e| triggers::failed(triggers::HISTORY, e))
    }

    /// Deletes finished (Completed, Failed or Cancelled) executions that finished before
    /// `older_than` (an RFC 3339 string with an offset, or a datetime with a
    /// tzinfo), with their task rows and cron history rows, `batch_size`
    /// executions per transaction; `status` ("Completed" or "Failed") and
    /// `workflow_name` narrow it. An unfinished execution is never deleted.
    /// Returns how many executions were deleted.
    #[pyo3(signature = (older_than, status=None, workflow_name=None, batch_size=1000))]
    fn prune_executions(
        &self,
        py: Python<'_>,
        older_than: &Bound<'_, PyAny>,
        status: Option<String>,
        workflow_name: Option<String>,
        batch_size: i64,
    ) -> PyResult<u64> {
        if batch_size < 1 {
            return Err(PyValueError::new_err(format!("batch_size={batch_size} is not accepted: it must be an int above 0")));
        }
        let status = match status.as_deref() {
            None => None,
            Some(s) => match ExecutionStatus::from_display(s) {
                Some(found) if found.is_finished() => Some(found),
                _ => {
                    return Err(PyValueError::new_err(format!(
                        "status={s:?} is not accepted: only finished executions are pruned; use \"Completed\", \"Failed\", \"Cancelled\" or None for all three"
                    )))
                }
            },
        };
        let finished_before = cron::time_ms(py, older_than, "older_than", false)?;
        let runner = self.runner()?;
        let filter = PruneFilter { finished_before, status, workflow_name: workflow_name.as_deref() };
        py.detach(|| runner.prune_executions(&filter, batch_size)).map_err(to_py)
    }

    /// Stops the workers after their running tasks end. Idempotent.
    fn shutdown(&self, py: Python<'_>) {
        let taken = lock(&self.runner).take();
        if let Some(runner) = taken {
            py.detach(|| runner.shutdown());
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyAny>>,
        _exc_value: Option<Bound<'_, PyAny>>,
        _traceback: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.shutdown(py);
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.runner.lock().map(|r| r.is_some()).unwrap_or(false) { "open" } else { "shut down" };
        format!("DefaultRunner({:?}, {state})", redact(&self.database_url))
    }
}

/// `config` as a DefaultRunnerConfig, or a TypeError naming what `method` got.
fn runner_config<'a, 'py>(config: &'a Bound<'py, PyAny>, method: &str) -> PyResult<&'a Bound<'py, PyDefaultRunnerConfig>> {
    config.cast::<PyDefaultRunnerConfig>().map_err(|_| {
        let type_name = config.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        PyTypeError::new_err(format!("{method} needs a cloaca.DefaultRunnerConfig, not {type_name}"))
    })
}

/// The schema name `schema` as stored: checked (empty, then characters,
/// then the full rule) and folded to lower case, as PostgreSQL folds an
/// unquoted name, so that "Tenant_A" and "tenant_a" are one schema.
fn schema_name(schema: &str) -> PyResult<String> {
    if schema.is_empty() {
        return Err(raise(
            "TenantError",
            "Schema name cannot be empty: schema name \"\" is not accepted; give a name such as \"tenant_a\"",
        ));
    }
    if !schema.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(raise(
            "TenantError",
            format!(
                "Schema name must contain only alphanumeric characters and underscores: schema name {schema:?} is not accepted; \
                 use [A-Za-z_][A-Za-z0-9_]{{0,62}} (folded to lower case)"
            ),
        ));
    }
    let folded = if schema.is_ascii() { schema.to_ascii_lowercase() } else { schema.to_string() };
    #[cfg(feature = "postgres")]
    crate::engine::validate_name("schema name", &folded).map_err(|e| {
        // The message shows the name as the caller wrote it.
        let message = e.to_string().replacen(&format!("{folded:?}"), &format!("{schema:?}"), 1);
        raise("TenantError", message)
    })?;
    Ok(folded)
}

/// Refuses an empty idempotency key (it would name every keyless start).
fn check_key(key: Option<&str>) -> PyResult<()> {
    match key {
        Some("") => Err(PyValueError::new_err("idempotency_key=\"\" is not accepted: use a non-empty string, or None for no key")),
        _ => Ok(()),
    }
}

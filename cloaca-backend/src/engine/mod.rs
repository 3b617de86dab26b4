//! The workflow engine: a plain Rust library, independent of Python, tested
//! with `cargo test` alone. The PyO3 layer (`crate::python`) uses only what
//! this face re-exports.
//!
//! One folder per concept, each using only those listed before it:
//!
//! - ground floor: [`error`] (the error and its kinds), [`model`] (contexts,
//!   execution records), [`backend`], [`url`] (database URLs), [`settings`]
//!   (the runner settings table), [`time`], [`sync`] (poison-tolerant locks).
//! - [`workflow`]: DAG validation, order, version and context merging; retry
//!   policies; the registry of workflows this process can run; pictures of
//!   workflows (Mermaid, DOT), plain or painted with an execution's state.
//! - [`cron`]`::expression`: cron expressions in time zones and their ticks.
//! - [`store`]: durable state over the backend's database (connection layer,
//!   migrations, executions, schedules, SQLite / PostgreSQL).
//! - [`runner`]: workers, supervisor and wake-ups; [`cron`]'s schedule
//!   management and ticker thread, and [`triggers`] (event triggers: their
//!   definitions, leases and polling threads), sit beside it, on the store.

mod backend;
mod cron;
mod error;
mod model;
mod runner;
mod settings;
mod store;
mod sync;
mod time;
mod triggers;
mod url;
mod workflow;

#[cfg(test)]
mod tests;

pub(crate) use backend::Backend;
pub(crate) use error::{Error, ErrorKind, Result};
pub(crate) use model::{Context, ExecutionEvent, ExecutionRecord, ExecutionStatus, TaskRecord};
pub(crate) use runner::{set_worker_scope, Level, Note, Reporter, Runner, Topic};
pub(crate) use settings::{aliases_of as setting_aliases, find as find_setting, Refused, RunnerConfig, Value as SettingValue, SETTINGS};
#[cfg(feature = "postgres")]
pub(crate) use store::postgres::{admin::validate_password, admin::DatabaseAdmin, admin::TenantCredentials, identifiers::validate_name};
pub(crate) use store::{CronRun, CronStats, PruneFilter, ScheduleRecord, Store, TriggerRecord, TriggerRun};
pub(crate) use sync::lock;
pub(crate) use time::{now_ms, rfc3339};
pub(crate) use triggers::{
    parse_poll_interval, Definitions as TriggerDefinitions, PollOutcome, TriggerDef, TriggerForm, TriggerPoll, DEFAULT_POLL_INTERVAL,
};
pub(crate) use url::{redact, DatabaseUrl};
pub(crate) use workflow::{
    render, AttemptInfo, AttemptSlot, Backoff, Dag, Jitter, Operator, PictureFormat, Registry, RetryCondition, RetryPolicy, SlotError,
    TaskBody, TaskFailure, TaskSpec, TriggerRule, Workflow, WorkflowSpec,
};

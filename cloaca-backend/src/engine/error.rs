//! The engine's error type: one enum, each variant a kind of failure the
//! Python layer maps to the exception the API contract names.

use std::fmt;

/// Everything that can go wrong inside the engine, as a value.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// A database URL the installed backend cannot use.
    InvalidUrl { url: String, reason: String },
    /// The database could not be opened or reached (file, permissions, server).
    Unavailable { target: String, reason: String },
    /// The database holds a schema written by a newer cloaca.
    SchemaTooNew { found: i64, supported: i64 },
    /// A statement failed while the engine was using an open database.
    Database { action: &'static str, reason: String },
    /// A workflow definition that cannot run (cycle, unknown dependency, ...).
    InvalidWorkflow(String),
    /// A runner configuration value outside its accepted range.
    InvalidConfig { field: &'static str, value: String, accepted: &'static str },
    /// `execute` named a workflow that is not registered in this process.
    UnknownWorkflow { name: String, registered: Vec<String> },
    /// No execution with this id exists in the database.
    UnknownExecution(String),
    /// Waiting for an execution ended before it finished.
    WaitTimedOut { execution_id: String, seconds: f64 },
    /// A cron expression or time zone that cannot be scheduled.
    InvalidSchedule(String),
    /// No cron schedule with this id exists in the database.
    UnknownSchedule(String),
    /// A tenant name, password or request the admin refuses (the message says why).
    InvalidTenant(String),
    /// The runner was shut down.
    ShutDown,
    /// The caller stopped waiting (the execution goes on).
    Interrupted,
}

/// Result alias used throughout the engine.
pub type Result<T> = std::result::Result<T, EngineError>;

impl EngineError {
    /// A database error while doing `action`.
    pub fn database(action: &'static str, source: impl fmt::Display) -> Self {
        EngineError::Database { action, reason: source.to_string() }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::InvalidUrl { url, reason } => write!(f, "invalid database URL {url:?}: {reason}"),
            EngineError::Unavailable { target, reason } => write!(f, "cannot use the database {target}: {reason}"),
            EngineError::SchemaTooNew { found, supported } => write!(
                f,
                "the database schema is at version {found}, newer than this cloaca understands \
                 (up to {supported}); upgrade cloaca to use this database"
            ),
            EngineError::Database { action, reason } => write!(f, "database error while {action}: {reason}"),
            EngineError::InvalidWorkflow(message) => f.write_str(message),
            EngineError::InvalidConfig { field, value, accepted } => {
                write!(f, "{field}={value} is not accepted: {field} must be {accepted}")
            }
            EngineError::UnknownWorkflow { name, registered } => {
                write!(f, "workflow {name:?} is not registered in this process; ")?;
                if registered.is_empty() {
                    f.write_str("no workflow is registered yet (define one in a `with cloaca.WorkflowBuilder(...)` block)")
                } else {
                    write!(f, "registered workflows: {}", registered.join(", "))
                }
            }
            EngineError::UnknownExecution(id) => write!(f, "no execution with id {id:?} exists in this database"),
            EngineError::WaitTimedOut { execution_id, seconds } => write!(
                f,
                "execution {execution_id} did not finish within {seconds} s; it goes on running \
                 (wait again or check get_execution)"
            ),
            EngineError::InvalidSchedule(message) | EngineError::InvalidTenant(message) => f.write_str(message),
            EngineError::UnknownSchedule(id) => write!(f, "no cron schedule with id {id:?} exists in this database"),
            EngineError::ShutDown => f.write_str("this DefaultRunner has been shut down; open a new one"),
            EngineError::Interrupted => f.write_str("waiting was interrupted; the execution goes on"),
        }
    }
}

impl std::error::Error for EngineError {}

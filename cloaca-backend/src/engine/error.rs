//! The engine's error: one enum whose variants are the kinds of failure,
//! each keeping the value it refuses and, where there is one, the error it
//! comes from (`std::error::Error::source`). The Python layer maps each
//! [`ErrorKind`] to one exception class.

use std::fmt;

/// Everything that can go wrong inside the engine, as a value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A database URL the installed backend cannot use.
    #[error("invalid database URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The database file could not be opened (missing directory, permissions, not a database).
    #[cfg(feature = "sqlite")]
    #[error("cannot use the database {target}: {reason}")]
    Unavailable { target: String, reason: String },
    /// Connecting to the database server failed; `source` says whether it
    /// may come back ([`Error::is_transient`]).
    #[cfg(feature = "postgres")]
    #[error("cannot use the database {target}: {source}")]
    Connect { target: String, source: DbError },
    /// The database stayed unreachable for the whole outage allowance.
    #[error(
        "the database {target} could not be reached for {:.1} s (database_outage_timeout_seconds={}); the last error: {last}",
        waited.as_secs_f64(),
        timeout.as_secs_f64()
    )]
    Outage { target: String, waited: std::time::Duration, timeout: std::time::Duration, last: Box<Error> },
    /// The database holds a schema written by a newer cloaca.
    #[error(
        "the database schema is at version {found}, newer than this cloaca understands (up to {supported}); \
         upgrade cloaca to use this database"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// A statement failed while the engine was using an open database.
    #[error("database error while {action}: {source}")]
    Database { action: &'static str, source: DbError },
    /// The operating system refused a thread the runner needs.
    #[error("cannot start {what}: {source}")]
    Thread { what: &'static str, source: std::io::Error },
    /// A workflow definition that cannot run (cycle, unknown dependency, ...).
    #[error("{0}")]
    InvalidWorkflow(String),
    /// A runner setting outside its accepted range.
    /// The message starts with the rule in the original bindings' words
    /// ("Invalid configuration: db_pool_size must be > 0"), which programs
    /// written for them may look for.
    #[error("Invalid configuration: {name} must be {rule}; {name}={value} is not accepted: {name} must be {accepted}")]
    InvalidSetting { name: &'static str, value: String, rule: &'static str, accepted: &'static str },
    /// An argument value one call does not accept (the message names the
    /// argument, the value and what is accepted).
    #[error("{name}={value:?} is not accepted: use {accepted}")]
    InvalidArgument { name: &'static str, value: String, accepted: &'static str },
    /// `execute` named a workflow that is not registered in this process.
    #[error("workflow {name:?} is not registered in this process; {}", describe_registered(.registered))]
    UnknownWorkflow { name: String, registered: Vec<String> },
    /// No execution with this id exists in the database.
    #[error("no execution with id {0:?} exists in this database")]
    UnknownExecution(String),
    /// A steering request the execution's state refuses (cancelling a
    /// finished execution, resuming one that is not paused, ...).
    #[error("cannot {action} execution {execution_id:?}: it is {status}; {accepted}")]
    InvalidExecutionState { execution_id: String, action: &'static str, status: &'static str, accepted: &'static str },
    /// An idempotency key that already started an execution of another workflow.
    #[error(
        "idempotency_key={key:?} already started an execution of workflow {existing_workflow:?}; it cannot start \
         {requested_workflow:?} too (an idempotency key names one execution: use another key)"
    )]
    IdempotencyConflict { key: String, existing_workflow: String, requested_workflow: String },
    /// Waiting for an execution ended before it finished.
    #[error("execution {execution_id} did not finish within {seconds} s; it goes on running (wait again or check get_execution)")]
    WaitTimedOut { execution_id: String, seconds: f64 },
    /// A cron expression or time zone that cannot be scheduled.
    #[error("{0}")]
    InvalidSchedule(String),
    /// No cron schedule with this id exists in the database.
    #[error("no cron schedule with id {0:?} exists in this database")]
    UnknownSchedule(String),
    /// A workflow instance name that cannot name one.
    #[error(
        "instance_name={instance_name:?} is not accepted: use a name that is not blank and has no NUL character, \
         unique among the instances of workflow {workflow_name:?}"
    )]
    InvalidInstanceName { workflow_name: String, instance_name: String },
    /// A workflow instance param named like a key every tick or trigger fire sets.
    #[error(
        "params key {key:?} is not accepted: it is reserved for what every tick sets itself ({}); give the param another name",
        reserved.join(", ")
    )]
    ReservedParam { key: String, reserved: &'static [&'static str] },
    /// A workflow instance param holding a secret reference.
    #[error(
        "params key {key:?} holds a secret reference ({{\"$secret\": ...}}), which is not supported: \
         pass the value itself, or have the task read it (for example with cloaca.var)"
    )]
    SecretParam { key: String },
    /// The workflow already has an instance of this name.
    #[error(
        "workflow {workflow_name:?} already has an instance named {instance_name:?} (cron schedule {schedule_id}); \
         instance names are unique per workflow: choose another, or delete that schedule first"
    )]
    DuplicateInstance { workflow_name: String, instance_name: String, schedule_id: String },
    /// A tenant name, password or request the admin refuses (the message says why).
    #[cfg(feature = "postgres")]
    #[error("{0}")]
    InvalidTenant(String),
    /// The runner was shut down.
    #[error("this DefaultRunner has been shut down; open a new one")]
    ShutDown,
    /// The caller stopped waiting (the execution goes on).
    #[error("waiting was interrupted; the execution goes on")]
    Interrupted,
}

/// Result alias used throughout the engine.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// What kind of failure an [`Error`] is: what the Python layer maps to an
/// exception class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    InvalidUrl,
    Unavailable,
    SchemaTooNew,
    Database,
    InvalidWorkflow,
    InvalidSetting,
    InvalidArgument,
    UnknownWorkflow,
    UnknownExecution,
    InvalidExecutionState,
    IdempotencyConflict,
    WaitTimedOut,
    InvalidSchedule,
    UnknownSchedule,
    /// A workflow instance's name or params refused.
    InvalidInstance,
    #[cfg(feature = "postgres")]
    InvalidTenant,
    ShutDown,
    Interrupted,
}

impl Error {
    /// A database error while doing `action`.
    pub(crate) fn database(action: &'static str, source: impl Into<DbError>) -> Self {
        Error::Database { action, source: source.into() }
    }

    /// Stored data the engine cannot read (edited by hand, or written by
    /// another program), found while doing `action`.
    pub(crate) fn corrupt(action: &'static str, what: impl fmt::Display) -> Self {
        Error::Database { action, source: DbError::Invalid(what.to_string()) }
    }

    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidUrl { .. } => ErrorKind::InvalidUrl,
            Error::Outage { .. } => ErrorKind::Unavailable,
            #[cfg(feature = "sqlite")]
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            #[cfg(feature = "postgres")]
            Error::Connect { .. } => ErrorKind::Unavailable,
            Error::SchemaTooNew { .. } => ErrorKind::SchemaTooNew,
            // A thread the runner cannot start is a failure of the runner's
            // machinery in mid-operation, like a failed statement.
            Error::Database { .. } | Error::Thread { .. } => ErrorKind::Database,
            Error::InvalidWorkflow(_) => ErrorKind::InvalidWorkflow,
            Error::InvalidSetting { .. } => ErrorKind::InvalidSetting,
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::UnknownWorkflow { .. } => ErrorKind::UnknownWorkflow,
            Error::UnknownExecution(_) => ErrorKind::UnknownExecution,
            Error::InvalidExecutionState { .. } => ErrorKind::InvalidExecutionState,
            Error::IdempotencyConflict { .. } => ErrorKind::IdempotencyConflict,
            Error::WaitTimedOut { .. } => ErrorKind::WaitTimedOut,
            Error::InvalidSchedule(_) => ErrorKind::InvalidSchedule,
            Error::UnknownSchedule(_) => ErrorKind::UnknownSchedule,
            Error::InvalidInstanceName { .. }
            | Error::ReservedParam { .. }
            | Error::SecretParam { .. }
            | Error::DuplicateInstance { .. } => ErrorKind::InvalidInstance,
            #[cfg(feature = "postgres")]
            Error::InvalidTenant(_) => ErrorKind::InvalidTenant,
            Error::ShutDown => ErrorKind::ShutDown,
            Error::Interrupted => ErrorKind::Interrupted,
        }
    }

    /// True when the failure may pass by itself: the server is restarting or
    /// unreachable, a connection was dropped, another process holds a lock
    /// past busy_timeout, a transaction lost a conflict. Running the same
    /// operation again later can succeed; anything else fails at once.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Error::Database { source, .. } => source.is_transient(),
            #[cfg(feature = "postgres")]
            Error::Connect { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// True when the database stayed unreachable past the outage allowance.
    pub(crate) fn is_outage(&self) -> bool {
        matches!(self, Error::Outage { .. })
    }

    /// True when the database aborted a transaction only because it
    /// conflicted with another one (a deadlock or serialization failure):
    /// running the same transaction again can succeed.
    #[cfg(feature = "postgres")]
    pub(crate) fn is_conflict(&self) -> bool {
        match self {
            Error::Database { source, .. } => source.is_conflict(),
            _ => false,
        }
    }
}

fn describe_registered(registered: &[String]) -> String {
    if registered.is_empty() {
        "no workflow is registered yet (define one in a `with cloaca.WorkflowBuilder(...)` block)".into()
    } else {
        format!("registered workflows: {}", registered.join(", "))
    }
}

/// Why a database operation failed: the driver's error, kept whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[cfg(feature = "sqlite")]
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[cfg(feature = "postgres")]
    #[error("{}", postgres_text(.0))]
    Postgres(#[from] postgres::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Stored data that does not have the shape the engine wrote.
    #[error("{0}")]
    Invalid(String),
}

impl DbError {
    fn is_transient(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            // Another process holds the lock past busy_timeout, or the disk
            // is full (space can be freed; SQLite keeps the file intact).
            DbError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked | rusqlite::ErrorCode::DiskFull)
            ),
            #[cfg(feature = "postgres")]
            DbError::Postgres(e) => match e.code() {
                // Connection exceptions (08...), the server shutting down,
                // crashing or starting up (57P01-57P03), a full disk (53100),
                // too many connections (53300), and lost conflicts (40001, 40P01).
                Some(code) => {
                    let code = code.code();
                    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53100" | "53300" | "40001" | "40P01")
                }
                // No SQLSTATE: the client's side. A closed connection or an
                // I/O error (refused, reset, timed out) may pass; a
                // malformed statement or parameter never does.
                None => e.is_closed() || has_io_source(e),
            },
            _ => false,
        }
    }
}

#[cfg(feature = "postgres")]
fn has_io_source(e: &postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(feature = "postgres")]
impl DbError {
    fn is_conflict(&self) -> bool {
        match self {
            DbError::Postgres(e) => {
                use postgres::error::SqlState;
                matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
            }
            _ => false,
        }
    }
}

/// A PostgreSQL error as a sentence: the server's severity and message, or
/// the client error with its causes ("error connecting to server: Connection refused").
#[cfg(feature = "postgres")]
pub(crate) fn postgres_text(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_lock_or_a_full_disk_may_pass_a_corrupt_file_does_not() {
        let sqlite = |code| Error::database("writing state", rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None));
        for code in [rusqlite::ffi::SQLITE_BUSY, rusqlite::ffi::SQLITE_LOCKED, rusqlite::ffi::SQLITE_FULL] {
            assert!(sqlite(code).is_transient(), "{}", sqlite(code));
        }
        for code in [rusqlite::ffi::SQLITE_CORRUPT, rusqlite::ffi::SQLITE_READONLY, rusqlite::ffi::SQLITE_NOTADB] {
            assert!(!sqlite(code).is_transient(), "{}", sqlite(code));
        }
        assert!(!Error::corrupt("reading state", "not JSON").is_transient());
        assert!(!Error::UnknownExecution("x".into()).is_transient());
    }

    #[test]
    fn errors_read_like_sentences_and_keep_their_source() {
        let error = Error::database("reading state", DbError::Invalid("a task output is not a JSON object".into()));
        assert_eq!(error.to_string(), "database error while reading state: a task output is not a JSON object");
        assert!(std::error::Error::source(&error).is_some());
        assert_eq!(error.kind(), ErrorKind::Database);
        #[cfg(feature = "postgres")]
        assert!(!error.is_conflict());
        let unknown = Error::UnknownWorkflow { name: "etl".into(), registered: vec![] };
        assert!(unknown.to_string().contains("no workflow is registered yet"), "{unknown}");
        let setting = Error::InvalidSetting { name: "max_concurrent_tasks", value: "0".into(), rule: "> 0", accepted: "an int above 0" };
        assert_eq!(
            setting.to_string(),
            "Invalid configuration: max_concurrent_tasks must be > 0; max_concurrent_tasks=0 is not accepted: max_concurrent_tasks must be an int above 0"
        );
    }
}

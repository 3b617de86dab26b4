//! Versioned schema migrations, one list for both backends.
//!
//! Each migration carries its SQL in both dialects side by side, so a schema
//! change is written once per backend in the same place. A database records
//! the versions it has in `cloaca_schema_migrations`; opening it applies the
//! missing ones in order inside one transaction, and refuses a database whose
//! schema is newer than this build.

/// One schema change.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "executions and task executions",
        sqlite: "
            CREATE TABLE cloaca_executions (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                workflow_name TEXT NOT NULL,
                workflow_version TEXT NOT NULL,
                status TEXT NOT NULL,
                input_context TEXT NOT NULL,
                final_context TEXT,
                error_message TEXT,
                tasks_remaining INTEGER NOT NULL,
                created_at INTEGER NOT NULL,
                started_at INTEGER,
                finished_at INTEGER
            );
            CREATE TABLE cloaca_task_executions (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                execution_id TEXT NOT NULL ,
                task_id TEXT NOT NULL,
                workflow_name TEXT NOT NULL,
                workflow_version TEXT NOT NULL,
                status TEXT NOT NULL,
                deps_remaining INTEGER NOT NULL,
                attempt INTEGER NOT NULL DEFAULT 0,
                failures INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER NOT NULL,
                next_attempt_at INTEGER NOT NULL,
                lease_owner TEXT,
                lease_expires_at INTEGER,
                output_context TEXT,
                error_type TEXT,
                error_message TEXT,
                error_traceback TEXT,
                started_at INTEGER,
                finished_at INTEGER,
                UNIQUE (execution_id, task_id)
            );",
        postgres: "
            CREATE TABLE cloaca_executions (
                seq BIGSERIAL PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                workflow_name TEXT NOT NULL,
                workflow_version TEXT NOT NULL,
                status TEXT NOT NULL,
                input_context TEXT NOT NULL,
                final_context TEXT,
                error_message TEXT,
                tasks_remaining BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                started_at BIGINT,
                finished_at BIGINT
            );
            CREATE TABLE cloaca_task_executions (
                id BIGSERIAL PRIMARY KEY,
                execution_id TEXT NOT NULL ,
                task_id TEXT NOT NULL,
                workflow_name TEXT NOT NULL,
                workflow_version TEXT NOT NULL,
                status TEXT NOT NULL,
                deps_remaining BIGINT NOT NULL,
                attempt BIGINT NOT NULL DEFAULT 0,
                failures BIGINT NOT NULL DEFAULT 0,
                max_attempts BIGINT NOT NULL,
                next_attempt_at BIGINT NOT NULL,
                lease_owner TEXT,
                lease_expires_at BIGINT,
                output_context TEXT,
                error_type TEXT,
                error_message TEXT,
                error_traceback TEXT,
                started_at BIGINT,
                finished_at BIGINT,
                UNIQUE (execution_id, task_id)
            );",
    },
    Migration {
        version: 2,
        name: "claim and listing indexes",
        // Same text on both: claims scan only ready / running rows, listings read newest first.
        sqlite: "
            CREATE INDEX cloaca_task_executions_claimable ON cloaca_task_executions (status, next_attempt_at);
            CREATE INDEX cloaca_task_executions_leases ON cloaca_task_executions (lease_owner) WHERE status = 'running';
            CREATE INDEX cloaca_executions_newest ON cloaca_executions (created_at DESC, seq DESC);",
        postgres: "
            CREATE INDEX cloaca_task_executions_claimable ON cloaca_task_executions (status, next_attempt_at);
            CREATE INDEX cloaca_task_executions_leases ON cloaca_task_executions (lease_owner) WHERE status = 'running';
            CREATE INDEX cloaca_executions_newest ON cloaca_executions (created_at DESC, seq DESC);",
    },
];

/// The schema version this build writes.
pub const MIGRATIONS_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The bookkeeping table; the same text works on both backends.
pub const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS cloaca_schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// The migrations a database at `current` still needs.
pub fn pending(current: i64) -> impl Iterator<Item = &'static Migration> {
    MIGRATIONS.iter().filter(move |m| m.version > current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
        }
        assert_eq!(pending(1).map(|m| m.version).collect::<Vec<_>>(), vec![2]);
        assert_eq!(pending(MIGRATIONS_VERSION).count(), 0);
    }
}

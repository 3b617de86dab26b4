//! Versioned schema migrations, one list for both backends.
//!
//! Each migration is written once, in SQLite's spelling; [`postgres_schema`]
//! gives PostgreSQL's (64-bit integers everywhere, so that one i64 binding
//! fits every column, and BIGSERIAL for an autoincrement key). A database records
//! the versions it has in `cloaca_schema_migrations`; opening it applies the
//! missing ones in order inside one transaction, and refuses a database whose
//! schema is newer than this build.

use super::conn::{Conn, Param};
use crate::engine::error::{Error, Result};

/// One schema change.
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    /// SQLite's spelling; see [`Migration::sql_for`].
    pub(crate) sql: &'static str,
}

impl Migration {
    /// The statements for one backend.
    pub(crate) fn sql_for(&self, postgres: bool) -> String {
        if postgres {
            postgres_schema(self.sql)
        } else {
            self.sql.to_string()
        }
    }
}

/// Rewrites SQLite DDL into PostgreSQL's.
pub(crate) fn postgres_schema(sql: &str) -> String {
    sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY").replace("INTEGER", "BIGINT")
}

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "executions and task executions",
        sql: "
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
                execution_id TEXT NOT NULL,
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
    },
    Migration {
        version: 2,
        name: "claim and listing indexes",
        // Claims scan only ready / running rows; listings read newest first.
        sql: "
            CREATE INDEX cloaca_task_executions_claimable ON cloaca_task_executions (status, next_attempt_at);
            CREATE INDEX cloaca_task_executions_leases ON cloaca_task_executions (lease_owner) WHERE status = 'running';
            CREATE INDEX cloaca_executions_newest ON cloaca_executions (created_at DESC, seq DESC);",
    },
    Migration {
        version: 3,
        name: "cron schedules and the executions their ticks started",
        // One history row per execution a tick started: attempt 1 for the
        // tick itself, 2.. for recoveries of a lost one. The unique key is
        // the last guard of "one execution per tick".
        sql: "
            CREATE TABLE cloaca_cron_schedules (
                id TEXT PRIMARY KEY,
                workflow_name TEXT NOT NULL,
                cron_expression TEXT NOT NULL,
                timezone TEXT NOT NULL,
                enabled INTEGER NOT NULL,
                next_run_at INTEGER NOT NULL,
                last_run_at INTEGER,
                skipped_ticks INTEGER NOT NULL DEFAULT 0,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            );
            CREATE INDEX cloaca_cron_schedules_due ON cloaca_cron_schedules (enabled, next_run_at);
            CREATE TABLE cloaca_cron_executions (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                schedule_id TEXT NOT NULL,
                workflow_name TEXT NOT NULL,
                scheduled_time INTEGER NOT NULL,
                attempt INTEGER NOT NULL,
                execution_id TEXT NOT NULL,
                claimed_at INTEGER NOT NULL,
                lost_at INTEGER,
                updated_at INTEGER NOT NULL,
                UNIQUE (schedule_id, scheduled_time, attempt)
            );
            CREATE INDEX cloaca_cron_executions_by_time ON cloaca_cron_executions (scheduled_time);
            CREATE INDEX cloaca_cron_executions_open ON cloaca_cron_executions (claimed_at) WHERE lost_at IS NULL;",
    },
    Migration {
        version: 4,
        name: "indexes that keep finished history out of the hot statements",
        // A store holding a long history is mostly completed task rows. The
        // claim index of version 2 led with `status` over every row, so a
        // planner without statistics (SQLite never has any unless ANALYZE
        // runs) took it for `execution_id = ? AND status = 'completed'` and
        // scanned all completed history per task. Claims now use partial
        // indexes over the ready / running rows only, which no statement
        // about completed rows can use; lookups by execution go through the
        // (execution_id, task_id) key. Listings get an index per filter, so
        // a filtered page reads only its own rows; retention finds finished
        // executions by age and their cron history rows by execution. The
        // newest-first index becomes partial on a condition only the
        // unfiltered listing states (`seq > 0`, true of every row): a
        // PostgreSQL generic plan, which cannot see how rare a filter value
        // is, would otherwise walk it newest first and filter.
        sql: "
            DROP INDEX cloaca_task_executions_claimable;
            DROP INDEX cloaca_executions_newest;
            CREATE INDEX cloaca_executions_newest ON cloaca_executions (created_at DESC, seq DESC) WHERE seq > 0;
            CREATE INDEX cloaca_task_executions_ready ON cloaca_task_executions (next_attempt_at, id) WHERE status = 'ready';
            CREATE INDEX cloaca_task_executions_expiring ON cloaca_task_executions (lease_expires_at, id) WHERE status = 'running';
            CREATE INDEX cloaca_executions_by_workflow ON cloaca_executions (workflow_name, created_at DESC, seq DESC);
            CREATE INDEX cloaca_executions_by_status ON cloaca_executions (status, created_at DESC, seq DESC);
            CREATE INDEX cloaca_executions_by_workflow_status ON cloaca_executions (workflow_name, status, created_at DESC, seq DESC);
            CREATE INDEX cloaca_executions_finished ON cloaca_executions (finished_at) WHERE finished_at IS NOT NULL;
            CREATE INDEX cloaca_cron_executions_by_execution ON cloaca_cron_executions (execution_id);",
    },
    Migration {
        version: 5,
        name: "task history, steering and idempotent starts",
        // What a run's records and events are made of, chosen so that the
        // hot path writes nothing it did not write before: a task row keeps
        // its last runner and when it became ready, and gains the ended
        // attempts that are not its last (failures, lost leases, cancelled
        // attempts, and earlier rounds' ready times) as JSON lines appended
        // to `history`, on the page the
        // row update writes anyway. Pauses, resumptions, cancellations and
        // retries are rare and get rows of their own. `attempt_base` counts
        // the attempts of earlier rounds (before a retry_execution), so that
        // attempt numbers keep fencing across rounds. A workflow version's
        // shape is stored once, so that a process without the workflow (the
        // command line) can retry, picture and finish its executions. The
        // idempotency key is unique where set: two starts with one key
        // insert one row, whichever process they come from.
        sql: "
            ALTER TABLE cloaca_task_executions ADD COLUMN ready_at INTEGER;
            ALTER TABLE cloaca_task_executions ADD COLUMN attempt_base INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE cloaca_task_executions ADD COLUMN history TEXT;
            ALTER TABLE cloaca_executions ADD COLUMN idempotency_key TEXT;
            CREATE UNIQUE INDEX cloaca_executions_idempotency ON cloaca_executions (idempotency_key) WHERE idempotency_key IS NOT NULL;
            CREATE TABLE cloaca_execution_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                execution_id TEXT NOT NULL,
                at INTEGER NOT NULL,
                kind TEXT NOT NULL,
                runner TEXT,
                detail TEXT
            );
            CREATE INDEX cloaca_execution_events_by_execution ON cloaca_execution_events (execution_id, id);
            CREATE TABLE cloaca_workflow_versions (
                workflow_name TEXT NOT NULL,
                workflow_version TEXT NOT NULL,
                shape TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                PRIMARY KEY (workflow_name, workflow_version)
            );",
    },
    Migration {
        version: 6,
        name: "why a task was skipped",
        // A skipped task says whether its own trigger rule was false
        // ('trigger_rule'), a dependency failed ('upstream_failed') or its
        // execution was stopped ('stopped'): dependents with the default rule
        // are skipped after the second only, and users are told which.
        sql: "
            ALTER TABLE cloaca_task_executions ADD COLUMN skip_reason TEXT;",
    },
    Migration {
        version: 7,
        name: "parameterised cron instances",
        // A named instance of a workflow on a schedule carries a snapshot of
        // its parameters, reused unchanged by every tick and every recovery of
        // a lost one; a workflow's instance names are unique.
        sql: "
            ALTER TABLE cloaca_cron_schedules ADD COLUMN instance_name TEXT;
            ALTER TABLE cloaca_cron_schedules ADD COLUMN params TEXT;
            CREATE UNIQUE INDEX cloaca_cron_schedules_instance ON cloaca_cron_schedules (workflow_name, instance_name)
                WHERE instance_name IS NOT NULL;",
    },
    Migration {
        version: 8,
        name: "event triggers",
        // One row per trigger name: its registration, enabled flag, the start
        // of its last recorded poll and the lease of the one runner that
        // polls it. One history row per execution a fire started; when that
        // execution finished is read from the execution, so recording a task
        // writes nothing here. Unfinished equal fires are found from the
        // workflow's unfinished executions, then by execution.
        sql: "
            CREATE TABLE cloaca_trigger_schedules (
                id TEXT PRIMARY KEY,
                trigger_name TEXT NOT NULL,
                workflow_name TEXT NOT NULL,
                poll_interval_ms INTEGER NOT NULL,
                allow_concurrent INTEGER NOT NULL,
                enabled INTEGER NOT NULL,
                last_poll_at INTEGER,
                lease_owner TEXT,
                lease_expires_at INTEGER,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            );
            CREATE UNIQUE INDEX cloaca_trigger_schedules_by_name ON cloaca_trigger_schedules (trigger_name);
            CREATE INDEX cloaca_trigger_schedules_by_age ON cloaca_trigger_schedules (created_at, id);
            CREATE TABLE cloaca_trigger_executions (
                id TEXT PRIMARY KEY,
                schedule_id TEXT NOT NULL,
                context_hash TEXT,
                execution_id TEXT,
                started_at INTEGER NOT NULL,
                created_at INTEGER NOT NULL
            );
            CREATE INDEX cloaca_trigger_executions_by_schedule ON cloaca_trigger_executions (schedule_id, started_at, id);
            CREATE INDEX cloaca_trigger_executions_by_execution ON cloaca_trigger_executions (execution_id);",
    },
    Migration {
        version: 9,
        name: "no lease-owner index",
        // Lease renewal finds its rows by id. The index by lease owner was
        // written by every claim and every completion (a page of each
        // commit) and served only that statement.
        sql: "DROP INDEX IF EXISTS cloaca_task_executions_leases;",
    },
];

/// The schema version this build writes.
pub(crate) const MIGRATIONS_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// The bookkeeping table; the same text works on both backends.
pub(crate) const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS cloaca_schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

const CURRENT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM cloaca_schema_migrations";
const RECORD_MIGRATION: &str = "INSERT INTO cloaca_schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)";

/// Applies the missing migrations; run inside one transaction.
pub(crate) fn migrate(conn: &mut dyn Conn, postgres: bool, now: i64) -> Result<()> {
    conn.lock_for_migration()?;
    conn.batch(CREATE_MIGRATIONS_TABLE)?;
    let current = conn.query_one(CURRENT_VERSION, &[], |row| row.int(0))?;
    if current > MIGRATIONS_VERSION {
        return Err(Error::SchemaTooNew { found: current, supported: MIGRATIONS_VERSION });
    }
    for migration in pending(current) {
        conn.batch(&migration.sql_for(postgres))?;
        conn.execute(RECORD_MIGRATION, &[Param::Int(migration.version), Param::Text(migration.name), Param::Int(now)])?;
    }
    Ok(())
}

/// The migrations a database at `current` still needs.
pub(crate) fn pending(current: i64) -> impl Iterator<Item = &'static Migration> {
    MIGRATIONS.iter().filter(move |m| m.version > current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_gets_64_bit_integers_and_serial_keys() {
        let pg = MIGRATIONS[0].sql_for(true);
        assert!(pg.contains("seq BIGSERIAL PRIMARY KEY") && pg.contains("attempt BIGINT NOT NULL"), "{pg}");
        assert!(!pg.contains("INTEGER") && !pg.contains("AUTOINCREMENT"), "{pg}");
        assert_eq!(MIGRATIONS[0].sql_for(false), MIGRATIONS[0].sql);
    }

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1, "{}", m.name);
        }
        assert_eq!(pending(1).map(|m| m.version).collect::<Vec<_>>(), (2..=MIGRATIONS_VERSION).collect::<Vec<_>>());
        assert_eq!(pending(MIGRATIONS_VERSION).count(), 0);
    }
}

//! The query plans of the hot statements over a store holding a long
//! history (the test of migration 4): each must reach its rows through the
//! index meant for it, never by reading the history. Plans are checked on a
//! freshly loaded database (SQLite has no statistics unless ANALYZE runs)
//! and again after ANALYZE, on the backend this build has.

use super::conn::{Conn, Param};
use super::{control, decide, executions as ex, history, retention, schedules as sc, triggers as tr, Store};
use crate::engine::time::now_ms;
use crate::engine::url::{test_database_url, DatabaseUrl};

/// Completed executions of the loaded history, and tasks of each.
/// Large enough that reading a whole table costs PostgreSQL more than an
/// index does (on a few pages, a sequential scan is the right plan).
const EXECUTIONS: i64 = 50_000;
const TASKS: i64 = 5;

#[cfg(feature = "sqlite")]
mod dialect {
    pub(super) const EXPLAIN: &str = "EXPLAIN QUERY PLAN ";
    /// The column of EXPLAIN's rows that describes a step.
    pub(super) const DETAIL: usize = 3;
    pub(super) const TASK_KEY: &str = "sqlite_autoindex_cloaca_task_executions_1";
    pub(super) const TASK_ROW_KEY: &str = "INTEGER PRIMARY KEY";
    /// By key, or (with statistics) through the few running rows.
    pub(super) const TASK_ROW_KEY_OR_RUNNING: &str = "INTEGER PRIMARY KEY|cloaca_task_executions_expiring";
    pub(super) const TASK_KEY_OR_READY: &str = "sqlite_autoindex_cloaca_task_executions_1|cloaca_task_executions_ready";
    pub(super) const TASK_KEY_OR_RUNNING: &str = "sqlite_autoindex_cloaca_task_executions_1|cloaca_task_executions_expiring";
    pub(super) const EXECUTION_KEY: &str = "sqlite_autoindex_cloaca_executions_1";
    pub(super) const CRON_RUN_KEY: &str = "sqlite_autoindex_cloaca_cron_executions_1";
    pub(super) const CRON_HISTORY: &str = "sqlite_autoindex_cloaca_cron_executions_1|cloaca_cron_executions_by_time";
    pub(super) const CRON_STATS: &str =
        "cloaca_cron_executions_by_time|sqlite_autoindex_cloaca_cron_executions_1 (ANY(schedule_id) AND scheduled_time>?)";

    /// A step that reads a whole table.
    pub(super) fn full_scan(line: &str, table: &str) -> bool {
        line.trim() == format!("SCAN {table}")
    }
}

#[cfg(feature = "postgres")]
mod dialect {
    pub(super) const EXPLAIN: &str = "EXPLAIN ";
    pub(super) const DETAIL: usize = 0;
    pub(super) const TASK_KEY: &str = "cloaca_task_executions_execution_id_task_id_key";
    pub(super) const TASK_ROW_KEY: &str = "cloaca_task_executions_pkey";
    pub(super) const TASK_ROW_KEY_OR_RUNNING: &str = "cloaca_task_executions_pkey|cloaca_task_executions_expiring";
    pub(super) const TASK_KEY_OR_READY: &str = "cloaca_task_executions_execution_id_task_id_key|cloaca_task_executions_ready";
    pub(super) const TASK_KEY_OR_RUNNING: &str = "cloaca_task_executions_execution_id_task_id_key|cloaca_task_executions_expiring";
    pub(super) const EXECUTION_KEY: &str = "cloaca_executions_id_key";
    pub(super) const CRON_RUN_KEY: &str = "cloaca_cron_executions_schedule_id_scheduled_time_attempt_key";
    pub(super) const CRON_HISTORY: &str = "cloaca_cron_executions_schedule_id_scheduled_time_attempt_key|cloaca_cron_executions_by_time";
    pub(super) const CRON_STATS: &str = "cloaca_cron_executions_by_time";

    pub(super) fn full_scan(line: &str, table: &str) -> bool {
        line.contains(&format!("Seq Scan on {table} "))
    }
}

use dialect::*;

const HISTORY_TABLES: [&str; 6] = [
    "cloaca_task_executions",
    "cloaca_executions",
    "cloaca_cron_executions",
    "cloaca_execution_events",
    "cloaca_trigger_executions",
    "cloaca_trigger_schedules",
];

/// Written once for both backends (WITH RECURSIVE, `||` and integer
/// arithmetic mean the same in each).
fn load_history_sql() -> String {
    format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EXECUTIONS})
         INSERT INTO cloaca_executions (id, workflow_name, workflow_version, status, input_context, final_context,
                                        tasks_remaining, created_at, started_at, finished_at)
         SELECT 'hist-' || i, 'history', 'v1', CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END, '{{}}', '{{}}',
                0, i, i, i + 1 FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EXECUTIONS}),
                        m(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM m WHERE j < {TASKS})
         INSERT INTO cloaca_task_executions (execution_id, task_id, workflow_name, workflow_version, status, deps_remaining,
                                             attempt, max_attempts, next_attempt_at, output_context, started_at, finished_at)
         SELECT 'hist-' || i, 't' || j, 'history', 'v1', 'completed', 0, 1, 1, i, '{{}}', i, i + 1 FROM n, m;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EXECUTIONS})
         INSERT INTO cloaca_cron_executions (schedule_id, workflow_name, scheduled_time, attempt, execution_id, claimed_at, updated_at)
         SELECT 'sched-' || (i % 5), 'history', i, 1, 'hist-' || i, i, i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EXECUTIONS})
         INSERT INTO cloaca_execution_events (execution_id, at, kind, runner, detail)
         SELECT 'hist-' || i, i, 'execution_paused', 'r', NULL FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EXECUTIONS})
         INSERT INTO cloaca_trigger_executions (id, schedule_id, context_hash, execution_id, started_at, created_at)
         SELECT 'fire-' || i, 'trig-' || (i % 5), 'fire_no_context', 'hist-' || i, i, i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EXECUTIONS})
         INSERT INTO cloaca_trigger_schedules (id, trigger_name, workflow_name, poll_interval_ms, allow_concurrent, enabled,
                                               created_at, updated_at)
         SELECT 'trig-' || i, 'trigger-' || i, 'history', 1000, 0, 1, i, i FROM n;
         INSERT INTO cloaca_executions (id, workflow_name, workflow_version, status, input_context, tasks_remaining, created_at, started_at)
         VALUES ('live', 'history', 'v1', 'running', '{{}}', 2, 9000000, 9000000);
         INSERT INTO cloaca_task_executions (execution_id, task_id, workflow_name, workflow_version, status, deps_remaining,
                                             attempt, max_attempts, next_attempt_at, lease_owner, lease_expires_at)
         VALUES ('live', 'a', 'history', 'v1', 'ready', 0, 0, 1, 9000000, NULL, NULL),
                ('live', 'b', 'history', 'v1', 'running', 0, 1, 1, 9000000, 'r', 9000100);"
    )
}

/// One statement and the indexes its plan must use.
struct Expected {
    what: &'static str,
    sql: &'static str,
    params: Vec<Param<'static>>,
    /// Indexes the plan must use; `a|b` where either serves equally (two
    /// partial indexes over the same few running rows).
    uses: &'static [&'static str],
}

fn expectations() -> Vec<Expected> {
    use Param::{Int, NullableText, Text};
    let workflows = Text(r#"["history@v1"]"#);
    let expect = |what, sql, params, uses| Expected { what, sql, params, uses };
    vec![
        expect(
            "claiming a ready task",
            ex::CLAIM_READY,
            vec![Text("r"), Int(1), Int(9000000), workflows],
            &["cloaca_task_executions_ready"],
        ),
        expect(
            "claiming an expired lease",
            ex::CLAIM_EXPIRED,
            vec![Text("r"), Int(1), Int(9000000), workflows],
            &["cloaca_task_executions_expiring"],
        ),
        expect("loading dependency outputs", ex::LOAD_OUTPUTS, vec![Text("hist-5"), Text(r#"["t1","t2"]"#)], &[TASK_KEY]),
        expect("starting an execution", ex::START_EXECUTION, vec![Text("hist-5"), Int(1)], &[EXECUTION_KEY]),
        expect("reading a root's input", ex::READ_INPUT_AND_START, vec![Text("hist-5")], &[EXECUTION_KEY]),
        expect("completed outputs", ex::COMPLETED_OUTPUTS, vec![Text("hist-5")], &[TASK_KEY]),
        expect("renewing leases", ex::RENEW_LEASES, vec![Text("r"), Int(1), Text(r#"["1"]"#)], &[TASK_ROW_KEY_OR_RUNNING]),
        expect("the next due time", ex::NEXT_DUE, vec![workflows, Int(1)], &["cloaca_task_executions_ready"]),
        expect("releasing dependents", ex::RELEASE_DEPENDENTS, vec![Text("hist-5"), Text(r#"["t2"]"#), Int(1)], &[TASK_KEY]),
        // With statistics, PostgreSQL may read the few ready rows by status.
        expect("holding readied tasks", ex::HOLD_READIED, vec![Text("hist-5"), Text(r#"["t2"]"#)], &[TASK_KEY_OR_READY]),
        expect("finding cancelled attempts", ex::CANCELLED_ROWS, vec![Text(r#"["1","2"]"#)], &[TASK_ROW_KEY]),
        expect("finding an idempotency key", ex::FIND_BY_KEY, vec![Text("key")], &["cloaca_executions_idempotency"]),
        expect("reading task records", history::TASK_ROWS, vec![Text("hist-5")], &[TASK_KEY]),
        expect("reading a workflow shape", history::LOAD_SHAPE, vec![Text("hist-5")], &[EXECUTION_KEY]),
        expect("reading steering events", history::STEERING_EVENTS, vec![Text("hist-5")], &["cloaca_execution_events_by_execution"]),
        expect("locking an execution", control::LOCK_EXECUTION, vec![Text("hist-5")], &[EXECUTION_KEY]),
        expect("cancelling tasks", control::CANCEL_TASKS, vec![Text("hist-5"), Int(1), Text("1")], &[TASK_KEY]),
        expect("holding tasks", control::HOLD_TASKS, vec![Text("hist-5")], &[TASK_KEY_OR_READY]),
        expect("releasing held tasks", control::RELEASE_TASKS, vec![Text("hist-5")], &[TASK_KEY]),
        expect(
            "resetting a task",
            control::RESET_TASK,
            vec![Text("hist-5"), Text("t1"), Text("ready"), Int(0), Int(1), Int(1)],
            &[TASK_KEY],
        ),
        expect(
            "skipping descendants",
            ex::SKIP_TASKS,
            vec![Text("hist-5"), Text(r#"["t2"]"#), Int(1), Text("upstream_failed")],
            &[TASK_KEY],
        ),
        expect("skipping unfinished tasks", ex::SKIP_UNFINISHED, vec![Text("hist-5"), Int(1), Text("stopped")], &[TASK_KEY]),
        expect("releasing listed dependents", decide::RELEASE_LISTED, vec![Text("hist-5"), Text(r#"["t2"]"#), Int(1)], &[TASK_KEY]),
        expect("counting down ruled dependents", decide::COUNT_DOWN_LISTED, vec![Text("hist-5"), Text(r#"["t2"]"#)], &[TASK_KEY]),
        expect(
            "skipping pending tasks",
            decide::SKIP_PENDING,
            vec![Text("hist-5"), Text(r#"["t2"]"#), Text("trigger_rule"), Int(1)],
            &[TASK_KEY],
        ),
        expect("readying a decided task", decide::READY_PENDING, vec![Text("hist-5"), Text("t2"), Int(1)], &[TASK_KEY]),
        expect("reading named tasks' states", decide::TASK_STATUSES, vec![Text("hist-5"), Text(r#"["t2"]"#)], &[TASK_KEY]),
        expect("settling an execution", ex::SETTLE_READ, vec![Text("hist-5")], &[EXECUTION_KEY, TASK_KEY]),
        // With statistics, PostgreSQL may read the few running rows.
        expect("finding roots claimed at creation", ex::FIND_CLAIMED_ROOTS, vec![Text("hist-5"), Text("r")], &[TASK_KEY_OR_RUNNING]),
        expect(
            "releasing an unstarted claim",
            ex::RELEASE_UNSTARTED,
            vec![Int(1), Int(1), Text("r")],
            &[TASK_ROW_KEY_OR_RUNNING, EXECUTION_KEY],
        ),
        expect("counting down tasks", ex::DECREMENT_REMAINING, vec![Text("hist-5"), Int(1)], &[EXECUTION_KEY]),
        expect(
            "finishing an execution",
            ex::FINISH_EXECUTION,
            vec![Text("hist-5"), Text("completed"), Text("{}"), NullableText(None), Int(1)],
            &[EXECUTION_KEY],
        ),
        expect("reading an execution", ex::GET_EXECUTION, vec![Text("hist-5")], &[EXECUTION_KEY]),
        expect("listing executions", ex::LIST_EXECUTIONS, vec![Int(100)], &["cloaca_executions_newest"]),
        expect("listing by workflow", ex::LIST_EXECUTIONS_OF_WORKFLOW, vec![Text("other"), Int(100)], &["cloaca_executions_by_workflow"]),
        expect("listing by status", ex::LIST_EXECUTIONS_IN_STATUS, vec![Text("running"), Int(100)], &["cloaca_executions_by_status"]),
        expect(
            "listing by workflow and status",
            ex::LIST_EXECUTIONS_OF_WORKFLOW_IN_STATUS,
            vec![Text("history"), Text("running"), Int(100)],
            // With statistics, PostgreSQL may read the few running rows by status.
            &["cloaca_executions_by_workflow_status|cloaca_executions_by_status"],
        ),
        expect(
            "cron history",
            sc::HISTORY,
            vec![Text("sched-1"), Int(100), Int(0)], // Or newest ticks first, keeping the schedule's: PostgreSQL's choice
            // when one schedule owns a fifth of the history.
            &[CRON_HISTORY, EXECUTION_KEY],
        ),
        // Or, with statistics, SQLite's skip-scan of the few schedules' keys.
        expect("cron stats", sc::STATS, vec![Int(EXECUTIONS - 5)], &[CRON_STATS, EXECUTION_KEY]),
        expect("deleting a schedule's history", sc::DELETE_HISTORY, vec![Text("sched-1")], &[CRON_RUN_KEY]),
        expect("lost cron executions", sc::LOST_CANDIDATES, vec![Int(1), Int(2), Text(r#"["history"]"#)], &[TASK_KEY]),
        expect(
            "finding prunable executions",
            retention::PRUNABLE,
            vec![Int(100), Text("completed"), Text("history"), Int(1000)],
            &["cloaca_executions_finished"],
        ),
        expect("pruning task rows", retention::DELETE_TASKS, vec![Text(r#"["hist-5"]"#)], &[TASK_KEY]),
        expect("pruning events", retention::DELETE_EVENTS, vec![Text(r#"["hist-5"]"#)], &["cloaca_execution_events_by_execution"]),
        expect(
            "pruning cron history rows",
            retention::DELETE_CRON_RUNS,
            vec![Text(r#"["hist-5"]"#)],
            &["cloaca_cron_executions_by_execution"],
        ),
        expect("reading a trigger", tr::GET_TRIGGER, vec![Text("trigger-1")], &["cloaca_trigger_schedules_by_name"]),
        expect("listing triggers", tr::LIST_TRIGGERS, vec![Int(100), Int(0)], &["cloaca_trigger_schedules_by_age"]),
        expect("enabling a trigger", tr::SET_ENABLED, vec![Text("trigger-1"), Int(1), Int(1)], &["cloaca_trigger_schedules_by_name"]),
        expect(
            "taking a trigger's lease",
            tr::TAKE_LEASE,
            vec![Text("trigger-1"), Text("r"), Int(1), Int(1)],
            &["cloaca_trigger_schedules_by_name"],
        ),
        expect("releasing a trigger's lease", tr::RELEASE_LEASE, vec![Text("trigger-1"), Text("r")], &["cloaca_trigger_schedules_by_name"]),
        expect(
            "recording a trigger's poll",
            tr::RECORD_POLL,
            vec![Text("trigger-1"), Text("r"), Int(1), Int(1)],
            &["cloaca_trigger_schedules_by_name"],
        ),
        expect(
            "finding an unfinished equal fire",
            tr::OPEN_EQUAL_FIRE,
            vec![Text("history"), Text("trig-1"), Text("fire_no_context"), Text("none")],
            &["cloaca_executions_by_workflow_status|cloaca_executions_by_status", "cloaca_trigger_executions_by_execution"],
        ),
        expect(
            "trigger history",
            tr::HISTORY,
            vec![Text("trigger-1"), Int(100), Int(0)],
            &["cloaca_trigger_schedules_by_name", "cloaca_trigger_executions_by_schedule", EXECUTION_KEY],
        ),
        expect("pruning trigger history rows", tr::DELETE_RUNS, vec![Text(r#"["hist-5"]"#)], &["cloaca_trigger_executions_by_execution"]),
    ]
}

fn plan(conn: &mut dyn Conn, expected: &Expected) -> String {
    // Conn caches statements by their &'static text; a test may leak a few.
    let sql: &'static str = Box::leak(format!("{EXPLAIN}{}", expected.sql).into_boxed_str());
    let lines = conn.query_all(sql, &expected.params, |row| row.text(DETAIL)).unwrap_or_else(|e| panic!("{}: {e}", expected.what));
    lines.join("\n")
}

/// A parameter as an SQL literal, for EXECUTE.
#[cfg(feature = "postgres")]
fn literal(param: &Param) -> String {
    match *param {
        Param::Int(i) | Param::NullableInt(Some(i)) => i.to_string(),
        Param::Text(t) | Param::NullableText(Some(t)) => format!("'{}'", t.replace('\'', "''")),
        Param::NullableText(None) | Param::NullableInt(None) => "NULL".into(),
    }
}

/// The generic plan PostgreSQL may settle on for a prepared statement run
/// often (it plans once without the values, from the columns' statistics
/// alone); rust-postgres prepares every statement the store runs.
#[cfg(feature = "postgres")]
fn generic_plan(conn: &mut dyn Conn, expected: &Expected) -> String {
    let prepare =
        format!("SET plan_cache_mode = force_generic_plan; PREPARE cloaca_plan AS {}", super::conn::postgres_dialect(expected.sql));
    conn.batch(&prepare).unwrap_or_else(|e| panic!("{}: {e}", expected.what));
    let args: Vec<String> = expected.params.iter().map(literal).collect();
    let sql: &'static str = Box::leak(format!("EXPLAIN EXECUTE cloaca_plan({})", args.join(", ")).into_boxed_str());
    let lines = conn.query_all(sql, &[], |row| row.text(0)).unwrap_or_else(|e| panic!("{}: {e}", expected.what));
    conn.batch("DEALLOCATE cloaca_plan; RESET plan_cache_mode").unwrap();
    lines.join("\n")
}

/// Every statement's plan that misses its index or reads a history table
/// whole: as planned for its values, and on PostgreSQL also generically.
fn wrong_plans(store: &Store) -> Vec<String> {
    store
        .db
        .single(|conn| {
            let mut wrong = Vec::new();
            for expected in expectations() {
                // Not the cron stats: a generic plan takes `scheduled_time >= $1`
                // for a third of the history, where reading it whole is right,
                // and PostgreSQL keeps a generic plan only when it costs no more
                // than those planned for the values.
                #[cfg(feature = "postgres")]
                let plans: Vec<String> = if expected.sql == sc::STATS {
                    vec![plan(conn, &expected)]
                } else {
                    vec![plan(conn, &expected), generic_plan(conn, &expected)]
                };
                #[cfg(feature = "sqlite")]
                let plans = vec![plan(conn, &expected)];
                for plan in plans {
                    if std::env::var("CLOACA_SHOW_PLANS").is_ok() {
                        eprintln!("== {}\n{plan}", expected.what);
                    }
                    let missing: Vec<&&str> =
                        expected.uses.iter().filter(|any| !any.split('|').any(|index| plan.contains(index))).collect();
                    let scans: Vec<&str> = HISTORY_TABLES.into_iter().filter(|t| plan.lines().any(|l| full_scan(l, t))).collect();
                    if !missing.is_empty() || !scans.is_empty() {
                        wrong.push(format!("{} (missing {missing:?}, scans {scans:?}):\n{plan}", expected.what));
                    }
                }
            }
            Ok(wrong)
        })
        .unwrap()
}

#[test]
fn hot_statements_use_their_indexes_over_a_long_history() {
    let url = DatabaseUrl::parse(&test_database_url()).unwrap();
    // On PostgreSQL a schema of its own keeps the history from the other tests.
    #[cfg(feature = "postgres")]
    let schema = Some(format!("plans_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    #[cfg(feature = "sqlite")]
    let schema: Option<String> = None;
    let store = Store::open(&url, schema.as_deref(), 2, std::time::Duration::ZERO, now_ms()).unwrap();
    store.db.write("loading a history", |c| c.batch(&load_history_sql())).unwrap();
    // SQLite plans without statistics unless something runs ANALYZE: the
    // case of the report that led to migration 4. PostgreSQL plans by its
    // statistics, which autovacuum keeps; without them (just after a bulk
    // load) it takes the history for a few pages, where reading them is right.
    #[cfg(feature = "sqlite")]
    {
        let fresh = wrong_plans(&store);
        assert!(fresh.is_empty(), "without statistics:\n{}", fresh.join("\n\n"));
    }
    store.db.write("analyzing", |c| c.batch("ANALYZE")).unwrap();
    let analyzed = wrong_plans(&store);
    assert!(analyzed.is_empty(), "after ANALYZE:\n{}", analyzed.join("\n\n"));
    if let Some(schema) = schema {
        store.db.write("dropping the schema", |c| c.batch(&format!("DROP SCHEMA {schema} CASCADE"))).unwrap();
    }
}

//! The SQL of the store, written once for both backends.
//!
//! Statements are written in SQLite's spelling (`?N` parameters,
//! `json_each(?N)` for a JSON array of strings, `/*LOCK*/` where a claim
//! locks its row); [`postgres_dialect`] rewrites those three things for
//! PostgreSQL. A backend only adapts its connection to [`Conn`] and its
//! transactions to [`SqlBackend`]; everything else here, the [`Tx`] and
//! [`Store`] implementations included, is shared.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::cron;
use super::migrations::{self, CREATE_MIGRATIONS_TABLE, MIGRATIONS_VERSION};
use super::{
    AttemptOutcome, AttemptRecorded, Channel, Claim, EventHandler, ExecutionRecord, ExecutionStatus, FailedTask, LoadedContexts, Store, Tx,
    WorkflowRef,
};
use crate::engine::dag::Dag;
use crate::engine::error::{EngineError, Result};
use crate::engine::retry::TaskFailure;
use crate::engine::Context;

/// A statement parameter.
#[derive(Clone, Copy, Debug)]
pub enum Param<'a> {
    Int(i64),
    Text(&'a str),
    NullableText(Option<&'a str>),
    NullableInt(Option<i64>),
}

/// Read access to one result row, by column index.
pub trait Row {
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
}

/// A connection (or open transaction) of one backend.
pub trait Conn {
    fn execute(&mut self, sql: &'static str, params: &[Param]) -> Result<u64>;
    fn query(&mut self, sql: &'static str, params: &[Param], each: &mut dyn FnMut(&dyn Row) -> Result<()>) -> Result<()>;
    /// Runs several statements (a migration).
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// Sends a notification on commit; a no-op where nobody can listen.
    fn notify(&mut self, channel: Channel, payload: &str) -> Result<()>;
    /// Serialises migrations between processes (SQLite's write lock already does).
    fn lock_for_migration(&mut self) -> Result<()>;
}

/// What a backend provides so that [`Store`] is implemented once for it:
/// transactions, single autocommit statements, and (optionally) notifications.
pub trait SqlBackend: Send + Sync {
    /// Runs `f` in one transaction, committed only if it succeeds (and, where
    /// the database can abort a transaction for a conflict, retried).
    fn write<T>(&self, action: &'static str, f: impl FnMut(&mut dyn Conn) -> Result<T>) -> Result<T>;

    /// Runs `f` outside an explicit transaction: reads, and single
    /// statements, each atomic on its own.
    fn single<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T>;

    /// See [`Store::listen`].
    fn listen(&self, on_event: EventHandler, stop: Arc<AtomicBool>) -> Result<Option<JoinHandle<()>>> {
        let _ = (on_event, stop);
        Ok(None)
    }
}

impl<B: SqlBackend> Store for B {
    fn create_execution(&self, execution_id: &str, dag: &Dag, input: &Context, now: i64) -> Result<()> {
        self.write("creating an execution", |c| create_execution(c, execution_id, dag, input, now))
    }

    fn claim(&self, owner: &str, workflows: &[WorkflowRef], now: i64, lease_ms: i64, recover: bool) -> Result<Option<Claim>> {
        if workflows.is_empty() {
            return Ok(None);
        }
        self.single(|c| claim(c, owner, workflows, now, lease_ms, recover))
    }

    fn load_contexts(&self, execution_id: &str, dependencies: &[&str], now: i64) -> Result<LoadedContexts> {
        self.single(|c| load_contexts(c, execution_id, dependencies, now))
    }

    fn record_attempt(&self, claim: &Claim, dag: &Dag, outcome: &AttemptOutcome, now: i64) -> Result<AttemptRecorded> {
        self.write("recording a task attempt", |c| super::record_attempt(&mut SqlTx(c), claim, dag, outcome, now))
    }

    fn renew_leases(&self, owner: &str, row_ids: &[i64], expires_at: i64) -> Result<()> {
        if row_ids.is_empty() {
            return Ok(());
        }
        self.single(|c| renew_leases(c, owner, row_ids, expires_at))
    }

    fn next_due(&self, workflows: &[WorkflowRef], recover: bool) -> Result<Option<i64>> {
        if workflows.is_empty() {
            return Ok(None);
        }
        self.single(|c| next_due(c, workflows, recover))
    }

    fn get_execution(&self, execution_id: &str) -> Result<Option<ExecutionRecord>> {
        self.single(|c| get_execution(c, execution_id))
    }

    fn completed_outputs(&self, execution_id: &str) -> Result<HashMap<String, Context>> {
        self.single(|c| completed_outputs(c, execution_id))
    }

    fn list_executions(&self, workflow_name: Option<&str>, status: Option<ExecutionStatus>, limit: i64) -> Result<Vec<ExecutionRecord>> {
        self.single(|c| list_executions(c, workflow_name, status, limit))
    }

    fn abort_execution(&self, execution_id: &str, dag: &Dag, message: &str, now: i64) -> Result<bool> {
        self.write("aborting an execution", |c| super::abort_execution(&mut SqlTx(c), execution_id, Some(dag), message, now))
    }

    fn insert_schedule(&self, schedule: &cron::ScheduleRecord) -> Result<()> {
        self.single(|c| cron::insert_schedule(c, schedule))
    }

    fn get_schedule(&self, id: &str) -> Result<Option<cron::ScheduleRecord>> {
        self.single(|c| cron::get_schedule(c, id))
    }

    fn list_schedules(&self, enabled_only: bool, limit: i64, offset: i64) -> Result<Vec<cron::ScheduleRecord>> {
        self.single(|c| cron::list_schedules(c, enabled_only, limit, offset))
    }

    fn update_schedule(&self, schedule: &cron::ScheduleRecord, read_next_run_at: i64, now: i64) -> Result<bool> {
        self.single(|c| cron::update_schedule(c, schedule, read_next_run_at, now))
    }

    fn delete_schedule(&self, id: &str) -> Result<bool> {
        self.write("deleting a cron schedule", |c| cron::delete_schedule(c, id))
    }

    fn next_cron_due(&self, workflow_names: &[&str]) -> Result<Option<i64>> {
        if workflow_names.is_empty() {
            return Ok(None);
        }
        self.single(|c| cron::next_due(c, workflow_names))
    }

    fn fire_due_schedule(&self, planner: &dyn cron::TickPlanner, exclude: &[String], now: i64) -> Result<cron::Fired> {
        self.write("firing a cron tick", |c| cron::fire_due_schedule(c, planner, exclude, now))
    }

    fn cron_history(&self, schedule_id: &str, limit: i64, offset: i64) -> Result<Vec<cron::CronRun>> {
        self.single(|c| cron::history(c, schedule_id, limit, offset))
    }

    fn cron_stats(&self, since: i64) -> Result<cron::CronStats> {
        self.single(|c| cron::stats(c, since))
    }

    fn lost_cron_executions(&self, workflow_names: &[&str], stalled_since: i64, now: i64) -> Result<Vec<cron::LostCandidate>> {
        if workflow_names.is_empty() {
            return Ok(Vec::new());
        }
        self.single(|c| cron::lost_candidates(c, workflow_names, stalled_since, now))
    }

    fn recover_lost(
        &self,
        lost: &cron::LostCandidate,
        planner: &dyn cron::TickPlanner,
        message: &str,
        restart: bool,
        now: i64,
    ) -> Result<cron::Recovered> {
        self.write("recovering a lost cron execution", |c| cron::recover_lost(c, lost, planner, message, restart, now))
    }

    fn listen(&self, on_event: EventHandler, stop: Arc<AtomicBool>) -> Result<Option<JoinHandle<()>>> {
        SqlBackend::listen(self, on_event, stop)
    }
}

/// Rewrites a statement from SQLite's spelling into PostgreSQL's.
pub fn postgres_dialect(sql: &str) -> String {
    let sql = sql.replace("/*LOCK*/", "FOR UPDATE SKIP LOCKED");
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql.as_str();
    while let Some(at) = rest.find(['?', 'j']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("json_each(?") {
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            out.push_str(&format!("json_array_elements_text(CAST(${} AS TEXT)::json)", &after[..digits]));
            rest = &after[digits + 1..]; // past the closing parenthesis
        } else if let Some(after) = rest.strip_prefix('?') {
            out.push('$');
            rest = after;
        } else {
            out.push('j');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// A JSON array of strings, the list parameter of `json_each(?N)`.
pub(crate) fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::to_string(&items.into_iter().collect::<Vec<_>>()).expect("a list of strings serialises")
}

/// The claim filter value: `name@version` of each workflow (versions are hex, so `@` is unambiguous).
fn workflow_list(workflows: &[WorkflowRef]) -> String {
    serde_json::to_string(&workflows.iter().map(|w| format!("{}@{}", w.name, w.version)).collect::<Vec<_>>())
        .expect("a list of strings serialises")
}

fn to_json(context: &Context, what: &'static str) -> Result<String> {
    serde_json::to_string(context).map_err(|e| EngineError::database(what, e))
}

// ---- schema -------------------------------------------------------------

const CURRENT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM cloaca_schema_migrations";
const RECORD_MIGRATION: &str = "INSERT INTO cloaca_schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)";

/// Applies the missing migrations; run inside one transaction.
pub fn migrate(conn: &mut dyn Conn, postgres: bool, now: i64) -> Result<()> {
    conn.lock_for_migration()?;
    conn.batch(CREATE_MIGRATIONS_TABLE)?;
    let mut current = 0;
    conn.query(CURRENT_VERSION, &[], &mut |row| {
        current = row.int(0)?;
        Ok(())
    })?;
    if current > MIGRATIONS_VERSION {
        return Err(EngineError::SchemaTooNew { found: current, supported: MIGRATIONS_VERSION });
    }
    for migration in migrations::pending(current) {
        conn.batch(&migration.sql_for(postgres))?;
        conn.execute(RECORD_MIGRATION, &[Param::Int(migration.version), Param::Text(migration.name), Param::Int(now)])?;
    }
    Ok(())
}

// ---- creating and claiming ------------------------------------------------

const INSERT_EXECUTION: &str = "INSERT INTO cloaca_executions
    (id, workflow_name, workflow_version, status, input_context, tasks_remaining, created_at)
    VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6)";
const INSERT_TASK: &str = "INSERT INTO cloaca_task_executions
    (execution_id, task_id, workflow_name, workflow_version, status, deps_remaining, max_attempts, next_attempt_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Inserts an execution with one row per task; roots start ready.
pub fn create_execution(conn: &mut dyn Conn, execution_id: &str, dag: &Dag, input: &Context, now: i64) -> Result<()> {
    let input = to_json(input, "storing an execution input")?;
    conn.execute(
        INSERT_EXECUTION,
        &[
            Param::Text(execution_id),
            Param::Text(dag.name()),
            Param::Text(dag.version()),
            Param::Text(&input),
            Param::Int(dag.len() as i64),
            Param::Int(now),
        ],
    )?;
    for (i, task) in dag.tasks().iter().enumerate() {
        let deps = dag.dependencies_of(i).len() as i64;
        conn.execute(
            INSERT_TASK,
            &[
                Param::Text(execution_id),
                Param::Text(&task.id),
                Param::Text(dag.name()),
                Param::Text(dag.version()),
                Param::Text(if deps == 0 { "ready" } else { "pending" }),
                Param::Int(deps),
                Param::Int(i64::from(task.retry.retries) + 1),
                Param::Int(now),
            ],
        )?;
    }
    let roots = (0..dag.len()).filter(|&i| dag.dependencies_of(i).is_empty()).count();
    conn.notify(Channel::Work, &roots.to_string())
}

const CLAIM_READY: &str = "UPDATE cloaca_task_executions
    SET status = 'running', attempt = attempt + 1, lease_owner = ?1, lease_expires_at = ?2, started_at = ?3
    WHERE id = (SELECT id FROM cloaca_task_executions
                WHERE status = 'ready' AND next_attempt_at <= ?3
                  AND workflow_name || '@' || workflow_version IN (SELECT value FROM json_each(?4))
                ORDER BY next_attempt_at, id LIMIT 1 /*LOCK*/)
    RETURNING id, execution_id, task_id, workflow_name, workflow_version, attempt, failures";
const CLAIM_EXPIRED: &str = "UPDATE cloaca_task_executions
    SET status = 'running', attempt = attempt + 1, lease_owner = ?1, lease_expires_at = ?2, started_at = ?3
    WHERE id = (SELECT id FROM cloaca_task_executions
                WHERE status = 'running' AND lease_expires_at < ?3
                  AND workflow_name || '@' || workflow_version IN (SELECT value FROM json_each(?4))
                ORDER BY lease_expires_at, id LIMIT 1 /*LOCK*/)
    RETURNING id, execution_id, task_id, workflow_name, workflow_version, attempt, failures";

/// Claims one ready task, or with `recover` one whose lease expired. Each
/// claim is a single statement, so it needs no explicit transaction.
pub fn claim(conn: &mut dyn Conn, owner: &str, workflows: &[WorkflowRef], now: i64, lease_ms: i64, recover: bool) -> Result<Option<Claim>> {
    let list = workflow_list(workflows);
    let params = [Param::Text(owner), Param::Int(now + lease_ms), Param::Int(now), Param::Text(&list)];
    let statements: &[&'static str] = if recover { &[CLAIM_READY, CLAIM_EXPIRED] } else { &[CLAIM_READY] };
    for sql in statements {
        let mut claimed = None;
        conn.query(sql, &params, &mut |row| {
            claimed = Some(Claim {
                row_id: row.int(0)?,
                execution_id: row.text(1)?,
                task_id: row.text(2)?,
                workflow: WorkflowRef { name: row.text(3)?, version: row.text(4)? },
                attempt: row.int(5)?,
                failures: row.int(6)?,
            });
            Ok(())
        })?;
        if claimed.is_some() {
            return Ok(claimed);
        }
    }
    Ok(None)
}

const LOAD_INPUT: &str = "SELECT input_context FROM cloaca_executions WHERE id = ?1";
const START_EXECUTION: &str = "UPDATE cloaca_executions
    SET status = CASE WHEN status = 'pending' THEN 'running' ELSE status END, started_at = COALESCE(started_at, ?2)
    WHERE id = ?1 RETURNING input_context";
const LOAD_OUTPUTS: &str = "SELECT task_id, output_context FROM cloaca_task_executions
    WHERE execution_id = ?1 AND status = 'completed' AND task_id IN (SELECT value FROM json_each(?2))";

/// The outputs of `dependencies`; for a root task (no dependencies) the
/// execution input, marking the execution running in the same statement
/// (only a root can be the first task of an execution to start).
pub fn load_contexts(conn: &mut dyn Conn, execution_id: &str, dependencies: &[&str], now: i64) -> Result<LoadedContexts> {
    let mut loaded = LoadedContexts::default();
    if dependencies.is_empty() {
        let mut text = None;
        conn.query(START_EXECUTION, &[Param::Text(execution_id), Param::Int(now)], &mut |row| {
            text = Some(row.text(0)?);
            Ok(())
        })?;
        let text = text.ok_or_else(|| EngineError::UnknownExecution(execution_id.to_string()))?;
        loaded.input = Some(super::parse_context(&text, "an execution input")?);
        return Ok(loaded);
    }
    let list = json_list(dependencies.iter().copied());
    conn.query(LOAD_OUTPUTS, &[Param::Text(execution_id), Param::Text(&list)], &mut |row| {
        let task_id = row.text(0)?;
        let text = row.opt_text(1)?.unwrap_or_else(|| "{}".into());
        loaded.outputs.insert(task_id, super::parse_context(&text, "a task output")?);
        Ok(())
    })?;
    Ok(loaded)
}

// ---- leases and wake-up times ----------------------------------------------

// Row ids travel as JSON strings: compared as text, the same on both backends.
const RENEW_LEASES: &str = "UPDATE cloaca_task_executions SET lease_expires_at = ?2
    WHERE lease_owner = ?1 AND status = 'running' AND CAST(id AS TEXT) IN (SELECT value FROM json_each(?3))";
const NEXT_DUE: &str = "SELECT MIN(CASE WHEN status = 'ready' THEN next_attempt_at ELSE lease_expires_at END)
    FROM cloaca_task_executions
    WHERE (status = 'ready' OR (CAST(?2 AS BIGINT) = 1 AND status = 'running'))
      AND workflow_name || '@' || workflow_version IN (SELECT value FROM json_each(?1))";

pub fn renew_leases(conn: &mut dyn Conn, owner: &str, row_ids: &[i64], expires_at: i64) -> Result<()> {
    let ids: Vec<String> = row_ids.iter().map(i64::to_string).collect();
    let list = json_list(ids.iter().map(String::as_str));
    conn.execute(RENEW_LEASES, &[Param::Text(owner), Param::Int(expires_at), Param::Text(&list)]).map(|_| ())
}

pub fn next_due(conn: &mut dyn Conn, workflows: &[WorkflowRef], recover: bool) -> Result<Option<i64>> {
    let list = workflow_list(workflows);
    let mut due = None;
    conn.query(NEXT_DUE, &[Param::Text(&list), Param::Int(i64::from(recover))], &mut |row| {
        due = row.opt_int(0)?;
        Ok(())
    })?;
    Ok(due)
}

// ---- reading executions ------------------------------------------------------

const EXECUTION_COLUMNS: &str =
    "id, workflow_name, workflow_version, status, input_context, final_context, error_message, created_at, started_at, finished_at";
const GET_EXECUTION: &str =
    "SELECT id, workflow_name, workflow_version, status, input_context, final_context, error_message, created_at, started_at, finished_at
    FROM cloaca_executions WHERE id = ?1";
const LIST_EXECUTIONS: &str =
    "SELECT id, workflow_name, workflow_version, status, input_context, final_context, error_message, created_at, started_at, finished_at
    FROM cloaca_executions
    WHERE (CAST(?1 AS TEXT) IS NULL OR workflow_name = ?1) AND (CAST(?2 AS TEXT) IS NULL OR status = ?2)
    ORDER BY created_at DESC, seq DESC LIMIT ?3";

fn execution_record(row: &dyn Row) -> Result<ExecutionRecord> {
    let final_context = match row.opt_text(5)? {
        Some(text) => Some(super::parse_context(&text, "a final context")?),
        None => None,
    };
    Ok(ExecutionRecord {
        id: row.text(0)?,
        workflow_name: row.text(1)?,
        workflow_version: row.text(2)?,
        status: ExecutionStatus::from_db(&row.text(3)?)?,
        input: super::parse_context(&row.text(4)?, "an execution input")?,
        final_context,
        error_message: row.opt_text(6)?,
        created_at: row.int(7)?,
        started_at: row.opt_int(8)?,
        finished_at: row.opt_int(9)?,
    })
}

pub fn get_execution(conn: &mut dyn Conn, execution_id: &str) -> Result<Option<ExecutionRecord>> {
    debug_assert!(GET_EXECUTION.contains(EXECUTION_COLUMNS));
    let mut found = None;
    conn.query(GET_EXECUTION, &[Param::Text(execution_id)], &mut |row| {
        found = Some(execution_record(row)?);
        Ok(())
    })?;
    Ok(found)
}

pub fn list_executions(
    conn: &mut dyn Conn,
    workflow_name: Option<&str>,
    status: Option<ExecutionStatus>,
    limit: i64,
) -> Result<Vec<ExecutionRecord>> {
    debug_assert!(LIST_EXECUTIONS.contains(EXECUTION_COLUMNS));
    let mut records = Vec::new();
    let params = [Param::NullableText(workflow_name), Param::NullableText(status.map(ExecutionStatus::as_db)), Param::Int(limit)];
    conn.query(LIST_EXECUTIONS, &params, &mut |row| {
        records.push(execution_record(row)?);
        Ok(())
    })?;
    Ok(records)
}

pub fn completed_outputs(conn: &mut dyn Conn, execution_id: &str) -> Result<HashMap<String, Context>> {
    let mut outputs = HashMap::new();
    for (task_id, text) in SqlTx(conn).completed_output_texts(execution_id)? {
        outputs.insert(task_id, super::parse_context(&text, "a task output")?);
    }
    Ok(outputs)
}

// ---- the transaction statements of record_attempt ------------------------------

const COMPLETE_ATTEMPT: &str = "UPDATE cloaca_task_executions
    SET status = 'completed', output_context = ?3, lease_owner = NULL, lease_expires_at = NULL, finished_at = ?4
    WHERE id = ?1 AND attempt = ?2 AND status = 'running'";
const FAIL_ATTEMPT: &str = "UPDATE cloaca_task_executions
    SET status = 'failed', failures = failures + 1, error_type = ?3, error_message = ?4, error_traceback = ?5,
        lease_owner = NULL, lease_expires_at = NULL, finished_at = ?6
    WHERE id = ?1 AND attempt = ?2 AND status = 'running'";
const RESCHEDULE_ATTEMPT: &str = "UPDATE cloaca_task_executions
    SET status = 'ready', failures = failures + 1, error_type = ?3, error_message = ?4, error_traceback = ?5,
        lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = ?6
    WHERE id = ?1 AND attempt = ?2 AND status = 'running'";
// SET expressions read the row as it was, so `deps_remaining = 1` means
// "this was the last dependency".
const RELEASE_DEPENDENTS: &str = "UPDATE cloaca_task_executions
    SET deps_remaining = deps_remaining - 1,
        status = CASE WHEN deps_remaining = 1 AND status = 'pending' THEN 'ready' ELSE status END,
        next_attempt_at = CASE WHEN deps_remaining = 1 AND status = 'pending' THEN ?3 ELSE next_attempt_at END
    WHERE execution_id = ?1 AND task_id IN (SELECT value FROM json_each(?2))
    RETURNING status";
const SKIP_TASKS: &str = "UPDATE cloaca_task_executions SET status = 'skipped', finished_at = ?3
    WHERE execution_id = ?1 AND status IN ('pending', 'ready') AND task_id IN (SELECT value FROM json_each(?2))";
const SKIP_UNFINISHED: &str = "UPDATE cloaca_task_executions
    SET status = 'skipped', finished_at = ?2, lease_owner = NULL, lease_expires_at = NULL
    WHERE execution_id = ?1 AND status IN ('pending', 'ready', 'running')";
const DECREMENT_REMAINING: &str =
    "UPDATE cloaca_executions SET tasks_remaining = tasks_remaining - ?2 WHERE id = ?1 RETURNING tasks_remaining";
const COMPLETED_OUTPUTS: &str =
    "SELECT task_id, output_context FROM cloaca_task_executions WHERE execution_id = ?1 AND status = 'completed'";
const FAILED_TASKS: &str = "SELECT task_id, attempt, error_type, error_message, error_traceback
    FROM cloaca_task_executions WHERE execution_id = ?1 AND status = 'failed'";
const FINISH_EXECUTION: &str = "UPDATE cloaca_executions
    SET status = ?2, final_context = ?3, error_message = ?4, finished_at = ?5, tasks_remaining = 0 WHERE id = ?1";
const EXECUTION_STATUS: &str = "SELECT status FROM cloaca_executions WHERE id = ?1";

/// [`Tx`] over any backend's open transaction.
pub struct SqlTx<'c>(pub &'c mut dyn Conn);

impl Tx for SqlTx<'_> {
    fn finish_attempt(
        &mut self,
        claim: &Claim,
        completed: bool,
        output: Option<&str>,
        failure: Option<&TaskFailure>,
        now: i64,
    ) -> Result<bool> {
        let (id, attempt) = (Param::Int(claim.row_id), Param::Int(claim.attempt));
        let changed = if completed {
            self.0.execute(COMPLETE_ATTEMPT, &[id, attempt, Param::NullableText(output), Param::Int(now)])?
        } else {
            let failure = failure.expect("a failed attempt carries its failure");
            self.0.execute(
                FAIL_ATTEMPT,
                &[
                    id,
                    attempt,
                    Param::Text(&failure.error_type),
                    Param::Text(&failure.message),
                    Param::NullableText(failure.traceback.as_deref()),
                    Param::Int(now),
                ],
            )?
        };
        Ok(changed == 1)
    }

    fn reschedule_attempt(&mut self, claim: &Claim, failure: &TaskFailure, retry_at: i64) -> Result<bool> {
        let changed = self.0.execute(
            RESCHEDULE_ATTEMPT,
            &[
                Param::Int(claim.row_id),
                Param::Int(claim.attempt),
                Param::Text(&failure.error_type),
                Param::Text(&failure.message),
                Param::NullableText(failure.traceback.as_deref()),
                Param::Int(retry_at),
            ],
        )?;
        Ok(changed == 1)
    }

    fn release_dependents(&mut self, execution_id: &str, dependents: &[&str], now: i64) -> Result<u64> {
        let list = json_list(dependents.iter().copied());
        let mut readied = 0;
        self.0.query(RELEASE_DEPENDENTS, &[Param::Text(execution_id), Param::Text(&list), Param::Int(now)], &mut |row| {
            readied += u64::from(row.text(0)? == "ready");
            Ok(())
        })?;
        Ok(readied)
    }

    fn skip_tasks(&mut self, execution_id: &str, task_ids: &[&str], now: i64) -> Result<u64> {
        let list = json_list(task_ids.iter().copied());
        self.0.execute(SKIP_TASKS, &[Param::Text(execution_id), Param::Text(&list), Param::Int(now)])
    }

    fn decrement_remaining(&mut self, execution_id: &str, by: i64) -> Result<i64> {
        let mut remaining = None;
        self.0.query(DECREMENT_REMAINING, &[Param::Text(execution_id), Param::Int(by)], &mut |row| {
            remaining = Some(row.int(0)?);
            Ok(())
        })?;
        remaining.ok_or_else(|| EngineError::UnknownExecution(execution_id.to_string()))
    }

    fn execution_input(&mut self, execution_id: &str) -> Result<String> {
        let mut input = None;
        self.0.query(LOAD_INPUT, &[Param::Text(execution_id)], &mut |row| {
            input = Some(row.text(0)?);
            Ok(())
        })?;
        input.ok_or_else(|| EngineError::UnknownExecution(execution_id.to_string()))
    }

    fn completed_output_texts(&mut self, execution_id: &str) -> Result<Vec<(String, String)>> {
        let mut outputs = Vec::new();
        self.0.query(COMPLETED_OUTPUTS, &[Param::Text(execution_id)], &mut |row| {
            outputs.push((row.text(0)?, row.opt_text(1)?.unwrap_or_else(|| "{}".into())));
            Ok(())
        })?;
        Ok(outputs)
    }

    fn failed_tasks(&mut self, execution_id: &str) -> Result<Vec<FailedTask>> {
        let mut failed = Vec::new();
        self.0.query(FAILED_TASKS, &[Param::Text(execution_id)], &mut |row| {
            failed.push(FailedTask {
                task_id: row.text(0)?,
                attempts: row.int(1)?,
                error_type: row.opt_text(2)?.unwrap_or_default(),
                error_message: row.opt_text(3)?.unwrap_or_default(),
                traceback: row.opt_text(4)?,
            });
            Ok(())
        })?;
        Ok(failed)
    }

    fn finish_execution(&mut self, execution_id: &str, failed: bool, final_context: &str, error: Option<&str>, now: i64) -> Result<()> {
        let status = if failed { ExecutionStatus::Failed } else { ExecutionStatus::Completed };
        self.0.execute(
            FINISH_EXECUTION,
            &[
                Param::Text(execution_id),
                Param::Text(status.as_db()),
                Param::Text(final_context),
                Param::NullableText(error),
                Param::Int(now),
            ],
        )?;
        Ok(())
    }

    fn execution_status(&mut self, execution_id: &str) -> Result<Option<ExecutionStatus>> {
        let mut status = None;
        self.0.query(EXECUTION_STATUS, &[Param::Text(execution_id)], &mut |row| {
            status = Some(ExecutionStatus::from_db(&row.text(0)?)?);
            Ok(())
        })?;
        Ok(status)
    }

    fn skip_unfinished(&mut self, execution_id: &str, now: i64) -> Result<u64> {
        self.0.execute(SKIP_UNFINISHED, &[Param::Text(execution_id), Param::Int(now)])
    }

    fn notify(&mut self, channel: Channel, payload: &str) -> Result<()> {
        self.0.notify(channel, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_dialect_rewrites_parameters_lists_and_locks() {
        assert_eq!(postgres_dialect("SELECT ?1, ?12 FROM t"), "SELECT $1, $12 FROM t");
        assert_eq!(
            postgres_dialect("x IN (SELECT value FROM json_each(?4)) AND y = ?2"),
            "x IN (SELECT value FROM json_array_elements_text(CAST($4 AS TEXT)::json)) AND y = $2"
        );
        assert!(postgres_dialect(CLAIM_READY).contains("LIMIT 1 FOR UPDATE SKIP LOCKED)"));
        assert!(!postgres_dialect(CLAIM_READY).contains('?'));
        assert_eq!(postgres_dialect("jump ?1"), "jump $1");
    }
}

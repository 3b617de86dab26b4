//! Cron schedules and the executions their ticks start, in the same SQL
//! dialect as the rest of the store (see `sql.rs`).
//!
//! Firing a tick is one transaction: the schedule row is locked (skipped by
//! other processes on Postgres), its `next_run_at` advanced, and each due
//! tick's execution created with its history row. Either all of it commits
//! or none of it, so a tick starts exactly one execution however many
//! runners look at the schedule and whenever one of them dies.

use super::sql::{create_execution, json_list, Conn, Param, Row, SqlTx};
use super::ExecutionStatus;
use crate::engine::cron::Catchup;
use crate::engine::dag::Dag;
use crate::engine::error::{EngineError, Result};
use crate::engine::time::rfc3339;
use crate::engine::Context;

/// A stored schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub id: String,
    pub workflow_name: String,
    pub cron_expression: String,
    pub timezone: String,
    pub enabled: bool,
    pub next_run_at: i64,
    /// The scheduled time of the last tick fired.
    pub last_run_at: Option<i64>,
    /// Due ticks not run because of the catch-up limit.
    pub skipped_ticks: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What a tick's execution became.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CronRunStatus {
    /// The execution as it stands.
    Execution(ExecutionStatus),
    /// It made no progress for the lost threshold and was failed.
    Lost,
}

impl CronRunStatus {
    pub fn display_name(self) -> &'static str {
        match self {
            CronRunStatus::Execution(status) => status.display_name(),
            CronRunStatus::Lost => "Lost",
        }
    }
}

/// One execution started by a tick (a history row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronRun {
    pub id: i64,
    pub schedule_id: String,
    pub workflow_name: String,
    pub scheduled_time: i64,
    /// 1 for the tick itself, 2.. for recoveries of a lost execution.
    pub attempt: i64,
    pub execution_id: String,
    pub claimed_at: i64,
    pub updated_at: i64,
    pub status: CronRunStatus,
}

/// Counts over the executions of ticks scheduled since some time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CronStats {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    pub unfinished: i64,
    pub lost: i64,
}

/// A schedule whose next tick has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueSchedule {
    pub id: String,
    pub workflow_name: String,
    pub cron_expression: String,
    pub timezone: String,
    pub next_run_at: i64,
}

/// What the store needs from the runner to start executions for ticks:
/// the workflows this process can run, and the tick arithmetic.
pub trait TickPlanner {
    /// Names of the workflows this process can start.
    fn workflow_names(&self) -> Vec<&str>;
    /// The definition a new execution of `workflow_name` uses.
    fn dag(&self, workflow_name: &str) -> Option<&Dag>;
    /// The definition of `workflow_name` at exactly `version`, if this process has it.
    fn exact_dag(&self, workflow_name: &str, version: &str) -> Option<&Dag>;
    /// The ticks to fire for `due` at `now`.
    fn plan(&self, due: &DueSchedule, now: i64) -> Result<Catchup>;
}

/// What one firing transaction did.
#[derive(Clone, Debug, PartialEq)]
pub enum Fired {
    /// No schedule of these workflows is due.
    Nothing,
    /// The schedule's due ticks started executions with this many root tasks.
    Ticks { roots: u64 },
    /// The schedule's stored expression cannot be planned (written by a
    /// newer cloaca, or edited by hand); it is left as it is.
    Unplannable { schedule_id: String, error: EngineError },
}

/// An execution of a tick that may be lost (found outside a transaction,
/// checked again inside the one that recovers it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostCandidate {
    pub cron_run_id: i64,
    pub schedule_id: String,
    pub workflow_name: String,
    pub workflow_version: String,
    pub scheduled_time: i64,
    pub attempt: i64,
    pub execution_id: String,
}

/// The input every tick's execution starts with.
pub fn tick_input(schedule_id: &str, scheduled_time: i64) -> Context {
    let mut input = Context::new();
    input.insert("cron_schedule_id".into(), schedule_id.into());
    input.insert("cron_scheduled_time".into(), rfc3339(scheduled_time).into());
    input
}

// ---- schedules ----------------------------------------------------------------

const SCHEDULE_COLUMNS: &str =
    "id, workflow_name, cron_expression, timezone, enabled, next_run_at, last_run_at, skipped_ticks, created_at, updated_at";
const INSERT_SCHEDULE: &str = "INSERT INTO cloaca_cron_schedules
    (id, workflow_name, cron_expression, timezone, enabled, next_run_at, last_run_at, skipped_ticks, created_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, 0, ?7, ?7)";
const GET_SCHEDULE: &str =
    "SELECT id, workflow_name, cron_expression, timezone, enabled, next_run_at, last_run_at, skipped_ticks, created_at, updated_at
    FROM cloaca_cron_schedules WHERE id = ?1";
const LIST_SCHEDULES: &str =
    "SELECT id, workflow_name, cron_expression, timezone, enabled, next_run_at, last_run_at, skipped_ticks, created_at, updated_at
    FROM cloaca_cron_schedules WHERE (CAST(?1 AS BIGINT) = 0 OR enabled = 1)
    ORDER BY created_at, id LIMIT ?2 OFFSET ?3";
const UPDATE_SCHEDULE: &str = "UPDATE cloaca_cron_schedules
    SET cron_expression = ?2, timezone = ?3, enabled = ?4, next_run_at = ?5, updated_at = ?6 WHERE id = ?1 AND next_run_at = ?7";
const DELETE_HISTORY: &str = "DELETE FROM cloaca_cron_executions WHERE schedule_id = ?1";
const DELETE_SCHEDULE: &str = "DELETE FROM cloaca_cron_schedules WHERE id = ?1";
const NEXT_DUE: &str = "SELECT MIN(next_run_at) FROM cloaca_cron_schedules
    WHERE enabled = 1 AND workflow_name IN (SELECT value FROM json_each(?1))";

fn schedule_record(row: &dyn Row) -> Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        id: row.text(0)?,
        workflow_name: row.text(1)?,
        cron_expression: row.text(2)?,
        timezone: row.text(3)?,
        enabled: row.int(4)? != 0,
        next_run_at: row.int(5)?,
        last_run_at: row.opt_int(6)?,
        skipped_ticks: row.int(7)?,
        created_at: row.int(8)?,
        updated_at: row.int(9)?,
    })
}

pub fn insert_schedule(conn: &mut dyn Conn, s: &ScheduleRecord) -> Result<()> {
    conn.execute(
        INSERT_SCHEDULE,
        &[
            Param::Text(&s.id),
            Param::Text(&s.workflow_name),
            Param::Text(&s.cron_expression),
            Param::Text(&s.timezone),
            Param::Int(i64::from(s.enabled)),
            Param::Int(s.next_run_at),
            Param::Int(s.created_at),
        ],
    )
    .map(|_| ())
}

pub fn get_schedule(conn: &mut dyn Conn, id: &str) -> Result<Option<ScheduleRecord>> {
    debug_assert!(GET_SCHEDULE.contains(SCHEDULE_COLUMNS));
    let mut found = None;
    conn.query(GET_SCHEDULE, &[Param::Text(id)], &mut |row| {
        found = Some(schedule_record(row)?);
        Ok(())
    })?;
    Ok(found)
}

pub fn list_schedules(conn: &mut dyn Conn, enabled_only: bool, limit: i64, offset: i64) -> Result<Vec<ScheduleRecord>> {
    debug_assert!(LIST_SCHEDULES.contains(SCHEDULE_COLUMNS));
    let mut found = Vec::new();
    conn.query(LIST_SCHEDULES, &[Param::Int(i64::from(enabled_only)), Param::Int(limit), Param::Int(offset)], &mut |row| {
        found.push(schedule_record(row)?);
        Ok(())
    })?;
    Ok(found)
}

/// Replaces the expression, time zone, enabled flag and next tick of a
/// schedule whose next tick is still `read_next_run_at`; false otherwise.
pub fn update_schedule(conn: &mut dyn Conn, s: &ScheduleRecord, read_next_run_at: i64, now: i64) -> Result<bool> {
    let changed = conn.execute(
        UPDATE_SCHEDULE,
        &[
            Param::Text(&s.id),
            Param::Text(&s.cron_expression),
            Param::Text(&s.timezone),
            Param::Int(i64::from(s.enabled)),
            Param::Int(s.next_run_at),
            Param::Int(now),
            Param::Int(read_next_run_at),
        ],
    )?;
    Ok(changed == 1)
}

/// Deletes a schedule and its history (not the executions); run in one transaction.
pub fn delete_schedule(conn: &mut dyn Conn, id: &str) -> Result<bool> {
    conn.execute(DELETE_HISTORY, &[Param::Text(id)])?;
    Ok(conn.execute(DELETE_SCHEDULE, &[Param::Text(id)])? == 1)
}

/// The earliest next tick of the enabled schedules of these workflows.
pub fn next_due(conn: &mut dyn Conn, workflow_names: &[&str]) -> Result<Option<i64>> {
    let mut due = None;
    conn.query(NEXT_DUE, &[Param::Text(&json_list(workflow_names.iter().copied()))], &mut |row| {
        due = row.opt_int(0)?;
        Ok(())
    })?;
    Ok(due)
}

// ---- firing ticks ----------------------------------------------------------------

const DUE_SCHEDULE: &str = "SELECT id, workflow_name, cron_expression, timezone, next_run_at FROM cloaca_cron_schedules
    WHERE enabled = 1 AND next_run_at <= ?1
      AND workflow_name IN (SELECT value FROM json_each(?2))
      AND id NOT IN (SELECT value FROM json_each(?3))
    ORDER BY next_run_at, id LIMIT 1 /*LOCK*/";
// Guarded by the next_run_at read above: a tick is advanced past only once.
const ADVANCE_SCHEDULE: &str = "UPDATE cloaca_cron_schedules
    SET next_run_at = ?3, last_run_at = COALESCE(?4, last_run_at), skipped_ticks = skipped_ticks + ?5, updated_at = ?6
    WHERE id = ?1 AND next_run_at = ?2 AND enabled = 1";
// The unique key (schedule, tick, attempt) is what makes a tick start one
// execution: a second insert for it changes nothing, and no execution is
// created for it.
const INSERT_RUN: &str = "INSERT INTO cloaca_cron_executions
    (schedule_id, workflow_name, scheduled_time, attempt, execution_id, claimed_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT DO NOTHING";

/// Fires the due ticks of one schedule (the earliest due, not in
/// `exclude`); run inside one transaction.
pub fn fire_due_schedule(conn: &mut dyn Conn, planner: &dyn TickPlanner, exclude: &[String], now: i64) -> Result<Fired> {
    let names = planner.workflow_names();
    if names.is_empty() {
        return Ok(Fired::Nothing);
    }
    let excluded = json_list(exclude.iter().map(String::as_str));
    let mut due = None;
    conn.query(DUE_SCHEDULE, &[Param::Int(now), Param::Text(&json_list(names.iter().copied())), Param::Text(&excluded)], &mut |row| {
        due = Some(DueSchedule {
            id: row.text(0)?,
            workflow_name: row.text(1)?,
            cron_expression: row.text(2)?,
            timezone: row.text(3)?,
            next_run_at: row.int(4)?,
        });
        Ok(())
    })?;
    let Some(due) = due else { return Ok(Fired::Nothing) };
    let (plan, dag) = match (planner.plan(&due, now), planner.dag(&due.workflow_name)) {
        (Ok(plan), Some(dag)) => (plan, dag),
        (Err(error), _) => return Ok(Fired::Unplannable { schedule_id: due.id, error }),
        (Ok(_), None) => return Ok(Fired::Nothing),
    };
    let advanced = conn.execute(
        ADVANCE_SCHEDULE,
        &[
            Param::Text(&due.id),
            Param::Int(due.next_run_at),
            Param::Int(plan.next_run_at),
            Param::NullableInt(plan.ticks.last().copied()),
            Param::Int(plan.skipped),
            Param::Int(now),
        ],
    )?;
    if advanced != 1 {
        return Ok(Fired::Nothing);
    }
    let mut started = 0;
    for &tick in &plan.ticks {
        started += u64::from(start_run(conn, dag, &due.id, &due.workflow_name, tick, 1, now)?);
    }
    Ok(Fired::Ticks { roots: started * dag.roots().len() as u64 })
}

/// Records one tick's attempt and creates its execution; false when that
/// attempt of the tick was already recorded (nothing is created).
fn start_run(conn: &mut dyn Conn, dag: &Dag, schedule_id: &str, workflow_name: &str, tick: i64, attempt: i64, now: i64) -> Result<bool> {
    let execution_id = uuid::Uuid::new_v4().to_string();
    let recorded = conn.execute(
        INSERT_RUN,
        &[
            Param::Text(schedule_id),
            Param::Text(workflow_name),
            Param::Int(tick),
            Param::Int(attempt),
            Param::Text(&execution_id),
            Param::Int(now),
        ],
    )?;
    if recorded == 0 {
        return Ok(false);
    }
    create_execution(conn, &execution_id, dag, &tick_input(schedule_id, tick), now)?;
    Ok(true)
}

// ---- history and stats --------------------------------------------------------------

const HISTORY: &str = "SELECT c.id, c.schedule_id, c.workflow_name, c.scheduled_time, c.attempt, c.execution_id,
        c.claimed_at, c.updated_at, c.lost_at, e.status
    FROM cloaca_cron_executions c JOIN cloaca_executions e ON e.id = c.execution_id
    WHERE c.schedule_id = ?1 ORDER BY c.scheduled_time DESC, c.attempt DESC LIMIT ?2 OFFSET ?3";
const STATS: &str = "SELECT COUNT(*),
        COALESCE(SUM(CASE WHEN c.lost_at IS NULL AND e.status = 'completed' THEN 1 ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN c.lost_at IS NULL AND e.status = 'failed' THEN 1 ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN c.lost_at IS NULL AND e.status IN ('pending', 'running') THEN 1 ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN c.lost_at IS NOT NULL THEN 1 ELSE 0 END), 0)
    FROM cloaca_cron_executions c JOIN cloaca_executions e ON e.id = c.execution_id
    WHERE c.scheduled_time >= ?1";

pub fn history(conn: &mut dyn Conn, schedule_id: &str, limit: i64, offset: i64) -> Result<Vec<CronRun>> {
    let mut runs = Vec::new();
    conn.query(HISTORY, &[Param::Text(schedule_id), Param::Int(limit), Param::Int(offset)], &mut |row| {
        let status = match row.opt_int(8)? {
            Some(_) => CronRunStatus::Lost,
            None => CronRunStatus::Execution(ExecutionStatus::from_db(&row.text(9)?)?),
        };
        runs.push(CronRun {
            id: row.int(0)?,
            schedule_id: row.text(1)?,
            workflow_name: row.text(2)?,
            scheduled_time: row.int(3)?,
            attempt: row.int(4)?,
            execution_id: row.text(5)?,
            claimed_at: row.int(6)?,
            updated_at: row.int(7)?,
            status,
        });
        Ok(())
    })?;
    Ok(runs)
}

pub fn stats(conn: &mut dyn Conn, since: i64) -> Result<CronStats> {
    let mut stats = CronStats::default();
    conn.query(STATS, &[Param::Int(since)], &mut |row| {
        stats = CronStats { total: row.int(0)?, completed: row.int(1)?, failed: row.int(2)?, unfinished: row.int(3)?, lost: row.int(4)? };
        Ok(())
    })?;
    Ok(stats)
}

// ---- lost executions ------------------------------------------------------------------

// Stalled: unfinished, and for the whole threshold (?1 = now - threshold)
// no task started or finished, none holds a live lease, none waits for a
// retry time.
const LOST_CANDIDATES: &str = "SELECT c.id, c.schedule_id, c.workflow_name, e.workflow_version, c.scheduled_time, c.attempt, c.execution_id
    FROM cloaca_cron_executions c JOIN cloaca_executions e ON e.id = c.execution_id
    WHERE c.lost_at IS NULL AND c.claimed_at < ?1 AND e.status IN ('pending', 'running')
      AND c.workflow_name IN (SELECT value FROM json_each(?3))
      AND NOT EXISTS (SELECT 1 FROM cloaca_task_executions t
                      WHERE t.execution_id = c.execution_id
                        AND ((t.status = 'running' AND t.lease_expires_at >= ?2)
                             OR (t.status = 'ready' AND t.next_attempt_at > ?2)
                             OR t.started_at > ?1 OR t.finished_at > ?1))
    ORDER BY c.scheduled_time, c.attempt LIMIT 100";
const MARK_LOST: &str = "UPDATE cloaca_cron_executions SET lost_at = ?2, updated_at = ?2 WHERE id = ?1 AND lost_at IS NULL";

/// Executions of ticks of these workflows that made no progress since `stalled_since`.
pub fn lost_candidates(conn: &mut dyn Conn, workflow_names: &[&str], stalled_since: i64, now: i64) -> Result<Vec<LostCandidate>> {
    let mut found = Vec::new();
    let params = [Param::Int(stalled_since), Param::Int(now), Param::Text(&json_list(workflow_names.iter().copied()))];
    conn.query(LOST_CANDIDATES, &params, &mut |row| {
        found.push(LostCandidate {
            cron_run_id: row.int(0)?,
            schedule_id: row.text(1)?,
            workflow_name: row.text(2)?,
            workflow_version: row.text(3)?,
            scheduled_time: row.int(4)?,
            attempt: row.int(5)?,
            execution_id: row.text(6)?,
        });
        Ok(())
    })?;
    Ok(found)
}

/// What recovering a lost execution did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// It had finished meanwhile: nothing changed.
    NotLost,
    /// Marked lost and failed; no new execution (too old, or out of attempts).
    GivenUp,
    /// Marked lost and failed; a new execution (with this many root tasks) runs the tick again.
    Restarted { roots: u64 },
}

/// Marks a lost execution, fails it, and (when `restart`) starts the tick
/// again as the next attempt; run inside one transaction.
pub fn recover_lost(
    conn: &mut dyn Conn,
    lost: &LostCandidate,
    planner: &dyn TickPlanner,
    message: &str,
    restart: bool,
    now: i64,
) -> Result<Recovered> {
    let old_dag = planner.exact_dag(&lost.workflow_name, &lost.workflow_version);
    if !super::abort_execution(&mut SqlTx(&mut *conn), &lost.execution_id, old_dag, message, now)? {
        return Ok(Recovered::NotLost);
    }
    if conn.execute(MARK_LOST, &[Param::Int(lost.cron_run_id), Param::Int(now)])? != 1 {
        return Err(EngineError::database("recovering a lost cron execution", "its history row changed meanwhile"));
    }
    let dag = match planner.dag(&lost.workflow_name) {
        Some(dag) if restart => dag,
        _ => return Ok(Recovered::GivenUp),
    };
    if start_run(conn, dag, &lost.schedule_id, &lost.workflow_name, lost.scheduled_time, lost.attempt + 1, now)? {
        Ok(Recovered::Restarted { roots: dag.roots().len() as u64 })
    } else {
        Ok(Recovered::GivenUp)
    }
}

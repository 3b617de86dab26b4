//! Cron schedules and the executions their ticks start, in the same SQL
//! dialect as the rest of the store (see `conn.rs`).
//!
//! Firing a tick is one transaction: the schedule row is locked (skipped by
//! other processes on Postgres), its `next_run_at` advanced, and each due
//! tick's execution created with its history row. Either all of it commits
//! or none of it, so a tick starts exactly one execution however many
//! runners look at the schedule and whenever one of them dies.

use super::conn::{json_list, Conn, Param, Row};
use super::executions::{abort_execution, create_execution, execution_input, parse_context};
use crate::engine::cron::{tick_input, CronSchedule, TickSource};
use crate::engine::error::{Error, Result};
use crate::engine::model::{Context, ExecutionStatus};
use crate::engine::workflow::{Dag, Workflows};

/// A stored schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScheduleRecord {
    pub(crate) id: String,
    pub(crate) workflow_name: String,
    pub(crate) cron_expression: String,
    pub(crate) timezone: String,
    pub(crate) enabled: bool,
    pub(crate) next_run_at: i64,
    /// The scheduled time of the last tick fired.
    pub(crate) last_run_at: Option<i64>,
    /// Due ticks not run because of the catch-up limit.
    pub(crate) skipped_ticks: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// The name of a workflow instance (unique per workflow); None for an
    /// anonymous schedule.
    pub(crate) instance_name: Option<String>,
    /// The instance's params, the start of every tick's input; never changed.
    pub(crate) params: Option<Context>,
}

/// What a tick's execution became.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CronRunStatus {
    /// The execution as it stands.
    Execution(ExecutionStatus),
    /// It made no progress for the lost threshold and was failed.
    Lost,
}

impl CronRunStatus {
    pub(crate) fn display_name(self) -> &'static str {
        match self {
            CronRunStatus::Execution(status) => status.display_name(),
            CronRunStatus::Lost => "Lost",
        }
    }
}

/// One execution started by a tick (a history row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CronRun {
    pub(crate) id: i64,
    pub(crate) schedule_id: String,
    pub(crate) workflow_name: String,
    pub(crate) scheduled_time: i64,
    /// 1 for the tick itself, 2.. for recoveries of a lost execution.
    pub(crate) attempt: i64,
    pub(crate) execution_id: String,
    pub(crate) claimed_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) status: CronRunStatus,
}

/// Counts over the executions of ticks scheduled since some time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CronStats {
    pub(crate) total: i64,
    pub(crate) completed: i64,
    pub(crate) failed: i64,
    pub(crate) unfinished: i64,
    pub(crate) lost: i64,
}

/// A schedule whose next tick has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DueSchedule {
    pub(crate) id: String,
    pub(crate) workflow_name: String,
    pub(crate) cron_expression: String,
    pub(crate) timezone: String,
    pub(crate) next_run_at: i64,
    /// The params as stored: read once the schedule is planned.
    pub(crate) params: Option<String>,
}

/// What one firing transaction did.
#[derive(Debug)]
pub(crate) enum Fired {
    /// No schedule of these workflows is due.
    Nothing,
    /// The schedule's due ticks started executions with this many root tasks.
    Ticks { roots: u64 },
    /// The schedule's stored expression cannot be planned, or its params
    /// cannot be read (written by a newer cloaca, or edited by hand); it is
    /// left as it is.
    Unplannable { schedule_id: String, error: Error },
}

/// An execution of a tick that may be lost (found outside a transaction,
/// checked again inside the one that recovers it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LostCandidate {
    pub(crate) cron_run_id: i64,
    pub(crate) schedule_id: String,
    pub(crate) workflow_name: String,
    pub(crate) workflow_version: String,
    pub(crate) scheduled_time: i64,
    pub(crate) attempt: i64,
    pub(crate) execution_id: String,
}

// ---- schedules ----------------------------------------------------------------

/// The columns [`schedule_record`] reads, in its order.
macro_rules! schedule_columns {
    () => {
        "id, workflow_name, cron_expression, timezone, enabled, next_run_at, last_run_at, skipped_ticks, created_at, updated_at, \
         instance_name, params"
    };
}
// Inserts nothing when the id is stored already (this very insert, run
// again after its connection dropped: ids are new UUIDs) or the instance
// name is taken; insert_schedule tells the two apart.
const INSERT_SCHEDULE: &str = concat!(
    "INSERT INTO cloaca_cron_schedules (",
    schedule_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, 0, ?7, ?7, ?8, ?9) ON CONFLICT DO NOTHING"
);
const INSTANCE_HOLDER: &str = "SELECT id FROM cloaca_cron_schedules WHERE workflow_name = ?1 AND instance_name = ?2";
const GET_SCHEDULE: &str = concat!("SELECT ", schedule_columns!(), " FROM cloaca_cron_schedules WHERE id = ?1");
const LIST_SCHEDULES: &str = concat!(
    "SELECT ",
    schedule_columns!(),
    " FROM cloaca_cron_schedules WHERE (CAST(?1 AS BIGINT) = 0 OR enabled = 1)
    ORDER BY created_at, id LIMIT ?2 OFFSET ?3"
);
const UPDATE_SCHEDULE: &str = "UPDATE cloaca_cron_schedules
    SET cron_expression = ?2, timezone = ?3, enabled = ?4, next_run_at = ?5, updated_at = ?6 WHERE id = ?1 AND next_run_at = ?7";
pub(crate) const DELETE_HISTORY: &str = "DELETE FROM cloaca_cron_executions WHERE schedule_id = ?1";
const DELETE_SCHEDULE: &str = "DELETE FROM cloaca_cron_schedules WHERE id = ?1";
pub(crate) const NEXT_DUE: &str = "SELECT MIN(next_run_at) FROM cloaca_cron_schedules
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
        instance_name: row.opt_text(10)?,
        params: stored_params(row.opt_text(11)?)?,
    })
}

fn stored_params(text: Option<String>) -> Result<Option<Context>> {
    text.map(|t| parse_context(&t, "a cron schedule's params")).transpose()
}

/// Stores a new schedule; DuplicateInstance when its workflow already has
/// an instance of its name.
pub(crate) fn insert_schedule(conn: &mut dyn Conn, s: &ScheduleRecord) -> Result<()> {
    let params =
        s.params.as_ref().map(serde_json::to_string).transpose().map_err(|e| Error::database("storing a cron schedule's params", e))?;
    loop {
        let inserted = conn.execute(
            INSERT_SCHEDULE,
            &[
                Param::Text(&s.id),
                Param::Text(&s.workflow_name),
                Param::Text(&s.cron_expression),
                Param::Text(&s.timezone),
                Param::Int(i64::from(s.enabled)),
                Param::Int(s.next_run_at),
                Param::Int(s.created_at),
                Param::NullableText(s.instance_name.as_deref()),
                Param::NullableText(params.as_deref()),
            ],
        )?;
        let Some(instance_name) = s.instance_name.as_deref().filter(|_| inserted == 0) else { return Ok(()) };
        let holder = conn.query_opt(INSTANCE_HOLDER, &[Param::Text(&s.workflow_name), Param::Text(instance_name)], |row| row.text(0))?;
        match holder {
            Some(id) if id == s.id => return Ok(()),
            Some(schedule_id) => {
                return Err(Error::DuplicateInstance {
                    workflow_name: s.workflow_name.clone(),
                    instance_name: instance_name.to_string(),
                    schedule_id,
                })
            }
            // The instance holding the name was deleted meanwhile: the name is free again.
            None => continue,
        }
    }
}

pub(crate) fn get_schedule(conn: &mut dyn Conn, id: &str) -> Result<Option<ScheduleRecord>> {
    conn.query_opt(GET_SCHEDULE, &[Param::Text(id)], schedule_record)
}

pub(crate) fn list_schedules(conn: &mut dyn Conn, enabled_only: bool, limit: i64, offset: i64) -> Result<Vec<ScheduleRecord>> {
    conn.query_all(LIST_SCHEDULES, &[Param::Int(i64::from(enabled_only)), Param::Int(limit), Param::Int(offset)], schedule_record)
}

/// Replaces the expression, time zone, enabled flag and next tick of a
/// schedule whose next tick is still `read_next_run_at`; false otherwise.
pub(crate) fn update_schedule(conn: &mut dyn Conn, s: &ScheduleRecord, read_next_run_at: i64, now: i64) -> Result<bool> {
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
pub(crate) fn delete_schedule(conn: &mut dyn Conn, id: &str) -> Result<bool> {
    conn.execute(DELETE_HISTORY, &[Param::Text(id)])?;
    Ok(conn.execute(DELETE_SCHEDULE, &[Param::Text(id)])? == 1)
}

/// The earliest next tick of the enabled schedules of these workflows.
pub(crate) fn next_due(conn: &mut dyn Conn, workflow_names: &[&str]) -> Result<Option<i64>> {
    conn.query_one(NEXT_DUE, &[Param::Text(&json_list(workflow_names))], |row| row.opt_int(0))
}

// ---- firing ticks ----------------------------------------------------------------

const DUE_SCHEDULE: &str = "SELECT id, workflow_name, cron_expression, timezone, next_run_at, params FROM cloaca_cron_schedules
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

/// Fires the due ticks of one schedule of `workflows` (the earliest due,
/// not in `exclude`), at most `max_catchup` of them; run inside one transaction.
pub(crate) fn fire_due_schedule(
    conn: &mut dyn Conn,
    workflows: &Workflows,
    max_catchup: usize,
    exclude: &[String],
    now: i64,
) -> Result<Fired> {
    if workflows.is_empty() {
        return Ok(Fired::Nothing);
    }
    let names = json_list(workflows.keys());
    let excluded = json_list(exclude);
    let due = conn.query_opt(DUE_SCHEDULE, &[Param::Int(now), Param::Text(&names), Param::Text(&excluded)], |row| {
        Ok(DueSchedule {
            id: row.text(0)?,
            workflow_name: row.text(1)?,
            cron_expression: row.text(2)?,
            timezone: row.text(3)?,
            next_run_at: row.int(4)?,
            params: row.opt_text(5)?,
        })
    })?;
    let Some(due) = due else { return Ok(Fired::Nothing) };
    let params = match stored_params(due.params.clone()) {
        Ok(params) => params,
        Err(error) => return Ok(Fired::Unplannable { schedule_id: due.id, error }),
    };
    let plan = CronSchedule::parse(&due.cron_expression, &due.timezone).and_then(|s| s.catch_up(due.next_run_at, now, max_catchup));
    let (plan, dag) = match (plan, workflows.get(&due.workflow_name)) {
        (Ok(plan), Some(workflow)) => (plan, &workflow.dag),
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
    let source =
        TickSource { schedule_id: &due.id, cron_expression: &due.cron_expression, timezone: &due.timezone, params: params.as_ref() };
    let mut started = 0;
    for &tick in &plan.ticks {
        let run = Run { schedule_id: &due.id, workflow_name: &due.workflow_name, scheduled_time: tick, attempt: 1 };
        started += u64::from(start_run(conn, dag, &run, &tick_input(&source, tick), now)?);
    }
    Ok(Fired::Ticks { roots: started * dag.roots().len() as u64 })
}

/// One attempt of one tick of a schedule.
struct Run<'a> {
    schedule_id: &'a str,
    workflow_name: &'a str,
    scheduled_time: i64,
    attempt: i64,
}

/// Records one tick's attempt and creates its execution with `input`;
/// false when that attempt of the tick was already recorded (nothing is created).
fn start_run(conn: &mut dyn Conn, dag: &Dag, run: &Run<'_>, input: &Context, now: i64) -> Result<bool> {
    let execution_id = uuid::Uuid::new_v4().to_string();
    let recorded = conn.execute(
        INSERT_RUN,
        &[
            Param::Text(run.schedule_id),
            Param::Text(run.workflow_name),
            Param::Int(run.scheduled_time),
            Param::Int(run.attempt),
            Param::Text(&execution_id),
            Param::Int(now),
        ],
    )?;
    if recorded == 0 {
        return Ok(false);
    }
    create_execution(conn, &execution_id, dag, input, None, false, None, now)?;
    Ok(true)
}

// ---- history and stats --------------------------------------------------------------

pub(crate) const HISTORY: &str = "SELECT c.id, c.schedule_id, c.workflow_name, c.scheduled_time, c.attempt, c.execution_id,
        c.claimed_at, c.updated_at, c.lost_at, e.status
    FROM cloaca_cron_executions c JOIN cloaca_executions e ON e.id = c.execution_id
    WHERE c.schedule_id = ?1 ORDER BY c.scheduled_time DESC, c.attempt DESC LIMIT ?2 OFFSET ?3";
pub(crate) const STATS: &str = "SELECT COUNT(*),
        COALESCE(SUM(CASE WHEN c.lost_at IS NULL AND e.status = 'completed' THEN 1 ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN c.lost_at IS NULL AND e.status = 'failed' THEN 1 ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN c.lost_at IS NULL AND e.status IN ('pending', 'running') THEN 1 ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN c.lost_at IS NOT NULL THEN 1 ELSE 0 END), 0)
    FROM cloaca_cron_executions c JOIN cloaca_executions e ON e.id = c.execution_id
    WHERE c.scheduled_time >= ?1";

pub(crate) fn history(conn: &mut dyn Conn, schedule_id: &str, limit: i64, offset: i64) -> Result<Vec<CronRun>> {
    conn.query_all(HISTORY, &[Param::Text(schedule_id), Param::Int(limit), Param::Int(offset)], |row| {
        let status = match row.opt_int(8)? {
            Some(_) => CronRunStatus::Lost,
            None => CronRunStatus::Execution(ExecutionStatus::from_db(&row.text(9)?)?),
        };
        Ok(CronRun {
            id: row.int(0)?,
            schedule_id: row.text(1)?,
            workflow_name: row.text(2)?,
            scheduled_time: row.int(3)?,
            attempt: row.int(4)?,
            execution_id: row.text(5)?,
            claimed_at: row.int(6)?,
            updated_at: row.int(7)?,
            status,
        })
    })
}

pub(crate) fn stats(conn: &mut dyn Conn, since: i64) -> Result<CronStats> {
    conn.query_one(STATS, &[Param::Int(since)], |row| {
        Ok(CronStats { total: row.int(0)?, completed: row.int(1)?, failed: row.int(2)?, unfinished: row.int(3)?, lost: row.int(4)? })
    })
}

// ---- lost executions ------------------------------------------------------------------

// Stalled: unfinished, and for the whole threshold (?1 = now - threshold)
// no task started or finished, none holds a live lease, none waits for a
// retry time.
pub(crate) const LOST_CANDIDATES: &str =
    "SELECT c.id, c.schedule_id, c.workflow_name, e.workflow_version, c.scheduled_time, c.attempt, c.execution_id
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
pub(crate) fn lost_candidates(conn: &mut dyn Conn, workflow_names: &[&str], stalled_since: i64, now: i64) -> Result<Vec<LostCandidate>> {
    let params = [Param::Int(stalled_since), Param::Int(now), Param::Text(&json_list(workflow_names))];
    conn.query_all(LOST_CANDIDATES, &params, |row| {
        Ok(LostCandidate {
            cron_run_id: row.int(0)?,
            schedule_id: row.text(1)?,
            workflow_name: row.text(2)?,
            workflow_version: row.text(3)?,
            scheduled_time: row.int(4)?,
            attempt: row.int(5)?,
            execution_id: row.text(6)?,
        })
    })
}

/// What recovering a lost execution did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Recovered {
    /// It had finished meanwhile: nothing changed.
    NotLost,
    /// Marked lost and failed; no new execution (too old, or out of attempts).
    GivenUp,
    /// Marked lost and failed; a new execution (with this many root tasks) runs the tick again.
    Restarted { roots: u64 },
}

/// Marks a lost execution, fails it, and (when `restart`) starts the tick
/// again as the next attempt; run inside one transaction.
pub(crate) fn recover_lost(
    conn: &mut dyn Conn,
    lost: &LostCandidate,
    workflows: &Workflows,
    message: &str,
    restart: bool,
    now: i64,
) -> Result<Recovered> {
    let current = workflows.get(&lost.workflow_name).map(|w| &w.dag);
    let old_dag = current.filter(|dag| dag.version() == lost.workflow_version);
    // The tick runs again on exactly what it was first given (an instance's
    // params included), whatever changed in its schedule since.
    let input = execution_input(conn, &lost.execution_id)?;
    if !abort_execution(conn, &lost.execution_id, old_dag, message, now)? {
        return Ok(Recovered::NotLost);
    }
    if conn.execute(MARK_LOST, &[Param::Int(lost.cron_run_id), Param::Int(now)])? != 1 {
        return Err(Error::corrupt("recovering a lost cron execution", "its history row changed meanwhile"));
    }
    let dag = match current {
        Some(dag) if restart => dag,
        _ => return Ok(Recovered::GivenUp),
    };
    let run = Run {
        schedule_id: &lost.schedule_id,
        workflow_name: &lost.workflow_name,
        scheduled_time: lost.scheduled_time,
        attempt: lost.attempt + 1,
    };
    if start_run(conn, dag, &run, &input, now)? {
        Ok(Recovered::Restarted { roots: dag.roots().len() as u64 })
    } else {
        Ok(Recovered::GivenUp)
    }
}

//! Event triggers: one row per trigger name (its registration, its enabled
//! flag, when it was last polled and which runner holds the lease to poll
//! it) and one history row per execution a fire started.
//!
//! The lease is the row's `lease_owner` / `lease_expires_at`, taken and
//! renewed by compare-and-set. A fire is one transaction fenced on that
//! lease ([`fire`]): either the lease still holds and the fire's execution,
//! its history row and `last_poll_at` commit together, or nothing starts.

use super::conn::{Conn, Param, Row};
use super::executions::create_execution;
use crate::engine::error::Result;
use crate::engine::model::{Context, ExecutionStatus};
use crate::engine::workflow::Dag;

/// A trigger's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TriggerRecord {
    pub(crate) id: String,
    pub(crate) trigger_name: String,
    pub(crate) workflow_name: String,
    pub(crate) poll_interval_ms: i64,
    pub(crate) allow_concurrent: bool,
    pub(crate) enabled: bool,
    /// When the last recorded poll started (unix ms).
    pub(crate) last_poll_at: Option<i64>,
    pub(crate) lease_owner: Option<String>,
    pub(crate) lease_expires_at: Option<i64>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

/// What a registration stores; the rest of a row it keeps.
#[derive(Clone, Debug)]
pub(crate) struct Registration<'a> {
    pub(crate) trigger_name: &'a str,
    pub(crate) workflow_name: &'a str,
    pub(crate) poll_interval_ms: i64,
    pub(crate) allow_concurrent: bool,
}

/// One execution a fire started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TriggerRun {
    pub(crate) id: String,
    pub(crate) schedule_id: String,
    pub(crate) context_hash: Option<String>,
    pub(crate) execution_id: Option<String>,
    pub(crate) started_at: i64,
    /// When the execution finished, read from the execution itself.
    pub(crate) completed_at: Option<i64>,
    pub(crate) status: Option<ExecutionStatus>,
    pub(crate) created_at: i64,
}

/// What one fire transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FireOutcome {
    /// The execution started, with this many ready root tasks.
    Started { execution_id: String, roots: u64 },
    /// `allow_concurrent=False` and an equal fire's execution is unfinished:
    /// nothing started (the poll is recorded).
    Dropped { open_execution: String },
    /// The lease was no longer this runner's: nothing was written.
    LeaseLost,
}

/// A fire as the poll returned it. Its ids are chosen before the
/// transaction, so that running it again after a lost commit
/// acknowledgement finds its own execution instead of starting another.
pub(crate) struct Fire<'a> {
    pub(crate) execution_id: &'a str,
    pub(crate) run_id: &'a str,
    pub(crate) trigger_name: &'a str,
    pub(crate) owner: &'a str,
    pub(crate) poll_started_at: i64,
    pub(crate) context_hash: &'a str,
    /// The execution's input: the fire's context with the trigger's keys.
    pub(crate) input: &'a Context,
    pub(crate) dag: &'a Dag,
}

macro_rules! trigger_columns {
    () => {
        "id, trigger_name, workflow_name, poll_interval_ms, allow_concurrent, enabled, last_poll_at, lease_owner, \
         lease_expires_at, created_at, updated_at"
    };
}

// A new row starts enabled; an existing one takes the registration's
// values and keeps its flag, its polls, its lease and its history. A row
// whose values are unchanged is not written at all (its updated_at stays).
const UPSERT_TRIGGER: &str = "INSERT INTO cloaca_trigger_schedules
    (id, trigger_name, workflow_name, poll_interval_ms, allow_concurrent, enabled, created_at, updated_at)
    VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)
    ON CONFLICT (trigger_name) DO UPDATE SET workflow_name = excluded.workflow_name,
        poll_interval_ms = excluded.poll_interval_ms, allow_concurrent = excluded.allow_concurrent, updated_at = excluded.updated_at
    WHERE cloaca_trigger_schedules.workflow_name <> excluded.workflow_name
       OR cloaca_trigger_schedules.poll_interval_ms <> excluded.poll_interval_ms
       OR cloaca_trigger_schedules.allow_concurrent <> excluded.allow_concurrent";
pub(crate) const GET_TRIGGER: &str = concat!("SELECT ", trigger_columns!(), " FROM cloaca_trigger_schedules WHERE trigger_name = ?1");
pub(crate) const LIST_TRIGGERS: &str =
    concat!("SELECT ", trigger_columns!(), " FROM cloaca_trigger_schedules ORDER BY created_at DESC, id DESC LIMIT ?1 OFFSET ?2");
pub(crate) const LIST_ENABLED_TRIGGERS: &str =
    concat!("SELECT ", trigger_columns!(), " FROM cloaca_trigger_schedules WHERE enabled = 1 ORDER BY created_at, id");
pub(crate) const SET_ENABLED: &str =
    "UPDATE cloaca_trigger_schedules SET enabled = ?2, updated_at = ?3 WHERE trigger_name = ?1 AND enabled <> ?2";
// Compare-and-set: free, expired, or already ours (a renewal).
pub(crate) const TAKE_LEASE: &str = "UPDATE cloaca_trigger_schedules SET lease_owner = ?2, lease_expires_at = ?3
    WHERE trigger_name = ?1 AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_expires_at < ?4)";
pub(crate) const RELEASE_LEASE: &str =
    "UPDATE cloaca_trigger_schedules SET lease_owner = NULL, lease_expires_at = NULL WHERE trigger_name = ?1 AND lease_owner = ?2";
// The fence of every poll's outcome: the lease must still be ours and live.
pub(crate) const RECORD_POLL: &str = "UPDATE cloaca_trigger_schedules SET last_poll_at = ?3
    WHERE trigger_name = ?1 AND lease_owner = ?2 AND lease_expires_at >= ?4 RETURNING id, allow_concurrent";
// Read from the few unfinished executions of the workflow, not from the
// trigger's whole history of fires: `schedule_id || ''` keeps planners off
// the history index, which looks more selective to one without statistics.
pub(crate) const OPEN_EQUAL_FIRE: &str = "SELECT e.id FROM cloaca_executions e
    JOIN cloaca_trigger_executions h ON h.execution_id = e.id
    WHERE e.workflow_name = ?1 AND e.status IN ('pending', 'running', 'paused')
      AND h.schedule_id || '' = ?2 AND h.context_hash = ?3 AND e.id <> ?4
    LIMIT 1";
const INSERT_RUN: &str = "INSERT INTO cloaca_trigger_executions (id, schedule_id, context_hash, execution_id, started_at, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT DO NOTHING";
pub(crate) const HISTORY: &str = "SELECT h.id, h.schedule_id, h.context_hash, h.execution_id, h.started_at, h.created_at,
        e.status, e.finished_at
    FROM cloaca_trigger_executions h LEFT JOIN cloaca_executions e ON e.id = h.execution_id
    WHERE h.schedule_id = (SELECT id FROM cloaca_trigger_schedules WHERE trigger_name = ?1)
    ORDER BY h.started_at DESC, h.id DESC LIMIT ?2 OFFSET ?3";
pub(crate) const DELETE_RUNS: &str = "DELETE FROM cloaca_trigger_executions WHERE execution_id IN (SELECT value FROM json_each(?1))";

fn trigger_record(row: &dyn Row) -> Result<TriggerRecord> {
    Ok(TriggerRecord {
        id: row.text(0)?,
        trigger_name: row.text(1)?,
        workflow_name: row.text(2)?,
        poll_interval_ms: row.int(3)?,
        allow_concurrent: row.int(4)? != 0,
        enabled: row.int(5)? != 0,
        last_poll_at: row.opt_int(6)?,
        lease_owner: row.opt_text(7)?,
        lease_expires_at: row.opt_int(8)?,
        created_at: row.int(9)?,
        updated_at: row.int(10)?,
    })
}

/// Creates or updates the row of `registration.trigger_name`.
pub(crate) fn register(conn: &mut dyn Conn, registration: &Registration, now: i64) -> Result<()> {
    let id = uuid::Uuid::new_v4().to_string();
    conn.execute(
        UPSERT_TRIGGER,
        &[
            Param::Text(&id),
            Param::Text(registration.trigger_name),
            Param::Text(registration.workflow_name),
            Param::Int(registration.poll_interval_ms),
            Param::Int(i64::from(registration.allow_concurrent)),
            Param::Int(now),
        ],
    )
    .map(|_| ())
}

pub(crate) fn get(conn: &mut dyn Conn, trigger_name: &str) -> Result<Option<TriggerRecord>> {
    conn.query_opt(GET_TRIGGER, &[Param::Text(trigger_name)], trigger_record)
}

/// Every row newest first, paged; or (`enabled_only`) every enabled row, oldest first.
pub(crate) fn list(conn: &mut dyn Conn, enabled_only: bool, limit: i64, offset: i64) -> Result<Vec<TriggerRecord>> {
    if enabled_only {
        conn.query_all(LIST_ENABLED_TRIGGERS, &[], trigger_record)
    } else {
        conn.query_all(LIST_TRIGGERS, &[Param::Int(limit), Param::Int(offset)], trigger_record)
    }
}

/// Sets the enabled flag; an unknown name changes nothing.
pub(crate) fn set_enabled(conn: &mut dyn Conn, trigger_name: &str, enabled: bool, now: i64) -> Result<()> {
    conn.execute(SET_ENABLED, &[Param::Text(trigger_name), Param::Int(i64::from(enabled)), Param::Int(now)]).map(|_| ())
}

/// Takes (or renews) the lease of `trigger_name` for `owner` until
/// `expires_at`; false when another runner holds a live one.
pub(crate) fn take_lease(conn: &mut dyn Conn, trigger_name: &str, owner: &str, expires_at: i64, now: i64) -> Result<bool> {
    let taken = conn.execute(TAKE_LEASE, &[Param::Text(trigger_name), Param::Text(owner), Param::Int(expires_at), Param::Int(now)])?;
    Ok(taken == 1)
}

pub(crate) fn release_lease(conn: &mut dyn Conn, trigger_name: &str, owner: &str) -> Result<()> {
    conn.execute(RELEASE_LEASE, &[Param::Text(trigger_name), Param::Text(owner)]).map(|_| ())
}

/// Records a poll that did not fire (a skip or an error); false when the
/// lease was lost meanwhile (nothing is written).
pub(crate) fn record_poll(conn: &mut dyn Conn, trigger_name: &str, owner: &str, poll_started_at: i64, now: i64) -> Result<bool> {
    Ok(fence(conn, trigger_name, owner, poll_started_at, now)?.is_some())
}

/// Records the poll and returns the row's (id, allow_concurrent) if the lease still holds.
fn fence(conn: &mut dyn Conn, trigger_name: &str, owner: &str, poll_started_at: i64, now: i64) -> Result<Option<(String, bool)>> {
    let params = [Param::Text(trigger_name), Param::Text(owner), Param::Int(poll_started_at), Param::Int(now)];
    conn.query_opt(RECORD_POLL, &params, |row| Ok((row.text(0)?, row.int(1)? != 0)))
}

/// A fire; run inside one transaction: fenced on the lease, checked for an
/// unfinished equal fire, then the execution, its history row and the poll
/// time, together.
pub(crate) fn fire(conn: &mut dyn Conn, fire: &Fire, now: i64) -> Result<FireOutcome> {
    let Some((schedule_id, allow_concurrent)) = fence(conn, fire.trigger_name, fire.owner, fire.poll_started_at, now)? else {
        return Ok(FireOutcome::LeaseLost);
    };
    if !allow_concurrent {
        let params =
            [Param::Text(fire.dag.name()), Param::Text(&schedule_id), Param::Text(fire.context_hash), Param::Text(fire.execution_id)];
        if let Some(open_execution) = conn.query_opt(OPEN_EQUAL_FIRE, &params, |row| row.text(0))? {
            return Ok(FireOutcome::Dropped { open_execution });
        }
    }
    create_execution(conn, fire.execution_id, fire.dag, fire.input, None, false, None, now)?;
    conn.execute(
        INSERT_RUN,
        &[
            Param::Text(fire.run_id),
            Param::Text(&schedule_id),
            Param::Text(fire.context_hash),
            Param::Text(fire.execution_id),
            Param::Int(now),
        ],
    )?;
    Ok(FireOutcome::Started { execution_id: fire.execution_id.to_string(), roots: fire.dag.roots().len() as u64 })
}

/// The executions a trigger's fires started, newest first; `[]` for an unknown name.
pub(crate) fn history(conn: &mut dyn Conn, trigger_name: &str, limit: i64, offset: i64) -> Result<Vec<TriggerRun>> {
    conn.query_all(HISTORY, &[Param::Text(trigger_name), Param::Int(limit), Param::Int(offset)], |row| {
        let status = row.opt_text(6)?.map(|s| ExecutionStatus::from_db(&s)).transpose()?;
        // An execution run again by retry_execution is unfinished again.
        let completed_at = if status.is_some_and(ExecutionStatus::is_finished) { row.opt_int(7)? } else { None };
        Ok(TriggerRun {
            id: row.text(0)?,
            schedule_id: row.text(1)?,
            context_hash: row.opt_text(2)?,
            execution_id: row.opt_text(3)?,
            started_at: row.int(4)?,
            created_at: row.int(5)?,
            status,
            completed_at,
        })
    })
}

/// Deletes the history rows of these (pruned) executions.
pub(crate) fn delete_runs_of(conn: &mut dyn Conn, execution_ids: &str) -> Result<u64> {
    conn.execute(DELETE_RUNS, &[Param::Text(execution_ids)])
}

//! Retention: deleting finished executions, their task rows and the cron
//! and trigger history rows that point at them, one bounded batch per transaction.
//!
//! Only finished (Completed, Failed, Cancelled) executions are ever deleted.
//! `retry_execution` can move a Failed or Cancelled one out of that state,
//! so the status is checked again by the statement that deletes it: an
//! execution retried after the batch picked it is left alone. Batches
//! are safe to run from several processes at once: on PostgreSQL each
//! locks the executions it picked and skips those another batch holds; on
//! SQLite the write lock serialises them. Deleting a tick's history row
//! cannot make the tick fire again: a schedule fires from its stored
//! `next_run_at`, which moved past the tick when it fired.

use super::conn::{json_list, Conn, Param};
use super::triggers;
use crate::engine::error::Result;
use crate::engine::model::ExecutionStatus;

/// Which finished executions to delete.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PruneFilter<'a> {
    /// Executions that finished strictly before this time (unix ms).
    pub(crate) finished_before: i64,
    /// One finished status only; None for all of them.
    pub(crate) status: Option<ExecutionStatus>,
    pub(crate) workflow_name: Option<&'a str>,
}

/// What one batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pruned {
    /// Executions the batch picked (fewer than its size: nothing more to do).
    pub(crate) picked: u64,
    /// Executions it deleted.
    pub(crate) deleted: u64,
}

// Oldest first through the finished-time index. The status and workflow
// filters are written `column || ''` so that no planner takes the status or
// workflow index for them (an equality there looks more selective than a
// time range to a planner without statistics): that would read and sort
// every finished execution of the history to find one batch.
pub(crate) const PRUNABLE: &str = "SELECT id FROM cloaca_executions
    WHERE finished_at < ?1 AND status || '' IN ('completed', 'failed', 'cancelled')
      AND (CAST(?2 AS TEXT) IS NULL OR status || '' = ?2)
      AND (CAST(?3 AS TEXT) IS NULL OR workflow_name || '' = ?3)
    ORDER BY finished_at LIMIT ?4 /*LOCK*/";
// The status is checked again where it is deleted: only a finished row goes,
// and only the children of rows that went.
const DELETE_EXECUTIONS: &str = "DELETE FROM cloaca_executions
    WHERE id IN (SELECT value FROM json_each(?1)) AND status IN ('completed', 'failed', 'cancelled') RETURNING id";
pub(crate) const DELETE_TASKS: &str = "DELETE FROM cloaca_task_executions WHERE execution_id IN (SELECT value FROM json_each(?1))";
pub(crate) const DELETE_EVENTS: &str = "DELETE FROM cloaca_execution_events WHERE execution_id IN (SELECT value FROM json_each(?1))";
pub(crate) const DELETE_CRON_RUNS: &str = "DELETE FROM cloaca_cron_executions WHERE execution_id IN (SELECT value FROM json_each(?1))";

/// Deletes up to `batch_size` executions matching `filter`; run inside one transaction.
pub(crate) fn prune_batch(conn: &mut dyn Conn, filter: &PruneFilter, batch_size: i64) -> Result<Pruned> {
    let params = [
        Param::Int(filter.finished_before),
        Param::NullableText(filter.status.map(ExecutionStatus::as_db)),
        Param::NullableText(filter.workflow_name),
        Param::Int(batch_size),
    ];
    let picked = conn.query_all(PRUNABLE, &params, |row| row.text(0))?;
    if picked.is_empty() {
        return Ok(Pruned::default());
    }
    let deleted = conn.query_all(DELETE_EXECUTIONS, &[Param::Text(&json_list(&picked))], |row| row.text(0))?;
    if !deleted.is_empty() {
        let list = json_list(&deleted);
        conn.execute(DELETE_TASKS, &[Param::Text(&list)])?;
        conn.execute(DELETE_EVENTS, &[Param::Text(&list)])?;
        conn.execute(DELETE_CRON_RUNS, &[Param::Text(&list)])?;
        triggers::delete_runs_of(conn, &list)?;
    }
    Ok(Pruned { picked: picked.len() as u64, deleted: deleted.len() as u64 })
}

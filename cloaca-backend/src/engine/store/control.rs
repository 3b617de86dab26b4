//! Steering an execution: cancel, pause, resume and retry. Each is one
//! transaction that starts by locking the execution's row, so that it and
//! the recording of a concurrent attempt apply in one order, and ends by
//! storing its event.

use super::conn::{Conn, Param};
use super::decide::decide_candidates;
use super::executions::{completed_output_texts, count_finished, execution_input, finish_execution, settle};
use super::history::{finish_detail, insert_event, load_shape};
use super::records::Channel;
use crate::engine::error::{Error, Result};
use crate::engine::model::{EventKind, ExecutionStatus, TaskStatus};
use crate::engine::workflow::Graph;

// `SET status = status` changes nothing and takes the row lock (PostgreSQL;
// SQLite's write transaction holds the whole database already).
pub(crate) const LOCK_EXECUTION: &str = "UPDATE cloaca_executions SET status = status WHERE id = ?1
    RETURNING status, started_at, finished_at, error_message";
// A running attempt's end goes into the row's history; the attempt's own
// outcome, when it arrives, is refused by the status fence.
pub(crate) const CANCEL_TASKS: &str = "UPDATE cloaca_task_executions
    SET status = 'cancelled', finished_at = ?2, lease_expires_at = NULL,
        history = CASE WHEN status = 'running' THEN COALESCE(history, '') || '{\"o\":\"cancelled\",\"a\":'
            || CAST(attempt - attempt_base AS TEXT) || ',\"r\":\"' || COALESCE(lease_owner, '') || '\",\"s\":'
            || CAST(COALESCE(started_at, 0) AS TEXT) || ',\"e\":' || ?3 || '}
' ELSE history END
    WHERE execution_id = ?1 AND status IN ('pending', 'ready', 'held', 'running')
    RETURNING task_id";
const SET_STATUS: &str = "UPDATE cloaca_executions SET status = ?2 WHERE id = ?1";
pub(crate) const HOLD_TASKS: &str = "UPDATE cloaca_task_executions SET status = 'held' WHERE execution_id = ?1 AND status = 'ready'";
pub(crate) const RELEASE_TASKS: &str = "UPDATE cloaca_task_executions SET status = 'ready' WHERE execution_id = ?1 AND status = 'held'";
const TASK_STATES: &str = "SELECT task_id, status FROM cloaca_task_executions WHERE execution_id = ?1";
// The attempt numbers go on from where they were (they fence late writes of
// the earlier round); `attempt_base` makes the new round count from one. The
// earlier round's ready time moves into the history.
pub(crate) const RESET_TASK: &str = "UPDATE cloaca_task_executions
    SET status = ?3, deps_remaining = ?4, attempt_base = attempt, failures = 0, next_attempt_at = ?5, ready_at = ?6,
        history = CASE WHEN ready_at IS NULL THEN history
                       ELSE COALESCE(history, '') || '{\"o\":\"ready\",\"e\":' || CAST(ready_at AS TEXT) || '}
' END,
        error_type = NULL, error_message = NULL, error_traceback = NULL, output_context = NULL, skip_reason = NULL,
        started_at = NULL, finished_at = NULL, lease_owner = NULL, lease_expires_at = NULL
    WHERE execution_id = ?1 AND task_id = ?2";
const REOPEN_EXECUTION: &str = "UPDATE cloaca_executions
    SET status = 'running', tasks_remaining = ?2, final_context = NULL, error_message = NULL, finished_at = NULL WHERE id = ?1";

/// The locked execution's state.
struct Locked {
    status: ExecutionStatus,
    started: bool,
    finished_at: Option<i64>,
    error: Option<String>,
}

fn lock_execution(conn: &mut dyn Conn, execution_id: &str) -> Result<Locked> {
    conn.query_opt(LOCK_EXECUTION, &[Param::Text(execution_id)], |row| {
        Ok(Locked {
            status: ExecutionStatus::from_db(&row.text(0)?)?,
            started: row.opt_int(1)?.is_some(),
            finished_at: row.opt_int(2)?,
            error: row.opt_text(3)?,
        })
    })?
    .ok_or_else(|| Error::UnknownExecution(execution_id.to_string()))
}

fn refuse(execution_id: &str, action: &'static str, status: ExecutionStatus, accepted: &'static str) -> Error {
    Error::InvalidExecutionState { execution_id: execution_id.to_string(), action, status: status.display_name(), accepted }
}

/// Cancels an unfinished execution: its unfinished tasks become Cancelled
/// and it finishes as Cancelled, with the final context of what completed.
/// Returns the ids of the tasks it cancelled.
pub(crate) fn cancel(conn: &mut dyn Conn, execution_id: &str, runner: &str, now: i64) -> Result<Vec<String>> {
    let locked = lock_execution(conn, execution_id)?;
    if locked.status.is_finished() {
        return Err(refuse(execution_id, "cancel", locked.status, "only a Pending, Running or Paused execution can be cancelled"));
    }
    let now_text = now.to_string();
    let cancelled =
        conn.query_all(CANCEL_TASKS, &[Param::Text(execution_id), Param::Int(now), Param::Text(&now_text)], |row| row.text(0))?;
    let input = execution_input(conn, execution_id)?;
    let final_context = match load_shape(conn, execution_id)? {
        Some(shape) => shape.final_context(&input, completed_output_texts(conn, execution_id)?)?,
        None => input,
    };
    finish_execution(conn, execution_id, ExecutionStatus::Cancelled, &final_context, Some("the execution was cancelled"), now)?;
    insert_event(conn, execution_id, now, EventKind::ExecutionCancelled, runner, None)?;
    conn.notify(Channel::Cancel, execution_id)?;
    Ok(cancelled)
}

/// Pauses an unfinished execution: its ready tasks are held, and tasks
/// that become ready while it is paused are held too. Pausing a paused
/// execution changes nothing.
pub(crate) fn pause(conn: &mut dyn Conn, execution_id: &str, runner: &str, now: i64) -> Result<()> {
    let locked = lock_execution(conn, execution_id)?;
    match locked.status {
        ExecutionStatus::Paused => return Ok(()),
        status if status.is_finished() => {
            return Err(refuse(execution_id, "pause", status, "only a Pending or Running execution can be paused"));
        }
        _ => {}
    }
    conn.execute(SET_STATUS, &[Param::Text(execution_id), Param::Text(ExecutionStatus::Paused.as_db())])?;
    let held = conn.execute(HOLD_TASKS, &[Param::Text(execution_id)])?;
    insert_event(conn, execution_id, now, EventKind::ExecutionPaused, runner, Some(&format!("{held} ready task(s) held")))
}

/// Resumes a paused execution: its held tasks become ready. Returns how
/// many; resuming an execution that is not paused (but unfinished)
/// changes nothing.
pub(crate) fn resume(conn: &mut dyn Conn, execution_id: &str, runner: &str, now: i64) -> Result<u64> {
    let locked = lock_execution(conn, execution_id)?;
    match locked.status {
        ExecutionStatus::Paused => {}
        status if status.is_finished() => {
            return Err(refuse(execution_id, "resume", status, "only a Paused execution can be resumed"));
        }
        _ => return Ok(0),
    }
    let status = if locked.started { ExecutionStatus::Running } else { ExecutionStatus::Pending };
    conn.execute(SET_STATUS, &[Param::Text(execution_id), Param::Text(status.as_db())])?;
    let released = conn.execute(RELEASE_TASKS, &[Param::Text(execution_id)])?;
    insert_event(conn, execution_id, now, EventKind::ExecutionResumed, runner, Some(&format!("{released} task(s) released")))?;
    // Lost attempts held back during the pause are claimable again too.
    conn.notify(Channel::Work, &released.max(1).to_string())?;
    Ok(released)
}

/// Runs a Failed or Cancelled execution again from where it stopped:
/// completed tasks keep their outputs, every other task starts a new round
/// of attempts. Returns how many tasks are ready at once.
pub(crate) fn retry(conn: &mut dyn Conn, execution_id: &str, runner: &str, now: i64) -> Result<u64> {
    let locked = lock_execution(conn, execution_id)?;
    if !matches!(locked.status, ExecutionStatus::Failed | ExecutionStatus::Cancelled) {
        return Err(refuse(execution_id, "retry", locked.status, "only a Failed or Cancelled execution can be retried"));
    }
    let shape = load_shape(conn, execution_id)?.ok_or_else(|| {
        refuse(execution_id, "retry", locked.status, "it was started by an older cloaca, which did not store its workflow's shape")
    })?;
    let mut completed = vec![false; shape.ids.len()];
    for (task_id, status) in conn.query_all(TASK_STATES, &[Param::Text(execution_id)], |row| Ok((row.text(0)?, row.text(1)?)))? {
        if let Some(position) = shape.position(&task_id) {
            completed[position] = TaskStatus::from_db(&status)? == TaskStatus::Completed;
        }
    }
    let (mut reset, mut ready) = (0_i64, 0_u64);
    // A task with a rule and nothing left to wait for is decided anew once
    // every row is reset: the new round may end differently.
    let mut candidates = Vec::new();
    for (position, id) in shape.ids.iter().enumerate() {
        if completed[position] {
            continue;
        }
        let waiting_for = shape.dependencies[position].iter().filter(|&&d| !completed[d]).count() as i64;
        let ruled = waiting_for == 0 && shape.rule(position).is_some();
        if ruled {
            candidates.push(position);
        }
        let status = if waiting_for == 0 && !ruled { TaskStatus::Ready } else { TaskStatus::Pending };
        let params = [
            Param::Text(execution_id),
            Param::Text(id),
            Param::Text(status.as_db()),
            Param::Int(waiting_for),
            Param::Int(now),
            Param::NullableInt((waiting_for == 0).then_some(now)),
        ];
        conn.execute(RESET_TASK, &params)?;
        reset += 1;
        ready += u64::from(status == TaskStatus::Ready);
    }
    // The round that ended stays in the history as its finish.
    if let Some(finished_at) = locked.finished_at {
        let detail = finish_detail(locked.status, locked.error.as_deref());
        insert_event(conn, execution_id, finished_at, EventKind::ExecutionFinished, "", Some(&detail))?;
    }
    conn.execute(REOPEN_EXECUTION, &[Param::Text(execution_id), Param::Int(reset)])?;
    insert_event(conn, execution_id, now, EventKind::ExecutionRetried, runner, Some(&format!("{reset} task(s) to run again")))?;
    if !candidates.is_empty() {
        let decided = decide_candidates(conn, execution_id, &shape, &candidates, now)?;
        ready += decided.readied.len() as u64;
        if decided.skipped > 0 {
            let (remaining, _) = count_finished(conn, execution_id, decided.skipped)?;
            settle(conn, execution_id, remaining, &shape, now)?;
        }
    }
    conn.notify(Channel::Work, &ready.to_string())?;
    Ok(ready)
}

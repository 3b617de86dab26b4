//! What an execution's records are read back as: its tasks' states
//! ([`task_records`]), its event history ([`events`]) and its workflow
//! version's stored shape ([`load_shape`]).
//!
//! Events are mostly not stored as rows of their own, to keep the hot path
//! as cheap as before: they are read out of what the state changes write
//! anyway (a task row's ready time, its last attempt's start, end and
//! runner, and the JSON lines of its earlier attempts in `history`), plus
//! the rows of the rare steering events.

use std::collections::HashMap;

use super::conn::{Conn, Param, Row};
use super::executions::parse_context;
use super::DatabaseCounts;
use crate::engine::error::{Error, Result};
use crate::engine::model::{Context, EventKind, ExecutionEvent, ExecutionStatus, TaskRecord, TaskStatus};
use crate::engine::time::rfc3339;
use crate::engine::workflow::{frontier_context, Graph, TriggerRule};

/// A workflow version as stored: task ids in topological order, with the
/// positions of each task's dependencies and each task's trigger rule.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Shape {
    pub(crate) ids: Vec<String>,
    pub(crate) dependencies: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    rules: Vec<Option<TriggerRule>>,
}

impl Graph for Shape {
    fn task_count(&self) -> usize {
        self.ids.len()
    }
    fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }
    fn position(&self, task_id: &str) -> Option<usize> {
        self.ids.iter().position(|id| id == task_id)
    }
    fn dependencies(&self, i: usize) -> &[usize] {
        &self.dependencies[i]
    }
    fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }
    fn rule(&self, i: usize) -> Option<&TriggerRule> {
        self.rules[i].as_ref()
    }
}

impl Shape {
    /// The final context of an execution with these stored outputs.
    pub(crate) fn final_context(&self, input: &Context, outputs_by_id: Vec<(String, String)>) -> Result<Context> {
        let mut outputs = HashMap::new();
        for (task_id, text) in outputs_by_id {
            if let Some(position) = self.position(&task_id) {
                outputs.insert(position, parse_context(&text, "a task output")?);
            }
        }
        Ok(frontier_context(self, input, &outputs))
    }

    /// Task ids with the ids of their dependencies, in topological order.
    pub(crate) fn edges(&self) -> Vec<(String, Vec<String>)> {
        self.ids
            .iter()
            .zip(&self.dependencies)
            .map(|(id, deps)| (id.clone(), deps.iter().map(|&d| self.ids[d].clone()).collect()))
            .collect()
    }
}

pub(crate) const LOAD_SHAPE: &str = "SELECT s.shape FROM cloaca_workflow_versions s JOIN cloaca_executions e
    ON s.workflow_name = e.workflow_name AND s.workflow_version = e.workflow_version WHERE e.id = ?1";

/// The shape of the workflow version an execution runs; None for an
/// execution started before shapes were stored.
pub(crate) fn load_shape(conn: &mut dyn Conn, execution_id: &str) -> Result<Option<Shape>> {
    let Some(text) = conn.query_opt(LOAD_SHAPE, &[Param::Text(execution_id)], |row| row.text(0))? else {
        return Ok(None);
    };
    let corrupt = |what: &str| Error::corrupt("reading a workflow shape", what.to_string());
    let tasks: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| corrupt(&e.to_string()))?;
    let mut shape = Shape { ids: Vec::new(), dependencies: Vec::new(), dependents: Vec::new(), rules: Vec::new() };
    for task in tasks {
        let id = task["id"].as_str().ok_or_else(|| corrupt("a task without an id"))?;
        let deps = task["deps"].as_array().ok_or_else(|| corrupt("a task without dependencies"))?;
        let deps: Option<Vec<usize>> = deps.iter().map(|d| d.as_u64().map(|d| d as usize)).collect();
        let rule = match task.get("rule") {
            None | Some(serde_json::Value::Null) => None,
            Some(rule) => Some(TriggerRule::from_json(rule).map_err(|e| corrupt(&e))?),
        };
        shape.ids.push(id.to_string());
        shape.dependencies.push(deps.ok_or_else(|| corrupt("a dependency that is not a position"))?);
        shape.rules.push(rule);
    }
    if shape.dependencies.iter().flatten().any(|&d| d >= shape.ids.len()) {
        return Err(corrupt("a dependency outside the workflow"));
    }
    shape.dependents = vec![Vec::new(); shape.ids.len()];
    for (i, deps) in shape.dependencies.iter().enumerate() {
        for &d in deps {
            shape.dependents[d].push(i);
        }
    }
    Ok(Some(shape))
}

const EXECUTION_TIMES: &str = "SELECT status, created_at, finished_at, error_message FROM cloaca_executions WHERE id = ?1";
pub(crate) const TASK_ROWS: &str = "SELECT task_id, status, attempt - attempt_base, started_at, finished_at, error_type, error_message,
    error_traceback, lease_owner, next_attempt_at, failures, ready_at, history, skip_reason
    FROM cloaca_task_executions WHERE execution_id = ?1 ORDER BY id";
pub(crate) const STEERING_EVENTS: &str = "SELECT at, kind, runner, detail FROM cloaca_execution_events WHERE execution_id = ?1 ORDER BY id";
pub(crate) const INSERT_EVENT: &str =
    "INSERT INTO cloaca_execution_events (execution_id, at, kind, runner, detail) VALUES (?1, ?2, ?3, ?4, ?5)";

/// Stores a steering event (pause, resume, cancellation, retry).
pub(crate) fn insert_event(
    conn: &mut dyn Conn,
    execution_id: &str,
    at: i64,
    kind: EventKind,
    runner: &str,
    detail: Option<&str>,
) -> Result<()> {
    let params = [Param::Text(execution_id), Param::Int(at), Param::Text(kind.name()), Param::Text(runner), Param::NullableText(detail)];
    conn.execute(INSERT_EVENT, &params).map(|_| ())
}

/// A task row as [`TASK_ROWS`] reads it.
struct TaskRow {
    record: TaskRecord,
    ready_at: Option<i64>,
    history: Option<String>,
}

fn task_row(row: &dyn Row) -> Result<TaskRow> {
    let status = TaskStatus::from_db(&row.text(1)?)?;
    let failures = row.int(10)?;
    let waiting = matches!(status, TaskStatus::Ready | TaskStatus::Paused);
    Ok(TaskRow {
        record: TaskRecord {
            task_id: row.text(0)?,
            status,
            attempts: row.int(2)?,
            started_at: row.opt_int(3)?,
            finished_at: row.opt_int(4)?,
            error_type: row.opt_text(5)?,
            error_message: row.opt_text(6)?,
            error_traceback: row.opt_text(7)?,
            runner: row.opt_text(8)?,
            next_retry_at: if waiting && failures > 0 { row.opt_int(9)? } else { None },
            skip_reason: if status == TaskStatus::Skipped { row.opt_text(13)? } else { None },
        },
        ready_at: row.opt_int(11)?,
        history: row.opt_text(12)?,
    })
}

fn ensure_exists(conn: &mut dyn Conn, execution_id: &str) -> Result<(ExecutionStatus, i64, Option<i64>, Option<String>)> {
    conn.query_opt(EXECUTION_TIMES, &[Param::Text(execution_id)], |row| {
        Ok((ExecutionStatus::from_db(&row.text(0)?)?, row.int(1)?, row.opt_int(2)?, row.opt_text(3)?))
    })?
    .ok_or_else(|| Error::UnknownExecution(execution_id.to_string()))
}

/// The tasks of an execution in topological order.
pub(crate) fn task_records(conn: &mut dyn Conn, execution_id: &str) -> Result<Vec<TaskRecord>> {
    ensure_exists(conn, execution_id)?;
    Ok(conn.query_all(TASK_ROWS, &[Param::Text(execution_id)], task_row)?.into_iter().map(|t| t.record).collect())
}

/// An ended attempt as its history line stores it.
struct PastAttempt {
    outcome: String,
    attempt: i64,
    runner: String,
    started: i64,
    ended: i64,
    error: Option<String>,
    retry_at: Option<i64>,
}

fn past_attempts(history: &str) -> Result<Vec<PastAttempt>> {
    let corrupt = |what: String| Error::corrupt("reading a task's history", what);
    let mut attempts = Vec::new();
    for line in history.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value = serde_json::from_str(line).map_err(|e| corrupt(format!("{e}: {line:?}")))?;
        let int = |key: &str| entry[key].as_i64();
        let error = match (entry["t"].as_str(), entry["m"].as_str()) {
            (Some(t), Some(m)) if !m.is_empty() => Some(format!("{t}: {m}")),
            (Some(t), _) => Some(t.to_string()),
            _ => None,
        };
        attempts.push(PastAttempt {
            outcome: entry["o"].as_str().unwrap_or_default().to_string(),
            attempt: int("a").unwrap_or(0),
            runner: entry["r"].as_str().unwrap_or_default().to_string(),
            started: int("s").unwrap_or(0),
            ended: int("e").unwrap_or(0),
            error,
            retry_at: int("retry_at"),
        });
    }
    Ok(attempts)
}

/// Where an event sorts: (time, class, task position, attempt, kind).
type EventOrder = (i64, u8, usize, i64, EventKind);

/// The history of an execution, oldest first.
pub(crate) fn events(conn: &mut dyn Conn, execution_id: &str) -> Result<Vec<ExecutionEvent>> {
    let (status, created_at, finished_at, error) = ensure_exists(conn, execution_id)?;
    let rows = conn.query_all(TASK_ROWS, &[Param::Text(execution_id)], task_row)?;
    let steering = conn.query_all(STEERING_EVENTS, &[Param::Text(execution_id)], |row| {
        Ok((row.int(0)?, EventKind::from_name(&row.text(1)?)?, row.opt_text(2)?, row.opt_text(3)?))
    })?;
    // Sorted by time; at one millisecond, by (class, task position,
    // attempt, kind): creation first, then a steering request (before the
    // task changes it made), the tasks in topological order (a dependency's
    // end before its dependent's start), the finish last.
    let mut keyed: Vec<(EventOrder, ExecutionEvent)> = Vec::new();
    let event = |at, kind, task: Option<&str>, attempt: Option<i64>, runner: Option<&str>, detail: Option<String>| ExecutionEvent {
        at,
        kind,
        task_id: task.map(str::to_string),
        attempt,
        runner: runner.filter(|r| !r.is_empty()).map(str::to_string),
        detail,
    };
    keyed
        .push(((created_at, 0, 0, 0, EventKind::ExecutionCreated), event(created_at, EventKind::ExecutionCreated, None, None, None, None)));
    for (position, row) in rows.iter().enumerate() {
        let task = Some(row.record.task_id.as_str());
        let mut push = |at: i64, kind, attempt: Option<i64>, runner: Option<&str>, detail| {
            keyed.push(((at, 2, position, attempt.unwrap_or(0), kind), event(at, kind, task, attempt, runner, detail)));
        };
        if let Some(at) = row.ready_at {
            push(at, EventKind::TaskReady, None, None, None);
        }
        for past in past_attempts(row.history.as_deref().unwrap_or(""))? {
            if past.outcome == "ready" {
                // A ready time of an earlier round (before a retry_execution).
                push(past.ended, EventKind::TaskReady, None, None, None);
                continue;
            }
            let (a, r) = (Some(past.attempt), Some(past.runner.as_str()));
            push(past.started, EventKind::AttemptClaimed, a, r, None);
            match past.outcome.as_str() {
                "failed" => {
                    push(past.ended, EventKind::AttemptFailed, a, r, past.error.clone());
                    if let Some(retry_at) = past.retry_at {
                        push(past.ended, EventKind::RetryScheduled, a, None, Some(format!("next attempt at {}", rfc3339(retry_at))));
                    }
                }
                "lease_expired" => push(
                    past.ended,
                    EventKind::LeaseExpired,
                    a,
                    r,
                    Some("the runner stopped renewing its lease; the task is run again".into()),
                ),
                _ => push(past.ended, EventKind::AttemptCancelled, a, r, None),
            }
        }
        let record = &row.record;
        let current = Some(record.attempts);
        if matches!(record.status, TaskStatus::Running | TaskStatus::Completed) && record.attempts > 0 {
            if let Some(started) = record.started_at {
                push(started, EventKind::AttemptClaimed, current, record.runner.as_deref(), None);
            }
        }
        if let (TaskStatus::Completed, Some(finished)) = (record.status, record.finished_at) {
            push(finished, EventKind::AttemptSucceeded, current, record.runner.as_deref(), None);
        }
        if let (TaskStatus::Skipped, Some(finished)) = (record.status, record.finished_at) {
            push(finished, EventKind::TaskSkipped, None, None, record.skip_reason.clone());
        }
    }
    for (at, kind, runner, detail) in steering {
        // A retried execution's earlier finish is stored as a row: sort it
        // as a finish.
        let class = if kind == EventKind::ExecutionFinished { 3 } else { 1 };
        keyed.push(((at, class, 0, 0, kind), event(at, kind, None, None, runner.as_deref(), detail)));
    }
    if let (true, Some(at)) = (status.is_finished(), finished_at) {
        let detail = finish_detail(status, error.as_deref());
        keyed.push(((at, 3, 0, 0, EventKind::ExecutionFinished), event(at, EventKind::ExecutionFinished, None, None, None, Some(detail))));
    }
    keyed.sort_by_key(|(order, _)| *order);
    Ok(keyed.into_iter().map(|(_, e)| e).collect())
}

/// The detail of an execution's finish event: its status and the first
/// line of its error.
pub(crate) fn finish_detail(status: ExecutionStatus, error: Option<&str>) -> String {
    match error.and_then(|e| e.lines().next()) {
        Some(first) => format!("{status}: {first}"),
        None => status.to_string(),
    }
}

const SCHEMA_VERSION: &str = "SELECT COALESCE(MAX(version), 0) FROM cloaca_schema_migrations";
const EXECUTION_COUNTS: &str = "SELECT status, COUNT(*) FROM cloaca_executions GROUP BY status";
const TASK_COUNT: &str = "SELECT COUNT(*) FROM cloaca_task_executions";
const SCHEDULE_COUNT: &str = "SELECT COUNT(*) FROM cloaca_cron_schedules";

/// The schema version and row counts of a database.
pub(crate) fn counts(conn: &mut dyn Conn) -> Result<DatabaseCounts> {
    let mut counts = DatabaseCounts {
        schema_version: conn.query_one(SCHEMA_VERSION, &[], |row| row.int(0))?,
        task_executions: conn.query_one(TASK_COUNT, &[], |row| row.int(0))?,
        cron_schedules: conn.query_one(SCHEDULE_COUNT, &[], |row| row.int(0))?,
        ..Default::default()
    };
    for status in ExecutionStatus::ALL {
        counts.executions.insert(status.display_name().to_string(), 0);
    }
    for (status, count) in conn.query_all(EXECUTION_COUNTS, &[], |row| Ok((row.text(0)?, row.int(1)?)))? {
        counts.executions.insert(ExecutionStatus::from_db(&status)?.display_name().to_string(), count);
    }
    Ok(counts)
}

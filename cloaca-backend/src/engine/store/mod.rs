//! Durable state: one [`Store`] trait, one implementation per backend.
//!
//! The rules that make a state change correct (fencing an attempt by its
//! number, readying dependents, skipping descendants of a failed task,
//! finishing the execution) are written once, in [`record_attempt`], over the
//! small [`Tx`] trait. Each backend implements `Tx` with its own SQL and runs
//! `record_attempt` inside one of its transactions, so a completed task, its
//! stored output and its readied dependents commit together or not at all.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::dag::Dag;
use super::error::{EngineError, Result};
use super::retry::TaskFailure;
use super::Context;

pub mod cron;
mod migrations;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use migrations::{Migration, MIGRATIONS_VERSION};

/// Where an execution stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionStatus {
    Pending,
    Running,
    Completed,
    Failed,
}

impl ExecutionStatus {
    /// The spelling stored in the database.
    pub fn as_db(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
        }
    }

    /// The spelling Python sees (`PipelineResult.status`).
    pub fn display_name(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "Pending",
            ExecutionStatus::Running => "Running",
            ExecutionStatus::Completed => "Completed",
            ExecutionStatus::Failed => "Failed",
        }
    }

    pub fn from_db(value: &str) -> Result<Self> {
        Ok(match value {
            "pending" => ExecutionStatus::Pending,
            "running" => ExecutionStatus::Running,
            "completed" => ExecutionStatus::Completed,
            "failed" => ExecutionStatus::Failed,
            other => return Err(EngineError::database("reading an execution", format!("unknown status {other:?}"))),
        })
    }

    /// Parses the Python spelling, for `list_executions(status=...)`.
    pub fn from_display(value: &str) -> Option<Self> {
        [Self::Pending, Self::Running, Self::Completed, Self::Failed].into_iter().find(|s| s.display_name() == value)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, ExecutionStatus::Completed | ExecutionStatus::Failed)
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

/// Identifies a workflow definition a runner can execute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkflowRef {
    pub name: String,
    pub version: String,
}

/// A task attempt a runner has claimed (and holds the lease of).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub row_id: i64,
    pub execution_id: String,
    pub task_id: String,
    pub workflow: WorkflowRef,
    /// The attempt number, 1-based; it fences every later write of this attempt.
    pub attempt: i64,
    /// Failed attempts so far.
    pub failures: i64,
}

/// An execution as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionRecord {
    pub id: String,
    pub workflow_name: String,
    pub workflow_version: String,
    pub status: ExecutionStatus,
    pub input: Context,
    pub final_context: Option<Context>,
    pub error_message: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// How an attempt ended, as the runner reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptOutcome {
    Completed(Context),
    /// `retry_at` is set when the policy allows another attempt.
    Failed {
        failure: TaskFailure,
        retry_at: Option<i64>,
    },
}

/// What recording an attempt did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttemptRecorded {
    /// False when the attempt had lost its claim (lease expired and taken
    /// over, execution aborted): nothing was written.
    pub accepted: bool,
    /// Dependents this attempt made ready.
    pub readied: u64,
    /// Set when this attempt finished the execution.
    pub finished: Option<ExecutionStatus>,
}

/// A failed task of an execution, for its error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedTask {
    pub task_id: String,
    pub attempts: i64,
    pub error_type: String,
    pub error_message: String,
    pub traceback: Option<String>,
}

/// The notification channels runners wake each other with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Tasks became claimable; the payload is how many.
    Work,
    /// An execution finished; the payload is its id.
    Done,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Work, Channel::Done];

    /// The channel's name for the tables of `schema` (the default schema
    /// when None): each schema's runners wake only each other.
    pub fn name_in(self, schema: Option<&str>) -> String {
        let base = match self {
            Channel::Work => "cloaca_work",
            Channel::Done => "cloaca_done",
        };
        match schema {
            None => base.to_string(),
            // A schema name may be 63 characters, as long as a channel name
            // may be: a short digest of it keeps every name within the limit.
            Some(schema) => {
                let hex: String = schema_digest(schema).iter().map(|b| format!("{b:02x}")).collect();
                format!("{base}_{hex}")
            }
        }
    }
}

/// Eight bytes of SHA-256 of a schema name: what keys its notification
/// channels and its migration lock apart from other schemas'.
pub fn schema_digest(schema: &str) -> [u8; 8] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(schema.as_bytes());
    digest[..8].try_into().expect("eight bytes")
}

/// Durable state of executions and task attempts. Every method is one
/// transaction (or a single read).
pub trait Store: Send + Sync {
    /// Inserts an execution and one row per task (roots ready), in one transaction.
    fn create_execution(&self, execution_id: &str, dag: &Dag, input: &Context, now: i64) -> Result<()>;

    /// Claims one claimable task of the given workflows: a ready task whose
    /// time has come, or (with `recover`) a running task whose lease expired.
    fn claim(&self, owner: &str, workflows: &[WorkflowRef], now: i64, lease_ms: i64, recover: bool) -> Result<Option<Claim>>;

    /// The input of a claimed task: the execution input for a root (which
    /// also marks the execution running), else the stored outputs of
    /// `dependencies`, returned by task id.
    fn load_contexts(&self, execution_id: &str, dependencies: &[&str], now: i64) -> Result<LoadedContexts>;

    /// Records the end of an attempt and everything that follows from it, in one transaction.
    fn record_attempt(&self, claim: &Claim, dag: &Dag, outcome: &AttemptOutcome, now: i64) -> Result<AttemptRecorded>;

    /// Extends the leases `owner` holds on the rows `row_ids` (the attempts
    /// it is really running: a claim it dropped, for an error or a replaced
    /// workflow, must lapse so that another runner takes it).
    fn renew_leases(&self, owner: &str, row_ids: &[i64], expires_at: i64) -> Result<()>;

    /// The earliest future time at which a task of these workflows becomes
    /// claimable (a retry's time, or a lease's expiry with `recover`).
    fn next_due(&self, workflows: &[WorkflowRef], recover: bool) -> Result<Option<i64>>;

    fn get_execution(&self, execution_id: &str) -> Result<Option<ExecutionRecord>>;

    /// Outputs of the completed tasks of an execution, by task id.
    fn completed_outputs(&self, execution_id: &str) -> Result<HashMap<String, Context>>;

    /// Newest first.
    fn list_executions(&self, workflow_name: Option<&str>, status: Option<ExecutionStatus>, limit: i64) -> Result<Vec<ExecutionRecord>>;

    /// Fails an unfinished execution (its time limit passed): every unfinished
    /// task is skipped. Returns false when it had already finished.
    fn abort_execution(&self, execution_id: &str, dag: &Dag, message: &str, now: i64) -> Result<bool>;

    // ---- cron schedules (see `cron.rs`) ----

    fn insert_schedule(&self, schedule: &cron::ScheduleRecord) -> Result<()>;
    fn get_schedule(&self, id: &str) -> Result<Option<cron::ScheduleRecord>>;
    /// Oldest first.
    fn list_schedules(&self, enabled_only: bool, limit: i64, offset: i64) -> Result<Vec<cron::ScheduleRecord>>;
    /// Stores a schedule's expression, time zone, enabled flag and next
    /// tick, if its stored next tick is still `read_next_run_at`; false
    /// when it is not (a tick was fired meanwhile) or the schedule is gone.
    fn update_schedule(&self, schedule: &cron::ScheduleRecord, read_next_run_at: i64, now: i64) -> Result<bool>;
    /// Deletes a schedule and its history; false when it does not exist.
    fn delete_schedule(&self, id: &str) -> Result<bool>;
    /// The earliest next tick of the enabled schedules of these workflows.
    fn next_cron_due(&self, workflow_names: &[&str]) -> Result<Option<i64>>;
    /// Fires the due ticks of one schedule, in one transaction.
    fn fire_due_schedule(&self, planner: &dyn cron::TickPlanner, exclude: &[String], now: i64) -> Result<cron::Fired>;
    /// The executions a schedule's ticks started, newest tick first.
    fn cron_history(&self, schedule_id: &str, limit: i64, offset: i64) -> Result<Vec<cron::CronRun>>;
    fn cron_stats(&self, since: i64) -> Result<cron::CronStats>;
    /// Executions of ticks of these workflows with no progress since `stalled_since`.
    fn lost_cron_executions(&self, workflow_names: &[&str], stalled_since: i64, now: i64) -> Result<Vec<cron::LostCandidate>>;
    /// Fails a lost execution and, with `restart`, starts its tick again; one transaction.
    fn recover_lost(
        &self,
        lost: &cron::LostCandidate,
        planner: &dyn cron::TickPlanner,
        message: &str,
        restart: bool,
        now: i64,
    ) -> Result<cron::Recovered>;

    /// Starts delivering other processes' notifications to `on_event` until
    /// `stop` is set; `None` where the backend has no notifications.
    fn listen(&self, on_event: EventHandler, stop: Arc<AtomicBool>) -> Result<Option<JoinHandle<()>>> {
        let _ = (on_event, stop);
        Ok(None)
    }
}

/// Receives notifications: the channel and its payload.
pub type EventHandler = Arc<dyn Fn(Channel, &str) + Send + Sync>;

/// What [`Store::load_contexts`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadedContexts {
    pub input: Option<Context>,
    pub outputs: HashMap<String, Context>,
}

/// The statements [`record_attempt`] needs, each one SQL statement on a
/// backend's open transaction.
pub(crate) trait Tx {
    /// Marks the claimed attempt completed or failed, if it still holds its
    /// claim (status running, same attempt). Returns whether it did.
    fn finish_attempt(
        &mut self,
        claim: &Claim,
        completed: bool,
        output: Option<&str>,
        failure: Option<&TaskFailure>,
        now: i64,
    ) -> Result<bool>;
    /// Puts the claimed attempt back to ready at `retry_at`, if it still holds its claim.
    fn reschedule_attempt(&mut self, claim: &Claim, failure: &TaskFailure, retry_at: i64) -> Result<bool>;
    /// Decrements the pending-dependency count of `dependents`; those reaching
    /// zero become ready. Returns how many became ready.
    fn release_dependents(&mut self, execution_id: &str, dependents: &[&str], now: i64) -> Result<u64>;
    /// Marks the unfinished tasks among `task_ids` skipped; returns how many.
    fn skip_tasks(&mut self, execution_id: &str, task_ids: &[&str], now: i64) -> Result<u64>;
    /// Subtracts `by` from the execution's unfinished-task count; returns what is left.
    fn decrement_remaining(&mut self, execution_id: &str, by: i64) -> Result<i64>;
    fn execution_input(&mut self, execution_id: &str) -> Result<String>;
    /// (task_id, output JSON) of every completed task.
    fn completed_output_texts(&mut self, execution_id: &str) -> Result<Vec<(String, String)>>;
    fn failed_tasks(&mut self, execution_id: &str) -> Result<Vec<FailedTask>>;
    /// Marks the execution finished (and its unfinished-task count zero).
    fn finish_execution(&mut self, execution_id: &str, failed: bool, final_context: &str, error: Option<&str>, now: i64) -> Result<()>;
    fn execution_status(&mut self, execution_id: &str) -> Result<Option<ExecutionStatus>>;
    /// Marks every unfinished task of the execution skipped.
    fn skip_unfinished(&mut self, execution_id: &str, now: i64) -> Result<u64>;
    /// Sends a notification when the transaction commits (no-op where runners
    /// cannot listen).
    fn notify(&mut self, channel: Channel, payload: &str) -> Result<()>;
}

/// Records an attempt's end: the backend-independent part of
/// [`Store::record_attempt`], run inside the backend's transaction.
pub(crate) fn record_attempt(tx: &mut dyn Tx, claim: &Claim, dag: &Dag, outcome: &AttemptOutcome, now: i64) -> Result<AttemptRecorded> {
    let position = dag.position(&claim.task_id).ok_or_else(|| {
        EngineError::database("recording a task", format!("task {:?} is not part of workflow {:?}", claim.task_id, dag.name()))
    })?;
    let execution = claim.execution_id.as_str();
    let mut recorded = AttemptRecorded { accepted: true, ..Default::default() };
    match outcome {
        AttemptOutcome::Completed(output) => {
            let text = serde_json::to_string(output).map_err(|e| EngineError::database("storing a task output", e))?;
            if !tx.finish_attempt(claim, true, Some(&text), None, now)? {
                return Ok(AttemptRecorded::default());
            }
            let dependents: Vec<&str> = dag.dependents_of(position).iter().map(|&d| dag.task(d).id.as_str()).collect();
            if !dependents.is_empty() {
                recorded.readied = tx.release_dependents(execution, &dependents, now)?;
                if recorded.readied > 0 {
                    tx.notify(Channel::Work, &recorded.readied.to_string())?;
                }
            }
            recorded.finished = settle(tx, execution, 1, dag, now)?;
        }
        AttemptOutcome::Failed { failure, retry_at: Some(at) } => {
            if !tx.reschedule_attempt(claim, failure, *at)? {
                return Ok(AttemptRecorded::default());
            }
            // Other processes learn of the retry time at their next idle check.
            tx.notify(Channel::Work, "1")?;
        }
        AttemptOutcome::Failed { failure, retry_at: None } => {
            if !tx.finish_attempt(claim, false, None, Some(failure), now)? {
                return Ok(AttemptRecorded::default());
            }
            let descendants: Vec<&str> = dag.descendants_of(position).iter().map(|&d| dag.task(d).id.as_str()).collect();
            let skipped = if descendants.is_empty() { 0 } else { tx.skip_tasks(execution, &descendants, now)? };
            recorded.finished = settle(tx, execution, 1 + skipped as i64, dag, now)?;
        }
    }
    Ok(recorded)
}

/// Counts `finished` tasks off the execution and, when none is left,
/// finishes it with its final context and error message.
fn settle(tx: &mut dyn Tx, execution_id: &str, finished: i64, dag: &Dag, now: i64) -> Result<Option<ExecutionStatus>> {
    if tx.decrement_remaining(execution_id, finished)? > 0 {
        return Ok(None);
    }
    let input = parse_context(&tx.execution_input(execution_id)?, "an execution input")?;
    let outputs = outputs_by_position(dag, tx.completed_output_texts(execution_id)?)?;
    let failed = tx.failed_tasks(execution_id)?;
    let final_context =
        serde_json::to_string(&dag.final_context(&input, &outputs)).map_err(|e| EngineError::database("storing a final context", e))?;
    let error = describe_failures(dag, &failed);
    tx.finish_execution(execution_id, error.is_some(), &final_context, error.as_deref(), now)?;
    tx.notify(Channel::Done, execution_id)?;
    Ok(Some(if error.is_some() { ExecutionStatus::Failed } else { ExecutionStatus::Completed }))
}

/// Fails an unfinished execution: the backend-independent part of
/// [`Store::abort_execution`]. Without its definition (a version this
/// process does not have) the final context is the execution's input.
pub(crate) fn abort_execution(tx: &mut dyn Tx, execution_id: &str, dag: Option<&Dag>, message: &str, now: i64) -> Result<bool> {
    match tx.execution_status(execution_id)? {
        None => return Err(EngineError::UnknownExecution(execution_id.to_string())),
        Some(status) if status.is_finished() => return Ok(false),
        Some(_) => {}
    }
    tx.skip_unfinished(execution_id, now)?;
    let input = parse_context(&tx.execution_input(execution_id)?, "an execution input")?;
    let final_context = match dag {
        Some(dag) => dag.final_context(&input, &outputs_by_position(dag, tx.completed_output_texts(execution_id)?)?),
        None => input,
    };
    let final_context = serde_json::to_string(&final_context).map_err(|e| EngineError::database("storing a final context", e))?;
    tx.finish_execution(execution_id, true, &final_context, Some(message), now)?;
    tx.notify(Channel::Done, execution_id)?;
    Ok(true)
}

/// Parses stored outputs and keys them by the task's topological position.
pub(crate) fn outputs_by_position(dag: &Dag, texts: Vec<(String, String)>) -> Result<HashMap<usize, Context>> {
    let mut outputs = HashMap::new();
    for (task_id, text) in texts {
        if let Some(position) = dag.position(&task_id) {
            outputs.insert(position, parse_context(&text, "a task output")?);
        }
    }
    Ok(outputs)
}

/// Parses a stored JSON object.
pub(crate) fn parse_context(text: &str, what: &'static str) -> Result<Context> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(EngineError::database("reading stored JSON", format!("{what} is not a JSON object"))),
        Err(e) => Err(EngineError::database("reading stored JSON", format!("{what}: {e}"))),
    }
}

/// The error message of a failed execution: the first failed task (in
/// topological order) with its exception and traceback, then any others.
pub fn describe_failures(dag: &Dag, failed: &[FailedTask]) -> Option<String> {
    let mut ordered: Vec<&FailedTask> = failed.iter().collect();
    ordered.sort_by_key(|f| dag.position(&f.task_id).unwrap_or(usize::MAX));
    let first = ordered.first()?;
    let mut message = format!("Task '{}' failed after {} attempt(s): {}", first.task_id, first.attempts, first.error_type);
    if !first.error_message.is_empty() {
        message.push_str(": ");
        message.push_str(&first.error_message);
    }
    if ordered.len() > 1 {
        let others: Vec<&str> = ordered[1..].iter().map(|f| f.task_id.as_str()).collect();
        message.push_str(&format!(" (other failed tasks: {})", others.join(", ")));
    }
    if let Some(traceback) = &first.traceback {
        message.push('\n');
        message.push_str(traceback.trim_end());
    }
    Some(message)
}

//! Durable state: [`Store`], over the one database backend this build has.
//!
//! - [`conn`]: the connection layer (`Conn`, rows, parameters, `query_opt`
//!   / `query_one` / `query_all`) and the SQLite-to-PostgreSQL dialect rewrite.
//! - [`migrations`]: the versioned schema, applied when a store opens.
//! - [`executions`]: executions and task attempts, and the rules of
//!   recording an attempt's end.
//! - [`schedules`]: cron schedules and the executions their ticks start.
//! - [`retention`]: deleting finished executions in bounded batches.
//! - [`records`]: what the store and the runner hand each other.
//! - `sqlite` / `postgres`: the backend's connection handling, behind its
//!   cargo feature. Each offers `write` (one transaction, committed only if
//!   its closure succeeds) and `single` (one autocommit connection for
//!   reads and single statements); [`Store`] runs the shared SQL in them.
//!
//! Every [`Store`] method is one transaction or one statement.

#[cfg(test)]
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::error::Result;
use super::model::{Context, ExecutionRecord, ExecutionStatus, WorkflowRef};
use super::url::DatabaseUrl;
use super::workflow::{Dag, Workflows};

mod conn;
mod executions;
mod migrations;
#[cfg(test)]
mod plans;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod records;
mod retention;
mod schedules;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(test)]
pub(crate) use schedules::CronRunStatus;
pub(crate) use schedules::{CronRun, CronStats, Fired, LostCandidate, Recovered, ScheduleRecord};

pub(crate) use retention::{PruneFilter, Pruned};

pub(crate) use records::{AttemptOutcome, AttemptRecorded, Channel, Claim, EventHandler, LoadedContexts};

#[cfg(feature = "postgres")]
use postgres::PostgresDb as Db;
#[cfg(feature = "sqlite")]
use sqlite::SqliteDb as Db;

/// Executions, task attempts and schedules in one database.
pub(crate) struct Store {
    db: Db,
}

impl Store {
    /// Opens (creating when allowed) and migrates the database of `url`.
    /// `schema` confines a PostgreSQL store to one schema (the caller has
    /// checked that the backend supports it); `pool_size` bounds its connections.
    pub(crate) fn open(url: &DatabaseUrl, schema: Option<&str>, pool_size: usize, now: i64) -> Result<Store> {
        Ok(Store { db: Db::open(url, schema, pool_size, now)? })
    }

    /// Inserts an execution and one row per task (roots ready), in one transaction.
    pub(crate) fn create_execution(&self, execution_id: &str, dag: &Dag, input: &Context, now: i64) -> Result<()> {
        self.db.write("creating an execution", |c| executions::create_execution(c, execution_id, dag, input, now))
    }

    /// Claims one claimable task of the given workflows: a ready task whose
    /// time has come, or (with `recover`) a running task whose lease expired.
    pub(crate) fn claim(&self, owner: &str, workflows: &[WorkflowRef], now: i64, lease_ms: i64, recover: bool) -> Result<Option<Claim>> {
        if workflows.is_empty() {
            return Ok(None);
        }
        self.db.single(|c| executions::claim(c, owner, workflows, now, lease_ms, recover))
    }

    /// The input of a claimed task: the execution input for a root (which
    /// also marks the execution running), else the stored outputs of
    /// `dependencies`, returned by task id.
    pub(crate) fn load_contexts(&self, execution_id: &str, dependencies: &[&str], now: i64) -> Result<LoadedContexts> {
        self.db.single(|c| executions::load_contexts(c, execution_id, dependencies, now))
    }

    /// Records the end of an attempt and everything that follows from it, in one transaction.
    pub(crate) fn record_attempt(&self, claim: &Claim, dag: &Dag, outcome: &AttemptOutcome, now: i64) -> Result<AttemptRecorded> {
        self.db.write("recording a task attempt", |c| executions::record_attempt(c, claim, dag, outcome, now))
    }

    /// Extends the leases `owner` holds on the rows `row_ids` (the attempts
    /// it is really running: a claim it dropped, for an error or a replaced
    /// workflow, must lapse so that another runner takes it).
    pub(crate) fn renew_leases(&self, owner: &str, row_ids: &[i64], expires_at: i64) -> Result<()> {
        if row_ids.is_empty() {
            return Ok(());
        }
        self.db.single(|c| executions::renew_leases(c, owner, row_ids, expires_at))
    }

    /// The earliest future time at which a task of these workflows becomes
    /// claimable (a retry's time, or a lease's expiry with `recover`).
    pub(crate) fn next_due(&self, workflows: &[WorkflowRef], recover: bool) -> Result<Option<i64>> {
        if workflows.is_empty() {
            return Ok(None);
        }
        self.db.single(|c| executions::next_due(c, workflows, recover))
    }

    pub(crate) fn get_execution(&self, execution_id: &str) -> Result<Option<ExecutionRecord>> {
        self.db.single(|c| executions::get_execution(c, execution_id))
    }

    /// Outputs of the completed tasks of an execution, by task id.
    #[cfg(test)]
    pub(crate) fn completed_outputs(&self, execution_id: &str) -> Result<HashMap<String, Context>> {
        let texts = self.db.single(|c| executions::completed_output_texts(c, execution_id))?;
        texts.into_iter().map(|(id, text)| Ok((id, executions::parse_context(&text, "a task output")?))).collect()
    }

    /// Newest first.
    pub(crate) fn list_executions(
        &self,
        workflow_name: Option<&str>,
        status: Option<ExecutionStatus>,
        limit: i64,
    ) -> Result<Vec<ExecutionRecord>> {
        self.db.single(|c| executions::list_executions(c, workflow_name, status, limit))
    }

    /// Fails an unfinished execution (its time limit passed): every unfinished
    /// task is skipped. Returns false when it had already finished.
    pub(crate) fn abort_execution(&self, execution_id: &str, dag: &Dag, message: &str, now: i64) -> Result<bool> {
        self.db.write("aborting an execution", |c| executions::abort_execution(c, execution_id, Some(dag), message, now))
    }

    /// Deletes up to `batch_size` finished executions matching `filter`,
    /// with their task rows and cron history rows, in one transaction.
    pub(crate) fn prune_batch(&self, filter: &PruneFilter, batch_size: i64) -> Result<Pruned> {
        self.db.write("pruning finished executions", |c| retention::prune_batch(c, filter, batch_size))
    }

    // ---- cron schedules ----

    pub(crate) fn insert_schedule(&self, schedule: &ScheduleRecord) -> Result<()> {
        self.db.single(|c| schedules::insert_schedule(c, schedule))
    }

    pub(crate) fn get_schedule(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        self.db.single(|c| schedules::get_schedule(c, id))
    }

    /// Oldest first.
    pub(crate) fn list_schedules(&self, enabled_only: bool, limit: i64, offset: i64) -> Result<Vec<ScheduleRecord>> {
        self.db.single(|c| schedules::list_schedules(c, enabled_only, limit, offset))
    }

    /// Stores a schedule's expression, time zone, enabled flag and next
    /// tick, if its stored next tick is still `read_next_run_at`; false
    /// when it is not (a tick was fired meanwhile) or the schedule is gone.
    pub(crate) fn update_schedule(&self, schedule: &ScheduleRecord, read_next_run_at: i64, now: i64) -> Result<bool> {
        self.db.single(|c| schedules::update_schedule(c, schedule, read_next_run_at, now))
    }

    /// Deletes a schedule and its history; false when it does not exist.
    pub(crate) fn delete_schedule(&self, id: &str) -> Result<bool> {
        self.db.write("deleting a cron schedule", |c| schedules::delete_schedule(c, id))
    }

    /// The earliest next tick of the enabled schedules of these workflows.
    pub(crate) fn next_cron_due(&self, workflow_names: &[&str]) -> Result<Option<i64>> {
        if workflow_names.is_empty() {
            return Ok(None);
        }
        self.db.single(|c| schedules::next_due(c, workflow_names))
    }

    /// Fires the due ticks of one schedule of `workflows` (not in
    /// `exclude`), at most `max_catchup` of them, in one transaction.
    pub(crate) fn fire_due_schedule(&self, workflows: &Workflows, max_catchup: usize, exclude: &[String], now: i64) -> Result<Fired> {
        self.db.write("firing a cron tick", |c| schedules::fire_due_schedule(c, workflows, max_catchup, exclude, now))
    }

    /// The executions a schedule's ticks started, newest tick first.
    pub(crate) fn cron_history(&self, schedule_id: &str, limit: i64, offset: i64) -> Result<Vec<CronRun>> {
        self.db.single(|c| schedules::history(c, schedule_id, limit, offset))
    }

    pub(crate) fn cron_stats(&self, since: i64) -> Result<CronStats> {
        self.db.single(|c| schedules::stats(c, since))
    }

    /// Executions of ticks of these workflows with no progress since `stalled_since`.
    pub(crate) fn lost_cron_executions(&self, workflow_names: &[&str], stalled_since: i64, now: i64) -> Result<Vec<LostCandidate>> {
        if workflow_names.is_empty() {
            return Ok(Vec::new());
        }
        self.db.single(|c| schedules::lost_candidates(c, workflow_names, stalled_since, now))
    }

    /// Fails a lost execution and, with `restart`, starts its tick again; one transaction.
    pub(crate) fn recover_lost(
        &self,
        lost: &LostCandidate,
        workflows: &Workflows,
        message: &str,
        restart: bool,
        now: i64,
    ) -> Result<Recovered> {
        self.db.write("recovering a lost cron execution", |c| schedules::recover_lost(c, lost, workflows, message, restart, now))
    }

    /// Starts delivering other processes' notifications to `on_event` until
    /// `stop` is set; `None` where the backend has no notifications.
    pub(crate) fn listen(&self, on_event: EventHandler, stop: Arc<AtomicBool>) -> Result<Option<JoinHandle<()>>> {
        self.db.listen(on_event, stop)
    }
}

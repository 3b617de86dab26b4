//! Durable state: [`Store`], over the one database backend this build has.
//!
//! - [`conn`]: the connection layer (`Conn`, rows, parameters, `query_opt`
//!   / `query_one` / `query_all`) and the SQLite-to-PostgreSQL dialect rewrite.
//! - [`migrations`]: the versioned schema, applied when a store opens.
//! - [`executions`]: executions and task attempts, and the rules of
//!   recording an attempt's end.
//! - [`schedules`]: cron schedules and the executions their ticks start.
//! - [`triggers`]: event triggers' rows, their polling leases, and the
//!   executions their fires started.
//! - [`retention`]: deleting finished executions in bounded batches.
//! - [`records`]: what the store and the runner hand each other.
//! - `sqlite` / `postgres`: the backend's connection handling, behind its
//!   cargo feature. Each offers `write` (one transaction, committed only if
//!   its closure succeeds) and `single` (one autocommit connection for
//!   reads and single statements); [`Store`] runs the shared SQL in them.
//!
//! Every [`Store`] method is one transaction or one statement. One that
//! fails for a reason that may pass ([`crate::engine::Error::is_transient`]:
//! a server restarting, a dropped connection, a lock held past
//! busy_timeout) is run again, with capped exponential backoff and jitter,
//! for up to the store's outage allowance (`database_outage_timeout_seconds`).
//! Running one again is safe: an attempt's outcome is fenced by its attempt
//! number, and creating an execution or a schedule twice under the same id
//! leaves one.

#[cfg(test)]
use std::collections::HashMap;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::model::{Context, ExecutionEvent, ExecutionRecord, ExecutionStatus, TaskRecord, WorkflowRef};
use super::sync::lock;
use super::url::DatabaseUrl;
#[cfg(test)]
use super::workflow::Registry;
use super::workflow::{Dag, Workflows};
pub(crate) use executions::input_of;
use executions::Created;

mod conn;
mod control;
mod decide;
mod executions;
mod history;
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
mod triggers;

#[cfg(test)]
pub(crate) use schedules::CronRunStatus;
pub(crate) use schedules::{CronRun, CronStats, Fired, LostCandidate, Recovered, ScheduleRecord};

pub(crate) use retention::{PruneFilter, Pruned};
pub(crate) use triggers::{Fire, FireOutcome, Registration, TriggerRecord, TriggerRun};

pub(crate) use history::Shape;
pub(crate) use records::{
    AttemptOutcome, AttemptRecorded, Channel, Claim, Claimed, EventHandler, LoadedContexts, NextClaim, RootClaims, Work,
};

#[cfg(feature = "postgres")]
use postgres::PostgresDb as Db;
#[cfg(feature = "sqlite")]
use sqlite::SqliteDb as Db;

/// The first wait before an operation is run again, and the longest.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Executions, task attempts and schedules in one database.
pub(crate) struct Store {
    db: Db,
    /// How long an operation is run again while the database is unreachable.
    outage_timeout: Duration,
    /// Set when the owner shuts down: waiting for the database stops.
    closing: AtomicBool,
    /// Workflow versions whose shape this store has stored: the first
    /// execution of a version stores it, in its own transaction.
    stored_shapes: Mutex<HashSet<String>>,
}

/// Counts of what a database holds, for `get_database_info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DatabaseCounts {
    pub(crate) schema_version: i64,
    pub(crate) executions: BTreeMap<String, i64>,
    pub(crate) task_executions: i64,
    pub(crate) cron_schedules: i64,
}

impl Store {
    /// Opens (creating when allowed) and migrates the database of `url`.
    /// `schema` confines a PostgreSQL store to one schema (the caller has
    /// checked that the backend supports it); `pool_size` bounds its
    /// connections. Opening is not retried: a database that cannot be
    /// reached now is reported at once.
    pub(crate) fn open(url: &DatabaseUrl, schema: Option<&str>, pool_size: usize, outage_timeout: Duration, now: i64) -> Result<Store> {
        Ok(Store {
            db: Db::open(url, schema, pool_size, now)?,
            outage_timeout,
            closing: AtomicBool::new(false),
            stored_shapes: Mutex::new(HashSet::new()),
        })
    }

    /// Stops waiting out outages: a retried operation gives up at its next
    /// failure, so that a shutdown does not wait for the database.
    pub(crate) fn stop_waiting(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Closes the database: a later operation fails with `Error::ShutDown`.
    /// Called once the runner's threads are done, so that the database (a
    /// SQLite file with its WAL checkpointed) is left as it stays.
    pub(crate) fn close(&self) {
        self.stop_waiting();
        self.db.close();
    }

    /// Runs `op` until it succeeds, fails for a reason that will not pass,
    /// or the outage allowance is spent (then [`Error::Outage`]).
    fn retrying<T>(&self, op: impl FnMut() -> Result<T>) -> Result<T> {
        self.retrying_until(None, op)
    }

    /// [`Store::retrying`], giving up at `deadline` too (a caller's own time limit).
    fn retrying_until<T>(&self, deadline: Option<Instant>, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let error = match op() {
                Err(e) if e.is_transient() => e,
                other => return other,
            };
            let waited = started.elapsed();
            let past_deadline = deadline.is_some_and(|d| Instant::now() >= d);
            if waited >= self.outage_timeout || past_deadline || self.closing.load(Ordering::SeqCst) {
                return Err(Error::Outage {
                    target: self.db.target().to_string(),
                    waited,
                    timeout: self.outage_timeout,
                    last: Box::new(error),
                });
            }
            // Full jitter: runners that lost the database together do not
            // come back in lockstep.
            let mut sleep = delay.mul_f64(0.5 + fastrand::f64() / 2.0).min(self.outage_timeout - waited);
            if let Some(deadline) = deadline {
                sleep = sleep.min(deadline.saturating_duration_since(Instant::now()));
            }
            std::thread::sleep(sleep);
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    /// Inserts an execution and one row per task (roots ready), in one
    /// transaction; with an idempotency key already used for this workflow,
    /// returns that execution instead.
    #[cfg(test)]
    pub(crate) fn create_execution(
        &self,
        execution_id: &str,
        dag: &Dag,
        input: &Context,
        idempotency_key: Option<&str>,
        now: i64,
    ) -> Result<Created> {
        self.create_execution_claiming(execution_id, dag, input, idempotency_key, None, now)
    }

    /// [`Store::create_execution`], claiming roots for `claims`' owner in
    /// the same transaction (see [`RootClaims`]).
    pub(crate) fn create_execution_claiming(
        &self,
        execution_id: &str,
        dag: &Dag,
        input: &Context,
        idempotency_key: Option<&str>,
        claims: Option<&RootClaims>,
        now: i64,
    ) -> Result<Created> {
        let shape_stored = lock(&self.stored_shapes).contains(dag.version());
        // Where the server is a round trip away, a creation with nothing
        // else to store is one statement that commits by itself.
        if Db::REMOTE && shape_stored {
            let alone =
                |c: &mut dyn conn::Conn| executions::create_execution_alone(c, execution_id, dag, input, idempotency_key, claims, now);
            if let Some(created) = self.retrying(|| self.db.single(alone))? {
                return Ok(created);
            }
        }
        let created = self.retrying(|| {
            self.db.write("creating an execution", |c| {
                executions::create_execution(c, execution_id, dag, input, idempotency_key, shape_stored, claims, now)
            })
        })?;
        if !shape_stored {
            lock(&self.stored_shapes).insert(dag.version().to_string());
        }
        Ok(created)
    }

    /// Cancels an unfinished execution; returns the tasks it cancelled.
    pub(crate) fn cancel_execution(&self, execution_id: &str, runner: &str, now: i64) -> Result<Vec<String>> {
        self.retrying(|| self.db.write("cancelling an execution", |c| control::cancel(c, execution_id, runner, now)))
    }

    pub(crate) fn pause_execution(&self, execution_id: &str, runner: &str, now: i64) -> Result<()> {
        self.retrying(|| self.db.write("pausing an execution", |c| control::pause(c, execution_id, runner, now)))
    }

    /// Returns how many held tasks became ready.
    pub(crate) fn resume_execution(&self, execution_id: &str, runner: &str, now: i64) -> Result<u64> {
        self.retrying(|| self.db.write("resuming an execution", |c| control::resume(c, execution_id, runner, now)))
    }

    /// Runs a Failed or Cancelled execution again from where it stopped;
    /// returns how many tasks are ready at once.
    pub(crate) fn retry_execution(&self, execution_id: &str, runner: &str, now: i64) -> Result<u64> {
        self.retrying(|| self.db.write("retrying an execution", |c| control::retry(c, execution_id, runner, now)))
    }

    /// The tasks of an execution, in topological order.
    pub(crate) fn task_records(&self, execution_id: &str) -> Result<Vec<TaskRecord>> {
        self.retrying(|| self.db.single(|c| history::task_records(c, execution_id)))
    }

    /// The events of an execution, oldest first.
    pub(crate) fn events(&self, execution_id: &str) -> Result<Vec<ExecutionEvent>> {
        self.retrying(|| self.db.single(|c| history::events(c, execution_id)))
    }

    /// The stored shape of the workflow version an execution runs.
    pub(crate) fn shape(&self, execution_id: &str) -> Result<Option<Shape>> {
        self.retrying(|| self.db.single(|c| history::load_shape(c, execution_id)))
    }

    /// What the database holds.
    pub(crate) fn counts(&self) -> Result<DatabaseCounts> {
        self.retrying(|| self.db.single(|c| history::counts(c)))
    }

    /// Where the database is (no password), for messages and `get_database_info`.
    pub(crate) fn target(&self) -> String {
        self.db.target().to_string()
    }

    /// Claims one claimable task of the given workflows: a ready task whose
    /// time has come, or (with `recover`) a running task whose lease expired.
    #[cfg(test)]
    pub(crate) fn claim(&self, owner: &str, workflows: &[WorkflowRef], now: i64, lease_ms: i64, recover: bool) -> Result<Option<Claim>> {
        if workflows.is_empty() {
            return Ok(None);
        }
        self.retrying(|| self.db.single(|c| executions::claim(c, owner, workflows, now, lease_ms, recover)))
    }

    /// [`Store::claim`] with the claimed task's input (loaded in the same
    /// transaction, which commits without waiting for an fsync where the
    /// backend allows: losing a claim only makes the attempt run again).
    #[cfg(test)]
    pub(crate) fn claim_with_input(
        &self,
        owner: &str,
        workflows: &[WorkflowRef],
        registry: &Registry,
        now: i64,
        lease_ms: i64,
        recover: bool,
    ) -> Result<Option<Claimed>> {
        match self.claim_or_next_due(&NextClaim { owner, workflows, registry, lease_ms }, now, recover)? {
            Work::Claimed(claimed) => Ok(Some(claimed)),
            Work::Idle { .. } => Ok(None),
        }
    }

    /// A claim for `looking` with its input (in one transaction that
    /// commits without waiting for an fsync where the backend allows:
    /// losing a claim only makes the attempt run again); or, when nothing
    /// is claimable, when the next task of its workflows comes due.
    pub(crate) fn claim_or_next_due(&self, looking: &NextClaim, now: i64, recover: bool) -> Result<Work> {
        if looking.workflows.is_empty() {
            return Ok(Work::Idle { next_due: None });
        }
        self.retrying(|| self.db.write_relaxed("claiming a task", |c| executions::claim_or_next_due(c, looking, now, recover)))
    }

    /// The input of a claimed task: the execution input for a root (which
    /// also marks the execution running), else the stored outputs of
    /// `dependencies`, returned by task id.
    pub(crate) fn load_contexts(&self, execution_id: &str, dependencies: &[&str], now: i64) -> Result<LoadedContexts> {
        self.retrying(|| self.db.single(|c| executions::load_contexts(c, execution_id, dependencies, now)))
    }

    /// Records the end of an attempt and everything that follows from it, in one transaction.
    #[cfg(test)]
    pub(crate) fn record_attempt(&self, claim: &Claim, dag: &Dag, outcome: &AttemptOutcome, now: i64) -> Result<AttemptRecorded> {
        self.record_attempt_then(claim, dag, outcome, now, None)
    }

    /// [`Store::record_attempt`], claiming the runner's next attempt (`next`)
    /// in the same transaction: see [`AttemptRecorded::next`].
    pub(crate) fn record_attempt_then(
        &self,
        claim: &Claim,
        dag: &Dag,
        outcome: &AttemptOutcome,
        now: i64,
        next: Option<&NextClaim>,
    ) -> Result<AttemptRecorded> {
        // Where the server is a round trip away, a completion that needs
        // nothing read back (a chain step, a one-leaf workflow's end) is one
        // statement that commits by itself.
        if let AttemptOutcome::Completed(output) = outcome {
            if let Some(kind) = executions::alone_kind(dag, claim).filter(|_| Db::REMOTE) {
                let alone = |c: &mut dyn conn::Conn| executions::record_completion_alone(c, kind, claim, dag, output, now, next);
                if let Some(recorded) = self.retrying(|| self.db.single(alone))? {
                    return Ok(recorded);
                }
            }
        }
        self.retrying(|| self.db.write("recording a task attempt", |c| executions::record_attempt(c, claim, dag, outcome, now, next)))
    }

    /// Makes claims that no worker started ready again (see [`RootClaims`]).
    pub(crate) fn release_unstarted(&self, claims: &[Claim]) -> Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        self.retrying(|| self.db.write("releasing unstarted claims", |c| executions::release_unstarted(c, claims)))
    }

    /// Extends the leases `owner` holds on the rows `row_ids` (the attempts
    /// it is really running: a claim it dropped, for an error or a replaced
    /// workflow, must lapse so that another runner takes it).
    pub(crate) fn renew_leases(&self, owner: &str, row_ids: &[i64], expires_at: i64) -> Result<()> {
        if row_ids.is_empty() {
            return Ok(());
        }
        self.retrying(|| self.db.single(|c| executions::renew_leases(c, owner, row_ids, expires_at)))
    }

    /// Which of the rows `row_ids` were cancelled.
    pub(crate) fn cancelled_rows(&self, row_ids: &[i64]) -> Result<Vec<i64>> {
        self.retrying(|| self.db.single(|c| executions::cancelled_rows(c, row_ids)))
    }

    /// The earliest future time at which a task of these workflows becomes
    /// claimable (a retry's time, or a lease's expiry with `recover`).
    pub(crate) fn next_due(&self, workflows: &[WorkflowRef], recover: bool) -> Result<Option<i64>> {
        if workflows.is_empty() {
            return Ok(None);
        }
        self.retrying(|| self.db.single(|c| executions::next_due(c, workflows, recover)))
    }

    pub(crate) fn get_execution(&self, execution_id: &str) -> Result<Option<ExecutionRecord>> {
        self.get_execution_before(execution_id, None)
    }

    /// [`Store::get_execution`], waiting out an outage only until `deadline`.
    pub(crate) fn get_execution_before(&self, execution_id: &str, deadline: Option<Instant>) -> Result<Option<ExecutionRecord>> {
        self.retrying_until(deadline, || self.db.single(|c| executions::get_execution(c, execution_id)))
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
        self.retrying(|| self.db.single(|c| executions::list_executions(c, workflow_name, status, limit)))
    }

    /// Fails an unfinished execution (its time limit passed): every unfinished
    /// task is skipped. Returns false when it had already finished.
    pub(crate) fn abort_execution(&self, execution_id: &str, dag: &Dag, message: &str, now: i64) -> Result<bool> {
        self.retrying(|| self.db.write("aborting an execution", |c| executions::abort_execution(c, execution_id, Some(dag), message, now)))
    }

    /// Deletes up to `batch_size` finished executions matching `filter`,
    /// with their task rows and cron history rows, in one transaction.
    pub(crate) fn prune_batch(&self, filter: &PruneFilter, batch_size: i64) -> Result<Pruned> {
        self.retrying(|| self.db.write("pruning finished executions", |c| retention::prune_batch(c, filter, batch_size)))
    }

    // ---- cron schedules ----

    pub(crate) fn insert_schedule(&self, schedule: &ScheduleRecord) -> Result<()> {
        self.retrying(|| self.db.single(|c| schedules::insert_schedule(c, schedule)))
    }

    pub(crate) fn get_schedule(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        self.retrying(|| self.db.single(|c| schedules::get_schedule(c, id)))
    }

    /// Oldest first.
    pub(crate) fn list_schedules(&self, enabled_only: bool, limit: i64, offset: i64) -> Result<Vec<ScheduleRecord>> {
        self.retrying(|| self.db.single(|c| schedules::list_schedules(c, enabled_only, limit, offset)))
    }

    /// Stores a schedule's expression, time zone, enabled flag and next
    /// tick, if its stored next tick is still `read_next_run_at`; false
    /// when it is not (a tick was fired meanwhile) or the schedule is gone.
    pub(crate) fn update_schedule(&self, schedule: &ScheduleRecord, read_next_run_at: i64, now: i64) -> Result<bool> {
        self.retrying(|| self.db.single(|c| schedules::update_schedule(c, schedule, read_next_run_at, now)))
    }

    /// Deletes a schedule and its history; false when it does not exist.
    pub(crate) fn delete_schedule(&self, id: &str) -> Result<bool> {
        self.retrying(|| self.db.write("deleting a cron schedule", |c| schedules::delete_schedule(c, id)))
    }

    /// The earliest next tick of the enabled schedules of these workflows.
    pub(crate) fn next_cron_due(&self, workflow_names: &[&str]) -> Result<Option<i64>> {
        if workflow_names.is_empty() {
            return Ok(None);
        }
        self.retrying(|| self.db.single(|c| schedules::next_due(c, workflow_names)))
    }

    /// Fires the due ticks of one schedule of `workflows` (not in
    /// `exclude`), at most `max_catchup` of them, in one transaction.
    pub(crate) fn fire_due_schedule(&self, workflows: &Workflows, max_catchup: usize, exclude: &[String], now: i64) -> Result<Fired> {
        self.retrying(|| self.db.write("firing a cron tick", |c| schedules::fire_due_schedule(c, workflows, max_catchup, exclude, now)))
    }

    /// The executions a schedule's ticks started, newest tick first.
    pub(crate) fn cron_history(&self, schedule_id: &str, limit: i64, offset: i64) -> Result<Vec<CronRun>> {
        self.retrying(|| self.db.single(|c| schedules::history(c, schedule_id, limit, offset)))
    }

    pub(crate) fn cron_stats(&self, since: i64) -> Result<CronStats> {
        self.retrying(|| self.db.single(|c| schedules::stats(c, since)))
    }

    /// Executions of ticks of these workflows with no progress since `stalled_since`.
    pub(crate) fn lost_cron_executions(&self, workflow_names: &[&str], stalled_since: i64, now: i64) -> Result<Vec<LostCandidate>> {
        if workflow_names.is_empty() {
            return Ok(Vec::new());
        }
        self.retrying(|| self.db.single(|c| schedules::lost_candidates(c, workflow_names, stalled_since, now)))
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
        self.retrying(|| {
            self.db.write("recovering a lost cron execution", |c| schedules::recover_lost(c, lost, workflows, message, restart, now))
        })
    }

    // ---- event triggers ----

    /// Creates the row of a trigger, or gives an existing one the registration's values.
    pub(crate) fn register_trigger(&self, registration: &Registration, now: i64) -> Result<()> {
        self.retrying(|| self.db.single(|c| triggers::register(c, registration, now)))
    }

    pub(crate) fn get_trigger(&self, trigger_name: &str) -> Result<Option<TriggerRecord>> {
        self.retrying(|| self.db.single(|c| triggers::get(c, trigger_name)))
    }

    /// Newest first, paged; with `enabled_only`, every enabled trigger oldest first.
    pub(crate) fn list_triggers(&self, enabled_only: bool, limit: i64, offset: i64) -> Result<Vec<TriggerRecord>> {
        self.retrying(|| self.db.single(|c| triggers::list(c, enabled_only, limit, offset)))
    }

    /// An unknown name changes nothing.
    pub(crate) fn set_trigger_enabled(&self, trigger_name: &str, enabled: bool, now: i64) -> Result<()> {
        self.retrying(|| self.db.single(|c| triggers::set_enabled(c, trigger_name, enabled, now)))
    }

    /// Takes or renews the polling lease; false when another runner holds it.
    pub(crate) fn take_trigger_lease(&self, trigger_name: &str, owner: &str, expires_at: i64, now: i64) -> Result<bool> {
        self.retrying(|| self.db.single(|c| triggers::take_lease(c, trigger_name, owner, expires_at, now)))
    }

    pub(crate) fn release_trigger_lease(&self, trigger_name: &str, owner: &str) -> Result<()> {
        self.retrying(|| self.db.single(|c| triggers::release_lease(c, trigger_name, owner)))
    }

    /// Records a poll that did not fire; false when the lease was lost.
    pub(crate) fn record_trigger_poll(&self, trigger_name: &str, owner: &str, poll_started_at: i64, now: i64) -> Result<bool> {
        self.retrying(|| self.db.single(|c| triggers::record_poll(c, trigger_name, owner, poll_started_at, now)))
    }

    /// A fire, in one transaction fenced on the lease.
    pub(crate) fn fire_trigger(&self, fire: &Fire, now: i64) -> Result<FireOutcome> {
        self.retrying(|| self.db.write("firing a trigger", |c| triggers::fire(c, fire, now)))
    }

    /// Newest first; `[]` for an unknown name.
    pub(crate) fn trigger_history(&self, trigger_name: &str, limit: i64, offset: i64) -> Result<Vec<TriggerRun>> {
        self.retrying(|| self.db.single(|c| triggers::history(c, trigger_name, limit, offset)))
    }

    /// Starts delivering other processes' notifications to `on_event` until
    /// `stop` is set; `None` where the backend has no notifications.
    pub(crate) fn listen(&self, on_event: EventHandler, stop: Arc<AtomicBool>) -> Result<Option<JoinHandle<()>>> {
        self.db.listen(on_event, stop)
    }
}

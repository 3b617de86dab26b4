//! A runner: worker threads that claim task attempts from the store, run
//! them and record the outcome ([`workers`]), one supervisor thread for
//! leases and timeouts ([`supervisor`]), a cron thread
//! ([`crate::engine::cron`]), the trigger threads ([`crate::engine::triggers`]), with `execution_retention_days` a pruner of
//! finished executions ([`retention`]) and, on PostgreSQL, a listener for
//! other processes' news. What they share, and how they wake each other instead
//! of polling, is in [`shared`].

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cron::{self, Schedules};
use super::error::{Error, Result};
use super::model::{Context, ExecutionEvent, ExecutionRecord, ExecutionStatus, TaskRecord, WorkflowRef};
use super::settings::RunnerConfig;
use super::store::{Channel, DatabaseCounts, EventHandler, PruneFilter, RootClaims, Store};
use super::sync::{lock, wait, wait_timeout};
use super::time::now_ms;
use super::triggers::{Definitions, TriggerService, Triggers};
use super::workflow::{render, PictureFormat, Registry, TaskPaint, Workflow};

mod retention;
pub(crate) mod shared;
mod slots;
mod supervisor;
mod workers;

pub(crate) use shared::{Level, Note, Reporter, Topic};
use shared::{Shared, Waiters};
pub(crate) use workers::set_worker_scope;
#[cfg(test)]
pub(crate) use workers::MAX_INTERRUPTIONS;

/// How often a waiting caller is asked whether to go on waiting.
const INTERRUPT_CHECK: Duration = Duration::from_millis(200);

/// Runs workflows registered in a [`Registry`] against one [`Store`].
pub(crate) struct Runner {
    shared: Arc<Shared>,
    threads: std::sync::Mutex<Threads>,
    /// With `enable_trigger_scheduling`.
    triggers: Option<Arc<TriggerService>>,
}

/// Threads joined at shutdown. Workers are not among them: shutdown waits
/// for the live-worker count instead, so that a worker abandoned to a stuck
/// task is never waited for.
#[derive(Default)]
struct Threads {
    supervisor: Option<JoinHandle<()>>,
    listener: Option<JoinHandle<()>>,
    cron: Option<JoinHandle<()>>,
    retention: Option<JoinHandle<()>>,
    triggers: Option<JoinHandle<()>>,
}

impl Runner {
    /// Starts a runner: its workers begin claiming at once (recovering
    /// interrupted work when `enable_recovery` is on).
    pub(crate) fn start(store: Arc<Store>, registry: &'static Registry, config: RunnerConfig, reporter: Reporter) -> Result<Runner> {
        let shared = Shared::new(store, registry, config, reporter);
        let triggers = shared.config.triggers_enabled.then(|| TriggerService::new(shared.clone(), Definitions::global()));
        let runner = Runner { shared: shared.clone(), threads: std::sync::Mutex::new(Threads::default()), triggers };
        let weak = Arc::downgrade(&shared);
        let on_event: EventHandler = Arc::new(move |channel, payload| {
            if let Some(shared) = weak.upgrade() {
                match channel {
                    Channel::Work => shared.wake_workers(payload.parse().unwrap_or(1)),
                    Channel::Done => shared.execution_finished(payload, None),
                    Channel::Cancel => shared.cancel_attempts(payload),
                }
            }
        });
        let listener = shared.store.listen(on_event, shared.stop_listening.clone())?;
        let mut threads = lock(&runner.threads);
        threads.listener = listener;
        for _ in 0..shared.config.max_concurrent_tasks {
            workers::spawn_worker(&shared);
        }
        let supervisor_shared = shared.clone();
        threads.supervisor = Some(
            std::thread::Builder::new()
                .name("cloaca-supervisor".into())
                .spawn(move || supervisor::supervise(supervisor_shared))
                .map_err(|source| Error::Thread { what: "the runner's supervisor thread", source })?,
        );
        if shared.config.cron.enabled {
            let cron_shared = shared.clone();
            threads.cron = Some(
                std::thread::Builder::new()
                    .name("cloaca-cron".into())
                    .spawn(move || cron::run_ticker(cron_shared))
                    .map_err(|source| Error::Thread { what: "the runner's cron thread", source })?,
            );
        }
        if let Some(retention) = shared.config.retention {
            let retention_shared = shared.clone();
            threads.retention = Some(
                std::thread::Builder::new()
                    .name("cloaca-retention".into())
                    .spawn(move || retention::run_pruner(retention_shared, retention))
                    .map_err(|source| Error::Thread { what: "the runner's retention thread", source })?,
            );
        }
        if let Some(triggers) = &runner.triggers {
            threads.triggers = Some(triggers.start().map_err(|source| Error::Thread { what: "the runner's trigger thread", source })?);
        }
        drop(threads);
        Ok(runner)
    }

    /// Stores a new execution of the registered workflow `name` and wakes
    /// the workers; returns its id. With an `idempotency_key` that already
    /// started this workflow, returns that execution's id instead.
    pub(crate) fn start_execution(&self, name: &str, input: &Context, idempotency_key: Option<&str>) -> Result<String> {
        self.store_execution(name, input, idempotency_key).map(|(id, _)| id)
    }

    /// [`Runner::start_execution`], also returning the definition it used.
    fn store_execution(&self, name: &str, input: &Context, idempotency_key: Option<&str>) -> Result<(String, Arc<Workflow>)> {
        self.store_execution_as(uuid::Uuid::new_v4().to_string(), name, input, idempotency_key)
    }

    /// [`Runner::store_execution`] under the id `id`, unless an idempotency
    /// key returns an earlier execution (whose id is returned).
    fn store_execution_as(
        &self,
        id: String,
        name: &str,
        input: &Context,
        idempotency_key: Option<&str>,
    ) -> Result<(String, Arc<Workflow>)> {
        self.ensure_running()?;
        let workflow = self
            .shared
            .registry
            .get(name)
            .ok_or_else(|| Error::UnknownWorkflow { name: name.to_string(), registered: self.shared.registry.names() })?;
        // Roots for this runner's idle workers are claimed as they are
        // stored: the worker starts without a claim transaction of its own.
        let room = self.shared.claim_room();
        let lease_ms = self.shared.config.lease.as_millis() as i64;
        let claims = (room > 0).then(|| RootClaims { owner: &self.shared.owner, lease_ms, count: room });
        let created = self.shared.store.create_execution_claiming(&id, &workflow.dag, input, idempotency_key, claims.as_ref(), now_ms())?;
        self.shared.hand_over(created.claimed);
        let id = created.execution_id;
        if created.existing {
            let message = format!("execution {id} of workflow {name:?} already exists for this idempotency key; not started again");
            self.shared.note(Level::Info, Topic::Execution, message, &id, name, None);
        } else {
            self.shared.wake_workers(workflow.dag.roots().len() as u64);
            let message = format!("execution {id} of workflow {name:?} started");
            self.shared.note(Level::Info, Topic::Execution, message, &id, name, None);
        }
        Ok((id, workflow))
    }

    /// Runs `name` to the end: stores it, waits (woken, not polling) and
    /// returns the finished record. Past `pipeline_timeout` the execution
    /// is failed and its unfinished tasks skipped.
    #[cfg(test)]
    pub(crate) fn execute(&self, name: &str, input: &Context) -> Result<ExecutionRecord> {
        self.execute_with(name, input, None, &mut || true)
    }

    /// [`Runner::execute`], giving up with [`Error::Interrupted`] (the
    /// execution goes on) as soon as `keep_waiting` says no; it is asked at
    /// least every [`INTERRUPT_CHECK`].
    pub(crate) fn execute_with(
        &self,
        name: &str,
        input: &Context,
        idempotency_key: Option<&str>,
        keep_waiting: &mut dyn FnMut() -> bool,
    ) -> Result<ExecutionRecord> {
        // Registered as its waiter before it exists, so that this wait need
        // not look at the database before the news of its finish.
        let new_id = uuid::Uuid::new_v4().to_string();
        self.register_waiter(&new_id);
        // The DAG the execution was created with, even if the name is
        // registered anew meanwhile.
        let (id, workflow) = match self.store_execution_as(new_id.clone(), name, input, idempotency_key) {
            Ok(stored) => stored,
            Err(e) => {
                self.forget_waiter(&new_id);
                return Err(e);
            }
        };
        let timeout = self.shared.config.pipeline_timeout;
        let waited = if id == new_id {
            self.wait_registered(&id, timeout, keep_waiting, false)
        } else {
            // An earlier execution with the same idempotency key.
            self.forget_waiter(&new_id);
            self.wait_with(&id, timeout, keep_waiting)
        };
        match waited {
            Err(Error::WaitTimedOut { .. }) => {
                let seconds = self.shared.config.pipeline_timeout.map_or(0, |d| d.as_secs());
                let message =
                    format!("execution exceeded pipeline_timeout_seconds={seconds} and was stopped; its unfinished tasks were skipped");
                self.shared.store.abort_execution(&id, &workflow.dag, &message, now_ms())?;
                self.record(&id)
            }
            other => other,
        }
    }

    /// The stored record of an execution.
    pub(crate) fn record(&self, execution_id: &str) -> Result<ExecutionRecord> {
        self.shared.store.get_execution(execution_id)?.ok_or_else(|| Error::UnknownExecution(execution_id.to_string()))
    }

    /// Waits until the execution has finished, at most `timeout`.
    #[cfg(test)]
    pub(crate) fn wait(&self, execution_id: &str, timeout: Option<Duration>) -> Result<ExecutionRecord> {
        self.wait_with(execution_id, timeout, &mut || true)
    }

    /// [`Runner::wait`], giving up with [`Error::Interrupted`] as soon
    /// as `keep_waiting` says no (the caller's Ctrl-C, for instance).
    pub(crate) fn wait_with(
        &self,
        execution_id: &str,
        timeout: Option<Duration>,
        keep_waiting: &mut dyn FnMut() -> bool,
    ) -> Result<ExecutionRecord> {
        self.register_waiter(execution_id);
        self.wait_registered(execution_id, timeout, keep_waiting, true)
    }

    /// Counts a waiter for `execution_id`, so that its finish is noted for it.
    fn register_waiter(&self, execution_id: &str) {
        let mut waiting = lock(&self.shared.waiting);
        waiting.entry(execution_id.to_string()).or_default().count += 1;
    }

    /// Waits as a waiter [`Runner::register_waiter`] counted, and counts it
    /// out. Without `look_first` the first look at the database waits for
    /// news of the finish: the caller registered before the execution
    /// existed, so no finish can have gone unnoted.
    fn wait_registered(
        &self,
        execution_id: &str,
        timeout: Option<Duration>,
        keep_waiting: &mut dyn FnMut() -> bool,
        look_first: bool,
    ) -> Result<ExecutionRecord> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let shared = &self.shared;
        let mut look = look_first;
        let finishes = |waiting: &HashMap<String, Waiters>| waiting.get(execution_id).map_or(0, |e| e.finishes);
        // News from before the first look is read from the database (it may
        // be of an earlier round of a retried execution).
        let mut seen = if look_first { finishes(&lock(&shared.waiting)) } else { 0 };
        let result = (|| loop {
            if look {
                {
                    let mut waiting = lock(&shared.waiting);
                    let fresh = finishes(&waiting) != seen;
                    seen = finishes(&waiting);
                    if let Some(entry) = waiting.get_mut(execution_id) {
                        // Recorded as finished in this process since the
                        // last look: nothing to read back.
                        if let Some(record) = entry.record.as_ref().filter(|_| fresh) {
                            return Ok(record.clone());
                        }
                        // What the database says now supersedes a record
                        // kept from before (a round a retry has reopened).
                        entry.record = None;
                    }
                }
                // A wait's own time limit also bounds how long it waits out an outage.
                let record = match self.shared.store.get_execution_before(execution_id, deadline) {
                    Ok(Some(record)) => record,
                    Ok(None) => return Err(Error::UnknownExecution(execution_id.to_string())),
                    Err(e) if e.is_outage() && deadline.is_some_and(|d| Instant::now() >= d) => {
                        return Err(Error::WaitTimedOut {
                            execution_id: execution_id.to_string(),
                            seconds: timeout.unwrap_or_default().as_secs_f64(),
                        })
                    }
                    Err(e) => return Err(e),
                };
                if record.status.is_finished() {
                    return Ok(record);
                }
            }
            look = true;
            let mut waiting = lock(&shared.waiting);
            loop {
                if finishes(&waiting) != seen {
                    break;
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Err(Error::WaitTimedOut {
                        execution_id: execution_id.to_string(),
                        seconds: timeout.unwrap_or_default().as_secs_f64(),
                    });
                }
                // The fallback re-check covers finishes nobody can signal
                // (another process on the same SQLite file); the caller is
                // asked whether to go on at least every INTERRUPT_CHECK.
                let mut wait = shared.config.poll_interval.min(INTERRUPT_CHECK);
                if let Some(d) = deadline {
                    wait = wait.min(d - now);
                }
                let (guard, timed_out) = wait_timeout(&shared.waiting_cv, waiting, wait);
                waiting = guard;
                if timed_out {
                    drop(waiting);
                    if !keep_waiting() {
                        return Err(Error::Interrupted);
                    }
                    break;
                }
            }
        })();
        self.forget_waiter(execution_id);
        result
    }

    /// Counts out a waiter [`Runner::register_waiter`] counted.
    fn forget_waiter(&self, execution_id: &str) {
        let mut waiting = lock(&self.shared.waiting);
        if let Some(entry) = waiting.get_mut(execution_id) {
            entry.count -= 1;
            if entry.count == 0 {
                waiting.remove(execution_id);
            }
        }
    }

    /// Stops claiming, lets running attempts finish (each within its own
    /// time limit) and stops every thread. Idempotent. A thread abandoned to
    /// a task past its deadline is not waited for.
    pub(crate) fn shutdown(&self) {
        self.shared.stop();
        if let Some(triggers) = &self.triggers {
            triggers.stop();
        }
        {
            let mut inflight = lock(&self.shared.inflight);
            while inflight.live_workers > 0 || inflight.spawn_requests > 0 {
                inflight = wait(&self.shared.inflight_cv, inflight);
            }
        }
        self.shared.release_handed();
        self.shared.inflight_cv.notify_all();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for handle in [threads.supervisor, threads.listener, threads.cron, threads.retention, threads.triggers].into_iter().flatten() {
            let _ = handle.join();
        }
        // Now, not whenever the last reference goes: a worker thread may
        // still be on its way out, and an ExecutionHandle may outlive this.
        self.shared.store.close();
    }

    /// What this runner's threads share, for tests that play a part of them.
    #[cfg(test)]
    pub(crate) fn shared_for_tests(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Worker threads running their loop (deferred attempts' included).
    #[cfg(test)]
    pub(crate) fn live_workers(&self) -> usize {
        lock(&self.shared.inflight).live_workers
    }

    /// This runner's id, as task records and events name it.
    pub(crate) fn id(&self) -> &str {
        &self.shared.owner
    }

    /// Cancels an unfinished execution: no task of it starts afterwards,
    /// its running async tasks here are cancelled (other processes learn of
    /// it by notification or within their poll interval), running plain
    /// tasks finish and their outcome is discarded.
    pub(crate) fn cancel_execution(&self, execution_id: &str) -> Result<()> {
        self.ensure_running()?;
        let record = self.record(execution_id)?;
        let cancelled = self.shared.store.cancel_execution(execution_id, &self.shared.owner, now_ms())?;
        self.shared.cancel_attempts(execution_id);
        self.shared.execution_finished(execution_id, None);
        let message =
            format!("execution {execution_id} of workflow {:?} cancelled ({} unfinished task(s))", record.workflow_name, cancelled.len());
        self.shared.note(Level::Info, Topic::Execution, message, execution_id, &record.workflow_name, None);
        Ok(())
    }

    /// Pauses an unfinished execution: no new task of it is claimed until
    /// [`Runner::resume_execution`].
    pub(crate) fn pause_execution(&self, execution_id: &str) -> Result<()> {
        self.ensure_running()?;
        self.shared.store.pause_execution(execution_id, &self.shared.owner, now_ms())?;
        self.note_steering(execution_id, "paused");
        Ok(())
    }

    pub(crate) fn resume_execution(&self, execution_id: &str) -> Result<()> {
        self.ensure_running()?;
        let released = self.shared.store.resume_execution(execution_id, &self.shared.owner, now_ms())?;
        self.shared.wake_workers(released.max(1));
        self.note_steering(execution_id, "resumed");
        Ok(())
    }

    /// Runs a Failed or Cancelled execution again from where it stopped.
    pub(crate) fn retry_execution(&self, execution_id: &str) -> Result<()> {
        self.ensure_running()?;
        let ready = self.shared.store.retry_execution(execution_id, &self.shared.owner, now_ms())?;
        self.shared.wake_workers(ready);
        self.note_steering(execution_id, "retried");
        Ok(())
    }

    /// Logs a steering request at INFO (it is done; a failed read of the
    /// workflow's name only leaves it out of the record).
    fn note_steering(&self, execution_id: &str, done: &str) {
        let workflow = self.record(execution_id).map(|r| r.workflow_name).unwrap_or_default();
        let message = format!("execution {execution_id} of workflow {workflow:?} {done}");
        self.shared.note(Level::Info, Topic::Execution, message, execution_id, &workflow, None);
    }

    /// The tasks of an execution, in topological order.
    pub(crate) fn task_records(&self, execution_id: &str) -> Result<Vec<TaskRecord>> {
        self.shared.store.task_records(execution_id)
    }

    /// The events of an execution, oldest first.
    pub(crate) fn events(&self, execution_id: &str) -> Result<Vec<ExecutionEvent>> {
        self.shared.store.events(execution_id)
    }

    /// A picture of an execution: its workflow's graph with each task
    /// coloured by its state and labelled with its duration and attempts.
    pub(crate) fn render_execution(&self, execution_id: &str, format: PictureFormat) -> Result<String> {
        let record = self.record(execution_id)?;
        let shape = self.shape(execution_id, &record)?;
        let paint: HashMap<String, TaskPaint> = self
            .task_records(execution_id)?
            .into_iter()
            .map(|t| {
                let paint = TaskPaint { status: t.status.display_name().to_string(), attempts: t.attempts, duration_ms: t.duration_ms() };
                (t.task_id, paint)
            })
            .collect();
        Ok(render(&record.workflow_name, &shape, Some(&paint), format))
    }

    /// The tasks and dependencies of an execution's workflow version: stored
    /// with its first execution, or (for an execution older than that) the
    /// registered definition of that version.
    fn shape(&self, execution_id: &str, record: &ExecutionRecord) -> Result<Vec<(String, Vec<String>)>> {
        if let Some(shape) = self.shared.store.shape(execution_id)? {
            return Ok(shape.edges());
        }
        let reference = WorkflowRef { name: record.workflow_name.clone(), version: record.workflow_version.clone() };
        match self.shared.registry.get_exact(&reference) {
            Some(workflow) => Ok(workflow.dag.shape()),
            None => Err(Error::UnknownWorkflow { name: record.workflow_name.clone(), registered: self.shared.registry.names() }),
        }
    }

    /// The database's schema version and row counts, and where it is.
    pub(crate) fn database_counts(&self) -> Result<(String, DatabaseCounts)> {
        Ok((self.shared.store.target(), self.shared.store.counts()?))
    }

    /// The cron schedules of this runner's database.
    pub(crate) fn schedules(&self) -> Schedules<'_> {
        Schedules::new(&self.shared)
    }

    /// The event triggers of this runner's database.
    pub(crate) fn triggers(&self) -> Triggers<'_> {
        Triggers::new(&self.shared)
    }

    /// Executions in the database, newest first.
    pub(crate) fn list_executions(
        &self,
        workflow_name: Option<&str>,
        status: Option<ExecutionStatus>,
        limit: i64,
    ) -> Result<Vec<ExecutionRecord>> {
        self.shared.store.list_executions(workflow_name, status, limit)
    }

    /// Deletes the finished executions matching `filter` (with their task
    /// rows and cron history rows), `batch_size` per transaction; returns
    /// how many were deleted.
    pub(crate) fn prune_executions(&self, filter: &PruneFilter, batch_size: i64) -> Result<u64> {
        self.ensure_running()?;
        retention::prune(&self.shared.store, filter, batch_size, &|| true)
    }

    fn ensure_running(&self) -> Result<()> {
        self.shared.ensure_running()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // Never join here: the owner may hold locks (the GIL) that running
        // tasks need. Threads see the flag and end on their own.
        self.shared.stop();
        if let Some(triggers) = &self.triggers {
            triggers.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::url::{test_database_url, DatabaseUrl};

    /// A runner on the test database, and the record of an execution
    /// `id` finished, which is in no database.
    fn runner_and_finished_record(id: &str) -> (Runner, ExecutionRecord) {
        let url = DatabaseUrl::parse(&test_database_url()).unwrap();
        let store = Arc::new(Store::open(&url, None, 2, Duration::from_secs(1), now_ms()).unwrap());
        let registry: &'static Registry = Box::leak(Box::default());
        let runner = Runner::start(store, registry, RunnerConfig::default(), Arc::new(|_| {})).unwrap();
        let record = ExecutionRecord {
            id: id.into(),
            workflow_name: "wf".into(),
            workflow_version: "v".into(),
            status: ExecutionStatus::Completed,
            input: Context::new(),
            final_context: Some(Context::new()),
            error_message: None,
            created_at: 1,
            started_at: Some(2),
            finished_at: Some(3),
        };
        (runner, record)
    }

    #[test]
    fn a_waiter_takes_the_record_finished_here_though_a_notification_of_it_came_after() {
        let (runner, record) = runner_and_finished_record("finished-here");
        runner.register_waiter(&record.id);
        runner.shared.execution_finished(&record.id, Some(&record));
        // News of it without a record, as another runner's listener in this
        // process would bring.
        runner.shared.execution_finished(&record.id, None);
        // The execution is in no database: a waiter that read it back would fail.
        let waited = runner.wait_registered(&record.id, Some(Duration::from_secs(1)), &mut || true, false);
        runner.shutdown();
        assert_eq!(waited.unwrap(), record);
    }

    #[test]
    fn every_waiter_of_an_execution_takes_the_news_of_its_finish() {
        let (runner, record) = runner_and_finished_record("waited-twice");
        runner.register_waiter(&record.id);
        runner.register_waiter(&record.id);
        runner.shared.execution_finished(&record.id, Some(&record));
        // The first waiter's look must not use the news up: the second, had
        // it to wait, would be asked whether to go on (after INTERRUPT_CHECK).
        let mut asked = 0;
        for _ in 0..2 {
            let waited = runner.wait_registered(
                &record.id,
                Some(Duration::from_secs(5)),
                &mut || {
                    asked += 1;
                    true
                },
                false,
            );
            assert_eq!(waited.unwrap(), record);
        }
        runner.shutdown();
        assert_eq!(asked, 0, "a waiter waited for news that had come");
    }
}

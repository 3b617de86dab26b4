//! A runner: worker threads that claim task attempts from the store, run
//! them and record the outcome, plus one supervisor thread for leases and
//! timeouts.
//!
//! Nothing here sleeps on a fixed beat while there is news: a worker that
//! finds no work waits on a condition variable that is signalled when this
//! process creates work or finishes a task, and (on Postgres) when another
//! process notifies. The poll interval is only the fallback for news that
//! cannot signal (another process on the same SQLite file, a retry coming
//! due is computed exactly).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cron::CronSchedule;
use super::dag::merge;
use super::error::{EngineError, Result};
use super::registry::{Registry, Workflow};
use super::retry::TaskFailure;
use super::scheduler::{self, CronConfig, Planner};
use super::store::cron::{ScheduleRecord, TickPlanner};
use super::store::{AttemptOutcome, Channel, Claim, ExecutionRecord, Store, WorkflowRef};
use super::time::now_ms;
use super::Context;

/// The shortest gap between two printed reports of one kind of background error.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// When each kind of background error was last printed, and how many were
/// held back since.
#[derive(Default)]
struct ReportLimiter {
    kinds: HashMap<&'static str, (Instant, u64)>,
}

impl ReportLimiter {
    /// `Some(held back since the last print)` when a report of `what` may be
    /// printed at `now`; `None` (and one more held back) otherwise.
    fn admit(&mut self, what: &'static str, now: Instant) -> Option<u64> {
        match self.kinds.get_mut(what) {
            Some((last, held)) if now.duration_since(*last) < REPORT_EVERY => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                self.kinds.insert(what, (now, 0));
                Some(0)
            }
        }
    }
}

/// How often a waiting caller is asked whether to go on waiting.
pub const INTERRUPT_CHECK: Duration = Duration::from_millis(200);

/// A task whose runner died in it this many times in a row is failed
/// instead of run again: it is probably what kills its runners.
pub const MAX_INTERRUPTIONS: i64 = 3;

/// How a runner behaves; validated by the Python layer's config.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub max_concurrent_tasks: usize,
    /// Fallback re-check interval when nothing signals.
    pub poll_interval: Duration,
    /// Default per-attempt time limit for tasks without their own.
    pub task_timeout: Duration,
    /// Limit for `execute`; `None` waits as long as it takes.
    pub pipeline_timeout: Option<Duration>,
    /// Claim tasks whose lease expired (their runner died).
    pub enable_recovery: bool,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    pub cron: CronConfig,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            max_concurrent_tasks: 4,
            poll_interval: Duration::from_millis(100),
            task_timeout: Duration::from_secs(300),
            pipeline_timeout: Some(Duration::from_secs(3600)),
            enable_recovery: true,
            lease: Duration::from_secs(30),
            cron: CronConfig::default(),
        }
    }
}

/// Runs workflows registered in a [`Registry`] against one [`Store`].
pub struct Runner {
    shared: Arc<Shared>,
    threads: Mutex<Threads>,
}

/// Threads joined at shutdown. Workers are not among them: shutdown waits
/// for the live-worker count instead, so that a worker abandoned to a stuck
/// task is never waited for.
#[derive(Default)]
struct Threads {
    supervisor: Option<JoinHandle<()>>,
    listener: Option<JoinHandle<()>>,
    cron: Option<JoinHandle<()>>,
}

struct Shared {
    store: Arc<dyn Store>,
    registry: &'static Registry,
    config: RunnerConfig,
    /// Owner name written into leases.
    owner: String,
    /// Bumped on every piece of news; workers wait for it to change.
    signal: Mutex<Signal>,
    signal_cv: Condvar,
    /// The cron thread waits on `signal` with this (for `cron_epoch` or stopping).
    cron_cv: Condvar,
    /// Executions someone waits for: (waiters, finished-news arrived).
    waiting: Mutex<HashMap<String, (usize, bool)>>,
    waiting_cv: Condvar,
    /// Attempts being run, by worker slot; the supervisor watches their deadlines.
    inflight: Mutex<Inflight>,
    inflight_cv: Condvar,
    stop_listening: Arc<AtomicBool>,
    reported: Mutex<ReportLimiter>,
}

#[derive(Default)]
struct Signal {
    epoch: u64,
    /// Bumped when this process changes a schedule.
    cron_epoch: u64,
    stopping: bool,
}

#[derive(Default)]
struct Inflight {
    attempts: HashMap<usize, Attempt>,
    next_slot: usize,
    /// Worker threads that are running their loop (not abandoned).
    live_workers: usize,
    /// Replacement workers the supervisor is about to start.
    spawn_requests: usize,
}

struct Attempt {
    claim: Claim,
    workflow: Arc<Workflow>,
    /// `None` when the task body enforces its own limit.
    deadline: Option<Instant>,
    timeout: Duration,
    timed_out: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Runner {
    /// Starts a runner: its workers begin claiming at once (recovering
    /// interrupted work when `enable_recovery` is on).
    pub fn start(store: Arc<dyn Store>, registry: &'static Registry, config: RunnerConfig) -> Result<Runner> {
        let shared = Arc::new(Shared {
            store,
            registry,
            config,
            owner: format!("runner-{}", uuid::Uuid::new_v4()),
            signal: Mutex::new(Signal::default()),
            signal_cv: Condvar::new(),
            cron_cv: Condvar::new(),
            waiting: Mutex::new(HashMap::new()),
            waiting_cv: Condvar::new(),
            inflight: Mutex::new(Inflight::default()),
            inflight_cv: Condvar::new(),
            stop_listening: Arc::new(AtomicBool::new(false)),
            reported: Mutex::new(ReportLimiter::default()),
        });
        let runner = Runner { shared: shared.clone(), threads: Mutex::new(Threads::default()) };
        let weak = Arc::downgrade(&shared);
        let on_event: super::store::EventHandler = Arc::new(move |channel, payload| {
            if let Some(shared) = weak.upgrade() {
                match channel {
                    Channel::Work => shared.wake_workers(payload.parse().unwrap_or(1)),
                    Channel::Done => shared.execution_finished(payload),
                }
            }
        });
        let listener = shared.store.listen(on_event, shared.stop_listening.clone())?;
        let mut threads = lock(&runner.threads);
        threads.listener = listener;
        for _ in 0..shared.config.max_concurrent_tasks {
            spawn_worker(&shared);
        }
        let supervisor_shared = shared.clone();
        threads.supervisor = Some(
            std::thread::Builder::new()
                .name("cloaca-supervisor".into())
                .spawn(move || supervise(supervisor_shared))
                .map_err(|e| EngineError::database("starting the runner's supervisor thread", e))?,
        );
        if shared.config.cron.enabled {
            let cron_shared = shared.clone();
            threads.cron = Some(
                std::thread::Builder::new()
                    .name("cloaca-cron".into())
                    .spawn(move || schedule_ticks(cron_shared))
                    .map_err(|e| EngineError::database("starting the runner's cron thread", e))?,
            );
        }
        drop(threads);
        Ok(runner)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// Stores a new execution of the registered workflow `name` and wakes
    /// the workers; returns its id.
    pub fn start_execution(&self, name: &str, input: &Context) -> Result<String> {
        self.store_execution(name, input).map(|(id, _)| id)
    }

    /// [`Runner::start_execution`], also returning the definition it used.
    fn store_execution(&self, name: &str, input: &Context) -> Result<(String, Arc<Workflow>)> {
        self.ensure_running()?;
        let workflow = self
            .shared
            .registry
            .get(name)
            .ok_or_else(|| EngineError::UnknownWorkflow { name: name.to_string(), registered: self.shared.registry.names() })?;
        let id = uuid::Uuid::new_v4().to_string();
        self.shared.store.create_execution(&id, &workflow.dag, input, now_ms())?;
        self.shared.wake_workers(workflow.dag.roots().len() as u64);
        Ok((id, workflow))
    }

    /// Runs `name` to the end: stores it, waits (woken, not polling) and
    /// returns the finished record. Past `pipeline_timeout` the execution
    /// is failed and its unfinished tasks skipped.
    pub fn execute(&self, name: &str, input: &Context) -> Result<ExecutionRecord> {
        self.execute_with(name, input, &mut || true)
    }

    /// [`Runner::execute`], giving up with [`EngineError::Interrupted`] (the
    /// execution goes on) as soon as `keep_waiting` says no; it is asked at
    /// least every [`INTERRUPT_CHECK`].
    pub fn execute_with(&self, name: &str, input: &Context, keep_waiting: &mut dyn FnMut() -> bool) -> Result<ExecutionRecord> {
        // The DAG the execution was created with, even if the name is
        // registered anew meanwhile.
        let (id, workflow) = self.store_execution(name, input)?;
        match self.wait_with(&id, self.shared.config.pipeline_timeout, keep_waiting) {
            Err(EngineError::WaitTimedOut { .. }) => {
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
    pub fn record(&self, execution_id: &str) -> Result<ExecutionRecord> {
        self.shared.store.get_execution(execution_id)?.ok_or_else(|| EngineError::UnknownExecution(execution_id.to_string()))
    }

    /// Waits until the execution has finished, at most `timeout`.
    pub fn wait(&self, execution_id: &str, timeout: Option<Duration>) -> Result<ExecutionRecord> {
        self.wait_with(execution_id, timeout, &mut || true)
    }

    /// [`Runner::wait`], giving up with [`EngineError::Interrupted`] as soon
    /// as `keep_waiting` says no (the caller's Ctrl-C, for instance).
    pub fn wait_with(
        &self,
        execution_id: &str,
        timeout: Option<Duration>,
        keep_waiting: &mut dyn FnMut() -> bool,
    ) -> Result<ExecutionRecord> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let shared = &self.shared;
        {
            let mut waiting = lock(&shared.waiting);
            waiting.entry(execution_id.to_string()).or_insert((0, false)).0 += 1;
        }
        let result = (|| loop {
            {
                let mut waiting = lock(&shared.waiting);
                if let Some(entry) = waiting.get_mut(execution_id) {
                    entry.1 = false;
                }
            }
            let record = self.record(execution_id)?;
            if record.status.is_finished() {
                return Ok(record);
            }
            let mut waiting = lock(&shared.waiting);
            loop {
                if waiting.get(execution_id).is_some_and(|e| e.1) {
                    break;
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Err(EngineError::WaitTimedOut {
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
                let (guard, timed_out) = shared.waiting_cv.wait_timeout(waiting, wait).unwrap_or_else(|p| p.into_inner());
                waiting = guard;
                if timed_out.timed_out() {
                    drop(waiting);
                    if !keep_waiting() {
                        return Err(EngineError::Interrupted);
                    }
                    break;
                }
            }
        })();
        let mut waiting = lock(&shared.waiting);
        if let Some(entry) = waiting.get_mut(execution_id) {
            entry.0 -= 1;
            if entry.0 == 0 {
                waiting.remove(execution_id);
            }
        }
        result
    }

    /// Stops claiming, lets running attempts finish (each within its own
    /// time limit) and stops every thread. Idempotent. A thread abandoned to
    /// a task past its deadline is not waited for.
    pub fn shutdown(&self) {
        self.shared.stop();
        {
            let mut inflight = lock(&self.shared.inflight);
            while inflight.live_workers > 0 || inflight.spawn_requests > 0 {
                inflight = self.shared.inflight_cv.wait(inflight).unwrap_or_else(|p| p.into_inner());
            }
        }
        self.shared.inflight_cv.notify_all();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for handle in [threads.supervisor, threads.listener, threads.cron].into_iter().flatten() {
            let _ = handle.join();
        }
    }

    /// Stores a new enabled schedule of the registered workflow `name`,
    /// its first tick computed from now.
    pub fn register_schedule(&self, name: &str, expression: &str, timezone: &str) -> Result<ScheduleRecord> {
        self.ensure_running()?;
        if self.shared.registry.get(name).is_none() {
            return Err(EngineError::UnknownWorkflow { name: name.to_string(), registered: self.shared.registry.names() });
        }
        let now = now_ms();
        let record = ScheduleRecord {
            id: uuid::Uuid::new_v4().to_string(),
            workflow_name: name.to_string(),
            cron_expression: expression.to_string(),
            timezone: timezone.to_string(),
            enabled: true,
            next_run_at: CronSchedule::parse(expression, timezone)?.next_after(now)?,
            last_run_at: None,
            skipped_ticks: 0,
            created_at: now,
            updated_at: now,
        };
        self.shared.store.insert_schedule(&record)?;
        self.shared.wake_scheduler();
        Ok(record)
    }

    /// The stored schedule `id`.
    pub fn schedule(&self, id: &str) -> Result<ScheduleRecord> {
        self.shared.store.get_schedule(id)?.ok_or_else(|| EngineError::UnknownSchedule(id.to_string()))
    }

    /// Replaces a schedule's expression (and time zone, when given); its
    /// next tick is computed from now.
    pub fn update_schedule(&self, id: &str, expression: &str, timezone: Option<&str>) -> Result<ScheduleRecord> {
        self.change_schedule(id, |record, now| {
            let timezone = timezone.unwrap_or(&record.timezone).to_string();
            record.next_run_at = CronSchedule::parse(expression, &timezone)?.next_after(now)?;
            record.cron_expression = expression.to_string();
            record.timezone = timezone;
            Ok(())
        })
    }

    /// Enables or disables a schedule. Enabling a disabled one starts from
    /// the next tick after now: ticks missed while disabled are not caught up.
    pub fn set_schedule_enabled(&self, id: &str, enabled: bool) -> Result<ScheduleRecord> {
        self.change_schedule(id, |record, now| {
            if enabled && !record.enabled {
                record.next_run_at = CronSchedule::parse(&record.cron_expression, &record.timezone)?.next_after(now)?;
            }
            record.enabled = enabled;
            Ok(())
        })
    }

    /// Reads the schedule, applies `change` and stores it if nobody fired
    /// a tick of it meanwhile (its next_run_at is unchanged); otherwise reads
    /// again. Writing back a next_run_at read before a tick was fired would
    /// make that tick due again.
    fn change_schedule(&self, id: &str, mut change: impl FnMut(&mut ScheduleRecord, i64) -> Result<()>) -> Result<ScheduleRecord> {
        loop {
            let mut record = self.schedule(id)?;
            let read_next_run_at = record.next_run_at;
            let now = now_ms();
            change(&mut record, now)?;
            if self.shared.store.update_schedule(&record, read_next_run_at, now)? {
                record.updated_at = now;
                self.shared.wake_scheduler();
                return Ok(record);
            }
        }
    }

    /// Deletes a schedule and its history; executions it started go on.
    pub fn delete_schedule(&self, id: &str) -> Result<()> {
        if !self.shared.store.delete_schedule(id)? {
            return Err(EngineError::UnknownSchedule(id.to_string()));
        }
        Ok(())
    }

    pub fn is_shut_down(&self) -> bool {
        lock(&self.shared.signal).stopping
    }

    fn ensure_running(&self) -> Result<()> {
        if self.is_shut_down() {
            Err(EngineError::ShutDown)
        } else {
            Ok(())
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // Never join here: the owner may hold locks (the GIL) that running
        // tasks need. Threads see the flag and end on their own.
        self.shared.stop();
    }
}

impl Shared {
    fn stop(&self) {
        lock(&self.signal).stopping = true;
        self.signal_cv.notify_all();
        self.cron_cv.notify_all();
        self.inflight_cv.notify_all();
        self.stop_listening.store(true, Ordering::SeqCst);
    }

    /// Wakes up to `tasks` idle workers: as many as there are new tasks, so
    /// that one ready task does not send every thread to the database.
    fn wake_workers(&self, tasks: u64) {
        if tasks == 0 {
            return;
        }
        lock(&self.signal).epoch += 1;
        if tasks >= self.config.max_concurrent_tasks as u64 {
            self.signal_cv.notify_all();
        } else {
            (0..tasks).for_each(|_| self.signal_cv.notify_one());
        }
    }

    /// Makes the cron thread look at the schedules now.
    fn wake_scheduler(&self) {
        lock(&self.signal).cron_epoch += 1;
        self.cron_cv.notify_all();
    }

    fn execution_finished(&self, execution_id: &str) {
        let mut waiting = lock(&self.waiting);
        if let Some(entry) = waiting.get_mut(execution_id) {
            entry.1 = true;
            drop(waiting);
            self.waiting_cv.notify_all();
        }
    }

    fn references(&self) -> Vec<WorkflowRef> {
        self.registry.references()
    }

    /// Waits until the epoch moves past `seen`, the runner stops, or `wait` passes.
    fn wait_for_news(&self, seen: u64, wait: Duration) {
        let signal = lock(&self.signal);
        if signal.epoch != seen || signal.stopping {
            return;
        }
        let _ = self.signal_cv.wait_timeout_while(signal, wait, |s| s.epoch == seen && !s.stopping);
    }

    /// Prints a background error on stderr (nobody waits for it to raise it),
    /// at most once per [`REPORT_EVERY`] for each kind, so that a database
    /// that is down does not flood the log from every worker.
    fn report(&self, what: &'static str, error: &EngineError) {
        let Some(suppressed) = lock(&self.reported).admit(what, Instant::now()) else {
            return;
        };
        let more = if suppressed > 0 { format!(" ({suppressed} more like it since the last report)") } else { String::new() };
        eprintln!("cloaca: {what} ({}): {error}{more}", self.owner);
    }
}

/// Starts one worker thread (detached; see [`Threads`]).
fn spawn_worker(shared: &Arc<Shared>) {
    let slot = {
        let mut inflight = lock(&shared.inflight);
        inflight.next_slot += 1;
        inflight.live_workers += 1;
        inflight.next_slot
    };
    let worker_shared = shared.clone();
    if let Err(e) = std::thread::Builder::new().name(format!("cloaca-worker-{slot}")).spawn(move || work(worker_shared, slot)) {
        lock(&shared.inflight).live_workers -= 1;
        shared.inflight_cv.notify_all();
        shared.report("starting a worker thread", &EngineError::database("starting a worker thread", e));
    }
}

/// Whether a worker goes on after an attempt.
enum AfterAttempt {
    Continue,
    /// The supervisor gave up on this attempt and replaced this thread.
    Abandoned,
}

/// Counts a worker as live until it ends, however it ends (a panic
/// included), so that shutdown never waits for a thread that is gone. A
/// worker abandoned by the supervisor was already counted out.
struct LiveWorker<'a> {
    shared: &'a Shared,
    abandoned: bool,
}

impl Drop for LiveWorker<'_> {
    fn drop(&mut self) {
        if !self.abandoned {
            lock(&self.shared.inflight).live_workers -= 1;
        }
        self.shared.inflight_cv.notify_all();
    }
}

fn work(shared: Arc<Shared>, slot: usize) {
    let mut live = LiveWorker { shared: &shared, abandoned: false };
    loop {
        let seen = {
            let signal = lock(&shared.signal);
            if signal.stopping {
                break;
            }
            signal.epoch
        };
        let references = shared.references();
        let lease_ms = shared.config.lease.as_millis() as i64;
        match shared.store.claim(&shared.owner, &references, now_ms(), lease_ms, shared.config.enable_recovery) {
            Ok(Some(claim)) => match run_attempt(&shared, slot, claim) {
                AfterAttempt::Continue => continue,
                AfterAttempt::Abandoned => {
                    live.abandoned = true;
                    return;
                }
            },
            Ok(None) => {}
            Err(e) => shared.report("claiming a task", &e),
        }
        let mut wait = shared.config.poll_interval;
        match shared.store.next_due(&references, shared.config.enable_recovery) {
            Ok(Some(due)) => {
                let until_due = Duration::from_millis((due - now_ms()).max(0) as u64 + 1);
                wait = wait.min(until_due);
            }
            Ok(None) => {}
            Err(e) => shared.report("looking for due tasks", &e),
        }
        shared.wait_for_news(seen, wait);
    }
}

fn run_attempt(shared: &Arc<Shared>, slot: usize, claim: Claim) -> AfterAttempt {
    let Some(workflow) = shared.registry.get_exact(&claim.workflow) else {
        // Replaced between the claim and now: let the lease lapse so that a
        // process with this version takes it.
        return AfterAttempt::Continue;
    };
    let dag = &workflow.dag;
    let Some(position) = dag.position(&claim.task_id) else {
        return AfterAttempt::Continue;
    };
    let task = dag.task(position);
    // Attempts started that neither failed nor completed: their runner died.
    let interruptions = claim.attempt - 1 - claim.failures;
    if interruptions >= MAX_INTERRUPTIONS {
        let failure = TaskFailure::interrupted(&claim.task_id, interruptions);
        record(shared, &claim, &workflow, &AttemptOutcome::Failed { failure, retry_at: None });
        return AfterAttempt::Continue;
    }
    let dependency_ids: Vec<&str> = dag.dependencies_of(position).iter().map(|&d| dag.task(d).id.as_str()).collect();
    let input = match shared.store.load_contexts(&claim.execution_id, &dependency_ids, now_ms()) {
        Ok(loaded) => match loaded.input {
            Some(input) => input,
            None => merge(dependency_ids.iter().filter_map(|id| loaded.outputs.get(*id))),
        },
        Err(e) => {
            shared.report("loading a task's input", &e);
            return AfterAttempt::Continue;
        }
    };
    let timeout = task.timeout.unwrap_or(shared.config.task_timeout);
    let body = workflow.bodies[position].clone();
    {
        let mut inflight = lock(&shared.inflight);
        inflight.attempts.insert(
            slot,
            Attempt {
                claim: claim.clone(),
                workflow: workflow.clone(),
                deadline: (!body.enforces_timeout()).then(|| Instant::now() + timeout),
                timeout,
                timed_out: false,
            },
        );
    }
    shared.inflight_cv.notify_all();
    let result = body.run(input, timeout);
    {
        let mut inflight = lock(&shared.inflight);
        let attempt = inflight.attempts.remove(&slot);
        if attempt.is_some_and(|a| a.timed_out) {
            return AfterAttempt::Abandoned;
        }
    }
    let outcome = outcome_of(&claim, &workflow, result);
    record(shared, &claim, &workflow, &outcome);
    AfterAttempt::Continue
}

/// Turns a body's result into what the store records, deciding on a retry.
fn outcome_of(claim: &Claim, workflow: &Workflow, result: std::result::Result<Context, TaskFailure>) -> AttemptOutcome {
    match result {
        Ok(output) => AttemptOutcome::Completed(output),
        Err(failure) => {
            let position = workflow.dag.position(&claim.task_id).expect("claimed task belongs to its workflow");
            let policy = &workflow.dag.task(position).retry;
            let failure_number = (claim.failures + 1) as u32;
            let retry_at = policy.should_retry(failure_number, &failure).then(|| now_ms() + policy.delay_ms(failure_number) as i64);
            AttemptOutcome::Failed { failure, retry_at }
        }
    }
}

fn record(shared: &Shared, claim: &Claim, workflow: &Workflow, outcome: &AttemptOutcome) {
    match shared.store.record_attempt(claim, &workflow.dag, outcome, now_ms()) {
        Ok(recorded) => {
            // This worker claims again right away, so it takes one of the
            // readied tasks itself.
            shared.wake_workers(recorded.readied.saturating_sub(1));
            if recorded.finished.is_some() {
                shared.execution_finished(&claim.execution_id);
            }
        }
        // The lease will lapse and the attempt run again: at-least-once.
        Err(e) => shared.report("recording a task attempt", &e),
    }
}

/// Fires due cron ticks and recovers lost executions of ticks until the
/// runner stops; sleeps until the next tick, a schedule change in this
/// process, or the poll interval (other processes' changes).
fn schedule_ticks(shared: Arc<Shared>) {
    let cron = shared.config.cron.clone();
    let mut next_recovery = Instant::now();
    loop {
        let seen = {
            let signal = lock(&shared.signal);
            if signal.stopping {
                return;
            }
            signal.cron_epoch
        };
        let planner = Planner::new(shared.registry, cron.max_catchup);
        let store = &*shared.store;
        match scheduler::fire_due(store, &planner, now_ms(), &mut |what, e| shared.report(what, e)) {
            Ok(roots) => shared.wake_workers(roots),
            Err(e) => shared.report("firing cron ticks", &e),
        }
        if cron.enable_recovery && Instant::now() >= next_recovery {
            match scheduler::recover_lost(store, &planner, &cron, now_ms()) {
                Ok(roots) => shared.wake_workers(roots),
                Err(e) => shared.report("recovering lost cron executions", &e),
            }
            next_recovery = Instant::now() + cron.recovery_interval;
        }
        let mut wait = cron.poll_interval;
        if cron.enable_recovery {
            wait = wait.min(next_recovery.saturating_duration_since(Instant::now()));
        }
        match store.next_cron_due(&planner.workflow_names()) {
            Ok(Some(due)) => wait = wait.min(Duration::from_millis((due - now_ms()).max(0) as u64 + 1)),
            Ok(None) => {}
            Err(e) => shared.report("looking for due cron ticks", &e),
        }
        let signal = lock(&shared.signal);
        let _ = shared.cron_cv.wait_timeout_while(signal, wait, |s| s.cron_epoch == seen && !s.stopping);
    }
}

/// Renews this runner's leases every lease/3 and fails attempts that pass
/// their deadline, replacing the worker thread stuck in them.
fn supervise(shared: Arc<Shared>) {
    let renew_every = shared.config.lease / 3;
    let mut next_renewal = Instant::now() + renew_every;
    loop {
        let mut expired: Vec<(Claim, Arc<Workflow>, Duration)> = Vec::new();
        let running: Vec<i64>;
        {
            let mut inflight = lock(&shared.inflight);
            loop {
                let stopping = lock(&shared.signal).stopping;
                if stopping && inflight.live_workers == 0 && inflight.spawn_requests == 0 {
                    return;
                }
                let now = Instant::now();
                for attempt in inflight.attempts.values_mut() {
                    if !attempt.timed_out && attempt.deadline.is_some_and(|d| d <= now) {
                        attempt.timed_out = true;
                        expired.push((attempt.claim.clone(), attempt.workflow.clone(), attempt.timeout));
                    }
                }
                if !expired.is_empty() || now >= next_renewal {
                    break;
                }
                let earliest = inflight
                    .attempts
                    .values()
                    .filter(|a| !a.timed_out)
                    .filter_map(|a| a.deadline)
                    .min()
                    .map_or(next_renewal, |d| d.min(next_renewal));
                let (guard, _) =
                    shared.inflight_cv.wait_timeout(inflight, earliest.saturating_duration_since(now)).unwrap_or_else(|p| p.into_inner());
                inflight = guard;
            }
            // Each timed-out attempt's thread stops counting as a live worker
            // and gets a replacement.
            inflight.live_workers -= expired.len();
            inflight.spawn_requests += expired.len();
            running = inflight.attempts.values().filter(|a| !a.timed_out).map(|a| a.claim.row_id).collect();
        }
        if Instant::now() >= next_renewal {
            let expires = now_ms() + shared.config.lease.as_millis() as i64;
            if let Err(e) = shared.store.renew_leases(&shared.owner, &running, expires) {
                shared.report("renewing leases", &e);
            }
            next_renewal = Instant::now() + renew_every;
        }
        for (claim, workflow, timeout) in expired {
            let failure = TaskFailure::timed_out(&claim.task_id, timeout.as_secs_f64());
            let outcome = outcome_of(&claim, &workflow, Err(failure));
            record(&shared, &claim, &workflow, &outcome);
            replace_abandoned_worker(&shared);
        }
    }
}

/// Keeps `max_concurrent_tasks` workers claiming although one is stuck in
/// a task past its deadline (a Python thread cannot be killed).
fn replace_abandoned_worker(shared: &Arc<Shared>) {
    let stopping = lock(&shared.signal).stopping;
    lock(&shared.inflight).spawn_requests -= 1;
    if !stopping {
        spawn_worker(shared);
    }
    shared.inflight_cv.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_errors_are_printed_once_per_interval_with_a_count_of_the_rest() {
        let mut limiter = ReportLimiter::default();
        let start = Instant::now();
        assert_eq!(limiter.admit("claiming a task", start), Some(0));
        assert_eq!(limiter.admit("claiming a task", start + Duration::from_millis(10)), None);
        assert_eq!(limiter.admit("claiming a task", start + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit("renewing leases", start), Some(0), "kinds are limited separately");
        assert_eq!(limiter.admit("claiming a task", start + REPORT_EVERY), Some(2));
        assert_eq!(limiter.admit("claiming a task", start + REPORT_EVERY * 2), Some(0));
    }
}

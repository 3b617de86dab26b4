//! What a runner's threads share: the store, the registry, the settings,
//! the attempts in flight, and the wake-ups that replace polling.
//!
//! A worker that finds no work waits on a condition variable that is
//! signalled when this process creates work or finishes a task, and (on
//! Postgres) when another process notifies. The poll interval is only the
//! fallback for news that cannot signal (another process on the same SQLite
//! file); a retry coming due is computed exactly.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::engine::error::Error;
use crate::engine::model::{ExecutionRecord, WorkflowRef};
use crate::engine::settings::RunnerConfig;
use crate::engine::store::{Claim, Claimed, Store};
use crate::engine::sync::{lock, wait_timeout_while};
use crate::engine::workflow::{Cancellation, Registry, Workflow};

/// The shortest gap between two reports of one kind of background error.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// How serious a report is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Debug,
    Info,
    /// Something that may pass by itself (the database is away for now), or
    /// a failed attempt.
    Warning,
    Error,
}

/// What a report is about: the runner's background work, an execution's
/// start and end, or a task attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Topic {
    Runner,
    Execution,
    Task,
}

/// One report: its level, topic and sentence, and the execution, workflow
/// and task it concerns.
#[derive(Clone, Debug)]
pub(crate) struct Note<'a> {
    pub(crate) level: Level,
    pub(crate) topic: Topic,
    pub(crate) message: String,
    pub(crate) execution_id: Option<&'a str>,
    pub(crate) workflow: Option<&'a str>,
    pub(crate) task_id: Option<&'a str>,
}

/// Where reports go: nobody waits for them to raise them. The Python layer
/// hands them to the `logging` module.
pub(crate) type Reporter = Arc<dyn Fn(&Note<'_>) + Send + Sync>;

pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) registry: &'static Registry,
    pub(crate) config: RunnerConfig,
    /// Owner name written into leases.
    pub(crate) owner: String,
    /// Bumped on every piece of news; workers wait for it to change.
    pub(crate) signal: Mutex<Signal>,
    signal_cv: Condvar,
    /// The cron thread waits on `signal` with this (for `cron_epoch` or stopping).
    pub(crate) cron_cv: Condvar,
    /// The background pruner waits on `signal` with this (for stopping).
    pub(crate) retention_cv: Condvar,
    /// Executions someone in this process waits for.
    pub(crate) waiting: Mutex<HashMap<String, Waiters>>,
    pub(crate) waiting_cv: Condvar,
    /// Attempts being run, by worker slot; the supervisor watches their deadlines.
    pub(crate) inflight: Mutex<Inflight>,
    pub(crate) inflight_cv: Condvar,
    /// Deferred attempts waiting for an idle worker to hand them its slot
    /// (changed under `inflight`; read without it by every worker loop).
    pub(crate) slot_requests: AtomicUsize,
    /// Workers between attempts: a new execution may claim as many of its
    /// roots for them (see [`Shared::hand_over`]).
    pub(crate) idle_workers: AtomicUsize,
    /// This runner, for the threads it starts from a worker's call.
    pub(crate) me: Weak<Shared>,
    pub(crate) stop_listening: Arc<AtomicBool>,
    reported: Mutex<ReportLimiter>,
    reporter: Reporter,
}

/// The callers waiting for one execution, and the news of its finish.
#[derive(Default)]
pub(crate) struct Waiters {
    pub(crate) count: usize,
    /// How many times news of a finish arrived: each waiter waits for it
    /// to move past what it saw at its last look.
    pub(crate) finishes: u64,
    /// The finished record, when news of it came from this process's
    /// recording of it: the waiters need not read it back.
    pub(crate) record: Option<ExecutionRecord>,
}

#[derive(Default)]
pub(crate) struct Signal {
    pub(crate) epoch: u64,
    /// Bumped when this process changes a schedule.
    pub(crate) cron_epoch: u64,
    pub(crate) stopping: bool,
}

#[derive(Default)]
pub(crate) struct Inflight {
    pub(crate) attempts: HashMap<usize, Attempt>,
    pub(crate) next_slot: usize,
    /// Worker threads that are running their loop (not abandoned).
    pub(crate) live_workers: usize,
    /// Replacement workers the supervisor is about to start.
    pub(crate) spawn_requests: usize,
    /// When the waiting supervisor wakes by itself (None while it is not
    /// waiting): a new attempt whose deadline is later needs no wake-up.
    pub(crate) supervisor_wakes_at: Option<Instant>,
    /// Roots claimed by the transaction that created their execution, for
    /// the next worker between attempts. Their leases are renewed like
    /// those of running attempts.
    pub(crate) handed: VecDeque<Claimed>,
}

impl Inflight {
    /// Whether the supervisor must look at an attempt now starting, with
    /// this deadline (None: one that stops itself, checked for
    /// cancellation every `poll_interval`), before it would wake anyway.
    pub(crate) fn supervisor_must_see(&self, deadline: Option<Instant>, poll_interval: Duration) -> bool {
        let Some(wakes_at) = self.supervisor_wakes_at else {
            return true;
        };
        deadline.unwrap_or_else(|| Instant::now() + poll_interval) < wakes_at
    }
}

pub(crate) struct Attempt {
    pub(crate) claim: Claim,
    pub(crate) workflow: Arc<Workflow>,
    /// `None` when the task body enforces its own limit.
    pub(crate) deadline: Option<Instant>,
    pub(crate) timeout: Duration,
    pub(crate) timed_out: bool,
    pub(crate) cancellation: Arc<Cancellation>,
    /// The attempt gave its slot back (a replacement worker took it) and
    /// has not got one again.
    pub(crate) deferred: bool,
    /// The deferred attempt waits for a worker to hand it a slot.
    pub(crate) wants_slot: bool,
}

impl Shared {
    pub(crate) fn new(store: Arc<Store>, registry: &'static Registry, config: RunnerConfig, reporter: Reporter) -> Arc<Self> {
        Arc::new_cyclic(|me| Shared {
            store,
            registry,
            config,
            owner: format!("runner-{}", uuid::Uuid::new_v4()),
            signal: Mutex::new(Signal::default()),
            signal_cv: Condvar::new(),
            cron_cv: Condvar::new(),
            retention_cv: Condvar::new(),
            waiting: Mutex::new(HashMap::new()),
            waiting_cv: Condvar::new(),
            inflight: Mutex::new(Inflight::default()),
            inflight_cv: Condvar::new(),
            slot_requests: AtomicUsize::new(0),
            idle_workers: AtomicUsize::new(0),
            me: me.clone(),
            stop_listening: Arc::new(AtomicBool::new(false)),
            reported: Mutex::new(ReportLimiter::default()),
            reporter,
        })
    }

    pub(crate) fn stop(&self) {
        self.store.stop_waiting();
        lock(&self.signal).stopping = true;
        self.signal_cv.notify_all();
        self.cron_cv.notify_all();
        self.retention_cv.notify_all();
        // Taken once so that a thread that just saw `stopping` false under
        // it is waiting by now, and gets the notification.
        drop(lock(&self.inflight));
        self.inflight_cv.notify_all();
        self.stop_listening.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        lock(&self.signal).stopping
    }

    /// Refuses work once the runner is shut down.
    pub(crate) fn ensure_running(&self) -> crate::engine::error::Result<()> {
        if self.is_stopping() {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Wakes up to `tasks` idle workers: as many as there are new tasks, so
    /// that one ready task does not send every thread to the database.
    pub(crate) fn wake_workers(&self, tasks: u64) {
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

    /// How many roots a new execution may claim in the transaction that
    /// creates it: one per idle worker no claim is waiting for already.
    pub(crate) fn claim_room(&self) -> usize {
        match self.idle_workers.load(Ordering::SeqCst) {
            0 => 0,
            idle => idle.saturating_sub(lock(&self.inflight).handed.len()),
        }
    }

    /// Leaves claims made for this runner's idle workers to them (the
    /// caller wakes them). After shutdown has begun they are released
    /// instead: no worker would take them.
    pub(crate) fn hand_over(&self, claimed: Vec<Claimed>) {
        if claimed.is_empty() {
            return;
        }
        let mut inflight = lock(&self.inflight);
        // Checked under `inflight`, which shutdown takes to collect what is
        // left once `stopping` is set: a claim is either collected there or
        // released here.
        if !self.is_stopping() {
            inflight.handed.extend(claimed);
            return;
        }
        drop(inflight);
        self.release_unstarted(claimed);
    }

    /// The oldest claim left for a worker, if any.
    pub(crate) fn take_handed(&self) -> Option<Claimed> {
        lock(&self.inflight).handed.pop_front()
    }

    /// Of `claimed` (just claimed from the database) and the claims left
    /// for the workers, the one of the older row, the other left in their
    /// place: a worker that claimed while a new execution was being stored
    /// may have taken a later root of it than the one claimed for it.
    pub(crate) fn older_first(&self, claimed: Claimed) -> Claimed {
        let mut inflight = lock(&self.inflight);
        match inflight.handed.front() {
            Some(front) if front.claim.row_id < claimed.claim.row_id => {
                let older = inflight.handed.pop_front().expect("the front was just seen");
                inflight.handed.push_front(claimed);
                older
            }
            _ => claimed,
        }
    }

    /// Whether claims wait for a worker (which then takes one of them
    /// before claiming anything else).
    pub(crate) fn claims_wait(&self) -> bool {
        !lock(&self.inflight).handed.is_empty()
    }

    /// At shutdown, once the workers are gone: releases the claims left for them.
    pub(crate) fn release_handed(&self) {
        let left = std::mem::take(&mut lock(&self.inflight).handed);
        self.release_unstarted(left.into());
    }

    /// Makes claims no worker started ready again, for another runner or a later start.
    fn release_unstarted(&self, claimed: Vec<Claimed>) {
        let claims: Vec<Claim> = claimed.into_iter().map(|c| c.claim).collect();
        if let Err(e) = self.store.release_unstarted(&claims) {
            // Their leases lapse instead, and recovery runs them.
            self.report("releasing claims no worker started", &e);
        }
    }

    /// Makes the cron thread look at the schedules now.
    pub(crate) fn wake_scheduler(&self) {
        lock(&self.signal).cron_epoch += 1;
        self.cron_cv.notify_all();
    }

    /// Wakes the callers waiting for `execution_id`, which finished (or
    /// may have: they look), handing them its `record` when it is known.
    pub(crate) fn execution_finished(&self, execution_id: &str, record: Option<&ExecutionRecord>) {
        let mut waiting = lock(&self.waiting);
        if let Some(entry) = waiting.get_mut(execution_id) {
            entry.finishes += 1;
            // News without a record (a cancellation's, or a finish heard
            // from another runner) keeps the one recorded here: a waiter
            // that reads the database drops it (Runner::wait_registered).
            if let Some(record) = record {
                entry.record = Some(record.clone());
            }
            drop(waiting);
            self.waiting_cv.notify_all();
        }
    }

    pub(crate) fn references(&self) -> Vec<WorkflowRef> {
        self.registry.references()
    }

    /// Waits until the epoch moves past `seen`, the runner stops, or `wait` passes.
    pub(crate) fn wait_for_news(&self, seen: u64, wait: Duration) {
        let signal = lock(&self.signal);
        if signal.epoch != seen || signal.stopping {
            return;
        }
        drop(wait_timeout_while(&self.signal_cv, signal, wait, |s| s.epoch == seen && !s.stopping));
    }

    /// Hands a background error to the reporter, at most once per
    /// [`REPORT_EVERY`] for each kind, so that a database that is down does
    /// not flood the log from every worker.
    pub(crate) fn report(&self, what: &'static str, error: &Error) {
        let Some(suppressed) = lock(&self.reported).admit(what, Instant::now()) else {
            return;
        };
        let more = if suppressed > 0 { format!(" ({suppressed} more like it since the last report)") } else { String::new() };
        let level = if error.is_transient() || error.is_outage() { Level::Warning } else { Level::Error };
        let message = format!("{what} ({}): {error}{more}", self.owner);
        (self.reporter)(&Note { level, topic: Topic::Runner, message, execution_id: None, workflow: None, task_id: None });
    }

    /// Hands a report about the runner's own work (no execution) to the reporter.
    pub(crate) fn announce(&self, level: Level, message: String) {
        (self.reporter)(&Note { level, topic: Topic::Runner, message, execution_id: None, workflow: None, task_id: None });
    }

    /// Hands a report about an execution (and a task of it) to the reporter.
    pub(crate) fn note(&self, level: Level, topic: Topic, message: String, execution_id: &str, workflow: &str, task_id: Option<&str>) {
        (self.reporter)(&Note { level, topic, message, execution_id: Some(execution_id), workflow: Some(workflow), task_id });
    }

    /// Stops the running attempts of a cancelled execution that can stop
    /// (async bodies); a plain function runs on and its outcome is refused.
    pub(crate) fn cancel_attempts(&self, execution_id: &str) {
        let cancellations: Vec<Arc<Cancellation>> = lock(&self.inflight)
            .attempts
            .values()
            .filter(|a| a.claim.execution_id == execution_id)
            .map(|a| a.cancellation.clone())
            .collect();
        // Outside the lock: a hook takes the GIL, which a worker may hold
        // while it waits for this lock.
        for cancellation in cancellations {
            cancellation.cancel();
        }
    }
}

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

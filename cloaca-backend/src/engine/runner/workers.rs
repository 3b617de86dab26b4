//! Worker threads: each claims a task attempt, runs its body and records
//! the outcome, then claims again or waits for news.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shared::{Attempt, Level, Shared, Topic};
use crate::engine::model::{Context, ExecutionStatus};
use crate::engine::store::{AttemptOutcome, AttemptRecorded, Claim};
use crate::engine::sync::lock;
use crate::engine::time::{now_ms, rfc3339};
use crate::engine::workflow::{merge, AttemptInfo, AttemptSlot, Cancellation, TaskFailure, Workflow};

/// A task whose runner died in it this many times in a row is failed
/// instead of run again: it is probably what kills its runners.
pub(crate) const MAX_INTERRUPTIONS: i64 = 3;

/// Starts one worker thread (detached: shutdown counts live workers instead of joining them).
pub(crate) fn spawn_worker(shared: &Arc<Shared>) {
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
        shared.report("starting a worker thread", &crate::engine::error::Error::Thread { what: "a worker thread", source: e });
    }
}

/// Whether a worker goes on after an attempt.
enum AfterAttempt {
    Continue,
    /// The supervisor gave up on this attempt and replaced this thread.
    Abandoned,
    /// The attempt deferred and never took a slot again: its replacement
    /// holds this thread's slot, so this thread ends.
    Retire,
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
        if shared.hand_over_slot() {
            return;
        }
        let references = shared.references();
        let lease_ms = shared.config.lease.as_millis() as i64;
        match shared.store.claim(&shared.owner, &references, now_ms(), lease_ms, shared.config.enable_recovery) {
            Ok(Some(claim)) => match run_attempt(&shared, slot, claim) {
                AfterAttempt::Continue => continue,
                AfterAttempt::Abandoned => {
                    live.abandoned = true;
                    return;
                }
                AfterAttempt::Retire => return,
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
    let interruptions = claim.attempt - claim.attempt_base - 1 - claim.failures;
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
    let cancellation = Arc::new(Cancellation::default());
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
                cancellation: cancellation.clone(),
                deferred: false,
                wants_slot: false,
            },
        );
    }
    shared.inflight_cv.notify_all();
    let attempt_slot = AttemptSlot::new(shared.clone(), slot);
    let info = AttemptInfo {
        execution_id: &claim.execution_id,
        workflow: &claim.workflow.name,
        task_id: &claim.task_id,
        attempt: claim.attempt - claim.attempt_base,
        cancellation: &cancellation,
        slot: &attempt_slot,
    };
    let result = body.run(&info, input, timeout);
    cancellation.clear();
    let deferred = {
        let mut inflight = lock(&shared.inflight);
        match inflight.attempts.remove(&slot) {
            Some(a) if a.timed_out => return AfterAttempt::Abandoned,
            Some(mut a) => {
                shared.withdraw_slot_request(&mut a);
                a.deferred
            }
            None => false,
        }
    };
    if deferred && shared.is_stopping() {
        // Stopped while it waited: as if this runner had died then, the
        // lease lapses and the attempt runs again from the start.
        let message = format!(
            "task {:?} of execution {}: the runner shut down while attempt {} was deferred; its outcome is not recorded, and the \
             task runs again once its lease lapses",
            claim.task_id, claim.execution_id, info.attempt
        );
        shared.note(Level::Warning, Topic::Task, message, &claim.execution_id, &claim.workflow.name, Some(&claim.task_id));
        return AfterAttempt::Retire;
    }
    let outcome = outcome_of(&claim, &workflow, result);
    record(shared, &claim, &workflow, &outcome);
    if deferred {
        AfterAttempt::Retire
    } else {
        AfterAttempt::Continue
    }
}

/// Turns a body's result into what the store records, deciding on a retry.
pub(crate) fn outcome_of(claim: &Claim, workflow: &Workflow, result: std::result::Result<Context, TaskFailure>) -> AttemptOutcome {
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

pub(crate) fn record(shared: &Shared, claim: &Claim, workflow: &Workflow, outcome: &AttemptOutcome) {
    let mut result = shared.store.record_attempt(claim, &workflow.dag, outcome, now_ms());
    // A database that stays away past the outage allowance: keep the outcome
    // and try again until it is back or the runner stops. Writing it late is
    // safe (the attempt number fences it: if the lease lapsed and another
    // runner took the task meanwhile, nothing is written).
    while let Err(e) = &result {
        if !e.is_outage() || shared.is_stopping() {
            break;
        }
        shared.report("recording a task attempt (the database is unreachable; trying again)", e);
        result = shared.store.record_attempt(claim, &workflow.dag, outcome, now_ms());
    }
    match result {
        Ok(recorded) => {
            // This worker claims again right away, so it takes one of the
            // readied tasks itself.
            shared.wake_workers(recorded.readied.saturating_sub(1));
            // Logged before a waiting execute() returns, so that its records
            // come first.
            log_recorded(shared, claim, outcome, &recorded);
            if recorded.finished.is_some() {
                shared.execution_finished(&claim.execution_id);
            }
        }
        // The lease will lapse and the attempt run again: at-least-once.
        Err(e) => shared.report("recording a task attempt", &e),
    }
}

/// Logs what recording an attempt did: a failed attempt and its retry at
/// WARNING, the execution's end at INFO (ERROR when it failed).
fn log_recorded(shared: &Shared, claim: &Claim, outcome: &AttemptOutcome, recorded: &AttemptRecorded) {
    let (execution, workflow, task) = (claim.execution_id.as_str(), claim.workflow.name.as_str(), claim.task_id.as_str());
    let attempt = claim.attempt - claim.attempt_base;
    if !recorded.accepted {
        let message = format!(
            "task {task:?} of execution {execution}: the outcome of attempt {attempt} was discarded (the task was cancelled or taken over)"
        );
        shared.note(Level::Debug, Topic::Task, message, execution, workflow, Some(task));
        return;
    }
    if let AttemptOutcome::Failed { failure, retry_at } = outcome {
        let then = match retry_at {
            Some(at) => format!("; retry scheduled at {}", rfc3339(*at)),
            None => "; no attempt left".to_string(),
        };
        let message =
            format!("task {task:?} of execution {execution} failed (attempt {attempt}): {}: {}{then}", failure.error_type, failure.message);
        shared.note(Level::Warning, Topic::Task, message, execution, workflow, Some(task));
    }
    if let Some(status) = recorded.finished {
        let level = if status == ExecutionStatus::Failed { Level::Error } else { Level::Info };
        let message = format!("execution {execution} of workflow {workflow:?} finished: {status}");
        shared.note(level, Topic::Execution, message, execution, workflow, None);
    }
}

//! Worker threads: each claims a task attempt, runs its body and records
//! the outcome, then claims again or waits for news.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::shared::{Attempt, Level, Shared, Topic};
use crate::engine::model::{Context, ExecutionStatus, WorkflowRef};
use crate::engine::store::{input_of, AttemptOutcome, AttemptRecorded, Claim, Claimed, NextClaim, Work};
use crate::engine::sync::lock;
use crate::engine::time::{now_ms, rfc3339};
use crate::engine::workflow::{AttemptInfo, AttemptSlot, Cancellation, TaskFailure, Workflow};

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
    Continue(Next),
    /// The supervisor gave up on this attempt and replaced this thread.
    Abandoned,
    /// The attempt deferred and never took a slot again: its replacement
    /// holds this thread's slot, so this thread ends.
    Retire,
}

/// What a worker does next, as recording its last attempt left it.
pub(crate) enum Next {
    /// Runs the attempt the recording transaction claimed for it.
    Run(Claimed),
    /// That transaction found nothing ready: waits for news newer than
    /// this epoch (read before it looked).
    Wait(u64),
    /// Claims as usual.
    Claim,
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

/// What each worker thread's loop runs inside, for as long as the thread
/// runs: the Python layer keeps a Python thread state there (see
/// `python::threads`). Set once per process.
pub(crate) type ThreadScope = fn(&mut dyn FnMut());

static WORKER_SCOPE: OnceLock<ThreadScope> = OnceLock::new();

/// Sets the scope of every worker thread started from now on.
pub(crate) fn set_worker_scope(scope: ThreadScope) {
    let _ = WORKER_SCOPE.set(scope);
}

fn work(shared: Arc<Shared>, slot: usize) {
    let mut live = LiveWorker { shared: &shared, abandoned: false };
    // The scope ends before `live` counts the worker out, so that a
    // shutdown waiting for the workers returns only once it has ended.
    let mut run = || live.abandoned = work_loop(&shared, slot);
    match WORKER_SCOPE.get() {
        Some(scope) => scope(&mut run),
        None => run(),
    }
}

/// Claims and runs attempts until the runner stops; true when the
/// supervisor abandoned this thread to an attempt past its deadline.
fn work_loop(shared: &Arc<Shared>, slot: usize) -> bool {
    let mut next = Next::Claim;
    loop {
        let claimed = match std::mem::replace(&mut next, Next::Claim) {
            // Claimed while recording the last attempt, which checked that
            // this worker goes on.
            Next::Run(claimed) => claimed,
            Next::Wait(seen) => {
                let _between = BetweenAttempts::count(shared);
                wait_idle(shared, seen, &shared.references());
                continue;
            }
            Next::Claim => {
                let _between = BetweenAttempts::count(shared);
                match claim_or_wait(shared) {
                    Claiming::Claimed(claimed) => claimed,
                    Claiming::Idle => continue,
                    Claiming::Stop => return false,
                }
            }
        };
        match run_attempt(shared, slot, claimed) {
            AfterAttempt::Continue(claimed) => next = claimed,
            AfterAttempt::Abandoned => return true,
            AfterAttempt::Retire => return false,
        }
    }
}

/// Counts a worker in `Shared::idle_workers` while it is between attempts
/// (claiming, or waiting for news): a new execution may claim a root for
/// it, which it takes before claiming anything else. Counted from the
/// start, not only once it waits: on PostgreSQL a worker spends a few round
/// trips looking for work after each attempt, and the next execution's
/// creation often comes meanwhile.
struct BetweenAttempts<'a>(&'a Shared);

impl<'a> BetweenAttempts<'a> {
    fn count(shared: &'a Shared) -> Self {
        shared.idle_workers.fetch_add(1, Ordering::SeqCst);
        BetweenAttempts(shared)
    }
}

impl Drop for BetweenAttempts<'_> {
    fn drop(&mut self) {
        self.0.idle_workers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a worker between attempts got.
enum Claiming {
    Claimed(Claimed),
    /// Nothing to claim; it waited for news or the next due time.
    Idle,
    /// The runner stops, or this worker handed its slot to a deferred attempt.
    Stop,
}

fn claim_or_wait(shared: &Arc<Shared>) -> Claiming {
    let seen = {
        let signal = lock(&shared.signal);
        if signal.stopping {
            return Claiming::Stop;
        }
        signal.epoch
    };
    if shared.hand_over_slot() {
        return Claiming::Stop;
    }
    if let Some(claimed) = shared.take_handed() {
        return Claiming::Claimed(claimed);
    }
    let references = shared.references();
    let looking = looking(shared, &references);
    let next_due = match shared.store.claim_or_next_due(&looking, now_ms(), shared.config.enable_recovery) {
        Ok(Work::Claimed(claimed)) => return Claiming::Claimed(shared.older_first(claimed)),
        Ok(Work::Idle { next_due }) => next_due,
        Err(e) => {
            shared.report("claiming a task", &e);
            None
        }
    };
    wait_for_news_until(shared, seen, next_due);
    Claiming::Idle
}

/// This runner's worker, looking for an attempt of `references`.
fn looking<'a>(shared: &'a Shared, references: &'a [WorkflowRef]) -> NextClaim<'a> {
    NextClaim { owner: &shared.owner, workflows: references, registry: shared.registry, lease_ms: shared.config.lease.as_millis() as i64 }
}

/// Waits for news newer than `seen`, at most until the next task of these
/// workflows comes due or the poll interval passes.
fn wait_idle(shared: &Shared, seen: u64, references: &[WorkflowRef]) {
    let next_due = match shared.store.next_due(references, shared.config.enable_recovery) {
        Ok(due) => due,
        Err(e) => {
            shared.report("looking for due tasks", &e);
            None
        }
    };
    wait_for_news_until(shared, seen, next_due);
}

/// Waits for news newer than `seen`, at most until `due` (a time in ms) or
/// the poll interval passes.
fn wait_for_news_until(shared: &Shared, seen: u64, due: Option<i64>) {
    let mut wait = shared.config.poll_interval;
    if let Some(due) = due {
        wait = wait.min(Duration::from_millis((due - now_ms()).max(0) as u64 + 1));
    }
    shared.wait_for_news(seen, wait);
}

fn run_attempt(shared: &Arc<Shared>, slot: usize, claimed: Claimed) -> AfterAttempt {
    let Claimed { claim, input } = claimed;
    let Some(workflow) = shared.registry.get_exact(&claim.workflow) else {
        // Replaced between the claim and now: let the lease lapse so that a
        // process with this version takes it.
        return AfterAttempt::Continue(Next::Claim);
    };
    let dag = &workflow.dag;
    let Some(position) = dag.position(&claim.task_id) else {
        return AfterAttempt::Continue(Next::Claim);
    };
    let task = dag.task(position);
    // Attempts started that neither failed nor completed: their runner died.
    let interruptions = claim.attempt - claim.attempt_base - 1 - claim.failures;
    if interruptions >= MAX_INTERRUPTIONS {
        let failure = TaskFailure::interrupted(&claim.task_id, interruptions);
        return AfterAttempt::Continue(record(shared, &claim, &workflow, &AttemptOutcome::Failed { failure, retry_at: None }, true));
    }
    let input = match input {
        Some(input) => input,
        None => {
            let dependency_ids: Vec<&str> = dag.dependencies_of(position).iter().map(|&d| dag.task(d).id.as_str()).collect();
            match shared.store.load_contexts(&claim.execution_id, &dependency_ids, now_ms()) {
                Ok(loaded) => input_of(&dependency_ids, loaded),
                Err(e) => {
                    shared.report("loading a task's input", &e);
                    return AfterAttempt::Continue(Next::Claim);
                }
            }
        }
    };
    let timeout = task.timeout.unwrap_or(shared.config.task_timeout);
    let body = workflow.bodies[position].clone();
    let cancellation = Arc::new(Cancellation::default());
    let wake_supervisor = {
        let mut inflight = lock(&shared.inflight);
        let deadline = (!body.enforces_timeout()).then(|| Instant::now() + timeout);
        inflight.attempts.insert(
            slot,
            Attempt {
                claim: claim.clone(),
                workflow: workflow.clone(),
                deadline,
                timeout,
                timed_out: false,
                cancellation: cancellation.clone(),
                deferred: false,
                wants_slot: false,
            },
        );
        inflight.supervisor_must_see(deadline, shared.config.poll_interval)
    };
    // Most attempts end long before the supervisor's next renewal: waking
    // it for each cost a context switch per task.
    if wake_supervisor {
        shared.inflight_cv.notify_all();
    }
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
    // A deferred attempt's thread ends (its replacement holds the slot), so
    // it claims nothing for itself.
    let next = record(shared, &claim, &workflow, &outcome, !deferred);
    if deferred {
        AfterAttempt::Retire
    } else {
        AfterAttempt::Continue(next)
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

/// Records an attempt's outcome. With `go_on` (the caller is a worker that
/// takes another attempt next), the same transaction claims that attempt,
/// unless the runner stops or a deferred attempt waits for this slot.
pub(crate) fn record(shared: &Shared, claim: &Claim, workflow: &Workflow, outcome: &AttemptOutcome, go_on: bool) -> Next {
    let seen = {
        let signal = lock(&shared.signal);
        (!signal.stopping).then_some(signal.epoch)
    };
    // A claim handed over by a new execution comes first: the worker takes
    // it from claim_or_wait.
    let go_on = go_on && seen.is_some() && shared.slot_requests.load(Ordering::SeqCst) == 0 && !shared.claims_wait();
    let references = if go_on { shared.references() } else { Vec::new() };
    let next = go_on.then(|| looking(shared, &references));
    let record_once = || shared.store.record_attempt_then(claim, &workflow.dag, outcome, now_ms(), next.as_ref());
    let mut result = record_once();
    // A database that stays away past the outage allowance: keep the outcome
    // and try again until it is back or the runner stops. Writing it late is
    // safe (the attempt number fences it: if the lease lapsed and another
    // runner took the task meanwhile, nothing is written).
    while let Err(e) = &result {
        if !e.is_outage() || shared.is_stopping() {
            break;
        }
        shared.report("recording a task attempt (the database is unreachable; trying again)", e);
        result = record_once();
    }
    match result {
        Ok(mut recorded) => {
            // A worker that goes on takes one of the readied tasks itself
            // (it claimed one already, or finds none left to claim).
            shared.wake_workers(recorded.readied.saturating_sub(u64::from(go_on)));
            // Logged before a waiting execute() returns, so that its records
            // come first.
            log_recorded(shared, claim, outcome, &recorded);
            if let Some(finished) = &recorded.finished {
                shared.execution_finished(&claim.execution_id, Some(finished));
            }
            match (recorded.next.take(), seen) {
                (Some(claimed), _) => Next::Run(shared.older_first(claimed)),
                // The transaction looked for a ready task and found none.
                (None, Some(seen)) if recorded.looked => Next::Wait(seen),
                _ => Next::Claim,
            }
        }
        // The lease will lapse and the attempt run again: at-least-once.
        Err(e) => {
            shared.report("recording a task attempt", &e);
            Next::Claim
        }
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
    if let Some(status) = recorded.finished.as_ref().map(|r| r.status) {
        let level = if status == ExecutionStatus::Failed { Level::Error } else { Level::Info };
        let message = format!("execution {execution} of workflow {workflow:?} finished: {status}");
        shared.note(level, Topic::Execution, message, execution, workflow, None);
    }
}

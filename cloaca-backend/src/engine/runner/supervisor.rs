//! The supervisor thread: renews this runner's leases and fails attempts
//! that pass their deadline, replacing the worker thread stuck in them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shared::Shared;
use super::workers::{outcome_of, record, spawn_worker};
use crate::engine::store::Claim;
use crate::engine::sync::{lock, wait_timeout};
use crate::engine::time::now_ms;
use crate::engine::workflow::{TaskFailure, Workflow};

/// Renews this runner's leases every lease/3 and fails attempts that pass
/// their deadline, replacing the worker thread stuck in them.
pub(crate) fn supervise(shared: Arc<Shared>) {
    let renew_every = shared.config.lease / 3;
    let mut next_renewal = Instant::now() + renew_every;
    let mut next_cancel_check = Instant::now() + shared.config.poll_interval;
    loop {
        // With whether the thread needs a replacement: a deferred attempt's
        // got one when it deferred.
        let mut expired: Vec<(Claim, Arc<Workflow>, Duration, bool)> = Vec::new();
        let running: Vec<i64>;
        // Attempts that can be stopped (async bodies, which enforce their own
        // deadline) are checked every poll interval for a cancellation made
        // by another process: on SQLite nothing else tells this one.
        let stoppable: Vec<(i64, String)>;
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
                        shared.withdraw_slot_request(attempt);
                        expired.push((attempt.claim.clone(), attempt.workflow.clone(), attempt.timeout, !attempt.deferred));
                    }
                }
                let any_stoppable = inflight.attempts.values().any(|a| a.deadline.is_none() && !a.cancellation.is_requested());
                if !expired.is_empty() || now >= next_renewal || (any_stoppable && now >= next_cancel_check) {
                    break;
                }
                let mut earliest = inflight
                    .attempts
                    .values()
                    .filter(|a| !a.timed_out)
                    .filter_map(|a| a.deadline)
                    .min()
                    .map_or(next_renewal, |d| d.min(next_renewal));
                if any_stoppable {
                    earliest = earliest.min(next_cancel_check);
                }
                inflight.supervisor_wakes_at = Some(earliest);
                inflight = wait_timeout(&shared.inflight_cv, inflight, earliest.saturating_duration_since(now)).0;
                inflight.supervisor_wakes_at = None;
            }
            // Each timed-out attempt's thread stops counting as a live worker
            // and gets a replacement.
            inflight.live_workers -= expired.len();
            inflight.spawn_requests += expired.iter().filter(|e| e.3).count();
            let handed = inflight.handed.iter().map(|c| c.claim.row_id);
            running = inflight.attempts.values().filter(|a| !a.timed_out).map(|a| a.claim.row_id).chain(handed).collect();
            stoppable = inflight
                .attempts
                .values()
                .filter(|a| a.deadline.is_none() && !a.cancellation.is_requested())
                .map(|a| (a.claim.row_id, a.claim.execution_id.clone()))
                .collect();
        }
        if !stoppable.is_empty() && Instant::now() >= next_cancel_check {
            let rows: Vec<i64> = stoppable.iter().map(|(row, _)| *row).collect();
            match shared.store.cancelled_rows(&rows) {
                Ok(cancelled) => {
                    for (_, execution_id) in stoppable.iter().filter(|(row, _)| cancelled.contains(row)) {
                        shared.cancel_attempts(execution_id);
                    }
                }
                Err(e) => shared.report("looking for cancelled attempts", &e),
            }
            next_cancel_check = Instant::now() + shared.config.poll_interval;
        } else if stoppable.is_empty() {
            next_cancel_check = Instant::now() + shared.config.poll_interval;
        }
        if Instant::now() >= next_renewal {
            let expires = now_ms() + shared.config.lease.as_millis() as i64;
            if let Err(e) = shared.store.renew_leases(&shared.owner, &running, expires) {
                shared.report("renewing leases", &e);
            }
            next_renewal = Instant::now() + renew_every;
        }
        for (claim, workflow, timeout, replace) in expired {
            let failure = TaskFailure::timed_out(&claim.task_id, timeout.as_secs_f64());
            let outcome = outcome_of(&claim, &workflow, Err(failure));
            record(&shared, &claim, &workflow, &outcome, false);
            if replace {
                replace_abandoned_worker(&shared);
            }
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

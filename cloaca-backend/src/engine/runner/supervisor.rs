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
                inflight = wait_timeout(&shared.inflight_cv, inflight, earliest.saturating_duration_since(now)).0;
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

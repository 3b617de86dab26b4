//! The cron thread of a runner: firing due ticks and recovering executions
//! of ticks that were lost.
//!
//! [`fire_due`] and [`recover_lost`] are each one pass at a given `now`; the
//! thread ([`run_ticker`]) calls them with the real time, and the engine
//! tests with any time they like (the injectable clock of the scheduling rules).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::error::{Error, Result};
use crate::engine::runner::shared::Shared;
use crate::engine::settings::CronConfig;
use crate::engine::store::{Fired, LostCandidate, Recovered, Store};
use crate::engine::sync::{lock, wait_timeout_while};
use crate::engine::time::{now_ms, rfc3339};
use crate::engine::workflow::Workflows;

/// Fires every due schedule of `workflows`, one transaction per schedule.
/// Returns how many root tasks became ready. A schedule that cannot be
/// planned is reported and left alone.
pub(crate) fn fire_due(
    store: &Store,
    workflows: &Workflows,
    max_catchup: usize,
    now: i64,
    report: &mut dyn FnMut(&'static str, &Error),
) -> Result<u64> {
    // A read first: most passes find nothing due, and need no write lock.
    if store.next_cron_due(&names(workflows))?.is_none_or(|due| due > now) {
        return Ok(0);
    }
    let mut exclude = Vec::new();
    let mut roots = 0;
    loop {
        match store.fire_due_schedule(workflows, max_catchup, &exclude, now)? {
            Fired::Nothing => return Ok(roots),
            Fired::Ticks { roots: r } => roots += r,
            Fired::Unplannable { schedule_id, error } => {
                report("planning a cron schedule", &error);
                exclude.push(schedule_id);
            }
        }
    }
}

/// Finds executions of ticks that made no progress for the lost threshold,
/// fails them, and starts their ticks again while attempts and age allow.
/// Returns how many root tasks became ready.
pub(crate) fn recover_lost(store: &Store, workflows: &Workflows, config: &CronConfig, now: i64) -> Result<u64> {
    let threshold_ms = config.lost_threshold.as_millis() as i64;
    let mut roots = 0;
    for lost in store.lost_cron_executions(&names(workflows), now - threshold_ms, now)? {
        let (restart, message) = recovery_decision(&lost, config, now);
        if let Recovered::Restarted { roots: r } = store.recover_lost(&lost, workflows, &message, restart, now)? {
            roots += r;
        }
    }
    Ok(roots)
}

fn names(workflows: &Workflows) -> Vec<&str> {
    workflows.keys().map(String::as_str).collect()
}

/// Whether a lost execution's tick runs again, and the error message the
/// lost execution is failed with.
fn recovery_decision(lost: &LostCandidate, config: &CronConfig, now: i64) -> (bool, String) {
    let recoveries = lost.attempt - 1;
    let age = Duration::from_millis((now - lost.scheduled_time).max(0) as u64);
    let outcome = if recoveries >= config.max_recovery_attempts {
        format!("not started again: the tick was already recovered {recoveries} time(s) (cron_max_recovery_attempts)")
    } else if age > config.max_recovery_age {
        format!("not started again: the tick is older than cron_max_recovery_age_seconds={}", config.max_recovery_age.as_secs())
    } else {
        format!("the tick was started again as attempt {}", lost.attempt + 1)
    };
    let message = format!(
        "execution lost: it made no progress for {:.0} s (no task running, ready or finishing) for cron schedule {} tick {}; {outcome}",
        config.lost_threshold.as_secs_f64(),
        lost.schedule_id,
        rfc3339(lost.scheduled_time),
    );
    (outcome.starts_with("the tick"), message)
}

/// Fires due cron ticks and recovers lost executions of ticks until the
/// runner stops; sleeps until the next tick, a schedule change in this
/// process, or the poll interval (other processes' changes).
pub(crate) fn run_ticker(shared: Arc<Shared>) {
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
        let workflows = shared.registry.snapshot();
        let store = &shared.store;
        match fire_due(store, &workflows, cron.max_catchup, now_ms(), &mut |what, e| shared.report(what, e)) {
            Ok(roots) => shared.wake_workers(roots),
            Err(e) => shared.report("firing cron ticks", &e),
        }
        if cron.enable_recovery && Instant::now() >= next_recovery {
            match recover_lost(store, &workflows, &cron, now_ms()) {
                Ok(roots) => shared.wake_workers(roots),
                Err(e) => shared.report("recovering lost cron executions", &e),
            }
            next_recovery = Instant::now() + cron.recovery_interval;
        }
        let mut wait = cron.poll_interval;
        if cron.enable_recovery {
            wait = wait.min(next_recovery.saturating_duration_since(Instant::now()));
        }
        match store.next_cron_due(&names(&workflows)) {
            Ok(Some(due)) => wait = wait.min(Duration::from_millis((due - now_ms()).max(0) as u64 + 1)),
            Ok(None) => {}
            Err(e) => shared.report("looking for due cron ticks", &e),
        }
        let signal = lock(&shared.signal);
        drop(wait_timeout_while(&shared.cron_cv, signal, wait, |s| s.cron_epoch == seen && !s.stopping));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::settings::RunnerConfig;

    fn lost(attempt: i64, scheduled_time: i64) -> LostCandidate {
        LostCandidate {
            cron_run_id: 1,
            schedule_id: "s".into(),
            workflow_name: "w".into(),
            workflow_version: "v".into(),
            scheduled_time,
            attempt,
            execution_id: "e".into(),
        }
    }

    #[test]
    fn a_lost_tick_restarts_until_attempts_or_age_run_out() {
        let config = CronConfig { max_recovery_attempts: 2, max_recovery_age: Duration::from_secs(60), ..RunnerConfig::default().cron };
        let now = 1_000_000;
        let (restart, message) = recovery_decision(&lost(1, now - 1000), &config, now);
        assert!(restart && message.contains("started again as attempt 2"), "{message}");
        assert!(recovery_decision(&lost(2, now - 1000), &config, now).0);
        let (restart, message) = recovery_decision(&lost(3, now - 1000), &config, now);
        assert!(!restart && message.contains("cron_max_recovery_attempts"), "{message}");
        let (restart, message) = recovery_decision(&lost(1, now - 61_000), &config, now);
        assert!(!restart && message.contains("cron_max_recovery_age_seconds=60"), "{message}");
        assert!(message.starts_with("execution lost"), "{message}");
    }
}

//! The cron side of a runner: firing due ticks and recovering executions
//! of ticks that were lost.
//!
//! Each function here is one pass at a given `now`; the runner's cron
//! thread calls them with the real time, and the engine tests with any time
//! they like (the injectable clock of the scheduling rules).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::cron::{Catchup, CronSchedule};
use super::dag::Dag;
use super::error::{EngineError, Result};
use super::registry::{Registry, Workflow};
use super::store::cron::{DueSchedule, Fired, LostCandidate, Recovered, TickPlanner};
use super::store::Store;
use super::time::rfc3339;

/// How a runner fires schedules and recovers lost executions.
#[derive(Clone, Debug)]
pub struct CronConfig {
    /// Fire ticks in this runner at all.
    pub enabled: bool,
    /// Longest sleep between two looks at the database (other processes'
    /// schedule changes are seen at the latest after this).
    pub poll_interval: Duration,
    /// Most due ticks of one schedule started at once; older ones are skipped.
    pub max_catchup: usize,
    pub enable_recovery: bool,
    pub recovery_interval: Duration,
    /// An execution with no progress for this long is lost.
    pub lost_threshold: Duration,
    /// Ticks older than this are not started again when lost.
    pub max_recovery_age: Duration,
    /// Times one tick is started again after being lost.
    pub max_recovery_attempts: i64,
}

impl Default for CronConfig {
    fn default() -> Self {
        CronConfig {
            enabled: true,
            poll_interval: Duration::from_secs(30),
            max_catchup: 100,
            enable_recovery: true,
            recovery_interval: Duration::from_secs(300),
            lost_threshold: Duration::from_secs(600),
            max_recovery_age: Duration::from_secs(86_400),
            max_recovery_attempts: 3,
        }
    }
}

/// The registered workflows as one pass sees them, and the tick arithmetic.
pub struct Planner {
    workflows: BTreeMap<String, Arc<Workflow>>,
    max_catchup: usize,
}

impl Planner {
    pub fn new(registry: &Registry, max_catchup: usize) -> Self {
        Planner { workflows: registry.snapshot(), max_catchup }
    }
}

impl TickPlanner for Planner {
    fn workflow_names(&self) -> Vec<&str> {
        self.workflows.keys().map(String::as_str).collect()
    }

    fn dag(&self, workflow_name: &str) -> Option<&Dag> {
        self.workflows.get(workflow_name).map(|w| &w.dag)
    }

    fn exact_dag(&self, workflow_name: &str, version: &str) -> Option<&Dag> {
        self.dag(workflow_name).filter(|dag| dag.version() == version)
    }

    fn plan(&self, due: &DueSchedule, now: i64) -> Result<Catchup> {
        CronSchedule::parse(&due.cron_expression, &due.timezone)?.catch_up(due.next_run_at, now, self.max_catchup)
    }
}

/// Fires every due schedule of the planner's workflows, one transaction per
/// schedule. Returns how many root tasks became ready. A schedule that cannot
/// be planned is reported and left alone.
pub fn fire_due(store: &dyn Store, planner: &Planner, now: i64, report: &mut dyn FnMut(&'static str, &EngineError)) -> Result<u64> {
    // A read first: most passes find nothing due, and need no write lock.
    if store.next_cron_due(&planner.workflow_names())?.is_none_or(|due| due > now) {
        return Ok(0);
    }
    let mut exclude = Vec::new();
    let mut roots = 0;
    loop {
        match store.fire_due_schedule(planner, &exclude, now)? {
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
pub fn recover_lost(store: &dyn Store, planner: &Planner, config: &CronConfig, now: i64) -> Result<u64> {
    let threshold_ms = config.lost_threshold.as_millis() as i64;
    let names = planner.workflow_names();
    let mut roots = 0;
    for lost in store.lost_cron_executions(&names, now - threshold_ms, now)? {
        let (restart, message) = recovery_decision(&lost, config, now);
        if let Recovered::Restarted { roots: r } = store.recover_lost(&lost, planner, &message, restart, now)? {
            roots += r;
        }
    }
    Ok(roots)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let config = CronConfig { max_recovery_attempts: 2, max_recovery_age: Duration::from_secs(60), ..CronConfig::default() };
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

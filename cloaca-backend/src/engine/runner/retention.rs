//! Pruning finished executions: on request ([`prune`]), and in the
//! background when `execution_retention_days` is set ([`run_pruner`]).

use std::sync::Arc;
use std::time::Duration;

use super::shared::Shared;
use crate::engine::error::Result;
use crate::engine::store::{PruneFilter, Store};
use crate::engine::sync::{lock, wait_timeout_while};
use crate::engine::time::now_ms;

/// Finished executions deleted per transaction by the background pruner.
const BACKGROUND_BATCH: i64 = 1000;
/// Bounds of the background pruner's interval (a tenth of the retention):
/// often enough that history stays near its limit, seldom enough that an idle
/// database is not kept busy.
const SHORTEST_INTERVAL: Duration = Duration::from_millis(100);
const LONGEST_INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes every execution matching `filter`, `batch_size` per transaction,
/// until none is left or `keep_going` says no (checked between batches).
/// Returns how many were deleted.
pub(crate) fn prune(store: &Store, filter: &PruneFilter, batch_size: i64, keep_going: &dyn Fn() -> bool) -> Result<u64> {
    let mut deleted = 0;
    loop {
        let batch = store.prune_batch(filter, batch_size)?;
        deleted += batch.deleted;
        // A short batch means nothing more matched; an empty one that picked
        // rows means another process deleted them first: done either way.
        if batch.picked < batch_size as u64 || batch.deleted == 0 || !keep_going() {
            return Ok(deleted);
        }
    }
}

/// The interval of the background pruner for a retention period.
fn interval(retention: Duration) -> Duration {
    (retention / 10).clamp(SHORTEST_INTERVAL, LONGEST_INTERVAL)
}

/// Prunes executions that finished longer than `retention` ago, then again
/// every [`interval`], until the runner stops.
pub(crate) fn run_pruner(shared: Arc<Shared>, retention: Duration) {
    let every = interval(retention);
    loop {
        let filter = PruneFilter { finished_before: now_ms() - retention.as_millis() as i64, status: None, workflow_name: None };
        if let Err(e) = prune(&shared.store, &filter, BACKGROUND_BATCH, &|| !shared.is_stopping()) {
            shared.report("pruning finished executions", &e);
        }
        let signal = lock(&shared.signal);
        if wait_timeout_while(&shared.retention_cv, signal, every, |s| !s.stopping).stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_a_tenth_of_the_retention_within_bounds() {
        assert_eq!(interval(Duration::from_secs(30 * 86400)), LONGEST_INTERVAL);
        assert_eq!(interval(Duration::from_secs(600)), Duration::from_secs(60));
        assert_eq!(interval(Duration::from_millis(10)), SHORTEST_INTERVAL);
    }
}

//! Event triggers: functions polled on an interval whose fire starts a
//! workflow ([`definition`]), the runner threads that register and poll
//! them under a lease held by one runner at a time ([`service`]), and the
//! trigger methods of a runner ([`Triggers`], from `Runner::triggers()`).
//!
//! Exactly one runner across all processes on a database polls a trigger:
//! the one holding the lease on its row. A fire is one transaction fenced
//! on that lease, so every recorded fire started exactly one execution.

mod definition;
mod service;
#[cfg(test)]
mod tests;

pub(crate) use definition::{parse_poll_interval, Definitions, PollOutcome, TriggerDef, TriggerForm, TriggerPoll, DEFAULT_POLL_INTERVAL};
pub(crate) use service::TriggerService;

use crate::engine::error::Result;
use crate::engine::runner::shared::Shared;
use crate::engine::store::{TriggerRecord, TriggerRun};
use crate::engine::time::now_ms;

/// The event triggers of a runner's database.
pub(crate) struct Triggers<'r> {
    shared: &'r Shared,
}

impl<'r> Triggers<'r> {
    pub(crate) fn new(shared: &'r Shared) -> Self {
        Triggers { shared }
    }

    /// Every trigger newest first, paged; with `enabled_only`, every enabled
    /// one oldest first (the paging is not applied, as in the original bindings).
    pub(crate) fn list(&self, enabled_only: bool, limit: i64, offset: i64) -> Result<Vec<TriggerRecord>> {
        self.shared.store.list_triggers(enabled_only, limit, offset)
    }

    pub(crate) fn get(&self, trigger_name: &str) -> Result<Option<TriggerRecord>> {
        self.shared.store.get_trigger(trigger_name)
    }

    /// The owner reads the flag before each poll; an unknown name is a no-op.
    pub(crate) fn set_enabled(&self, trigger_name: &str, enabled: bool) -> Result<()> {
        self.shared.ensure_running()?;
        self.shared.store.set_trigger_enabled(trigger_name, enabled, now_ms())
    }

    /// The executions its fires started, newest first; `[]` for an unknown name.
    pub(crate) fn history(&self, trigger_name: &str, limit: i64, offset: i64) -> Result<Vec<TriggerRun>> {
        self.shared.store.trigger_history(trigger_name, limit, offset)
    }
}

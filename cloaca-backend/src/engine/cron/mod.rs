//! Cron: expressions and their tick arithmetic ([`expression`]), schedule
//! management ([`Schedules`]), and the runner's cron thread ([`ticker`]).
//!
//! `expression` is plain arithmetic the store uses when it fires a tick;
//! the other two sit on top of the store and the runner.

mod expression;
mod schedules;
mod ticker;

pub(crate) use expression::CronSchedule;
pub(crate) use schedules::Schedules;
pub(crate) use ticker::run_ticker;
#[cfg(test)]
pub(crate) use ticker::{fire_due, recover_lost};

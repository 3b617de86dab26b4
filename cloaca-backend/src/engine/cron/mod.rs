//! Cron: expressions and their tick arithmetic ([`expression`]), what a
//! tick's execution receives ([`input`]), schedule management
//! ([`Schedules`]), and the runner's cron thread ([`ticker`]).
//!
//! `expression` and `input` are plain logic the store uses when it fires a
//! tick; the other two sit on top of the store and the runner.

mod expression;
mod input;
mod schedules;
mod ticker;

pub(crate) use expression::CronSchedule;
pub(crate) use input::{tick_input, TickSource};
pub(crate) use schedules::Schedules;
pub(crate) use ticker::run_ticker;
#[cfg(test)]
pub(crate) use ticker::{fire_due, recover_lost};

//! Cron schedules: parsing an expression in a time zone and the tick
//! arithmetic of firing and catching up.
//!
//! Everything here takes the current time as an argument instead of reading
//! the clock, so the rules (DST, catch-up limits, lost-execution age) are
//! tested with any instant a test chooses; the runner passes the real time.

use std::collections::VecDeque;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::engine::error::{Error, Result};

/// What expressions are accepted, for error messages.
pub(crate) const ACCEPTED_EXPRESSIONS: &str = "5 fields (minute hour day-of-month month day-of-week, e.g. \"0 3 * * MON-FRI\"), \
     6 fields with seconds first (e.g. \"*/10 * * * * *\"), or @hourly, @daily, @weekly, @monthly, @yearly";

/// Missed ticks counted one by one at most; a schedule idle for longer is
/// moved straight to its next tick after now (see [`CronSchedule::catch_up`]).
pub(crate) const MAX_COUNTED_TICKS: u64 = 100_000;

/// A validated cron expression in an IANA time zone.
#[derive(Clone, Debug)]
pub(crate) struct CronSchedule {
    cron: Cron,
    timezone: Tz,
}

/// The ticks a schedule fires now, and where it goes next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Catchup {
    /// Scheduled times (unix ms) to start an execution for, oldest first.
    pub(crate) ticks: Vec<i64>,
    /// Due ticks not run because of the catch-up limit.
    pub(crate) skipped: i64,
    /// The first tick after `now`.
    pub(crate) next_run_at: i64,
}

impl CronSchedule {
    /// Parses `expression` in `timezone`, refusing expressions that never fire.
    pub(crate) fn parse(expression: &str, timezone: &str) -> Result<Self> {
        let timezone: Tz = timezone.parse().map_err(|_| {
            Error::InvalidSchedule(format!(
                "timezone {timezone:?} is not an IANA time zone name; use one such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\""
            ))
        })?;
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(expression).map_err(|e| {
            Error::InvalidSchedule(format!("cron expression {expression:?} is not valid ({e}); use {ACCEPTED_EXPRESSIONS}"))
        })?;
        let schedule = CronSchedule { cron, timezone };
        // An expression such as "0 0 30 2 *" parses but has no tick at all.
        schedule
            .next_after(0)
            .map_err(|_| Error::InvalidSchedule(format!("cron expression {expression:?} never fires (no date matches it)")))?;
        Ok(schedule)
    }

    fn local(&self, ms: i64) -> Result<DateTime<Tz>> {
        Ok(Utc
            .timestamp_millis_opt(ms)
            .single()
            .ok_or_else(|| Error::InvalidSchedule(format!("time {ms} ms is out of range")))?
            .with_timezone(&self.timezone))
    }

    fn no_tick(&self, e: croner::errors::CronError) -> Error {
        Error::InvalidSchedule(format!("no tick of {:?} in range: {e}", self.cron.pattern.to_string()))
    }

    /// The first tick strictly after `after_ms` (unix ms), in whole seconds.
    pub(crate) fn next_after(&self, after_ms: i64) -> Result<i64> {
        let next = self.cron.find_next_occurrence(&self.local(after_ms)?, false).map_err(|e| self.no_tick(e))?;
        Ok(next.timestamp_millis())
    }

    /// The last tick at or before `at_ms`.
    fn previous_at_or_before(&self, at_ms: i64) -> Result<i64> {
        let whole_second = at_ms.div_euclid(1000) * 1000;
        let previous = self.cron.find_previous_occurrence(&self.local(whole_second)?, true).map_err(|e| self.no_tick(e))?;
        Ok(previous.timestamp_millis())
    }

    /// The ticks from `first_due` (itself a tick) up to `now` inclusive: all
    /// of them when at most `keep`, otherwise the most recent `keep`, the
    /// rest counted as skipped.
    pub(crate) fn catch_up(&self, first_due: i64, now: i64, keep: usize) -> Result<Catchup> {
        let mut ticks = VecDeque::with_capacity(keep.min(1024));
        let mut due = 0u64;
        let mut tick = first_due;
        while tick <= now {
            due += 1;
            if due > MAX_COUNTED_TICKS {
                // Counting on would only cost time: take the last `keep`
                // ticks before now and report the count as a lower bound.
                return self.recent_ticks(first_due, now, keep);
            }
            if ticks.len() == keep {
                ticks.pop_front();
            }
            if keep > 0 {
                ticks.push_back(tick);
            }
            tick = self.next_after(tick)?;
        }
        let ticks: Vec<i64> = ticks.into();
        Ok(Catchup { skipped: due as i64 - ticks.len() as i64, ticks, next_run_at: tick })
    }

    /// The last `keep` ticks in `first_due..=now`, found backwards from now.
    fn recent_ticks(&self, first_due: i64, now: i64, keep: usize) -> Result<Catchup> {
        let mut ticks = Vec::with_capacity(keep);
        let mut bound = now;
        while ticks.len() < keep {
            let tick = self.previous_at_or_before(bound)?;
            if tick < first_due {
                break;
            }
            ticks.push(tick);
            bound = tick - 1000;
        }
        ticks.reverse();
        Ok(Catchup { skipped: MAX_COUNTED_TICKS as i64 - ticks.len() as i64, ticks, next_run_at: self.next_after(now)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: &str, y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        let tz: Tz = tz.parse().unwrap();
        tz.with_ymd_and_hms(y, mo, d, h, mi, s).earliest().unwrap().timestamp_millis()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        at("UTC", y, mo, d, h, mi, s)
    }

    #[test]
    fn five_and_six_field_expressions_and_nicknames() {
        let daily = CronSchedule::parse("0 3 * * *", "Europe/Berlin").unwrap();
        // 03:00 in Berlin in winter is 02:00 UTC.
        assert_eq!(daily.next_after(utc(2026, 11, 23, 12, 0, 0)).unwrap(), utc(2026, 11, 24, 2, 0, 0));
        let seconds = CronSchedule::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(seconds.next_after(utc(2026, 1, 1, 0, 0, 3)).unwrap(), utc(2026, 1, 1, 0, 0, 10));
        // Strictly after, also from a time between whole seconds.
        let every = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(every.next_after(utc(2026, 1, 1, 0, 0, 0) + 500).unwrap(), utc(2026, 1, 1, 0, 0, 1));
        assert_eq!(every.next_after(utc(2026, 1, 1, 0, 0, 0)).unwrap(), utc(2026, 1, 1, 0, 0, 1));
        let hourly = CronSchedule::parse("@hourly", "UTC").unwrap();
        assert_eq!(hourly.next_after(utc(2026, 1, 1, 0, 30, 0)).unwrap(), utc(2026, 1, 1, 1, 0, 0));
        let weekdays = CronSchedule::parse("0 9 * * MON-FRI", "UTC").unwrap();
        // 2026-11-21 is a Saturday: the next weekday 09:00 is Monday the 23rd.
        assert_eq!(weekdays.next_after(utc(2026, 11, 21, 10, 0, 0)).unwrap(), utc(2026, 11, 23, 9, 0, 0));
    }

    #[test]
    fn day_of_month_and_day_of_week_match_either_as_in_vixie_cron() {
        // 2026-11-13 is a Friday; the next day that is a 13th or a Friday after it is Friday the 20th.
        let s = CronSchedule::parse("0 0 13 * FRI", "UTC").unwrap();
        assert_eq!(s.next_after(utc(2026, 11, 12, 0, 0, 0)).unwrap(), utc(2026, 11, 13, 0, 0, 0));
        assert_eq!(s.next_after(utc(2026, 11, 13, 0, 0, 0)).unwrap(), utc(2026, 11, 20, 0, 0, 0));
        assert_eq!(s.next_after(utc(2026, 12, 12, 0, 0, 0)).unwrap(), utc(2026, 12, 13, 0, 0, 0), "a Sunday the 13th");
        // 7 is Sunday too, and names are not case-sensitive.
        let sunday = CronSchedule::parse("0 0 * * 7", "UTC").unwrap();
        assert_eq!(sunday.next_after(utc(2026, 11, 23, 0, 0, 0)).unwrap(), utc(2026, 11, 29, 0, 0, 0));
        let lower = CronSchedule::parse("0 0 * jan,jul mon", "UTC").unwrap();
        assert_eq!(lower.next_after(utc(2026, 11, 23, 0, 0, 0)).unwrap(), utc(2027, 1, 4, 0, 0, 0));
    }

    #[test]
    fn invalid_expressions_and_time_zones_are_refused_with_the_value() {
        for bad in ["", "* * * *", "* * * * * * *", "61 * * * *", "a b c d e", "0 0 30 2 *"] {
            let error = CronSchedule::parse(bad, "UTC").unwrap_err();
            assert!(matches!(error, Error::InvalidSchedule(_)), "{bad:?}: {error:?}");
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
        for bad in ["Mars/Olympus", "", "utc+1"] {
            let error = CronSchedule::parse("* * * * *", bad).unwrap_err();
            assert!(error.to_string().contains(&format!("timezone {bad:?}")), "{error}");
        }
    }

    #[test]
    fn a_tick_in_the_spring_forward_gap_runs_right_after_it() {
        // New York skipped 02:00-03:00 on 2026-03-08.
        let s = CronSchedule::parse("30 2 * * *", "America/New_York").unwrap();
        let first = s.next_after(at("America/New_York", 2026, 3, 7, 12, 0, 0)).unwrap();
        assert_eq!(first, at("America/New_York", 2026, 3, 8, 3, 0, 0));
        assert_eq!(s.next_after(first).unwrap(), at("America/New_York", 2026, 3, 9, 2, 30, 0));
    }

    #[test]
    fn a_fixed_tick_in_the_fall_back_overlap_runs_once() {
        // 01:30 happened twice in New York on 2026-11-01.
        let s = CronSchedule::parse("30 1 * * *", "America/New_York").unwrap();
        let first = s.next_after(at("America/New_York", 2026, 10, 31, 12, 0, 0)).unwrap();
        assert_eq!(first, utc(2026, 11, 1, 5, 30, 0), "the first 01:30 (EDT)");
        assert_eq!(s.next_after(first).unwrap(), utc(2026, 11, 2, 6, 30, 0), "then the next day, in EST");
    }

    #[test]
    fn an_interval_keeps_its_pace_in_absolute_time_across_fall_back() {
        let s = CronSchedule::parse("*/30 * * * *", "America/New_York").unwrap();
        let mut t = utc(2026, 11, 1, 4, 50, 0);
        let mut ticks = Vec::new();
        for _ in 0..5 {
            t = s.next_after(t).unwrap();
            ticks.push(t);
        }
        let gaps: Vec<i64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps, vec![30 * 60_000; 4], "{ticks:?}");
    }

    #[test]
    fn catch_up_keeps_the_most_recent_ticks_and_counts_the_rest() {
        let s = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        let first = utc(2026, 1, 1, 0, 0, 0);
        let now = utc(2026, 1, 1, 9, 30, 0);
        // Ten due ticks: 00:00 .. 09:00.
        let all = s.catch_up(first, now, 100).unwrap();
        assert_eq!(all.ticks.len(), 10);
        assert_eq!((all.skipped, all.next_run_at), (0, utc(2026, 1, 1, 10, 0, 0)));
        let limited = s.catch_up(first, now, 3).unwrap();
        assert_eq!(limited.ticks, vec![utc(2026, 1, 1, 7, 0, 0), utc(2026, 1, 1, 8, 0, 0), utc(2026, 1, 1, 9, 0, 0)]);
        assert_eq!(limited.skipped, 7);
        // Nothing due yet.
        let early = s.catch_up(utc(2026, 1, 1, 10, 0, 0), now, 3).unwrap();
        assert_eq!((early.ticks.len(), early.skipped, early.next_run_at), (0, 0, utc(2026, 1, 1, 10, 0, 0)));
        // A tick exactly at now is due.
        let exact = s.catch_up(utc(2026, 1, 1, 9, 0, 0), utc(2026, 1, 1, 9, 0, 0), 3).unwrap();
        assert_eq!(exact.ticks, vec![utc(2026, 1, 1, 9, 0, 0)]);
    }

    #[test]
    fn a_schedule_idle_for_very_long_is_not_counted_forever() {
        let s = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let first = utc(2000, 1, 1, 0, 0, 0);
        let now = utc(2026, 1, 1, 0, 0, 0);
        let c = s.catch_up(first, now, 2).unwrap();
        assert_eq!(c.next_run_at, now + 1000);
        assert_eq!(c.ticks, vec![now - 1000, now], "the most recent ticks run");
        assert_eq!(c.skipped as u64 + c.ticks.len() as u64, MAX_COUNTED_TICKS, "a lower bound is reported");
    }
}

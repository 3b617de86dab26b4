//! Retry policy of a task: how many times, how long to wait, and for which errors.
//!
//! One type serves both ways of giving a policy: the `retry_*` keywords of
//! `@task` (a number of retries after the first attempt, jitter that shortens
//! the delay) and a `RetryPolicy` object (a total number of attempts, jitter
//! around the capped delay). The fields say which behaviour applies.

use std::str::FromStr;

use crate::engine::error::Error;

/// How the delay grows from one retry to the next. `d` is the initial delay,
/// `n` the number of the failed attempt (from 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Backoff {
    /// `d` every time.
    Fixed,
    /// `d * n * multiplier`.
    Linear { multiplier: f64 },
    /// `d * multiplier * base^(n-1)`.
    Exponential { base: f64, multiplier: f64 },
}

impl Backoff {
    /// The accepted spellings of `retry_backoff`, for error messages.
    pub(crate) const ACCEPTED: &'static str = "\"fixed\", \"linear\" or \"exponential\"";
    /// `"linear"`: the delay grows by `d` each time.
    pub(crate) const LINEAR: Backoff = Backoff::Linear { multiplier: 1.0 };
    /// `"exponential"`: the delay doubles each time.
    pub(crate) const EXPONENTIAL: Backoff = Backoff::Exponential { base: 2.0, multiplier: 1.0 };

    /// The text used in the workflow version: the keyword spellings for the
    /// keyword strategies (so that their versions stay what they were),
    /// the parameters otherwise.
    fn fingerprint(self) -> String {
        match self {
            Backoff::Fixed => "fixed".into(),
            b if b == Backoff::LINEAR => "linear".into(),
            b if b == Backoff::EXPONENTIAL => "exponential".into(),
            Backoff::Linear { multiplier } => format!("linear({multiplier:?})"),
            Backoff::Exponential { base, multiplier } => format!("exponential({base:?},{multiplier:?})"),
        }
    }

    /// The undelayed, uncapped delay in milliseconds after the `n`-th failure.
    fn raw_ms(self, delay_ms: u64, n: u32) -> f64 {
        let d = delay_ms as f64;
        let n = f64::from(n.max(1));
        match self {
            Backoff::Fixed => d,
            Backoff::Linear { multiplier } => d * n * multiplier,
            Backoff::Exponential { base, multiplier } => d * multiplier * base.powf(n - 1.0),
        }
    }
}

impl FromStr for Backoff {
    type Err = Error;

    /// Parses the `retry_backoff` argument of `@task`.
    fn from_str(value: &str) -> Result<Self, Error> {
        match value {
            "fixed" => Ok(Backoff::Fixed),
            "linear" => Ok(Backoff::LINEAR),
            "exponential" => Ok(Backoff::EXPONENTIAL),
            other => Err(Error::InvalidWorkflow(format!("retry_backoff={other:?} is not accepted: use {}", Backoff::ACCEPTED))),
        }
    }
}

/// How a delay is randomised so that tasks failing together do not retry in
/// lock-step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Jitter {
    /// The delay as computed.
    Off,
    /// The capped delay times a factor in [0.5, 1.0]: never above the cap
    /// (the `retry_jitter=True` of the keywords).
    Shorten,
    /// The capped delay times a factor in [0.75, 1.25]: up to 25 % above the
    /// cap (a `RetryPolicy` with jitter).
    Spread,
}

/// Words whose presence in a failure's text makes it transient.
const TRANSIENT_WORDS: [&str; 5] = ["timeout", "connection", "network", "temporary", "unavailable"];

/// Which failures are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RetryCondition {
    /// Every exception.
    AllErrors,
    /// No exception: one attempt only.
    Never,
    /// Timeouts, connection and OS errors, and failures whose text names a
    /// transient cause ([`TRANSIENT_WORDS`]).
    TransientOnly,
    /// Failures whose `"Type: message"` text contains one of these
    /// substrings, compared case-insensitively.
    Patterns(Vec<String>),
}

impl RetryCondition {
    /// The accepted spellings of `retry_condition`, for error messages.
    const ACCEPTED: &'static str = "\"all\" (or \"all_errors\"), \"never\", \"transient\" (or \"transient_only\"), or \
                                    comma-separated substrings of the error text";

    /// Parses the `retry_condition` argument of `@task`; anything that is not
    /// a keyword is a comma-separated list of substring patterns, none empty.
    pub(crate) fn parse(value: &str) -> Result<Self, Error> {
        match value {
            "all" | "all_errors" => Ok(RetryCondition::AllErrors),
            "never" => Ok(RetryCondition::Never),
            "transient" | "transient_only" => Ok(RetryCondition::TransientOnly),
            patterns => {
                let list: Vec<String> = patterns.split(',').map(|p| p.trim().to_string()).collect();
                if list.iter().any(String::is_empty) {
                    return Err(Error::InvalidWorkflow(format!(
                        "retry_condition={value:?} is not accepted: a pattern between commas is empty; use {}",
                        RetryCondition::ACCEPTED
                    )));
                }
                Ok(RetryCondition::Patterns(list))
            }
        }
    }

    /// Whether a failure of this kind may be retried.
    pub(crate) fn allows(&self, failure: &TaskFailure) -> bool {
        match self {
            RetryCondition::AllErrors => true,
            RetryCondition::Never => false,
            RetryCondition::TransientOnly => {
                let text = failure.summary().to_lowercase();
                failure.transient || TRANSIENT_WORDS.iter().any(|w| text.contains(w))
            }
            RetryCondition::Patterns(patterns) => {
                let text = failure.summary().to_lowercase();
                patterns.iter().any(|p| text.contains(&p.to_lowercase()))
            }
        }
    }

    /// The text used in the workflow version: what the keywords gave
    /// before pattern lists existed, so that their workflows keep their
    /// versions, and a JSON list for several patterns (or one with a comma).
    fn fingerprint(&self) -> String {
        match self {
            RetryCondition::AllErrors => "all_errors".into(),
            RetryCondition::Never => "never".into(),
            RetryCondition::TransientOnly => "transient_only".into(),
            RetryCondition::Patterns(patterns) => match patterns.as_slice() {
                [one] if !one.contains(',') => format!("pattern:{one}"),
                _ => format!("patterns:{}", serde_json::to_string(patterns).expect("a list of strings serialises")),
            },
        }
    }
}

/// A failed attempt of a task: what the task raised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TaskFailure {
    /// The exception's type name, e.g. `ValueError`.
    pub(crate) error_type: String,
    /// `str()` of the exception.
    pub(crate) message: String,
    /// The formatted traceback, when there is one.
    pub(crate) traceback: Option<String>,
    /// A timeout or connection/OS error (retried by `transient_only`).
    pub(crate) transient: bool,
}

impl TaskFailure {
    /// `"Type: message"`, the text retry patterns match against.
    pub(crate) fn summary(&self) -> String {
        if self.message.is_empty() {
            self.error_type.clone()
        } else {
            format!("{}: {}", self.error_type, self.message)
        }
    }

    /// The failure recorded, without running it again, for a task whose
    /// runner died in it `interruptions` times in a row.
    pub(crate) fn interrupted(task_id: &str, interruptions: i64) -> Self {
        TaskFailure {
            error_type: "RunnerLost".into(),
            message: format!(
                "task '{task_id}' was interrupted {interruptions} times: each runner that ran it died or lost its \
                 lease before recording an outcome, so it is not run again"
            ),
            traceback: None,
            transient: false,
        }
    }

    /// The failure of an attempt that ran past its timeout.
    pub(crate) fn timed_out(task_id: &str, seconds: f64) -> Self {
        TaskFailure {
            error_type: "TimeoutError".into(),
            message: format!("task '{task_id}' timed out after {seconds} s"),
            traceback: None,
            transient: true,
        }
    }
}

/// The complete retry policy of one task.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt (total runs = retries + 1).
    pub(crate) retries: u32,
    pub(crate) backoff: Backoff,
    /// The initial delay `d` of the backoff formulas.
    pub(crate) delay_ms: u64,
    /// The cap of the computed delay (before jitter).
    pub(crate) max_delay_ms: u64,
    pub(crate) jitter: Jitter,
    pub(crate) condition: RetryCondition,
}

impl Default for RetryPolicy {
    /// What `@task` without retry keywords gives: one attempt.
    fn default() -> Self {
        RetryPolicy {
            retries: 0,
            backoff: Backoff::EXPONENTIAL,
            delay_ms: 1000,
            max_delay_ms: 30_000,
            jitter: Jitter::Shorten,
            condition: RetryCondition::AllErrors,
        }
    }
}

impl RetryPolicy {
    /// The defaults of a `RetryPolicy` object: up to 3 attempts, exponential
    /// from 1 s, capped at 60 s, jitter around the delay, every error.
    pub(crate) fn object_default() -> Self {
        RetryPolicy {
            retries: 2,
            backoff: Backoff::EXPONENTIAL,
            delay_ms: 1000,
            max_delay_ms: 60_000,
            jitter: Jitter::Spread,
            condition: RetryCondition::AllErrors,
        }
    }

    /// The most attempts the task gets.
    pub(crate) fn max_attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// Whether the task should run again after its `failures`-th failure.
    pub(crate) fn should_retry(&self, failures: u32, failure: &TaskFailure) -> bool {
        failures <= self.retries && self.condition.allows(failure)
    }

    /// The delay before the next attempt after the `failure_number`-th failure
    /// (1-based), in whole milliseconds (truncated), before jitter, capped at
    /// `max_delay_ms`.
    pub(crate) fn base_delay_ms(&self, failure_number: u32) -> u64 {
        // `as` saturates: a huge or infinite value becomes u64::MAX, NaN 0.
        let raw = self.backoff.raw_ms(self.delay_ms, failure_number) as u64;
        raw.min(self.max_delay_ms)
    }

    /// The delay with jitter applied, in (fractional) milliseconds.
    pub(crate) fn jittered_delay_ms(&self, failure_number: u32) -> f64 {
        let base = self.base_delay_ms(failure_number) as f64;
        match self.jitter {
            Jitter::Off => base,
            Jitter::Shorten => base * (0.5 + fastrand::f64() * 0.5),
            Jitter::Spread => base * (0.75 + fastrand::f64() * 0.5),
        }
    }

    /// The delay with jitter applied, in whole milliseconds.
    pub(crate) fn delay_ms(&self, failure_number: u32) -> u64 {
        self.jittered_delay_ms(failure_number) as u64
    }

    /// A stable text of the policy, part of the workflow version. The policies
    /// the keywords could already give keep the text they had.
    pub(crate) fn fingerprint(&self) -> String {
        let jitter = match self.jitter {
            Jitter::Off => "false",
            Jitter::Shorten => "true",
            Jitter::Spread => "spread",
        };
        format!(
            "retries={};backoff={};delay={};max={};jitter={jitter};condition={}",
            self.retries,
            self.backoff.fingerprint(),
            self.delay_ms,
            self.max_delay_ms,
            self.condition.fingerprint()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(error_type: &str, message: &str, transient: bool) -> TaskFailure {
        TaskFailure { error_type: error_type.into(), message: message.into(), traceback: None, transient }
    }

    fn policy(backoff: Backoff) -> RetryPolicy {
        RetryPolicy { retries: 5, backoff, delay_ms: 100, max_delay_ms: 1000, jitter: Jitter::Off, ..Default::default() }
    }

    #[test]
    fn backoff_formulas_and_cap() {
        let fixed: Vec<u64> = (1..=4).map(|n| policy(Backoff::Fixed).base_delay_ms(n)).collect();
        let linear: Vec<u64> = (1..=4).map(|n| policy(Backoff::LINEAR).base_delay_ms(n)).collect();
        let exp: Vec<u64> = (1..=6).map(|n| policy(Backoff::EXPONENTIAL).base_delay_ms(n)).collect();
        assert_eq!(fixed, [100, 100, 100, 100]);
        assert_eq!(linear, [100, 200, 300, 400]);
        assert_eq!(exp, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy(Backoff::EXPONENTIAL).base_delay_ms(200), 1000, "huge exponents saturate at the cap");
        assert_eq!(policy(Backoff::EXPONENTIAL).base_delay_ms(u32::MAX), 1000);
    }

    #[test]
    fn multipliers_and_bases_follow_the_formulas_truncated_to_milliseconds() {
        let linear = policy(Backoff::Linear { multiplier: 1.5 });
        assert_eq!((1..=4).map(|n| linear.base_delay_ms(n)).collect::<Vec<_>>(), [150, 300, 450, 600]);
        let exp = RetryPolicy { delay_ms: 10, ..policy(Backoff::Exponential { base: 3.0, multiplier: 0.25 }) };
        // 2.5, 7.5, 22.5, 67.5 ms, truncated.
        assert_eq!((1..=4).map(|n| exp.base_delay_ms(n)).collect::<Vec<_>>(), [2, 7, 22, 67]);
        let zero = policy(Backoff::Exponential { base: 0.0, multiplier: 1.0 });
        assert_eq!((1..=3).map(|n| zero.base_delay_ms(n)).collect::<Vec<_>>(), [100, 0, 0]);
    }

    #[test]
    fn jitter_shortens_or_spreads_around_the_capped_delay() {
        let shorten = RetryPolicy { jitter: Jitter::Shorten, ..policy(Backoff::Fixed) };
        let spread = RetryPolicy { jitter: Jitter::Spread, max_delay_ms: 80, ..policy(Backoff::Fixed) };
        for _ in 0..1000 {
            let d = shorten.delay_ms(1);
            assert!((50..=100).contains(&d), "{d}");
            let s = spread.jittered_delay_ms(1);
            assert!((60.0..=100.0).contains(&s), "capped at 80 first, then within ±25 %: {s}");
        }
        assert_eq!(policy(Backoff::Fixed).delay_ms(3), 100);
    }

    #[test]
    fn the_object_default_is_three_attempts_exponential_from_one_second() {
        let p = RetryPolicy { jitter: Jitter::Off, ..RetryPolicy::object_default() };
        assert_eq!(p.max_attempts(), 3);
        assert_eq!((1..=8).map(|n| p.base_delay_ms(n)).collect::<Vec<_>>(), [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
        let err = failure("ValueError", "bad", false);
        assert!(p.should_retry(1, &err) && p.should_retry(2, &err) && !p.should_retry(3, &err));
    }

    #[test]
    fn retries_count_failures_and_respect_the_condition() {
        let p = RetryPolicy { retries: 2, ..Default::default() };
        let err = failure("ValueError", "bad", false);
        assert!(p.should_retry(1, &err));
        assert!(p.should_retry(2, &err));
        assert!(!p.should_retry(3, &err));

        let never = RetryPolicy { condition: RetryCondition::Never, ..p.clone() };
        assert!(!never.should_retry(1, &err));

        let transient = RetryPolicy { condition: RetryCondition::TransientOnly, ..p.clone() };
        assert!(!transient.should_retry(1, &err));
        assert!(transient.should_retry(1, &failure("ConnectionError", "reset", true)));

        let pattern = RetryPolicy { condition: RetryCondition::parse("rate limit").unwrap(), ..p };
        assert!(pattern.should_retry(1, &failure("RuntimeError", "rate limit hit", false)));
        assert!(!pattern.should_retry(1, &err));
    }

    #[test]
    fn transient_is_the_type_rule_or_one_of_five_words() {
        let t = RetryCondition::TransientOnly;
        assert!(t.allows(&failure("OSError", "disk full", true)), "the type rule");
        assert!(t.allows(&failure("RuntimeError", "Service Unavailable", false)));
        for word in TRANSIENT_WORDS {
            assert!(t.allows(&failure("ValueError", &format!("a {} problem", word.to_uppercase()), false)), "{word}");
        }
        assert!(t.allows(&failure("SocketTimeout", "", false)), "the type name counts too");
        assert!(!t.allows(&failure("ValueError", "busy, overloaded, rate limit", false)));
    }

    #[test]
    fn conditions_parse_both_vocabularies_and_pattern_lists() {
        assert_eq!(RetryCondition::parse("all").unwrap(), RetryCondition::AllErrors);
        assert_eq!(RetryCondition::parse("all_errors").unwrap(), RetryCondition::AllErrors);
        assert_eq!(RetryCondition::parse("never").unwrap(), RetryCondition::Never);
        assert_eq!(RetryCondition::parse("transient").unwrap(), RetryCondition::TransientOnly);
        assert_eq!(RetryCondition::parse("transient_only").unwrap(), RetryCondition::TransientOnly);
        let list = RetryCondition::parse(" Rate Limit ,KeyError").unwrap();
        assert_eq!(list, RetryCondition::Patterns(vec!["Rate Limit".into(), "KeyError".into()]));
        assert!(list.allows(&failure("RuntimeError", "RATE LIMIT hit", false)));
        assert!(list.allows(&failure("keyerror", "'k'", false)));
        assert!(!list.allows(&failure("ValueError", "limit", false)));
        for bad in ["", "a,,b", "a, "] {
            let e = RetryCondition::parse(bad).unwrap_err().to_string();
            assert!(e.contains("empty") && e.contains("transient_only"), "{e}");
        }
    }

    #[test]
    fn fingerprints_keep_the_keyword_texts_and_tell_parameters_apart() {
        assert_eq!(
            RetryPolicy::default().fingerprint(),
            "retries=0;backoff=exponential;delay=1000;max=30000;jitter=true;condition=all_errors"
        );
        let texts: Vec<String> = [
            RetryPolicy::default(),
            RetryPolicy::object_default(),
            RetryPolicy { jitter: Jitter::Spread, ..Default::default() },
            RetryPolicy { backoff: Backoff::Exponential { base: 3.0, multiplier: 1.0 }, ..Default::default() },
            RetryPolicy { backoff: Backoff::Exponential { base: 2.0, multiplier: 1.5 }, ..Default::default() },
            RetryPolicy { backoff: Backoff::Linear { multiplier: 2.0 }, ..Default::default() },
            RetryPolicy { condition: RetryCondition::TransientOnly, ..Default::default() },
            RetryPolicy { condition: RetryCondition::Patterns(vec!["a,b".into()]), ..Default::default() },
            RetryPolicy { condition: RetryCondition::Patterns(vec!["a".into(), "b".into()]), ..Default::default() },
        ]
        .iter()
        .map(RetryPolicy::fingerprint)
        .collect();
        let distinct: std::collections::BTreeSet<&String> = texts.iter().collect();
        assert_eq!(distinct.len(), texts.len(), "{texts:#?}");
        let condition = |c: &str| RetryPolicy { condition: RetryCondition::parse(c).unwrap(), ..Default::default() }.fingerprint();
        assert!(condition("transient").ends_with(";condition=transient_only"));
        assert!(condition("rate limit").ends_with(";condition=pattern:rate limit"), "one pattern: the text it always had");
        assert!(condition("a, b").ends_with(r#";condition=patterns:["a","b"]"#));
    }

    #[test]
    fn bad_spellings_are_rejected_with_the_accepted_values() {
        let e = "sometimes".parse::<Backoff>().unwrap_err().to_string();
        assert!(e.contains("\"sometimes\"") && e.contains("exponential"), "{e}");
        assert!(RetryCondition::parse("").is_err());
    }
}

//! Retry policy of a task: how many times, how long to wait, and for which errors.

use std::fmt;
use std::str::FromStr;

use crate::engine::error::Error;

/// How the delay grows from one retry to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backoff {
    /// The same delay every time.
    Fixed,
    /// `delay * n` for the n-th failure.
    Linear,
    /// `delay * 2^(n-1)` for the n-th failure.
    Exponential,
}

impl Backoff {
    /// The accepted spellings, for error messages.
    pub(crate) const ACCEPTED: &'static str = "\"fixed\", \"linear\" or \"exponential\"";

    /// The name used in the API and in the workflow version.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backoff::Fixed => "fixed",
            Backoff::Linear => "linear",
            Backoff::Exponential => "exponential",
        }
    }
}

impl FromStr for Backoff {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        match value {
            "fixed" => Ok(Backoff::Fixed),
            "linear" => Ok(Backoff::Linear),
            "exponential" => Ok(Backoff::Exponential),
            other => Err(Error::InvalidWorkflow(format!("retry_backoff={other:?} is not accepted: use {}", Backoff::ACCEPTED))),
        }
    }
}

/// Which failures are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RetryCondition {
    /// Every exception.
    AllErrors,
    /// No exception: one attempt only.
    Never,
    /// Timeouts and connection / OS errors only.
    TransientOnly,
    /// Exceptions whose `"Type: message"` text contains this substring.
    Pattern(String),
}

impl RetryCondition {
    /// Parses the `retry_condition` argument of `@task`; anything that is not
    /// a keyword is a substring pattern, which must not be empty.
    pub(crate) fn parse(value: &str) -> Result<Self, Error> {
        match value {
            "all_errors" => Ok(RetryCondition::AllErrors),
            "never" => Ok(RetryCondition::Never),
            "transient_only" => Ok(RetryCondition::TransientOnly),
            "" => Err(Error::InvalidWorkflow(
                "retry_condition=\"\" is not accepted: use \"all_errors\", \"never\", \"transient_only\" \
                 or a non-empty substring of the error text"
                    .into(),
            )),
            pattern => Ok(RetryCondition::Pattern(pattern.to_string())),
        }
    }

    /// Whether a failure of this kind may be retried.
    pub(crate) fn allows(&self, failure: &TaskFailure) -> bool {
        match self {
            RetryCondition::AllErrors => true,
            RetryCondition::Never => false,
            RetryCondition::TransientOnly => failure.transient,
            RetryCondition::Pattern(p) => failure.summary().contains(p.as_str()),
        }
    }
}

impl fmt::Display for RetryCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryCondition::AllErrors => f.write_str("all_errors"),
            RetryCondition::Never => f.write_str("never"),
            RetryCondition::TransientOnly => f.write_str("transient_only"),
            RetryCondition::Pattern(p) => write!(f, "pattern:{p}"),
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
    pub(crate) delay_ms: u64,
    pub(crate) max_delay_ms: u64,
    pub(crate) jitter: bool,
    pub(crate) condition: RetryCondition,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 0,
            backoff: Backoff::Exponential,
            delay_ms: 1000,
            max_delay_ms: 30_000,
            jitter: true,
            condition: RetryCondition::AllErrors,
        }
    }
}

impl RetryPolicy {
    /// Whether the task should run again after its `failures`-th failure.
    pub(crate) fn should_retry(&self, failures: u32, failure: &TaskFailure) -> bool {
        failures <= self.retries && self.condition.allows(failure)
    }

    /// The delay before the next attempt after the `failure_number`-th failure
    /// (1-based), before jitter, capped at `max_delay_ms`.
    pub(crate) fn base_delay_ms(&self, failure_number: u32) -> u64 {
        let n = u64::from(failure_number.max(1));
        let raw = match self.backoff {
            Backoff::Fixed => self.delay_ms,
            Backoff::Linear => self.delay_ms.saturating_mul(n),
            Backoff::Exponential => self.delay_ms.saturating_mul(1u64.checked_shl((n - 1) as u32).unwrap_or(u64::MAX)),
        };
        raw.min(self.max_delay_ms)
    }

    /// The delay with jitter applied: a random factor in [0.5, 1.0] so that
    /// many tasks failing together do not retry in lock-step.
    pub(crate) fn delay_ms(&self, failure_number: u32) -> u64 {
        let base = self.base_delay_ms(failure_number);
        if self.jitter {
            (base as f64 * (0.5 + fastrand::f64() * 0.5)) as u64
        } else {
            base
        }
    }

    /// A stable text of the policy, part of the workflow version.
    pub(crate) fn fingerprint(&self) -> String {
        format!(
            "retries={};backoff={};delay={};max={};jitter={};condition={}",
            self.retries,
            self.backoff.name(),
            self.delay_ms,
            self.max_delay_ms,
            self.jitter,
            self.condition
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
        RetryPolicy { retries: 5, backoff, delay_ms: 100, max_delay_ms: 1000, jitter: false, ..Default::default() }
    }

    #[test]
    fn backoff_formulas_and_cap() {
        let fixed: Vec<u64> = (1..=4).map(|n| policy(Backoff::Fixed).base_delay_ms(n)).collect();
        let linear: Vec<u64> = (1..=4).map(|n| policy(Backoff::Linear).base_delay_ms(n)).collect();
        let exp: Vec<u64> = (1..=6).map(|n| policy(Backoff::Exponential).base_delay_ms(n)).collect();
        assert_eq!(fixed, [100, 100, 100, 100]);
        assert_eq!(linear, [100, 200, 300, 400]);
        assert_eq!(exp, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy(Backoff::Exponential).base_delay_ms(200), 1000, "huge exponents saturate at the cap");
    }

    #[test]
    fn jitter_stays_between_half_and_full_delay() {
        let p = RetryPolicy { jitter: true, ..policy(Backoff::Fixed) };
        for _ in 0..1000 {
            let d = p.delay_ms(1);
            assert!((50..=100).contains(&d), "{d}");
        }
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
    fn bad_spellings_are_rejected_with_the_accepted_values() {
        let e = "sometimes".parse::<Backoff>().unwrap_err().to_string();
        assert!(e.contains("\"sometimes\"") && e.contains("exponential"), "{e}");
        assert!(RetryCondition::parse("").is_err());
    }
}

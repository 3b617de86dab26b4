//! Retry value objects: `RetryPolicy`, `RetryPolicyBuilder`, `BackoffStrategy`
//! and `RetryCondition`, for `@cloaca.task(retry=...)` and
//! `cloaca.set_default_retry_policy(...)`. None of them has a constructor;
//! each is made by its static methods and never changes once made.

use std::sync::Mutex;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::engine::{lock, Backoff, Jitter, RetryCondition, RetryPolicy};

/// The policy `set_default_retry_policy` set: used by tasks decorated
/// without any retry keyword (None: ours, one attempt).
static DEFAULT_POLICY: Mutex<Option<RetryPolicy>> = Mutex::new(None);

/// The policy a task decorated without retry keywords gets now, if one was set.
pub(crate) fn default_policy() -> Option<RetryPolicy> {
    lock(&DEFAULT_POLICY).clone()
}

/// A retry policy: how many attempts, how long to wait, which errors.
/// Made by `RetryPolicy.builder()...build()` or `RetryPolicy.default()`.
#[pyclass(name = "RetryPolicy", module = "cloaca", frozen)]
pub struct PyRetryPolicy {
    /// As given (0 and 1 both mean a single attempt).
    max_attempts: u32,
    initial_delay: f64,
    max_delay: f64,
    /// What the engine applies.
    policy: RetryPolicy,
}

impl PyRetryPolicy {
    pub(crate) fn policy(&self) -> RetryPolicy {
        self.policy.clone()
    }
}

#[pymethods]
impl PyRetryPolicy {
    /// A builder with every field unset.
    #[staticmethod]
    fn builder() -> PyRetryPolicyBuilder {
        PyRetryPolicyBuilder::default()
    }

    /// Up to 3 attempts, exponential backoff from 1 s, capped at 60 s, with jitter, on every error.
    #[staticmethod]
    fn default() -> PyRetryPolicy {
        PyRetryPolicyBuilder::default().build()
    }

    /// The total number of attempts (0 and 1 both mean one).
    #[getter]
    fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The initial delay, in seconds.
    #[getter]
    fn initial_delay(&self) -> f64 {
        self.initial_delay
    }

    /// The cap of the computed delay, in seconds (jitter may exceed it by up to 25 %).
    #[getter]
    fn max_delay(&self) -> f64 {
        self.max_delay
    }

    /// Whether delays are randomised by a factor in [0.75, 1.25].
    #[getter]
    fn with_jitter(&self) -> bool {
        self.policy.jitter != Jitter::Off
    }

    /// `attempt < max_attempts`; `error_type` is not looked at.
    #[pyo3(signature = (attempt, error_type))]
    fn should_retry(&self, attempt: i64, error_type: &str) -> bool {
        let _ = error_type;
        attempt < i64::from(self.max_attempts)
    }

    /// The delay in seconds after attempt `attempt` (from 1) failed, with jitter when enabled.
    fn calculate_delay(&self, attempt: i64) -> PyResult<f64> {
        if attempt < 1 {
            return Err(PyValueError::new_err(format!("attempt={attempt} is not accepted: attempts are numbered from 1 (the first run)")));
        }
        let n = u32::try_from(attempt).unwrap_or(u32::MAX);
        Ok(self.policy.jittered_delay_ms(n) / 1000.0)
    }

    fn __repr__(&self) -> String {
        format!(
            "RetryPolicy(max_attempts={}, initial_delay={}s, max_delay={}s, jitter={})",
            self.max_attempts,
            self.initial_delay,
            self.max_delay,
            self.with_jitter()
        )
    }
}

/// Builds a `RetryPolicy`; each method returns a new builder.
#[pyclass(name = "RetryPolicyBuilder", module = "cloaca", frozen)]
#[derive(Clone, Default)]
pub struct PyRetryPolicyBuilder {
    max_attempts: Option<u32>,
    initial_delay: Option<f64>,
    max_delay: Option<f64>,
    backoff: Option<Backoff>,
    condition: Option<RetryCondition>,
    jitter: Option<bool>,
}

/// Seconds as given, checked: finite and 0 or more.
fn seconds(method: &str, value: f64) -> PyResult<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(PyValueError::new_err(format!(
            "{method}(delay_seconds={value}) is not accepted: delay_seconds must be a finite number of seconds, 0 or more"
        )))
    }
}

/// Whole milliseconds of a checked number of seconds (truncated; `as` saturates).
fn millis(seconds: f64) -> u64 {
    (seconds * 1000.0) as u64
}

#[pymethods]
impl PyRetryPolicyBuilder {
    /// The total number of attempts (0 and 1 both mean one).
    fn max_attempts(&self, attempts: i64) -> PyResult<Self> {
        let attempts = u32::try_from(attempts).map_err(|_| {
            PyValueError::new_err(format!(
                "max_attempts(attempts={attempts}) is not accepted: attempts must be 0 or more (and below 2**32)"
            ))
        })?;
        Ok(PyRetryPolicyBuilder { max_attempts: Some(attempts), ..self.clone() })
    }

    /// The initial delay, in seconds.
    fn initial_delay(&self, delay_seconds: f64) -> PyResult<Self> {
        Ok(PyRetryPolicyBuilder { initial_delay: Some(seconds("initial_delay", delay_seconds)?), ..self.clone() })
    }

    /// The cap of the computed delay, in seconds.
    fn max_delay(&self, delay_seconds: f64) -> PyResult<Self> {
        Ok(PyRetryPolicyBuilder { max_delay: Some(seconds("max_delay", delay_seconds)?), ..self.clone() })
    }

    /// How the delay grows from one retry to the next.
    fn backoff_strategy(&self, strategy: PyRef<'_, PyBackoffStrategy>) -> Self {
        PyRetryPolicyBuilder { backoff: Some(strategy.backoff), ..self.clone() }
    }

    /// Which errors are retried (replaces an earlier condition).
    fn retry_condition(&self, condition: PyRef<'_, PyRetryCondition>) -> Self {
        PyRetryPolicyBuilder { condition: Some(condition.condition.clone()), ..self.clone() }
    }

    /// Whether delays are randomised by a factor in [0.75, 1.25].
    fn with_jitter(&self, jitter: bool) -> Self {
        PyRetryPolicyBuilder { jitter: Some(jitter), ..self.clone() }
    }

    /// The policy; unset fields take the defaults of `RetryPolicy.default()`.
    fn build(&self) -> PyRetryPolicy {
        let defaults = RetryPolicy::object_default();
        let max_attempts = self.max_attempts.unwrap_or(defaults.max_attempts());
        let initial_delay = self.initial_delay.unwrap_or(defaults.delay_ms as f64 / 1000.0);
        let max_delay = self.max_delay.unwrap_or(defaults.max_delay_ms as f64 / 1000.0);
        let policy = RetryPolicy {
            retries: max_attempts.max(1) - 1,
            backoff: self.backoff.unwrap_or(defaults.backoff),
            delay_ms: millis(initial_delay),
            max_delay_ms: millis(max_delay),
            jitter: if self.jitter == Some(false) { Jitter::Off } else { defaults.jitter },
            condition: self.condition.clone().unwrap_or(defaults.condition),
        };
        PyRetryPolicy { max_attempts, initial_delay, max_delay, policy }
    }

    fn __repr__(&self) -> String {
        let mut set = Vec::new();
        if let Some(v) = self.max_attempts {
            set.push(format!("max_attempts={v}"));
        }
        if let Some(v) = self.initial_delay {
            set.push(format!("initial_delay={v}s"));
        }
        if let Some(v) = self.max_delay {
            set.push(format!("max_delay={v}s"));
        }
        if let Some(v) = self.backoff {
            set.push(format!("backoff_strategy={}", backoff_repr(v)));
        }
        if let Some(v) = &self.condition {
            set.push(format!("retry_condition={}", condition_repr(v)));
        }
        if let Some(v) = self.jitter {
            set.push(format!("jitter={v}"));
        }
        format!("RetryPolicyBuilder({})", set.join(", "))
    }
}

/// How the delay grows: `fixed()`, `linear(multiplier)` or `exponential(base, multiplier=None)`.
#[pyclass(name = "BackoffStrategy", module = "cloaca", frozen)]
pub struct PyBackoffStrategy {
    backoff: Backoff,
}

/// A multiplier or base, checked: finite and 0 or more.
fn factor(method: &str, name: &str, value: f64) -> PyResult<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(PyValueError::new_err(format!(
            "BackoffStrategy.{method}({name}={value}) is not accepted: {name} must be a finite number, 0 or more"
        )))
    }
}

fn backoff_repr(backoff: Backoff) -> String {
    match backoff {
        Backoff::Fixed => "BackoffStrategy.Fixed".into(),
        Backoff::Linear { multiplier } => format!("BackoffStrategy.Linear(multiplier={multiplier})"),
        Backoff::Exponential { base, multiplier } => format!("BackoffStrategy.Exponential(base={base}, multiplier={multiplier})"),
    }
}

#[pymethods]
impl PyBackoffStrategy {
    /// The initial delay every time.
    #[staticmethod]
    fn fixed() -> Self {
        PyBackoffStrategy { backoff: Backoff::Fixed }
    }

    /// initial delay × attempt × multiplier.
    #[staticmethod]
    fn linear(multiplier: f64) -> PyResult<Self> {
        Ok(PyBackoffStrategy { backoff: Backoff::Linear { multiplier: factor("linear", "multiplier", multiplier)? } })
    }

    /// initial delay × multiplier × base^(attempt − 1); `multiplier` None means 1.
    #[staticmethod]
    #[pyo3(signature = (base, multiplier=None))]
    fn exponential(base: f64, multiplier: Option<f64>) -> PyResult<Self> {
        let base = factor("exponential", "base", base)?;
        let multiplier = factor("exponential", "multiplier", multiplier.unwrap_or(1.0))?;
        Ok(PyBackoffStrategy { backoff: Backoff::Exponential { base, multiplier } })
    }

    fn __repr__(&self) -> String {
        backoff_repr(self.backoff)
    }
}

/// Which errors are retried: `never()`, `transient_only()`, `all_errors()` or `error_pattern(patterns)`.
#[pyclass(name = "RetryCondition", module = "cloaca", frozen)]
pub struct PyRetryCondition {
    condition: RetryCondition,
}

fn condition_repr(condition: &RetryCondition) -> String {
    match condition {
        RetryCondition::Never => "RetryCondition.Never".into(),
        RetryCondition::TransientOnly => "RetryCondition.TransientOnly".into(),
        RetryCondition::AllErrors => "RetryCondition.AllErrors".into(),
        RetryCondition::Patterns(patterns) => format!("RetryCondition.ErrorPattern(patterns={patterns:?})"),
    }
}

#[pymethods]
impl PyRetryCondition {
    /// No retry.
    #[staticmethod]
    fn never() -> Self {
        PyRetryCondition { condition: RetryCondition::Never }
    }

    /// Timeouts, connection and OS errors, and errors whose text names a transient cause.
    #[staticmethod]
    fn transient_only() -> Self {
        PyRetryCondition { condition: RetryCondition::TransientOnly }
    }

    /// Every error.
    #[staticmethod]
    fn all_errors() -> Self {
        PyRetryCondition { condition: RetryCondition::AllErrors }
    }

    /// Errors whose `"ExcType: message"` contains one of `patterns` (case-insensitive).
    #[staticmethod]
    fn error_pattern(patterns: Vec<String>) -> Self {
        PyRetryCondition { condition: RetryCondition::Patterns(patterns) }
    }

    fn __repr__(&self) -> String {
        condition_repr(&self.condition)
    }
}

/// The policy of `retry=` (or `set_default_retry_policy`): a `RetryPolicy`;
/// TypeError for anything else, a builder in particular.
pub(crate) fn extract_policy(argument: &str, value: &Bound<'_, PyAny>) -> PyResult<RetryPolicy> {
    if let Ok(policy) = value.cast::<PyRetryPolicy>() {
        return Ok(policy.get().policy());
    }
    if value.is_instance_of::<PyRetryPolicyBuilder>() {
        return Err(PyTypeError::new_err(format!(
            "{argument} takes a RetryPolicy, not a RetryPolicyBuilder: call .build() on the builder"
        )));
    }
    let type_name = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
    Err(PyTypeError::new_err(format!(
        "{argument} takes a RetryPolicy (RetryPolicy.builder()...build() or RetryPolicy.default()), not {type_name}"
    )))
}

/// Sets the retry policy of tasks decorated from now on without any retry
/// keyword; None restores the default (one attempt, no retry).
#[pyfunction]
#[pyo3(signature = (policy))]
pub fn set_default_retry_policy(policy: Option<Bound<'_, PyAny>>) -> PyResult<()> {
    let policy = match policy {
        Some(p) => Some(extract_policy("set_default_retry_policy(policy)", &p)?),
        None => None,
    };
    *lock(&DEFAULT_POLICY) = policy;
    Ok(())
}

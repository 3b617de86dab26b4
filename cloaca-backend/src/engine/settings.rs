//! The runner settings, described once in [`SETTINGS`]: name, kind of
//! value, default, and what the setting does. `DefaultRunnerConfig`, its
//! validation, its `to_dict()`, `DefaultRunnerConfig.settings()` (from which
//! the docs' table is checked) and [`RunnerConfig::default`] all read this table.

use std::collections::BTreeMap;
use std::time::Duration;

use super::backend::Backend;
use super::error::Error;

/// What values a setting takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An int above 0.
    PositiveInt,
    /// An int or float above 0 (seconds).
    PositiveSeconds,
    /// Positive seconds, or None for "no limit".
    OptionalSeconds,
    /// Seconds, 0 or more.
    NonNegativeSeconds,
    /// An int or float above 0 (minutes).
    PositiveMinutes,
    /// An int or float above 0 (days), or None for "keep forever".
    OptionalDays,
    Bool,
}

impl Kind {
    /// The accepted values, as error messages and the docs say them.
    pub(crate) fn accepted(self) -> &'static str {
        match self {
            Kind::PositiveInt => "an int above 0",
            Kind::PositiveSeconds => "a number of seconds above 0",
            Kind::OptionalSeconds => "a number of seconds above 0, or None for no limit",
            Kind::NonNegativeSeconds => "a number of seconds, 0 or more",
            Kind::PositiveMinutes => "a number of minutes above 0",
            Kind::OptionalDays => "a number of days above 0, or None to keep every execution",
            Kind::Bool => "True or False",
        }
    }

    /// The accepted range in short ("> 0"), as the first words of the message say it.
    pub(crate) fn rule(self) -> &'static str {
        match self {
            Kind::PositiveInt | Kind::PositiveSeconds | Kind::PositiveMinutes => "> 0",
            Kind::OptionalSeconds | Kind::OptionalDays => "> 0 or None",
            Kind::NonNegativeSeconds => ">= 0",
            Kind::Bool => "True or False",
        }
    }

    /// The Python type annotation of the setting.
    pub(crate) fn python_type(self) -> &'static str {
        match self {
            Kind::PositiveInt => "int",
            Kind::PositiveSeconds | Kind::PositiveMinutes | Kind::NonNegativeSeconds => "float",
            Kind::OptionalSeconds | Kind::OptionalDays => "float | None",
            Kind::Bool => "bool",
        }
    }
}

/// A setting's value, as the caller gave it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    Number(f64),
    Bool(bool),
    None,
}

impl Value {
    fn seconds(self) -> Option<Duration> {
        match self {
            Value::Int(i) => Some(Duration::from_secs_f64(i as f64)),
            Value::Number(f) => Some(Duration::from_secs_f64(f)),
            Value::Bool(_) | Value::None => None,
        }
    }
}

/// Why a value was refused.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Not a value of the setting's type at all (Python raises TypeError).
    WrongType,
    /// Of the right type, outside the accepted range.
    OutOfRange(Error),
}

/// One runner setting.
#[derive(Debug)]
pub(crate) struct Setting {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) default: Value,
    /// The default on SQLite, where it differs (else `default`).
    pub(crate) sqlite_default: Value,
    pub(crate) doc: &'static str,
}

impl Setting {
    /// The default on `backend`.
    pub(crate) fn default_on(&self, backend: Backend) -> Value {
        match backend {
            Backend::Sqlite => self.sqlite_default,
            Backend::Postgres => self.default,
        }
    }

    /// The default on the installed backend.
    pub(crate) fn current_default(&self) -> Value {
        self.default_on(Backend::CURRENT)
    }

    /// Checks `value` for this setting; `shown` is the value as the caller
    /// wrote it, for the message.
    #[cfg(test)]
    pub(crate) fn check(&self, value: Value, shown: &str) -> Result<(), Refused> {
        self.check_as(self.name, value, shown)
    }

    /// [`Setting::check`], the message naming the setting `name` (an alias
    /// when the caller used one).
    pub(crate) fn check_as(&self, name: &'static str, value: Value, shown: &str) -> Result<(), Refused> {
        let out_of_range = || {
            Refused::OutOfRange(Error::InvalidSetting {
                name,
                value: shown.to_string(),
                rule: self.kind.rule(),
                accepted: self.kind.accepted(),
            })
        };
        match (self.kind, value) {
            (Kind::Bool, Value::Bool(_)) | (Kind::OptionalSeconds | Kind::OptionalDays, Value::None) => Ok(()),
            (Kind::PositiveInt, Value::Int(i)) => {
                if i > 0 {
                    Ok(())
                } else {
                    Err(out_of_range())
                }
            }
            (
                Kind::PositiveSeconds | Kind::OptionalSeconds | Kind::PositiveMinutes | Kind::NonNegativeSeconds | Kind::OptionalDays,
                Value::Int(_) | Value::Number(_),
            ) => {
                let number = match value {
                    Value::Int(i) => i as f64,
                    Value::Number(f) => f,
                    _ => unreachable!("matched above"),
                };
                // Durations beyond ~30,000 years overflow arithmetic on instants.
                let lowest_accepted = self.kind == Kind::NonNegativeSeconds && number == 0.0;
                let seconds = if self.kind == Kind::OptionalDays { number * 86400.0 } else { number };
                if number.is_finite() && (number > 0.0 || lowest_accepted) && seconds < 1e12 {
                    Ok(())
                } else {
                    Err(out_of_range())
                }
            }
            _ => Err(Refused::WrongType),
        }
    }
}

const fn setting(name: &'static str, kind: Kind, default: Value, doc: &'static str) -> Setting {
    Setting { name, kind, default, sqlite_default: default, doc }
}

/// Every runner setting, in the order `to_dict()` lists them.
pub(crate) const SETTINGS: &[Setting] = &[
    setting("max_concurrent_tasks", Kind::PositiveInt, Value::Int(4), "Worker threads of the runner: how many task attempts run at once."),
    setting(
        "executor_poll_interval_ms",
        Kind::PositiveInt,
        Value::Int(100),
        "Longest wait of an idle worker before it looks at the database again (news from this process, and on PostgreSQL from others, wakes it at once).",
    ),
    setting(
        "scheduler_poll_interval_ms",
        Kind::PositiveInt,
        Value::Int(100),
        "Accepted for compatibility with programs written for the original bindings; readiness is decided in the transaction that completes a task, so nothing polls for it.",
    ),
    setting(
        "task_timeout_seconds",
        Kind::PositiveSeconds,
        Value::Int(300),
        "Time limit of one attempt of a task that sets none itself; an attempt past it fails (and is retried if its policy allows).",
    ),
    setting(
        "pipeline_timeout_seconds",
        Kind::OptionalSeconds,
        Value::Int(3600),
        "Time limit of execute(): past it the execution is failed and its unfinished tasks skipped. None waits as long as it takes. Also named workflow_timeout_seconds.",
    ),
    setting(
        "database_outage_timeout_seconds",
        Kind::NonNegativeSeconds,
        Value::Int(60),
        "How long a call or a worker waits out a database that cannot be reached (restarting, failing over, locked by another process) before it raises DatabaseUnavailableError; 0 fails at once.",
    ),
    // 1 on SQLite, as the original bindings report there (SQLite uses one connection).
    Setting {
        name: "db_pool_size",
        kind: Kind::PositiveInt,
        default: Value::Int(10),
        sqlite_default: Value::Int(1),
        doc: "Most connections a PostgreSQL runner opens (SQLite uses one).",
    },
    setting(
        "enable_recovery",
        Kind::Bool,
        Value::Bool(true),
        "Claim tasks whose lease expired (their runner died), so interrupted executions finish.",
    ),
    setting("enable_cron_scheduling", Kind::Bool, Value::Bool(true), "Run a cron thread in this runner that starts executions of due schedules."),
    setting(
        "enable_trigger_scheduling",
        Kind::Bool,
        Value::Bool(true),
        "Register the @trigger functions of this process and poll those whose lease this runner holds (one runner per trigger at a time, across processes).",
    ),
    setting(
        "cron_poll_interval_seconds",
        Kind::PositiveSeconds,
        Value::Int(30),
        "Longest sleep of the cron thread; schedule changes in this process wake it at once, other processes' are seen within this interval.",
    ),
    setting(
        "cron_max_catchup_executions",
        Kind::PositiveInt,
        Value::Int(100),
        "Most missed ticks of one schedule started after downtime (the most recent ones); older ones are counted as skipped.",
    ),
    setting(
        "cron_enable_recovery",
        Kind::Bool,
        Value::Bool(true),
        "Look for executions of ticks that made no progress and fail them, starting the tick again within the limits below.",
    ),
    setting("cron_recovery_interval_seconds", Kind::PositiveSeconds, Value::Int(300), "How often the cron thread looks for lost executions."),
    setting(
        "cron_lost_threshold_minutes",
        Kind::PositiveMinutes,
        Value::Int(10),
        "An execution of a tick with no task running, ready or finishing for this long is lost (a float is accepted).",
    ),
    setting(
        "cron_max_recovery_age_seconds",
        Kind::PositiveSeconds,
        Value::Int(86400),
        "A lost execution of a tick older than this is failed but not started again.",
    ),
    setting("cron_max_recovery_attempts", Kind::PositiveInt, Value::Int(3), "Times one tick is started again after being lost."),
    setting(
        "task_lease_seconds",
        Kind::PositiveSeconds,
        Value::Int(30),
        "How long a claimed attempt's lease lasts without renewal (renewed every third of it); after a runner dies, its tasks run again once their leases expire.",
    ),
    setting(
        "execution_retention_days",
        Kind::OptionalDays,
        Value::None,
        "Delete finished (Completed, Failed, Cancelled) executions, with their tasks, events and cron history, that finished longer ago than this, in the background; None keeps every execution (a float is accepted).",
    ),
];

/// Other names of settings (alias, setting): the names the current original
/// bindings use. An alias is the same setting under a second name: the
/// constructor, the attributes and `to_dict()` accept and show both.
pub(crate) const ALIASES: &[(&str, &str)] = &[("workflow_timeout_seconds", "pipeline_timeout_seconds")];

/// The setting called `name`, or of which `name` is an alias.
pub(crate) fn find(name: &str) -> Option<&'static Setting> {
    let name = ALIASES.iter().find(|(alias, _)| *alias == name).map_or(name, |(_, setting)| *setting);
    SETTINGS.iter().find(|s| s.name == name)
}

/// The aliases of the setting `name`.
pub(crate) fn aliases_of(name: &str) -> impl Iterator<Item = &'static str> + '_ {
    ALIASES.iter().filter(move |(_, setting)| *setting == name).map(|(alias, _)| *alias)
}

/// How a runner behaves.
#[derive(Clone, Debug)]
pub(crate) struct RunnerConfig {
    pub(crate) max_concurrent_tasks: usize,
    /// Fallback re-check interval when nothing signals.
    pub(crate) poll_interval: Duration,
    /// Default per-attempt time limit for tasks without their own.
    pub(crate) task_timeout: Duration,
    /// Limit for `execute`; `None` waits as long as it takes.
    pub(crate) pipeline_timeout: Option<Duration>,
    /// Claim tasks whose lease expired (their runner died).
    pub(crate) enable_recovery: bool,
    /// How long a claim holds without renewal.
    pub(crate) lease: Duration,
    /// Most connections (PostgreSQL).
    pub(crate) pool_size: usize,
    /// How long an operation is run again while the database cannot be reached.
    pub(crate) database_outage_timeout: Duration,
    /// Finished executions older than this are pruned in the background;
    /// `None` keeps them forever.
    pub(crate) retention: Option<Duration>,
    pub(crate) cron: CronConfig,
    /// Register and poll this process's event triggers.
    pub(crate) triggers_enabled: bool,
}

/// How a runner fires schedules and recovers lost executions.
#[derive(Clone, Debug)]
pub(crate) struct CronConfig {
    /// Fire ticks in this runner at all.
    pub(crate) enabled: bool,
    /// Longest sleep between two looks at the database (other processes'
    /// schedule changes are seen at the latest after this).
    pub(crate) poll_interval: Duration,
    /// Most due ticks of one schedule started at once; older ones are skipped.
    pub(crate) max_catchup: usize,
    pub(crate) enable_recovery: bool,
    pub(crate) recovery_interval: Duration,
    /// An execution with no progress for this long is lost.
    pub(crate) lost_threshold: Duration,
    /// Ticks older than this are not started again when lost.
    pub(crate) max_recovery_age: Duration,
    /// Times one tick is started again after being lost.
    pub(crate) max_recovery_attempts: i64,
}

impl RunnerConfig {
    /// The configuration of `values` (checked values by setting name; a
    /// setting missing from it takes its default).
    pub(crate) fn from_values(values: &BTreeMap<&str, Value>) -> Self {
        let value = |name: &str| {
            let setting = find(name).expect("a setting of the table");
            values.get(name).copied().unwrap_or(setting.current_default())
        };
        let int = |name: &str| match value(name) {
            Value::Int(i) => i,
            other => unreachable!("{name} is an int setting, checked: {other:?}"),
        };
        let flag = |name: &str| matches!(value(name), Value::Bool(true));
        let seconds = |name: &str| value(name).seconds();
        let required = |name: &str| seconds(name).expect("a positive number, checked");
        RunnerConfig {
            max_concurrent_tasks: int("max_concurrent_tasks") as usize,
            poll_interval: Duration::from_millis(int("executor_poll_interval_ms") as u64),
            task_timeout: required("task_timeout_seconds"),
            pipeline_timeout: seconds("pipeline_timeout_seconds"),
            enable_recovery: flag("enable_recovery"),
            lease: required("task_lease_seconds"),
            pool_size: int("db_pool_size") as usize,
            database_outage_timeout: seconds("database_outage_timeout_seconds").expect("a number, checked"),
            retention: seconds("execution_retention_days").map(|d| d * 86400),
            cron: CronConfig {
                enabled: flag("enable_cron_scheduling"),
                poll_interval: required("cron_poll_interval_seconds"),
                max_catchup: int("cron_max_catchup_executions") as usize,
                enable_recovery: flag("cron_enable_recovery"),
                recovery_interval: required("cron_recovery_interval_seconds"),
                lost_threshold: required("cron_lost_threshold_minutes") * 60,
                max_recovery_age: required("cron_max_recovery_age_seconds"),
                max_recovery_attempts: int("cron_max_recovery_attempts"),
            },
            triggers_enabled: flag("enable_trigger_scheduling"),
        }
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig::from_values(&BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_passes_its_own_check_and_every_setting_is_read() {
        for setting in SETTINGS {
            setting.check(setting.default, "default").unwrap_or_else(|e| panic!("{}: {e:?}", setting.name));
            setting.check(setting.sqlite_default, "default").unwrap_or_else(|e| panic!("{}: {e:?}", setting.name));
            assert!(!setting.doc.is_empty(), "{} has a doc line", setting.name);
        }
        let config = RunnerConfig::default();
        assert_eq!(config.max_concurrent_tasks, 4);
        assert_eq!(config.pipeline_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(config.cron.lost_threshold, Duration::from_secs(600));
        assert_eq!(config.lease, Duration::from_secs(30));
        assert_eq!(config.retention, None);
        let days = BTreeMap::from([("execution_retention_days", Value::Number(0.5))]);
        assert_eq!(RunnerConfig::from_values(&days).retention, Some(Duration::from_secs(43200)));
        let retention = find("execution_retention_days").unwrap();
        assert!(retention.check(Value::None, "None").is_ok());
        assert!(matches!(retention.check(Value::Int(0), "0"), Err(Refused::OutOfRange(_))));
        assert!(matches!(retention.check(Value::Number(1e8), "1e8"), Err(Refused::OutOfRange(_))));
        let pool = find("db_pool_size").unwrap();
        assert_eq!((pool.default_on(Backend::Sqlite), pool.default_on(Backend::Postgres)), (Value::Int(1), Value::Int(10)));
    }

    #[test]
    fn an_alias_names_the_same_setting() {
        assert_eq!(find("workflow_timeout_seconds").unwrap().name, "pipeline_timeout_seconds");
        assert_eq!(aliases_of("pipeline_timeout_seconds").collect::<Vec<_>>(), ["workflow_timeout_seconds"]);
        assert_eq!(aliases_of("db_pool_size").count(), 0);
    }

    #[test]
    fn values_out_of_range_are_refused_with_the_setting_and_what_it_accepts() {
        let timeout = find("task_timeout_seconds").unwrap();
        for bad in [Value::Int(0), Value::Number(-1.5), Value::Number(f64::NAN), Value::Number(1e13)] {
            match timeout.check(bad, "x") {
                Err(Refused::OutOfRange(e)) => {
                    assert_eq!(
                        e.to_string(),
                        "Invalid configuration: task_timeout_seconds must be > 0; \
                         task_timeout_seconds=x is not accepted: task_timeout_seconds must be a number of seconds above 0"
                    )
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(timeout.check(Value::Bool(true), "True"), Err(Refused::WrongType)));
        assert!(matches!(timeout.check(Value::None, "None"), Err(Refused::WrongType)));
        assert!(find("pipeline_timeout_seconds").unwrap().check(Value::None, "None").is_ok());
        assert!(matches!(find("max_concurrent_tasks").unwrap().check(Value::Number(2.0), "2.0"), Err(Refused::WrongType)));
    }
}

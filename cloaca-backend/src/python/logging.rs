//! Reports through Python's `logging`: the `cloaca` logger and its children
//! (`cloaca.execution` for starts and ends, `cloaca.task` for attempts,
//! `cloaca.runner` for background problems, `cloaca.workflow` for the
//! builder's warnings), with a `NullHandler`, so a
//! program that configures no logging sees nothing and one that does sees
//! cloaca's records. Each record carries `execution_id`, `workflow` and
//! `task` as attributes (logging's `extra`).

use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use crate::engine::{now_ms, Level, Note, Reporter, Topic};

/// The loggers, once the program has imported `logging`. Until then no
/// handler can exist, so no record could be seen; and importing `logging`
/// for cloaca alone took a seventh of a new process's time to its first
/// result. The first use after the import adds a `NullHandler` to the
/// `cloaca` logger (a library's manners: the program decides where records
/// go), as an import of `logging` by cloaca itself would have.
fn loggers(py: Python<'_>) -> PyResult<Option<&Loggers>> {
    static LOGGERS: PyOnceLock<Loggers> = PyOnceLock::new();
    if let Some(loggers) = LOGGERS.get(py) {
        return Ok(Some(loggers));
    }
    if !py.import("sys")?.getattr("modules")?.contains("logging")? {
        return Ok(None);
    }
    LOGGERS.get_or_try_init(py, || install(py)).map(Some)
}

/// Adds the `NullHandler` and fetches the loggers (logging keeps one object per name).
fn install(py: Python<'_>) -> PyResult<Loggers> {
    let logging = py.import("logging")?;
    let handler = logging.getattr("NullHandler")?.call0()?;
    logging.call_method1("getLogger", ("cloaca",))?.call_method1("addHandler", (handler,))?;
    let get = |name: &str| -> PyResult<Py<PyAny>> { Ok(logging.call_method1("getLogger", (name,))?.unbind()) };
    Ok(Loggers {
        runner: get("cloaca.runner")?,
        execution: get("cloaca.execution")?,
        task: get("cloaca.task")?,
        workflow: get("cloaca.workflow")?,
    })
}

/// The loggers of the runner's topics, and `cloaca.workflow` for the builder's warnings.
struct Loggers {
    runner: Py<PyAny>,
    execution: Py<PyAny>,
    task: Py<PyAny>,
    workflow: Py<PyAny>,
}

/// Logs a warning about a workflow definition on `cloaca.workflow`. It
/// imports `logging` if the program has not, so that a program that
/// configures logging later, or inspects the logger, finds the record's
/// logger set up as for every other record.
pub(crate) fn warn_workflow(py: Python<'_>, message: &str) -> PyResult<()> {
    py.import("logging")?;
    if let Some(loggers) = loggers(py)? {
        loggers.workflow.bind(py).call_method1("warning", (message,))?;
    }
    Ok(())
}

fn level_number(level: Level) -> i32 {
    match level {
        Level::Debug => 10,
        Level::Info => 20,
        Level::Warning => 30,
        Level::Error => 40,
    }
}

/// `topic`'s logger; None while the program has not imported `logging`.
fn logger(py: Python<'_>, topic: Topic) -> PyResult<Option<&Bound<'_, PyAny>>> {
    let Some(loggers) = loggers(py)? else {
        return Ok(None);
    };
    Ok(Some(
        match topic {
            Topic::Runner => &loggers.runner,
            Topic::Execution => &loggers.execution,
            Topic::Task => &loggers.task,
        }
        .bind(py),
    ))
}

const TOPICS: [Topic; 3] = [Topic::Runner, Topic::Execution, Topic::Task];
const LEVELS: [Level; 4] = [Level::Debug, Level::Info, Level::Warning, Level::Error];

/// How long a reading of the loggers' levels is trusted by the runner's
/// threads: a program that changes a level is heard within this time.
const LEVELS_TRUSTED_MS: i64 = 1000;

/// The levels each topic's logger took when last asked, so that the
/// runner's threads skip the GIL for a record nobody takes (by default
/// every INFO record: the start and end of each execution).
struct LevelCache {
    read_at: AtomicI64,
    /// Per topic, one bit per level of [`LEVELS`].
    enabled: [AtomicU8; 3],
}

static LEVEL_CACHE: LevelCache =
    LevelCache { read_at: AtomicI64::new(i64::MIN), enabled: [AtomicU8::new(0), AtomicU8::new(0), AtomicU8::new(0)] };

fn topic_index(topic: Topic) -> usize {
    TOPICS.iter().position(|t| *t == topic).unwrap_or(0)
}

fn level_bit(level: Level) -> u8 {
    1 << LEVELS.iter().position(|l| *l == level).unwrap_or(0)
}

/// Reads the loggers' levels again; `execute()` calls it, so a level set
/// just before a run applies to that run's records at once.
pub(crate) fn refresh_levels(py: Python<'_>) {
    // Without `logging` imported no level is enabled: one look at
    // sys.modules, not one per topic and level.
    let imported = matches!(loggers(py), Ok(Some(_)));
    for (i, topic) in TOPICS.into_iter().enumerate() {
        let mask = match imported {
            true => LEVELS.into_iter().filter(|&level| asks_logger(py, level, topic)).fold(0, |m, level| m | level_bit(level)),
            false => 0,
        };
        LEVEL_CACHE.enabled[i].store(mask, Ordering::Relaxed);
    }
    LEVEL_CACHE.read_at.store(now_ms(), Ordering::Release);
}

/// What the cache says of `level` on `topic`, while it is trusted.
fn cached(level: Level, topic: Topic) -> Option<bool> {
    let read_at = LEVEL_CACHE.read_at.load(Ordering::Acquire);
    if now_ms().saturating_sub(read_at) > LEVELS_TRUSTED_MS {
        return None;
    }
    Some(LEVEL_CACHE.enabled[topic_index(topic)].load(Ordering::Relaxed) & level_bit(level) != 0)
}

fn asks_logger(py: Python<'_>, level: Level, topic: Topic) -> bool {
    match logger(py, topic) {
        Ok(Some(logger)) => logger.call_method1("isEnabledFor", (level_number(level),)).and_then(|v| v.is_truthy()).unwrap_or(false),
        _ => false,
    }
}

/// Whether `topic`'s logger takes records of `level`: asked before a
/// per-attempt message is even written, since most programs log no DEBUG.
/// Answered from the level cache while it is trusted (see [`refresh_levels`]).
pub(crate) fn enabled(py: Python<'_>, level: Level, topic: Topic) -> bool {
    cached(level, topic).unwrap_or_else(|| asks_logger(py, level, topic))
}

/// Logs `message` on `topic`'s logger at `level` with the record's extra
/// fields, if that logger is enabled for the level; needs the GIL.
pub(crate) fn log(
    py: Python<'_>,
    level: Level,
    topic: Topic,
    message: &str,
    execution_id: Option<&str>,
    workflow: Option<&str>,
    task_id: Option<&str>,
) {
    let _ = (|| -> PyResult<()> {
        let Some(logger) = logger(py, topic)? else {
            return Ok(());
        };
        let number = level_number(level);
        if !logger.call_method1("isEnabledFor", (number,))?.is_truthy()? {
            return Ok(());
        }
        let extra = PyDict::new(py);
        extra.set_item("execution_id", execution_id)?;
        extra.set_item("workflow", workflow)?;
        extra.set_item("task", task_id)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("extra", extra)?;
        logger.call_method("log", (number, "%s", message), Some(&kwargs))?;
        Ok(())
    })();
}

/// A reporter that logs through `logging`, for the runner's threads.
pub(crate) fn runner_reporter() -> Reporter {
    Arc::new(|note: &Note<'_>| {
        if cached(note.level, note.topic) == Some(false) {
            return;
        }
        // During interpreter shutdown there is nobody to tell.
        let _ = Python::try_attach(|py| {
            if cached(note.level, note.topic).is_none() {
                refresh_levels(py);
            }
            log(py, note.level, note.topic, &note.message, note.execution_id, note.workflow, note.task_id)
        });
    })
}

//! The workflows this process can run, by name.
//!
//! A runner claims only tasks of workflows registered here with the same
//! name and version, so an execution started by a different definition waits
//! for a process that has it instead of running the wrong code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::engine::sync::{lock, read, write};

use super::dag::Dag;
use super::retry::TaskFailure;
use crate::engine::model::Context;
use crate::engine::model::WorkflowRef;

/// Which attempt a body runs, for its log records, and how it is cancelled.
pub(crate) struct AttemptInfo<'a> {
    pub(crate) execution_id: &'a str,
    pub(crate) workflow: &'a str,
    pub(crate) task_id: &'a str,
    /// The attempt's number within its round.
    pub(crate) attempt: i64,
    pub(crate) cancellation: &'a Cancellation,
    /// The attempt's concurrency slot, which a deferred task gives back while it waits.
    pub(crate) slot: &'a AttemptSlot,
}

/// Why a deferred attempt cannot wait on, or take back, a concurrency slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotError {
    RunnerShuttingDown,
    /// The runner recorded the attempt as timed out and gave up on its thread.
    AttemptGivenUp,
    /// The attempt's own time limit passed (a body that enforces its limit).
    TimeLimitPassed,
    ExecutionCancelled,
    /// The body already returned.
    AttemptOver,
}

impl std::fmt::Display for SlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotError::RunnerShuttingDown => "the runner is shutting down",
            SlotError::AttemptGivenUp => "the attempt passed its time limit and was recorded as timed out",
            SlotError::TimeLimitPassed => "the attempt's time limit passed while it was deferred",
            SlotError::ExecutionCancelled => "the execution was cancelled",
            SlotError::AttemptOver => "the attempt is over",
        })
    }
}

/// The runner's `max_concurrent_tasks` slots, as the attempt running on
/// worker thread `worker` sees them.
pub(crate) trait Slots: Send + Sync {
    /// Gives the slot back, so that another attempt can start meanwhile;
    /// doing it again before [`Slots::reacquire`] changes nothing.
    fn release(&self, worker: usize) -> Result<(), SlotError>;
    /// Sleeps `interval` (less when the runner stops, the attempt is given
    /// up or `deadline` comes) while the slot is given back.
    fn pause(&self, worker: usize, interval: Duration, deadline: Option<Instant>) -> Result<(), SlotError>;
    /// Takes a slot again, waiting while all are in use.
    fn reacquire(&self, worker: usize) -> Result<(), SlotError>;
    fn is_held(&self, worker: usize) -> bool;
    /// True once the runner will not record what the attempt's body does:
    /// it recorded the attempt as timed out, or stopped while it was deferred.
    fn outcome_is_discarded(&self, worker: usize) -> bool;
}

/// One attempt's handle on its slot; a body may keep it (a Python
/// `TaskHandle` does) for as long as it runs.
#[derive(Clone)]
pub(crate) struct AttemptSlot {
    slots: Arc<dyn Slots>,
    worker: usize,
}

impl AttemptSlot {
    pub(crate) fn new(slots: Arc<dyn Slots>, worker: usize) -> Self {
        AttemptSlot { slots, worker }
    }

    pub(crate) fn release(&self) -> Result<(), SlotError> {
        self.slots.release(self.worker)
    }

    pub(crate) fn pause(&self, interval: Duration, deadline: Option<Instant>) -> Result<(), SlotError> {
        self.slots.pause(self.worker, interval, deadline)
    }

    pub(crate) fn reacquire(&self) -> Result<(), SlotError> {
        self.slots.reacquire(self.worker)
    }

    pub(crate) fn is_held(&self) -> bool {
        self.slots.is_held(self.worker)
    }

    pub(crate) fn outcome_is_discarded(&self) -> bool {
        self.slots.outcome_is_discarded(self.worker)
    }
}

/// A request to stop an attempt (its execution was cancelled). A body that
/// can stop (an awaited coroutine) registers how; a plain function runs to
/// its end and its outcome is discarded.
#[derive(Default)]
pub(crate) struct Cancellation {
    requested: AtomicBool,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Cancellation {
    /// Registers how to stop the attempt; runs it at once if cancellation
    /// was already requested.
    pub(crate) fn on_cancel(&self, hook: Box<dyn FnOnce() + Send>) {
        let mut slot = lock(&self.hook);
        if self.requested.load(Ordering::SeqCst) {
            drop(slot);
            hook();
        } else {
            *slot = Some(hook);
        }
    }

    /// Forgets the hook (the attempt ended).
    pub(crate) fn clear(&self) {
        lock(&self.hook).take();
    }

    pub(crate) fn cancel(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let hook = lock(&self.hook).take();
        if let Some(hook) = hook {
            hook();
        }
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// The code of one task.
pub(crate) trait TaskBody: Send + Sync {
    /// Runs one attempt on `input` and returns the output context. `timeout`
    /// is the attempt's time limit.
    fn run(&self, attempt: &AttemptInfo<'_>, input: Context, timeout: Duration) -> Result<Context, TaskFailure>;

    /// True when `run` stops itself at the time limit (an awaited coroutine
    /// can be cancelled; a plain function cannot, so the runner abandons it).
    fn enforces_timeout(&self) -> bool {
        false
    }
}

/// A runnable workflow: its DAG and one body per task, in topological order.
pub(crate) struct Workflow {
    pub(crate) dag: Dag,
    pub(crate) bodies: Vec<Arc<dyn TaskBody>>,
}

impl Workflow {
    pub(crate) fn new(dag: Dag, bodies: Vec<Arc<dyn TaskBody>>) -> Self {
        assert_eq!(dag.len(), bodies.len(), "one body per task");
        Workflow { dag, bodies }
    }

    pub(crate) fn reference(&self) -> WorkflowRef {
        WorkflowRef { name: self.dag.name().to_string(), version: self.dag.version().to_string() }
    }
}

/// Workflows by name, as a registry held them at one moment.
pub(crate) type Workflows = BTreeMap<String, Arc<Workflow>>;

/// Registered workflows by name; registering a name again replaces it.
#[derive(Default)]
pub(crate) struct Registry {
    workflows: RwLock<Workflows>,
}

impl Registry {
    /// The process-wide registry that `with WorkflowBuilder(...)` fills.
    pub(crate) fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::default)
    }

    pub(crate) fn register(&self, workflow: Arc<Workflow>) {
        let mut map = write(&self.workflows);
        map.insert(workflow.dag.name().to_string(), workflow);
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Workflow>> {
        read(&self.workflows).get(name).cloned()
    }

    /// The workflow registered under `reference.name`, if it has that version.
    pub(crate) fn get_exact(&self, reference: &WorkflowRef) -> Option<Arc<Workflow>> {
        self.get(&reference.name).filter(|w| w.dag.version() == reference.version)
    }

    /// Every registered workflow, by name, as of now.
    pub(crate) fn snapshot(&self) -> Workflows {
        read(&self.workflows).clone()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        read(&self.workflows).keys().cloned().collect()
    }

    pub(crate) fn references(&self) -> Vec<WorkflowRef> {
        read(&self.workflows).values().map(|w| w.reference()).collect()
    }
}

//! The workflows this process can run, by name.
//!
//! A runner claims only tasks of workflows registered here with the same
//! name and version, so an execution started by a different definition waits
//! for a process that has it instead of running the wrong code.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use super::dag::Dag;
use super::retry::TaskFailure;
use super::store::WorkflowRef;
use super::Context;

/// The code of one task.
pub trait TaskBody: Send + Sync {
    /// Runs one attempt on `input` and returns the output context. `timeout`
    /// is the attempt's time limit.
    fn run(&self, input: Context, timeout: Duration) -> Result<Context, TaskFailure>;

    /// True when `run` stops itself at the time limit (an awaited coroutine
    /// can be cancelled; a plain function cannot, so the runner abandons it).
    fn enforces_timeout(&self) -> bool {
        false
    }
}

/// A runnable workflow: its DAG and one body per task, in topological order.
pub struct Workflow {
    pub dag: Dag,
    pub bodies: Vec<Arc<dyn TaskBody>>,
}

impl Workflow {
    pub fn new(dag: Dag, bodies: Vec<Arc<dyn TaskBody>>) -> Self {
        assert_eq!(dag.len(), bodies.len(), "one body per task");
        Workflow { dag, bodies }
    }

    pub fn reference(&self) -> WorkflowRef {
        WorkflowRef { name: self.dag.name().to_string(), version: self.dag.version().to_string() }
    }
}

/// Registered workflows by name; registering a name again replaces it.
#[derive(Default)]
pub struct Registry {
    workflows: RwLock<BTreeMap<String, Arc<Workflow>>>,
}

impl Registry {
    /// The process-wide registry that `with WorkflowBuilder(...)` fills.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::default)
    }

    pub fn register(&self, workflow: Arc<Workflow>) {
        let mut map = self.workflows.write().unwrap_or_else(|p| p.into_inner());
        map.insert(workflow.dag.name().to_string(), workflow);
    }

    pub fn get(&self, name: &str) -> Option<Arc<Workflow>> {
        self.workflows.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// The workflow registered under `reference.name`, if it has that version.
    pub fn get_exact(&self, reference: &WorkflowRef) -> Option<Arc<Workflow>> {
        self.get(&reference.name).filter(|w| w.dag.version() == reference.version)
    }

    /// Every registered workflow, by name, as of now.
    pub fn snapshot(&self) -> BTreeMap<String, Arc<Workflow>> {
        self.workflows.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn names(&self) -> Vec<String> {
        self.workflows.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    pub fn references(&self) -> Vec<WorkflowRef> {
        self.workflows.read().unwrap_or_else(|p| p.into_inner()).values().map(|w| w.reference()).collect()
    }
}

//! `WorkflowBuilder`, `Workflow` and `register_workflow_constructor`.
//!
//! Tasks are declared inside a `with WorkflowBuilder(name):` block. The open
//! builders form a per-thread stack; `@task` adds to the innermost one and
//! also records the task under (workflow name, task id) so that `add_task`
//! can find it by id.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::body::{TaskDef, TASK_ID_ATTR, WORKFLOW_ATTR};
use crate::engine::{lock, render, Dag, PictureFormat, Registry, TaskBody, Workflow, WorkflowSpec};
use crate::python::errors::to_py;

thread_local! {
    /// Builders whose `with` block is open on this thread, innermost last.
    static OPEN_BUILDERS: RefCell<Vec<Py<PyWorkflowBuilder>>> = const { RefCell::new(Vec::new()) };
}

/// Declared tasks by workflow name, then task id.
type TaskTable = HashMap<String, BTreeMap<String, Arc<TaskDef>>>;

fn declared_tasks() -> &'static Mutex<TaskTable> {
    static TASKS: OnceLock<Mutex<TaskTable>> = OnceLock::new();
    TASKS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock_tasks() -> std::sync::MutexGuard<'static, TaskTable> {
    lock(declared_tasks())
}

/// Adds a task to the innermost open builder; returns that workflow's name.
pub fn declare_task(py: Python<'_>, def: TaskDef) -> PyResult<String> {
    let builder = OPEN_BUILDERS.with(|stack| stack.borrow().last().map(|b| b.clone_ref(py))).ok_or_else(|| {
        PyValueError::new_err(format!(
            "@cloaca.task on {:?} is used outside a workflow: declare tasks inside a \
             `with cloaca.WorkflowBuilder(\"name\"):` block",
            def.spec.id
        ))
    })?;
    let mut builder = builder.borrow_mut(py);
    if builder.task_ids.contains(&def.spec.id) {
        return Err(PyValueError::new_err(format!(
            "workflow {:?} already has a task with the id {:?}; task ids must be unique within a workflow",
            builder.name, def.spec.id
        )));
    }
    let def = Arc::new(def);
    lock_tasks().entry(builder.name.clone()).or_default().insert(def.spec.id.clone(), def.clone());
    builder.task_ids.push(def.spec.id.clone());
    builder.tasks.push(def);
    Ok(builder.name.clone())
}

/// Builds a workflow: a context manager that collects the tasks declared in
/// its block and registers the workflow on leaving it, and a builder with
/// `description`, `tag`, `add_task` and `build`.
#[pyclass(name = "WorkflowBuilder", module = "cloaca")]
pub struct PyWorkflowBuilder {
    name: String,
    description: String,
    tags: BTreeMap<String, String>,
    task_ids: Vec<String>,
    tasks: Vec<Arc<TaskDef>>,
}

#[pymethods]
impl PyWorkflowBuilder {
    /// A builder for the workflow `name`.
    #[new]
    fn new(name: String) -> PyResult<Self> {
        if name.trim().is_empty() {
            return Err(PyValueError::new_err(format!("workflow name {name:?} is not accepted: it must not be empty")));
        }
        Ok(PyWorkflowBuilder { name, description: String::new(), tags: BTreeMap::new(), task_ids: Vec::new(), tasks: Vec::new() })
    }

    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Sets the workflow's description; returns the builder.
    fn description(mut slf: PyRefMut<'_, Self>, text: String) -> PyRefMut<'_, Self> {
        slf.description = text;
        slf
    }

    /// Sets a tag; returns the builder.
    fn tag(mut slf: PyRefMut<'_, Self>, key: String, value: String) -> PyRefMut<'_, Self> {
        slf.tags.insert(key, value);
        slf
    }

    /// Adds a declared task by id, or by its decorated function; returns the builder.
    fn add_task<'py>(mut slf: PyRefMut<'py, Self>, task: &Bound<'py, PyAny>) -> PyResult<PyRefMut<'py, Self>> {
        let (workflow, id) = if let Ok(id) = task.extract::<String>() {
            (slf.name.clone(), id)
        } else if task.is_callable() {
            let name = task.getattr("__name__").map(|n| n.to_string()).unwrap_or_else(|_| task.to_string());
            let id = task.getattr(TASK_ID_ATTR).and_then(|a| a.extract::<String>()).map_err(|_| {
                PyValueError::new_err(format!(
                    "function {name:?} is not a cloaca task (not found in registry); decorate it with \
                     @cloaca.task inside a WorkflowBuilder block"
                ))
            })?;
            let workflow = task.getattr(WORKFLOW_ATTR).and_then(|a| a.extract::<String>()).unwrap_or_else(|_| slf.name.clone());
            (workflow, id)
        } else {
            let type_name = task.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            return Err(PyTypeError::new_err(format!("add_task needs a string task ID or a function object, not {type_name}")));
        };
        if slf.task_ids.contains(&id) {
            return Ok(slf);
        }
        let found = {
            let tasks = lock_tasks();
            let declared = tasks.get(&workflow);
            match declared.and_then(|t| t.get(&id)) {
                Some(def) => Ok(def.clone()),
                None => Err(declared.map(|t| t.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()),
            }
        };
        let def = found.map_err(|known| {
            PyValueError::new_err(format!(
                "task {id:?} not found in registry for workflow {workflow:?} (declared tasks: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        })?;
        slf.task_ids.push(id);
        slf.tasks.push(def);
        Ok(slf)
    }

    /// Validates the tasks added so far and returns the `Workflow`.
    fn build(&self, py: Python<'_>) -> PyResult<PyWorkflow> {
        let spec = WorkflowSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            tasks: self.tasks.iter().map(|t| t.spec.clone()).collect(),
        };
        let dag = Dag::new(spec).map_err(to_py)?;
        for warning in dag.warnings() {
            crate::python::logging::warn_workflow(py, warning)?;
        }
        let by_id: HashMap<&str, &Arc<TaskDef>> = self.tasks.iter().map(|t| (t.spec.id.as_str(), t)).collect();
        let bodies: Vec<Arc<dyn TaskBody>> = dag.tasks().iter().map(|t| by_id[t.id.as_str()].body.clone() as Arc<dyn TaskBody>).collect();
        Ok(PyWorkflow { inner: Arc::new(Workflow::new(dag, bodies)) })
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        {
            // A new block starts the workflow's task namespace afresh.
            let mut builder = slf.borrow_mut();
            lock_tasks().remove(&builder.name);
            builder.task_ids.clear();
            builder.tasks.clear();
        }
        OPEN_BUILDERS.with(|stack| stack.borrow_mut().push(slf.clone().unbind()));
        slf
    }

    /// Leaving the block without an exception builds, validates and registers
    /// the workflow; an exception inside the block propagates unchanged.
    fn __exit__(
        slf: Bound<'_, Self>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc_value: Option<Bound<'_, PyAny>>,
        _traceback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        OPEN_BUILDERS.with(|stack| {
            let mut stack = stack.borrow_mut();
            if let Some(pos) = stack.iter().rposition(|b| b.bind(slf.py()).is(&slf)) {
                stack.remove(pos);
            }
        });
        if exc_type.is_some_and(|t| !t.is_none()) {
            return Ok(false);
        }
        let workflow = slf.borrow().build(slf.py())?;
        Registry::global().register(workflow.inner.clone());
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("WorkflowBuilder(name={:?}, tasks={:?})", self.name, self.task_ids)
    }
}

/// A validated workflow: a DAG of tasks with a content-hash version.
#[pyclass(name = "Workflow", module = "cloaca", frozen)]
pub struct PyWorkflow {
    pub(crate) inner: Arc<Workflow>,
}

#[pymethods]
impl PyWorkflow {
    #[getter]
    fn name(&self) -> &str {
        self.inner.dag.name()
    }

    #[getter]
    fn description(&self) -> &str {
        self.inner.dag.description()
    }

    /// A SHA-256 of the definition: equal for identical definitions.
    #[getter]
    fn version(&self) -> &str {
        self.inner.dag.version()
    }

    #[getter]
    fn tags<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (k, v) in self.inner.dag.tags() {
            dict.set_item(k, v)?;
        }
        Ok(dict)
    }

    /// Task ids in the order they run (dependencies first; ties by id).
    fn topological_sort(&self) -> Vec<String> {
        self.inner.dag.topological_sort()
    }

    /// Task ids grouped into levels that can run in parallel.
    fn get_execution_levels(&self) -> Vec<Vec<String>> {
        self.inner.dag.execution_levels()
    }

    /// Tasks without dependencies.
    fn get_roots(&self) -> Vec<String> {
        self.inner.dag.roots()
    }

    /// Tasks nothing depends on.
    fn get_leaves(&self) -> Vec<String> {
        self.inner.dag.leaves()
    }

    /// The workflow as a Mermaid flowchart: one node per task, labelled with
    /// its id, and an arrow from each dependency to its dependent, top to
    /// bottom, under the workflow's name as title. Paste it into a Mermaid
    /// renderer, or into a `mermaid` code block of a Markdown file.
    fn to_mermaid(&self) -> String {
        render(self.inner.dag.name(), &self.inner.dag.shape(), None, PictureFormat::Mermaid)
    }

    /// The workflow as a Graphviz DOT digraph: one box per task, labelled
    /// with its id, and an edge from each dependency to its dependent, top to
    /// bottom, with the workflow's name as graph name and label. Draw it with
    /// `dot -Tsvg workflow.dot -o workflow.svg`.
    fn to_dot(&self) -> String {
        render(self.inner.dag.name(), &self.inner.dag.shape(), None, PictureFormat::Dot)
    }

    /// Checks the workflow; a built workflow is always valid, so this returns None.
    fn validate(&self) -> PyResult<()> {
        Dag::new(WorkflowSpec {
            name: self.inner.dag.name().to_string(),
            description: self.inner.dag.description().to_string(),
            tags: self.inner.dag.tags().clone(),
            tasks: self.inner.dag.tasks().to_vec(),
        })
        .map(|_| ())
        .map_err(to_py)
    }

    fn __repr__(&self) -> String {
        format!("Workflow(name={:?}, tasks={}, version={:?})", self.inner.dag.name(), self.inner.dag.len(), &self.inner.dag.version()[..12])
    }
}

/// Registers the workflow returned by `constructor()` (called now, with no
/// arguments) under `name`.
#[pyfunction]
pub fn register_workflow_constructor(name: String, constructor: &Bound<'_, PyAny>) -> PyResult<()> {
    if !constructor.is_callable() {
        return Err(PyTypeError::new_err("register_workflow_constructor needs a callable that returns a Workflow"));
    }
    let built = constructor.call0()?;
    let workflow = built.cast::<PyWorkflow>().map_err(|_| {
        let type_name = built.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        PyTypeError::new_err(format!("the constructor for {name:?} returned {type_name}; it must return a cloaca.Workflow"))
    })?;
    let inner = workflow.get().inner.clone();
    if inner.dag.name() != name {
        return Err(PyValueError::new_err(format!(
            "the constructor registered as {name:?} returned the workflow {:?}; the names must match",
            inner.dag.name()
        )));
    }
    Registry::global().register(inner);
    Ok(())
}

//! Workflow structure: tasks and their dependencies, validated into a DAG
//! with a deterministic topological order and a content-hash version.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::merge::merge;
use super::retry::RetryPolicy;
use super::rules::TriggerRule;
use crate::engine::error::{Error, Result};
use crate::engine::model::Context;

/// One task as declared by `@task`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TaskSpec {
    pub(crate) id: String,
    pub(crate) dependencies: Vec<String>,
    pub(crate) retry: RetryPolicy,
    /// The task's own timeout; `None` falls back to the runner's default.
    pub(crate) timeout: Option<Duration>,
    /// `None` when `trigger_rules=` was omitted: the task runs when its
    /// dependencies completed and is skipped when one failed. Given (even
    /// `Always`), the task waits for every dependency to finish, whatever
    /// their outcome, and runs when the rule holds.
    pub(crate) rule: Option<TriggerRule>,
}

/// A workflow as declared: name, description, tags and tasks in declaration order.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct WorkflowSpec {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) tasks: Vec<TaskSpec>,
}

/// A validated workflow DAG. Tasks are indexed by their position in
/// topological order, so "earlier index" always means "runs no later".
#[derive(Clone, Debug)]
pub(crate) struct Dag {
    spec: WorkflowSpec,
    version: String,
    /// Task specs in topological order.
    ordered: Vec<TaskSpec>,
    index: HashMap<String, usize>,
    dependencies: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    /// True when a task has an explicit trigger rule: only then is a
    /// finished task's consequence decided dependent by dependent.
    has_rules: bool,
    /// Rules naming a task that is not an ancestor of theirs (its state may
    /// still be unfinished when the rule is decided).
    warnings: Vec<String>,
}

impl Dag {
    /// Validates `spec` (non-empty, unique ids, known dependencies, no cycle).
    pub(crate) fn new(spec: WorkflowSpec) -> Result<Self> {
        let name = &spec.name;
        if spec.tasks.is_empty() {
            return Err(Error::InvalidWorkflow(format!(
                "workflow {name:?} cannot be empty: add at least one task (decorate a function with \
                 @cloaca.task inside the `with WorkflowBuilder(...)` block, or call add_task)"
            )));
        }
        let mut declared: HashMap<&str, usize> = HashMap::new();
        for (i, task) in spec.tasks.iter().enumerate() {
            if declared.insert(task.id.as_str(), i).is_some() {
                return Err(Error::InvalidWorkflow(format!(
                    "workflow {name:?} has two tasks with the id {:?}; task ids must be unique",
                    task.id
                )));
            }
        }
        let known = || spec.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(", ");
        for task in &spec.tasks {
            for dep in &task.dependencies {
                if !declared.contains_key(dep.as_str()) {
                    return Err(Error::InvalidWorkflow(format!(
                        "task {:?} of workflow {name:?} depends on {dep:?}, which is not a task of \
                         this workflow (its tasks: {})",
                        task.id,
                        known()
                    )));
                }
                if dep == &task.id {
                    return Err(Error::InvalidWorkflow(format!("dependency cycle in workflow {name:?}: task {dep:?} depends on itself")));
                }
            }
        }
        for task in &spec.tasks {
            for name in task.rule.iter().flat_map(TriggerRule::referenced_tasks) {
                if !declared.contains_key(name) {
                    return Err(Error::InvalidWorkflow(format!(
                        "task {:?} of workflow {name_of:?} has a trigger rule naming {name:?}, which is not a task of \
                         this workflow (its tasks: {})",
                        task.id,
                        known(),
                        name_of = spec.name,
                    )));
                }
            }
        }
        let order = topological_order(&spec)?;
        let ordered: Vec<TaskSpec> = order.iter().map(|&i| spec.tasks[i].clone()).collect();
        let index: HashMap<String, usize> = ordered.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect();
        let mut dependencies = vec![Vec::new(); ordered.len()];
        let mut dependents = vec![Vec::new(); ordered.len()];
        for (i, task) in ordered.iter().enumerate() {
            let mut deps: Vec<usize> = task.dependencies.iter().map(|d| index[d]).collect();
            deps.sort_unstable();
            deps.dedup();
            for &d in &deps {
                dependents[d].push(i);
            }
            dependencies[i] = deps;
        }
        let version = content_version(&spec);
        let has_rules = ordered.iter().any(|t| t.rule.is_some());
        let mut dag = Dag { spec, version, ordered, index, dependencies, dependents, has_rules, warnings: Vec::new() };
        dag.warnings = dag.rule_warnings();
        Ok(dag)
    }

    /// One warning per rule condition naming a task that is not an ancestor.
    fn rule_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (i, task) in self.ordered.iter().enumerate() {
            let ancestors = self.ancestors_of(i);
            for name in task.rule.iter().flat_map(TriggerRule::referenced_tasks) {
                if !ancestors.contains(&self.index[name]) {
                    warnings.push(format!(
                        "task {:?} of workflow {:?} has a trigger rule naming {name:?}, which is not one of its \
                         (indirect) dependencies: its state is read when the rule is decided and may still be \
                         unfinished, which makes every task-state condition on it false",
                        task.id,
                        self.name()
                    ));
                }
            }
        }
        warnings
    }

    fn ancestors_of(&self, i: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![i];
        while let Some(t) = stack.pop() {
            for &d in &self.dependencies[t] {
                if seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        seen
    }

    /// What building the workflow warns about (see [`Dag::new`]).
    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// True when some task has an explicit trigger rule.
    pub(crate) fn has_rules(&self) -> bool {
        self.has_rules
    }

    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn description(&self) -> &str {
        &self.spec.description
    }

    pub(crate) fn tags(&self) -> &BTreeMap<String, String> {
        &self.spec.tags
    }

    /// The content hash: equal for identical definitions, different after any
    /// change to a task, a dependency, the description or a tag.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn len(&self) -> usize {
        self.ordered.len()
    }

    /// The task at topological position `i`.
    pub(crate) fn task(&self, i: usize) -> &TaskSpec {
        &self.ordered[i]
    }

    /// Tasks in topological order.
    pub(crate) fn tasks(&self) -> &[TaskSpec] {
        &self.ordered
    }

    pub(crate) fn position(&self, task_id: &str) -> Option<usize> {
        self.index.get(task_id).copied()
    }

    /// Positions of the direct dependencies of task `i`, ascending.
    pub(crate) fn dependencies_of(&self, i: usize) -> &[usize] {
        &self.dependencies[i]
    }

    /// Positions of the tasks that depend directly on task `i`, ascending.
    pub(crate) fn dependents_of(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }

    /// Every task reachable from task `i` through dependents, ascending.
    pub(crate) fn descendants_of(&self, i: usize) -> Vec<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![i];
        while let Some(t) = stack.pop() {
            for &d in &self.dependents[t] {
                if seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        seen.into_iter().collect()
    }

    /// Task ids in topological order.
    pub(crate) fn topological_sort(&self) -> Vec<String> {
        self.ordered.iter().map(|t| t.id.clone()).collect()
    }

    /// Each task with the ids of its direct dependencies, both in topological
    /// order: what a picture of the workflow draws.
    pub(crate) fn shape(&self) -> Vec<(String, Vec<String>)> {
        self.ordered
            .iter()
            .zip(&self.dependencies)
            .map(|(task, deps)| (task.id.clone(), deps.iter().map(|&d| self.ordered[d].id.clone()).collect()))
            .collect()
    }

    /// Tasks grouped by depth: level 0 has no dependencies, level n depends
    /// only on earlier levels. Each level is sorted by task id.
    pub(crate) fn execution_levels(&self) -> Vec<Vec<String>> {
        let mut depth = vec![0usize; self.len()];
        for i in 0..self.len() {
            depth[i] = self.dependencies[i].iter().map(|&d| depth[d] + 1).max().unwrap_or(0);
        }
        let levels = depth.iter().copied().max().map_or(0, |m| m + 1);
        let mut out: Vec<Vec<String>> = vec![Vec::new(); levels];
        for (i, &d) in depth.iter().enumerate() {
            out[d].push(self.ordered[i].id.clone());
        }
        for level in &mut out {
            level.sort();
        }
        out
    }

    /// Tasks with no dependencies, in topological order.
    pub(crate) fn roots(&self) -> Vec<String> {
        (0..self.len()).filter(|&i| self.dependencies[i].is_empty()).map(|i| self.ordered[i].id.clone()).collect()
    }

    /// Tasks nothing depends on, in topological order.
    pub(crate) fn leaves(&self) -> Vec<String> {
        (0..self.len()).filter(|&i| self.dependents[i].is_empty()).map(|i| self.ordered[i].id.clone()).collect()
    }

    /// The input of task `i`: the execution input for a root, otherwise the
    /// outputs of its dependencies merged deeply in topological order (see [`super::merge`]).
    #[cfg(test)]
    pub(crate) fn task_input(&self, i: usize, execution_input: &Context, outputs: &HashMap<usize, Context>) -> Context {
        if self.dependencies[i].is_empty() {
            return execution_input.clone();
        }
        merge(self.dependencies[i].iter().filter_map(|d| outputs.get(d)))
    }

    /// The context an execution ends with: the outputs of completed tasks none
    /// of whose dependents completed, merged in topological order; the input
    /// when no task completed. Keeping only these "frontier" outputs means a
    /// key a later task removed stays removed.
    #[cfg(test)]
    pub(crate) fn final_context(&self, execution_input: &Context, outputs: &HashMap<usize, Context>) -> Context {
        frontier_context(self, execution_input, outputs)
    }
}

/// What deciding a workflow's tasks needs of it: a [`Dag`], or a version's
/// stored shape in a process that does not have the workflow.
pub(crate) trait Graph {
    fn task_count(&self) -> usize;
    fn id(&self, i: usize) -> &str;
    fn position(&self, task_id: &str) -> Option<usize>;
    fn dependencies(&self, i: usize) -> &[usize];
    fn dependents(&self, i: usize) -> &[usize];
    fn rule(&self, i: usize) -> Option<&TriggerRule>;
}

impl Graph for Dag {
    fn task_count(&self) -> usize {
        self.len()
    }
    fn id(&self, i: usize) -> &str {
        &self.ordered[i].id
    }
    fn position(&self, task_id: &str) -> Option<usize> {
        Dag::position(self, task_id)
    }
    fn dependencies(&self, i: usize) -> &[usize] {
        &self.dependencies[i]
    }
    fn dependents(&self, i: usize) -> &[usize] {
        &self.dependents[i]
    }
    fn rule(&self, i: usize) -> Option<&TriggerRule> {
        self.ordered[i].rule.as_ref()
    }
}

/// [`Dag::final_context`] over a bare graph (the dependents of each task
/// position), for a process that has only a workflow version's stored shape.
pub(crate) fn frontier_context(graph: &dyn Graph, execution_input: &Context, outputs: &HashMap<usize, Context>) -> Context {
    if outputs.is_empty() {
        return execution_input.clone();
    }
    let frontier =
        (0..graph.task_count()).filter(|i| outputs.contains_key(i) && !graph.dependents(*i).iter().any(|d| outputs.contains_key(d)));
    merge(frontier.filter_map(|i| outputs.get(&i)))
}

/// Kahn's algorithm with ties broken by task id, so the order is the same
/// whatever order the tasks were declared in.
fn topological_order(spec: &WorkflowSpec) -> Result<Vec<usize>> {
    let n = spec.tasks.len();
    let position: HashMap<&str, usize> = spec.tasks.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
    let mut indegree = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, task) in spec.tasks.iter().enumerate() {
        let deps: BTreeSet<usize> = task.dependencies.iter().map(|d| position[d.as_str()]).collect();
        indegree[i] = deps.len();
        for d in deps {
            dependents[d].push(i);
        }
    }
    let mut ready: BTreeSet<(&str, usize)> = (0..n).filter(|&i| indegree[i] == 0).map(|i| (spec.tasks[i].id.as_str(), i)).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(first) = ready.pop_first() {
        let i = first.1;
        order.push(i);
        for &d in &dependents[i] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.insert((spec.tasks[d].id.as_str(), d));
            }
        }
    }
    if order.len() < n {
        let stuck: Vec<usize> = (0..n).filter(|&i| indegree[i] > 0).collect();
        return Err(Error::InvalidWorkflow(format!(
            "dependency cycle in workflow {:?}: {}",
            spec.name,
            describe_cycle(spec, &stuck, &position)
        )));
    }
    Ok(order)
}

/// Names one cycle among the tasks left over by Kahn's algorithm, as `a -> b -> a`.
fn describe_cycle(spec: &WorkflowSpec, stuck: &[usize], position: &HashMap<&str, usize>) -> String {
    let in_stuck: BTreeSet<usize> = stuck.iter().copied().collect();
    // Every stuck task has a stuck dependency, so walking dependencies must revisit a task.
    let mut path: Vec<usize> = Vec::new();
    let mut current = stuck[0];
    loop {
        if let Some(start) = path.iter().position(|&t| t == current) {
            let mut cycle: Vec<&str> = path[start..].iter().rev().map(|&t| spec.tasks[t].id.as_str()).collect();
            cycle.push(cycle[0]);
            return cycle.join(" -> ");
        }
        path.push(current);
        current = spec.tasks[current]
            .dependencies
            .iter()
            .map(|d| position[d.as_str()])
            .find(|d| in_stuck.contains(d))
            .expect("a task left by Kahn's algorithm has a dependency that is left too");
    }
}

/// SHA-256 over a canonical text of the definition.
fn content_version(spec: &WorkflowSpec) -> String {
    let mut hasher = Sha256::new();
    let mut field = |label: &str, value: &str| {
        // Length-prefixed so that no two different definitions share a text.
        hasher.update(format!("{label}:{}:", value.len()));
        hasher.update(value.as_bytes());
    };
    field("name", &spec.name);
    field("description", &spec.description);
    for (k, v) in &spec.tags {
        field("tag-key", k);
        field("tag-value", v);
    }
    let mut tasks: Vec<&TaskSpec> = spec.tasks.iter().collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    for task in tasks {
        field("task", &task.id);
        let deps: BTreeSet<&str> = task.dependencies.iter().map(String::as_str).collect();
        for dep in deps {
            field("dependency", dep);
        }
        field("retry", &task.retry.fingerprint());
        field("timeout", &format!("{:?}", task.timeout.map(|t| t.as_millis())));
        // Omitted rules add nothing, so versions of workflows without rules
        // stay what they were.
        if let Some(rule) = &task.rule {
            field("rule", &rule.canonical());
        }
    }
    let digest = hasher.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(id: &str, deps: &[&str]) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
            retry: RetryPolicy::default(),
            timeout: None,
            rule: None,
        }
    }

    fn spec(tasks: Vec<TaskSpec>) -> WorkflowSpec {
        WorkflowSpec { name: "wf".into(), tasks, ..Default::default() }
    }

    fn ctx(value: serde_json::Value) -> Context {
        value.as_object().unwrap().clone()
    }

    fn diamond() -> Dag {
        Dag::new(spec(vec![task("d", &["b", "c"]), task("c", &["a"]), task("b", &["a"]), task("a", &[])])).unwrap()
    }

    #[test]
    fn order_levels_roots_leaves_of_a_diamond() {
        let dag = diamond();
        assert_eq!(dag.topological_sort(), ["a", "b", "c", "d"]);
        assert_eq!(dag.execution_levels(), vec![vec!["a"], vec!["b", "c"], vec!["d"]]);
        assert_eq!(dag.roots(), ["a"]);
        assert_eq!(dag.leaves(), ["d"]);
        assert_eq!(dag.descendants_of(dag.position("b").unwrap()), vec![3]);
    }

    #[test]
    fn shape_lists_tasks_and_their_dependencies_in_topological_order() {
        let declared = Dag::new(spec(vec![task("d", &["c", "b", "c"]), task("c", &["a"]), task("b", &["a"]), task("a", &[])])).unwrap();
        let owned = |deps: &[&str]| deps.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        let expected = vec![
            ("a".to_string(), owned(&[])),
            ("b".to_string(), owned(&["a"])),
            ("c".to_string(), owned(&["a"])),
            ("d".to_string(), owned(&["b", "c"])),
        ];
        assert_eq!(declared.shape(), expected, "a repeated dependency is listed once, in topological order");
        assert_eq!(diamond().shape(), expected);
    }

    #[test]
    fn order_does_not_depend_on_declaration_order() {
        let reversed = Dag::new(spec(vec![task("a", &[]), task("b", &["a"]), task("c", &["a"]), task("d", &["c", "b"])])).unwrap();
        assert_eq!(reversed.topological_sort(), diamond().topological_sort());
        assert_eq!(reversed.version(), diamond().version());
    }

    #[test]
    fn version_changes_with_every_part_of_the_definition() {
        let base = diamond();
        let mut changed = vec![];
        let mut s = spec(vec![task("d", &["b"]), task("c", &["a"]), task("b", &["a"]), task("a", &[])]);
        changed.push(Dag::new(s.clone()).unwrap());
        s = spec(vec![task("d", &["b", "c"]), task("c", &["a"]), task("b", &["a"]), task("a", &[]), task("e", &[])]);
        changed.push(Dag::new(s).unwrap());
        let mut described = base.spec.clone();
        described.description = "new".into();
        changed.push(Dag::new(described).unwrap());
        let mut tagged = base.spec.clone();
        tagged.tags.insert("team".into(), "data".into());
        changed.push(Dag::new(tagged).unwrap());
        let mut retried = base.spec.clone();
        retried.tasks[0].retry.retries = 3;
        changed.push(Dag::new(retried).unwrap());
        let mut always = base.spec.clone();
        always.tasks[0].rule = Some(TriggerRule::Always);
        changed.push(Dag::new(always).unwrap());
        let mut ruled = base.spec.clone();
        ruled.tasks[0].rule = Some(TriggerRule::from_json(&json!({"type": "TaskFailed", "task_name": "b"})).unwrap());
        changed.push(Dag::new(ruled).unwrap());
        for other in &changed {
            assert_ne!(other.version(), base.version());
        }
        assert_eq!(diamond().version(), base.version());
        assert_eq!(base.version().len(), 64);
    }

    #[test]
    fn rules_must_name_tasks_of_the_workflow_and_warn_about_non_ancestors() {
        let ruled = |name: &str| {
            let mut t = task("d", &["b", "c"]);
            t.rule = Some(TriggerRule::from_json(&json!({"type": "TaskSuccess", "task_name": name})).unwrap());
            spec(vec![t, task("c", &["a"]), task("b", &["a"]), task("a", &[]), task("e", &[])])
        };
        let error = Dag::new(ruled("nope")).unwrap_err().to_string();
        assert!(error.contains("task \"d\"") && error.contains("\"nope\"") && error.contains("a, "), "{error}");
        assert!(Dag::new(ruled("wf::a")).unwrap().warnings().is_empty(), "an indirect dependency, namespaced");
        let warned = Dag::new(ruled("e")).unwrap();
        assert_eq!(warned.warnings().len(), 1);
        assert!(warned.warnings()[0].contains("\"e\""), "{:?}", warned.warnings());
        assert!(warned.has_rules() && !diamond().has_rules());
    }

    #[test]
    fn invalid_definitions_name_the_offending_tasks() {
        let err = |tasks| Dag::new(spec(tasks)).unwrap_err().to_string();
        assert!(err(vec![]).contains("cannot be empty"));
        let cycle = err(vec![task("a", &["c"]), task("b", &["a"]), task("c", &["b"]), task("z", &[])]);
        assert!(cycle.contains("cycle") && cycle.contains("a") && cycle.contains("b") && cycle.contains("c"), "{cycle}");
        assert!(!cycle.contains("z"), "{cycle}");
        let unknown = err(vec![task("a", &["ghost"])]);
        assert!(unknown.contains("\"a\"") && unknown.contains("\"ghost\""), "{unknown}");
        let dup = err(vec![task("a", &[]), task("a", &[])]);
        assert!(dup.contains("\"a\"") && dup.contains("unique"), "{dup}");
        assert!(err(vec![task("a", &["a"])]).contains("depends on itself"));
    }

    #[test]
    fn inputs_merge_dependencies_in_topological_order_and_final_keeps_the_frontier() {
        let dag = diamond();
        let input = ctx(json!({"seed": 1}));
        let mut outputs = HashMap::new();
        outputs.insert(0, ctx(json!({"seed": 1, "a": true})));
        outputs.insert(1, ctx(json!({"seed": 1, "a": true, "x": "from b"})));
        outputs.insert(2, ctx(json!({"seed": 1, "a": true, "x": "from c"})));
        assert_eq!(dag.task_input(0, &input, &outputs), input);
        assert_eq!(dag.task_input(3, &input, &outputs)["x"], json!("from c"));
        assert_eq!(dag.final_context(&input, &outputs)["x"], json!("from c"), "b and c are the frontier");
        outputs.insert(3, ctx(json!({"done": 1})));
        assert_eq!(dag.final_context(&input, &outputs), ctx(json!({"done": 1})), "d removed the other keys");
        assert_eq!(dag.final_context(&input, &HashMap::new()), input);
    }
}

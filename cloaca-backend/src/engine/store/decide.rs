//! What follows a task's end in a workflow with trigger rules: each
//! dependent becomes ready, goes on waiting, or is skipped, and a skipped
//! task's own dependents are decided in turn, all inside the transaction
//! that recorded the end.
//!
//! Workflows without a single explicit rule never come here: their
//! completions ready dependents in one statement and their failures skip
//! every descendant in one (see `executions::record_attempt`), which is
//! what this module does for them too, only batched.

use std::collections::{HashMap, VecDeque};

use super::conn::{json_list, Conn, Param};
use super::executions::{execution_input, output_text, parse_context, LOAD_OUTPUTS};
use crate::engine::error::Result;
use crate::engine::model::{Context, TaskStatus};
use crate::engine::workflow::{merge, Graph, SkipReason, TaskState};

/// How a task ended, as its dependents see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    Completed,
    Failed,
    Skipped(SkipReason),
}

impl Ended {
    /// After this, a dependent with the default rule is skipped at once.
    fn fails_default_dependents(self) -> bool {
        !matches!(self, Ended::Completed | Ended::Skipped(SkipReason::TriggerRule))
    }
}

/// What deciding changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Decided {
    /// Tasks made ready, in the order they were decided.
    pub(crate) readied: Vec<String>,
    /// How many tasks were skipped (each counts as finished).
    pub(crate) skipped: i64,
}

// A dependent with the default rule: ready when this was its last
// dependency (as in `RELEASE_DEPENDENTS`, naming each row it changed).
pub(crate) const RELEASE_LISTED: &str = "UPDATE cloaca_task_executions
    SET deps_remaining = deps_remaining - 1,
        status = CASE WHEN deps_remaining = 1 AND status = 'pending' THEN 'ready' ELSE status END,
        next_attempt_at = CASE WHEN deps_remaining = 1 AND status = 'pending' THEN ?3 ELSE next_attempt_at END,
        ready_at = CASE WHEN deps_remaining = 1 AND status = 'pending' THEN ?3 ELSE ready_at END
    WHERE execution_id = ?1 AND task_id IN (SELECT value FROM json_each(?2))
    RETURNING task_id, status";
// A dependent with an explicit rule waits for every dependency, whatever
// its outcome; the rule is decided when the count reaches zero.
pub(crate) const COUNT_DOWN_LISTED: &str = "UPDATE cloaca_task_executions SET deps_remaining = deps_remaining - 1
    WHERE execution_id = ?1 AND task_id IN (SELECT value FROM json_each(?2))
    RETURNING task_id, deps_remaining, status";
pub(crate) const SKIP_PENDING: &str = "UPDATE cloaca_task_executions SET status = 'skipped', skip_reason = ?3, finished_at = ?4
    WHERE execution_id = ?1 AND status = 'pending' AND task_id IN (SELECT value FROM json_each(?2))
    RETURNING task_id";
pub(crate) const READY_PENDING: &str = "UPDATE cloaca_task_executions SET status = 'ready', next_attempt_at = ?3, ready_at = ?3
    WHERE execution_id = ?1 AND task_id = ?2 AND status = 'pending'";
pub(crate) const TASK_STATUSES: &str = "SELECT task_id, status FROM cloaca_task_executions
    WHERE execution_id = ?1 AND task_id IN (SELECT value FROM json_each(?2))";

/// Decides the rules of `candidates` (pending tasks with a rule and no
/// unfinished dependency), then everything that follows from them.
pub(crate) fn decide_candidates(
    conn: &mut dyn Conn,
    execution_id: &str,
    graph: &dyn Graph,
    candidates: &[usize],
    now: i64,
) -> Result<Decided> {
    let mut decided = Decided::default();
    let mut ended = VecDeque::new();
    for &task in candidates {
        decide_rule(conn, execution_id, graph, task, now, &mut decided, &mut ended)?;
    }
    follow_ends(conn, execution_id, graph, ended, now, &mut decided)?;
    Ok(decided)
}

/// Decides the dependents of a task that just ended, and theirs in turn.
pub(crate) fn follow_end(conn: &mut dyn Conn, execution_id: &str, graph: &dyn Graph, task: usize, how: Ended, now: i64) -> Result<Decided> {
    let mut decided = Decided::default();
    follow_ends(conn, execution_id, graph, VecDeque::from([(task, how)]), now, &mut decided)?;
    Ok(decided)
}

fn follow_ends(
    conn: &mut dyn Conn,
    execution_id: &str,
    graph: &dyn Graph,
    mut ended: VecDeque<(usize, Ended)>,
    now: i64,
    decided: &mut Decided,
) -> Result<()> {
    while let Some((task, how)) = ended.pop_front() {
        let (ruled, default): (Vec<usize>, Vec<usize>) = graph.dependents(task).iter().partition(|&&d| graph.rule(d).is_some());
        if !default.is_empty() {
            let list = json_list(default.iter().map(|&d| graph.id(d)));
            if how.fails_default_dependents() {
                let params =
                    [Param::Text(execution_id), Param::Text(&list), Param::Text(SkipReason::UpstreamFailed.as_db()), Param::Int(now)];
                for id in conn.query_all(SKIP_PENDING, &params, |row| row.text(0))? {
                    decided.skipped += 1;
                    if let Some(position) = graph.position(&id) {
                        ended.push_back((position, Ended::Skipped(SkipReason::UpstreamFailed)));
                    }
                }
            } else {
                let params = [Param::Text(execution_id), Param::Text(&list), Param::Int(now)];
                for (id, status) in conn.query_all(RELEASE_LISTED, &params, |row| Ok((row.text(0)?, row.text(1)?)))? {
                    if status == TaskStatus::Ready.as_db() {
                        decided.readied.push(id);
                    }
                }
            }
        }
        if !ruled.is_empty() {
            let list = json_list(ruled.iter().map(|&d| graph.id(d)));
            let params = [Param::Text(execution_id), Param::Text(&list)];
            let counted = conn.query_all(COUNT_DOWN_LISTED, &params, |row| Ok((row.text(0)?, row.int(1)?, row.text(2)?)))?;
            // Decided in topological order, whatever order the rows came back in.
            let mut due: Vec<usize> = counted
                .into_iter()
                .filter(|(_, remaining, status)| *remaining == 0 && status == TaskStatus::Pending.as_db())
                .filter_map(|(id, _, _)| graph.position(&id))
                .collect();
            due.sort_unstable();
            for d in due {
                decide_rule(conn, execution_id, graph, d, now, decided, &mut ended)?;
            }
        }
    }
    Ok(())
}

/// Evaluates the rule of `task` against the input it would receive and the
/// states of the tasks it names; makes it ready or skips it.
fn decide_rule(
    conn: &mut dyn Conn,
    execution_id: &str,
    graph: &dyn Graph,
    task: usize,
    now: i64,
    decided: &mut Decided,
    ended: &mut VecDeque<(usize, Ended)>,
) -> Result<()> {
    let Some(rule) = graph.rule(task) else { return Ok(()) };
    let id = graph.id(task);
    let context = task_input(conn, execution_id, graph, task)?;
    let names = rule.referenced_tasks();
    let mut states = HashMap::new();
    if !names.is_empty() {
        let params = [Param::Text(execution_id), Param::Text(&json_list(names.iter().copied()))];
        for (name, status) in conn.query_all(TASK_STATUSES, &params, |row| Ok((row.text(0)?, row.text(1)?)))? {
            let state = match TaskStatus::from_db(&status)? {
                TaskStatus::Completed => TaskState::Completed,
                TaskStatus::Failed => TaskState::Failed,
                TaskStatus::Skipped => TaskState::Skipped,
                _ => TaskState::Unfinished,
            };
            states.insert(name, state);
        }
    }
    let runs = rule.evaluate(&context, &mut |name| states.get(name).copied().unwrap_or(TaskState::Unfinished));
    if runs {
        if conn.execute(READY_PENDING, &[Param::Text(execution_id), Param::Text(id), Param::Int(now)])? == 1 {
            decided.readied.push(id.to_string());
        }
    } else {
        let list = json_list([id]);
        let params = [Param::Text(execution_id), Param::Text(&list), Param::Text(SkipReason::TriggerRule.as_db()), Param::Int(now)];
        if !conn.query_all(SKIP_PENDING, &params, |row| row.text(0))?.is_empty() {
            decided.skipped += 1;
            ended.push_back((task, Ended::Skipped(SkipReason::TriggerRule)));
        }
    }
    Ok(())
}

/// The input `task` would receive: the execution input for a root,
/// otherwise its completed dependencies' outputs merged in topological order.
fn task_input(conn: &mut dyn Conn, execution_id: &str, graph: &dyn Graph, task: usize) -> Result<Context> {
    let dependencies = graph.dependencies(task);
    if dependencies.is_empty() {
        return execution_input(conn, execution_id);
    }
    let list = json_list(dependencies.iter().map(|&d| graph.id(d)));
    let mut outputs: Vec<(usize, Context)> = Vec::new();
    for (id, text) in conn.query_all(LOAD_OUTPUTS, &[Param::Text(execution_id), Param::Text(&list)], output_text)? {
        if let Some(position) = graph.position(&id) {
            outputs.push((position, parse_context(&text, "a task output")?));
        }
    }
    outputs.sort_by_key(|(position, _)| *position);
    Ok(merge(outputs.iter().map(|(_, output)| output)))
}

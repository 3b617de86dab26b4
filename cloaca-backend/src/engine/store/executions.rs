//! Executions and task attempts: their SQL and the rules that make a state
//! change correct, written once for both backends over [`Conn`].
//!
//! [`record_attempt`] fences an attempt by its number, readies dependents,
//! skips the descendants of a failed task and finishes the execution, all
//! inside the caller's one transaction: a completed task, its stored output
//! and its readied dependents commit together or not at all.

use std::collections::HashMap;

use super::conn::{json_list, Conn, Param, Row};
use super::decide::{decide_candidates, follow_end, Decided, Ended};
use super::records::{AttemptOutcome, AttemptRecorded, Channel, Claim, Claimed, FailedTask, LoadedContexts, NextClaim, RootClaims, Work};
use crate::engine::error::{Error, Result};
use crate::engine::model::{Context, ExecutionRecord, ExecutionStatus, WorkflowRef};
use crate::engine::workflow::{frontier_context, merge, Dag, Graph, Registry, SkipReason, TaskFailure};

// ---- creating and claiming ------------------------------------------------

// A conflict on either unique key inserts nothing: an id already stored
// means this very insert committed before its connection dropped and is
// being run again; a key already stored means another start with the same
// idempotency key came first (on PostgreSQL a concurrent one is waited for).
const INSERT_EXECUTION: &str = "INSERT INTO cloaca_executions
    (id, workflow_name, workflow_version, status, input_context, tasks_remaining, created_at, idempotency_key, started_at)
    VALUES (?1, ?2, ?3, ?8, ?4, ?5, ?6, ?7, ?9) ON CONFLICT DO NOTHING";
pub(crate) const FIND_BY_KEY: &str = "SELECT id, workflow_name FROM cloaca_executions WHERE idempotency_key = ?1";
const INSERT_TASK: &str = "INSERT INTO cloaca_task_executions
    (execution_id, task_id, workflow_name, workflow_version, status, deps_remaining, max_attempts, next_attempt_at, ready_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
// A root claimed by the creating transaction: as CLAIM_READY leaves a row.
const INSERT_CLAIMED_TASK: &str = "INSERT INTO cloaca_task_executions
    (execution_id, task_id, workflow_name, workflow_version, status, deps_remaining, max_attempts, next_attempt_at, ready_at,
     attempt, lease_owner, lease_expires_at, started_at)
    VALUES (?1, ?2, ?3, ?4, 'running', 0, ?5, ?6, ?6, 1, ?7, ?8, ?6) RETURNING id";
// PostgreSQL only: INSERT_TASK and INSERT_CLAIMED_TASK for every task of a
// new execution in one statement (?7: a JSON array of NewTask), in the
// array's order, so that row ids follow the workflow's order as they do
// row by row; only where `$guard` holds. ?1-?3 the execution, its workflow
// and version, ?4 now, ?5 and ?6 the claiming owner and lease expiry.
macro_rules! insert_task_rows {
    ($guard:literal) => {
        concat!(
            "inserted AS (
    INSERT INTO cloaca_task_executions
        (execution_id, task_id, workflow_name, workflow_version, status, deps_remaining, max_attempts, next_attempt_at, ready_at,
         attempt, lease_owner, lease_expires_at, started_at)
    SELECT ?1, r.task_id, ?2, ?3, r.status, r.deps, r.max_attempts, ?4,
        CASE WHEN r.status <> 'pending' THEN CAST(?4 AS BIGINT) END,
        CASE WHEN r.status = 'running' THEN 1 ELSE 0 END,
        CASE WHEN r.status = 'running' THEN CAST(?5 AS TEXT) END,
        CASE WHEN r.status = 'running' THEN CAST(?6 AS BIGINT) END,
        CASE WHEN r.status = 'running' THEN CAST(?4 AS BIGINT) END
    FROM ROWS FROM (json_to_recordset(CAST(?7 AS TEXT)::json) AS (task_id TEXT, status TEXT, deps BIGINT, max_attempts BIGINT))
        WITH ORDINALITY AS r(task_id, status, deps, max_attempts, n)",
            $guard,
            "
    ORDER BY r.n
    RETURNING id, task_id, status)"
        )
    };
}
// The task rows of a new execution; returns the claimed ones.
const INSERT_TASKS: &str = concat!(
    "WITH ",
    insert_task_rows!(""),
    "
    SELECT id, task_id FROM inserted WHERE status = 'running' ORDER BY id"
);
// PostgreSQL only: INSERT_EXECUTION and INSERT_TASKS as one statement that
// commits by itself, at the server's durability (?13), and notifies ?14 of
// the ready roots nobody claimed: one round trip where a transaction takes
// four. The execution: ?8 its input, ?9 its task count, ?10 the
// idempotency key, ?11 its status, ?12 its start. It inserts nothing when
// the execution's id or key exists (the first row says how many
// executions it inserted); the claimed rows follow.
const CREATE_ALONE: &str = concat!(
    "WITH execution AS (
        INSERT INTO cloaca_executions
        (id, workflow_name, workflow_version, status, input_context, tasks_remaining, created_at, idempotency_key, started_at)
        VALUES (?1, ?2, ?3, ?11, ?8, ?9, ?4, ?10, ?12) ON CONFLICT DO NOTHING
        RETURNING id, set_config('synchronous_commit', CAST(?13 AS TEXT), true) AS durability),
    ",
    insert_task_rows!(" WHERE EXISTS (SELECT 1 FROM execution)"),
    ",
    announced AS (SELECT pg_notify(CAST(?14 AS TEXT), CAST(count(*) AS TEXT)) FROM inserted WHERE status = 'ready' HAVING count(*) > 0)
    SELECT (SELECT count(*) FROM execution), (SELECT durability FROM execution), (SELECT count(*) FROM announced),
        CAST(NULL AS BIGINT), CAST(NULL AS TEXT)
    UNION ALL
    SELECT NULL, NULL, NULL, id, task_id FROM (SELECT id, task_id FROM inserted WHERE status = 'running' ORDER BY id) AS claimed"
);
// The roots an earlier run of this very creation claimed (its commit went
// through, its answer was lost with the connection).
pub(crate) const FIND_CLAIMED_ROOTS: &str = "SELECT id, task_id FROM cloaca_task_executions
    WHERE execution_id = ?1 AND status = 'running' AND lease_owner = ?2 AND attempt = 1 AND deps_remaining = 0";
const INSERT_SHAPE: &str = "INSERT INTO cloaca_workflow_versions (workflow_name, workflow_version, shape, created_at)
    VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING";

/// What [`create_execution`] found or made.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Created {
    /// The execution that now exists: the new one, or the one an earlier
    /// start with the same idempotency key made.
    pub(crate) execution_id: String,
    /// True when that earlier execution was returned.
    pub(crate) existing: bool,
    /// The roots claimed for the runner that asked ([`RootClaims`]), each
    /// with its input (the execution input).
    pub(crate) claimed: Vec<Claimed>,
}

/// Inserts an execution with one row per task (roots start ready), and the
/// shape of its workflow version unless `shape_stored`. With `claims`, up
/// to its count of the plain roots (those without a trigger rule) start
/// claimed by its owner instead, and the execution starts running. With an
/// idempotency key already used for this workflow, inserts nothing and
/// returns that execution; used for another workflow, refuses.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create_execution(
    conn: &mut dyn Conn,
    execution_id: &str,
    dag: &Dag,
    input: &Context,
    idempotency_key: Option<&str>,
    shape_stored: bool,
    claims: Option<&RootClaims>,
    now: i64,
) -> Result<Created> {
    let input_text = to_json(input, "storing an execution input")?;
    let plain_root = |i: usize| dag.dependencies_of(i).is_empty() && dag.task(i).rule.is_none();
    let plain_roots = (0..dag.len()).filter(|&i| plain_root(i)).count();
    let to_claim = claims.map_or(0, |c| c.count.min(plain_roots));
    let inserted = conn.execute(
        INSERT_EXECUTION,
        &[
            Param::Text(execution_id),
            Param::Text(dag.name()),
            Param::Text(dag.version()),
            Param::Text(&input_text),
            Param::Int(dag.len() as i64),
            Param::Int(now),
            Param::NullableText(idempotency_key),
            Param::Text(if to_claim > 0 { "running" } else { "pending" }),
            Param::NullableInt((to_claim > 0).then_some(now)),
        ],
    )?;
    let created = |existing: bool, claimed: Vec<Claimed>| Created { execution_id: execution_id.to_string(), existing, claimed };
    if inserted == 0 {
        let found = match idempotency_key {
            None => None,
            Some(key) => conn.query_opt(FIND_BY_KEY, &[Param::Text(key)], |row| Ok((row.text(0)?, row.text(1)?)))?,
        };
        return match found {
            Some((_, workflow)) if workflow != dag.name() => Err(Error::IdempotencyConflict {
                key: idempotency_key.unwrap_or_default().to_string(),
                existing_workflow: workflow,
                requested_workflow: dag.name().to_string(),
            }),
            Some((found, _)) if found != execution_id => Ok(Created { execution_id: found, existing: true, claimed: Vec::new() }),
            // This very insert, committed by an earlier run whose answer was lost.
            _ => Ok(created(false, claimed_earlier(conn, execution_id, dag, input, claims, now)?)),
        };
    }
    if !shape_stored {
        let shape = shape_json(dag);
        conn.execute(INSERT_SHAPE, &[Param::Text(dag.name()), Param::Text(dag.version()), Param::Text(&shape), Param::Int(now)])?;
    }
    // A root with a rule is decided below, once every row exists (its rule
    // may name any task of the workflow).
    let (rows, ruled_roots) = new_task_rows(dag, to_claim);
    let owner = claims.map(|c| (c.owner, now + c.lease_ms));
    let claimed: Vec<Claimed> = insert_tasks(conn, execution_id, dag, &rows, owner, now)?
        .into_iter()
        .map(|(row_id, task_id)| root_claim(row_id, execution_id, &task_id, dag, input, owner.map_or("", |(o, _)| o), now))
        .collect();
    let mut roots = plain_roots - claimed.len();
    if !ruled_roots.is_empty() {
        let decided = decide_candidates(conn, execution_id, dag, &ruled_roots, now)?;
        roots += decided.readied.len();
        // Only a root's start marks an execution running (load_contexts);
        // when every root was skipped by its rule, a dependent may be the
        // first task to run, so the execution starts now.
        if decided.readied.iter().any(|id| dag.position(id).is_some_and(|p| !dag.dependencies_of(p).is_empty())) {
            conn.query_opt(START_EXECUTION, &[Param::Text(execution_id), Param::Int(now)], |row| row.text(0))?;
        }
        if decided.skipped > 0 {
            let (remaining, _) = count_finished(conn, execution_id, decided.skipped)?;
            settle(conn, execution_id, remaining, dag, now)?;
        }
    }
    if roots > 0 {
        conn.notify(Channel::Work, &roots.to_string())?;
    }
    Ok(created(false, claimed))
}

/// The task rows of a new execution, the first `to_claim` plain roots
/// claimed; and the positions of the roots with a rule.
fn new_task_rows(dag: &Dag, to_claim: usize) -> (Vec<NewTask<'_>>, Vec<usize>) {
    let mut ruled_roots = Vec::new();
    let mut rows = Vec::with_capacity(dag.len());
    let mut claiming = 0;
    for (i, task) in dag.tasks().iter().enumerate() {
        let deps = dag.dependencies_of(i).len() as i64;
        let ruled_root = deps == 0 && task.rule.is_some();
        if ruled_root {
            ruled_roots.push(i);
        }
        let status = if deps == 0 && !ruled_root && claiming < to_claim {
            claiming += 1;
            "running"
        } else if deps == 0 && !ruled_root {
            "ready"
        } else {
            "pending"
        };
        rows.push(NewTask { task_id: &task.id, status, deps, max_attempts: i64::from(task.retry.max_attempts()) });
    }
    (rows, ruled_roots)
}

/// The JSON array of `rows` that INSERT_TASKS and CREATE_ALONE read.
fn task_rows_json(rows: &[NewTask]) -> String {
    let list =
        rows.iter().map(|r| serde_json::json!({"task_id": r.task_id, "status": r.status, "deps": r.deps, "max_attempts": r.max_attempts}));
    serde_json::Value::Array(list.collect()).to_string()
}

/// ?1-?7 of INSERT_TASKS and CREATE_ALONE: the execution, its workflow and
/// version, now, the claiming owner and lease expiry, and the rows' JSON.
fn task_rows_params<'a>(execution_id: &'a str, dag: &'a Dag, now: i64, claiming: (&'a str, i64), rows: &'a str) -> [Param<'a>; 7] {
    [
        Param::Text(execution_id),
        Param::Text(dag.name()),
        Param::Text(dag.version()),
        Param::Int(now),
        Param::Text(claiming.0),
        Param::Int(claiming.1),
        Param::Text(rows),
    ]
}

/// [`create_execution`] as one statement that commits by itself
/// (CREATE_ALONE), on a backend that offers it ([`Conn::commit_level`]),
/// for a workflow version whose shape is stored and whose roots have no
/// rules. None when it did not apply and wrote nothing (the id or the
/// idempotency key exists): the transaction is for that.
pub(crate) fn create_execution_alone(
    conn: &mut dyn Conn,
    execution_id: &str,
    dag: &Dag,
    input: &Context,
    idempotency_key: Option<&str>,
    claims: Option<&RootClaims>,
    now: i64,
) -> Result<Option<Created>> {
    let (Some(level), Some(channel)) = (conn.commit_level().map(str::to_string), conn.channel_name(Channel::Work).map(str::to_string))
    else {
        return Ok(None);
    };
    let roots = dag.roots().len();
    let to_claim = claims.map_or(0, |c| c.count.min(roots));
    let (rows, ruled_roots) = new_task_rows(dag, to_claim);
    if !ruled_roots.is_empty() {
        return Ok(None);
    }
    let input_text = to_json(input, "storing an execution input")?;
    let list = task_rows_json(&rows);
    let owner = claims.map_or("", |c| c.owner);
    let rows_params = task_rows_params(execution_id, dag, now, (owner, now + claims.map_or(0, |c| c.lease_ms)), &list);
    let params = [
        &rows_params[..],
        &[
            Param::Text(&input_text),
            Param::Int(dag.len() as i64),
            Param::NullableText(idempotency_key),
            Param::Text(if to_claim > 0 { "running" } else { "pending" }),
            Param::NullableInt((to_claim > 0).then_some(now)),
            Param::Text(&level),
            Param::Text(&channel),
        ],
    ]
    .concat();
    let mut inserted = None;
    let mut claimed = Vec::new();
    conn.query(CREATE_ALONE, &params, &mut |row| {
        match row.opt_int(0)? {
            Some(count) => inserted = Some((count == 1, row.opt_text(1)?)),
            None => claimed.push(root_claim(row.int(3)?, execution_id, &row.text(4)?, dag, input, owner, now)),
        }
        Ok(())
    })?;
    claimed.sort_by_key(|c| c.claim.row_id);
    match inserted {
        Some((true, set)) => {
            check_level("creating an execution", set, &level)?;
            Ok(Some(Created { execution_id: execution_id.to_string(), existing: false, claimed }))
        }
        _ => Ok(None),
    }
}

/// A task row of a new execution: `running` for a root claimed as it is
/// inserted, `ready` for another root, else `pending`.
struct NewTask<'a> {
    task_id: &'a str,
    status: &'static str,
    deps: i64,
    max_attempts: i64,
}

/// Inserts the task rows of a new execution in the workflow's order, the
/// `running` ones claimed for `owner` (with their lease expiry); returns
/// their row ids and task ids. Where a statement is a round trip, one
/// statement inserts them all.
fn insert_tasks(
    conn: &mut dyn Conn,
    execution_id: &str,
    dag: &Dag,
    rows: &[NewTask],
    owner: Option<(&str, i64)>,
    now: i64,
) -> Result<Vec<(i64, String)>> {
    let (owner, expires) = owner.unwrap_or(("", now));
    if conn.is_remote() {
        let list = task_rows_json(rows);
        let params = task_rows_params(execution_id, dag, now, (owner, expires), &list);
        return conn.query_all(INSERT_TASKS, &params, |row| Ok((row.int(0)?, row.text(1)?)));
    }
    let mut claimed = Vec::new();
    for row in rows {
        if row.status == "running" {
            let params = [
                Param::Text(execution_id),
                Param::Text(row.task_id),
                Param::Text(dag.name()),
                Param::Text(dag.version()),
                Param::Int(row.max_attempts),
                Param::Int(now),
                Param::Text(owner),
                Param::Int(expires),
            ];
            let row_id = conn
                .query_opt(INSERT_CLAIMED_TASK, &params, |r| r.int(0))?
                .ok_or_else(|| Error::corrupt("creating an execution", "inserting a claimed task returned no row id"))?;
            claimed.push((row_id, row.task_id.to_string()));
            continue;
        }
        let ready = row.status == "ready";
        conn.execute(
            INSERT_TASK,
            &[
                Param::Text(execution_id),
                Param::Text(row.task_id),
                Param::Text(dag.name()),
                Param::Text(dag.version()),
                Param::Text(row.status),
                Param::Int(row.deps),
                Param::Int(row.max_attempts),
                Param::Int(now),
                Param::NullableInt(ready.then_some(now)),
            ],
        )?;
    }
    Ok(claimed)
}

/// A root claimed as it was inserted: attempt 1 of its first round, its
/// input the execution input.
fn root_claim(row_id: i64, execution_id: &str, task_id: &str, dag: &Dag, input: &Context, owner: &str, now: i64) -> Claimed {
    let claim = Claim {
        row_id,
        execution_id: execution_id.to_string(),
        task_id: task_id.to_string(),
        workflow: WorkflowRef { name: dag.name().to_string(), version: dag.version().to_string() },
        attempt: 1,
        failures: 0,
        attempt_base: 0,
        owner: owner.to_string(),
        claimed_at: now,
    };
    Claimed { claim, input: Some(input.clone()) }
}

/// The roots an earlier, committed run of this creation claimed for the
/// same owner, so that they are run rather than left to lapse.
fn claimed_earlier(
    conn: &mut dyn Conn,
    execution_id: &str,
    dag: &Dag,
    input: &Context,
    claims: Option<&RootClaims>,
    now: i64,
) -> Result<Vec<Claimed>> {
    let Some(claims) = claims else {
        return Ok(Vec::new());
    };
    let rows =
        conn.query_all(FIND_CLAIMED_ROOTS, &[Param::Text(execution_id), Param::Text(claims.owner)], |row| Ok((row.int(0)?, row.text(1)?)))?;
    Ok(rows.into_iter().map(|(row_id, task_id)| root_claim(row_id, execution_id, &task_id, dag, input, claims.owner, now)).collect())
}

/// A workflow version's shape as stored: its task ids in topological order,
/// each with the positions of its dependencies.
pub(crate) fn shape_json(dag: &Dag) -> String {
    let tasks: Vec<serde_json::Value> = (0..dag.len())
        .map(|i| {
            let task = dag.task(i);
            let mut entry = serde_json::json!({"id": task.id, "deps": dag.dependencies_of(i)});
            if let Some(rule) = &task.rule {
                entry["rule"] = rule.to_json();
            }
            entry
        })
        .collect();
    serde_json::Value::from(tasks).to_string()
}

// The oldest ready task of the workflows ?4 whose time (?3) has come,
// claimed for ?1 until ?2.
macro_rules! claim_ready {
    () => {
        "UPDATE cloaca_task_executions
    SET status = 'running', attempt = attempt + 1, lease_owner = ?1, lease_expires_at = ?2, started_at = ?3, finished_at = NULL
    WHERE id = (SELECT id FROM cloaca_task_executions
                WHERE status = 'ready' AND next_attempt_at <= ?3
                  AND workflow_name || '@' || workflow_version IN (SELECT value FROM json_each(?4))
                ORDER BY next_attempt_at, id LIMIT 1 /*LOCK*/)
    RETURNING id, execution_id, task_id, workflow_name, workflow_version, attempt, failures, attempt_base"
    };
}
pub(crate) const CLAIM_READY: &str = claim_ready!();
// The lost attempt goes into the row's history (its runner, its start and
// when its lease lapsed) in the same statement that takes it over. A paused
// execution's lost attempts wait for resume_execution like its ready tasks.
// Only where `$also` holds too.
macro_rules! claim_expired {
    ($also:literal) => {
        concat!(
            "UPDATE cloaca_task_executions
    SET status = 'running', attempt = attempt + 1, lease_owner = ?1, lease_expires_at = ?2, started_at = ?3, finished_at = NULL,
        history = COALESCE(history, '') || '{\"o\":\"lease_expired\",\"a\":' || CAST(attempt - attempt_base AS TEXT)
            || ',\"r\":\"' || COALESCE(lease_owner, '') || '\",\"s\":' || CAST(COALESCE(started_at, 0) AS TEXT)
            || ',\"e\":' || CAST(COALESCE(lease_expires_at, 0) AS TEXT) || '}
'
    WHERE id = (SELECT id FROM cloaca_task_executions
                WHERE status = 'running' AND lease_expires_at < ?3
                  AND workflow_name || '@' || workflow_version IN (SELECT value FROM json_each(?4))
                  AND execution_id NOT IN (SELECT id FROM cloaca_executions WHERE status = 'paused')
                ORDER BY lease_expires_at, id LIMIT 1 /*LOCK*/)",
            $also,
            "
    RETURNING id, execution_id, task_id, workflow_name, workflow_version, attempt, failures, attempt_base"
        )
    };
}
pub(crate) const CLAIM_EXPIRED: &str = claim_expired!("");

// A claim its runner stopped before any worker took it: ready again (held
// in a paused execution), as if never claimed.
pub(crate) const RELEASE_UNSTARTED: &str = "UPDATE cloaca_task_executions
    SET status = CASE WHEN (SELECT status FROM cloaca_executions WHERE cloaca_executions.id = cloaca_task_executions.execution_id)
                          = 'paused' THEN 'held' ELSE 'ready' END,
        attempt = attempt - 1, lease_owner = NULL, lease_expires_at = NULL, started_at = NULL
    WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND status = 'running'";

/// Gives back claims no attempt was started for.
pub(crate) fn release_unstarted(conn: &mut dyn Conn, claims: &[Claim]) -> Result<()> {
    for claim in claims {
        conn.execute(RELEASE_UNSTARTED, &[Param::Int(claim.row_id), Param::Int(claim.attempt), Param::Text(&claim.owner)])?;
    }
    Ok(())
}

/// Claims one ready task, or with `recover` one whose lease expired. Each
/// claim is a single statement, so it needs no explicit transaction.
pub(crate) fn claim(
    conn: &mut dyn Conn,
    owner: &str,
    workflows: &[WorkflowRef],
    now: i64,
    lease_ms: i64,
    recover: bool,
) -> Result<Option<Claim>> {
    let list = workflow_list(workflows);
    let params = [Param::Text(owner), Param::Int(now + lease_ms), Param::Int(now), Param::Text(&list)];
    let statements: &[&'static str] = if recover { &[CLAIM_READY, CLAIM_EXPIRED] } else { &[CLAIM_READY] };
    for sql in statements {
        let claimed = conn.query_opt(sql, &params, |row| claimed_row(row, owner, now))?;
        if claimed.is_some() {
            return Ok(claimed);
        }
    }
    Ok(None)
}

/// A claim as CLAIM_READY and CLAIM_EXPIRED return it.
fn claimed_row(row: &dyn Row, owner: &str, now: i64) -> Result<Claim> {
    Ok(Claim {
        row_id: row.int(0)?,
        execution_id: row.text(1)?,
        task_id: row.text(2)?,
        workflow: WorkflowRef { name: row.text(3)?, version: row.text(4)? },
        attempt: row.int(5)?,
        failures: row.int(6)?,
        attempt_base: row.int(7)?,
        owner: owner.to_string(),
        claimed_at: now,
    })
}

/// A claim for `looking` (of a ready task whose time `now` has come, or
/// with `recover` one whose lease lapsed) with its input; or, when nothing
/// is claimable, when the next task of its workflows comes due
/// ([`next_due`]). One round trip on PostgreSQL (CLAIM_OR_DUE).
pub(crate) fn claim_or_next_due(conn: &mut dyn Conn, looking: &NextClaim, now: i64, recover: bool) -> Result<Work> {
    let NextClaim { owner, workflows, registry, lease_ms } = *looking;
    if !conn.is_remote() {
        return match claim(conn, owner, workflows, now, lease_ms, recover)? {
            Some(claim) => Ok(Work::Claimed(with_input(conn, claim, registry, now)?)),
            None => Ok(Work::Idle { next_due: next_due(conn, workflows, recover)? }),
        };
    }
    let list = workflow_list(workflows);
    let params = [Param::Text(owner), Param::Int(now + lease_ms), Param::Int(now), Param::Text(&list), Param::Int(i64::from(recover))];
    let found = conn.query_one(CLAIM_OR_DUE, &params, |row| match row.opt_int(0)? {
        Some(_) => Ok(Ok(claimed_row(row, owner, now)?)),
        None => Ok(Err(row.opt_int(8)?)),
    })?;
    let claim = match found {
        Ok(claim) => claim,
        Err(next_due) => return Ok(Work::Idle { next_due }),
    };
    Ok(Work::Claimed(with_input(conn, claim, registry, now)?))
}

/// `claim` with its input, when its workflow is in `registry`.
fn with_input(conn: &mut dyn Conn, claim: Claim, registry: &Registry, now: i64) -> Result<Claimed> {
    let input = match registry.get_exact(&claim.workflow) {
        Some(workflow) => task_input(conn, &claim, &workflow.dag, now)?,
        None => None,
    };
    Ok(Claimed { claim, input })
}

/// The input of a claimed task: its dependencies' outputs merged in
/// topological order, or the execution input for a root. None when the
/// task is not part of `dag` or a stored context does not parse: the
/// runner then loads it again itself and reports what it finds, while the
/// claim stands (a failed read must not undo the transaction it is part of).
fn task_input(conn: &mut dyn Conn, claim: &Claim, dag: &Dag, now: i64) -> Result<Option<Context>> {
    let Some(position) = dag.position(&claim.task_id) else {
        return Ok(None);
    };
    let dependencies: Vec<&str> = dag.dependencies_of(position).iter().map(|&d| dag.task(d).id.as_str()).collect();
    let texts = load_context_texts(conn, &claim.execution_id, &dependencies, now)?;
    Ok(texts.parse().ok().map(|loaded| input_of(&dependencies, loaded)))
}

/// A task's input from what [`load_contexts`] returned.
pub(crate) fn input_of(dependencies: &[&str], loaded: LoadedContexts) -> Context {
    match loaded.input {
        Some(input) => input,
        None => merge(dependencies.iter().filter_map(|id| loaded.outputs.get(*id))),
    }
}

const LOAD_INPUT: &str = "SELECT input_context FROM cloaca_executions WHERE id = ?1";
// Read first: only an execution not yet started is updated, so that the
// claims of a fan-out's roots do not each wait for its row, which every
// completion of the execution holds until it commits.
pub(crate) const READ_INPUT_AND_START: &str = "SELECT input_context,
    CAST(CASE WHEN status = 'pending' OR started_at IS NULL THEN 1 ELSE 0 END AS BIGINT) FROM cloaca_executions WHERE id = ?1";
pub(crate) const START_EXECUTION: &str = "UPDATE cloaca_executions
    SET status = CASE WHEN status = 'pending' THEN 'running' ELSE status END, started_at = COALESCE(started_at, ?2)
    WHERE id = ?1 RETURNING input_context";
pub(crate) const LOAD_OUTPUTS: &str = "SELECT task_id, output_context FROM cloaca_task_executions
    WHERE execution_id = ?1 AND status = 'completed' AND task_id IN (SELECT value FROM json_each(?2))";

/// The outputs of `dependencies`; for a root task (no dependencies) the
/// execution input, marking the execution running in the same statement
/// (only a root can be the first task of an execution to start).
pub(crate) fn load_contexts(conn: &mut dyn Conn, execution_id: &str, dependencies: &[&str], now: i64) -> Result<LoadedContexts> {
    load_context_texts(conn, execution_id, dependencies, now)?.parse()
}

/// The stored JSON texts [`load_contexts`] parses.
enum ContextTexts {
    Input(String),
    Outputs(Vec<(String, String)>),
}

impl ContextTexts {
    fn parse(self) -> Result<LoadedContexts> {
        let mut loaded = LoadedContexts::default();
        match self {
            ContextTexts::Input(text) => loaded.input = Some(parse_context(&text, "an execution input")?),
            ContextTexts::Outputs(texts) => {
                for (task_id, text) in texts {
                    loaded.outputs.insert(task_id, parse_context(&text, "a task output")?);
                }
            }
        }
        Ok(loaded)
    }
}

fn load_context_texts(conn: &mut dyn Conn, execution_id: &str, dependencies: &[&str], now: i64) -> Result<ContextTexts> {
    if dependencies.is_empty() {
        let unknown = || Error::UnknownExecution(execution_id.to_string());
        let (text, to_start) = conn
            .query_opt(READ_INPUT_AND_START, &[Param::Text(execution_id)], |row| Ok((row.text(0)?, row.int(1)? == 1)))?
            .ok_or_else(unknown)?;
        if !to_start {
            return Ok(ContextTexts::Input(text));
        }
        let text =
            conn.query_opt(START_EXECUTION, &[Param::Text(execution_id), Param::Int(now)], |row| row.text(0))?.ok_or_else(unknown)?;
        return Ok(ContextTexts::Input(text));
    }
    let list = json_list(dependencies);
    Ok(ContextTexts::Outputs(conn.query_all(LOAD_OUTPUTS, &[Param::Text(execution_id), Param::Text(&list)], output_text)?))
}

// ---- leases and wake-up times ----------------------------------------------

// Row ids travel as JSON strings, cast back so that the rows are found by
// their key (migration 9 dropped the index by lease owner).
pub(crate) const RENEW_LEASES: &str = "UPDATE cloaca_task_executions SET lease_expires_at = ?2
    WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(?3)) AND lease_owner = ?1 AND status = 'running'";
// One arm per status, each matching its partial index (migration 4): with
// `status = 'ready' OR status = 'running'` no partial index applies and the
// planner reads the whole table, history included.
// The earliest time a task of the workflows `$list` comes due: a ready
// task's, or (where `$recover` is 1) a running task's lease expiry.
macro_rules! next_due {
    ($list:literal, $recover:literal) => {
        concat!(
            "SELECT MIN(due) FROM (
        SELECT MIN(next_attempt_at) AS due FROM cloaca_task_executions
        WHERE status = 'ready' AND workflow_name || '@' || workflow_version IN (SELECT value FROM json_each(",
            $list,
            "))
        UNION ALL
        SELECT MIN(lease_expires_at) AS due FROM cloaca_task_executions
        WHERE status = 'running' AND CAST(",
            $recover,
            " AS BIGINT) = 1
          AND workflow_name || '@' || workflow_version IN (SELECT value FROM json_each(",
            $list,
            "))
          AND execution_id NOT IN (SELECT id FROM cloaca_executions WHERE status = 'paused')
    ) AS due_times"
        )
    };
}
pub(crate) const NEXT_DUE: &str = next_due!("?1", "?2");
// PostgreSQL only: CLAIM_READY, then (with ?5 = 1, and nothing ready)
// CLAIM_EXPIRED, then (nothing claimed) NEXT_DUE, in one round trip where
// a worker that finds nothing spent three. The claimed row, or a row of
// NULLs and the next due time.
const CLAIM_OR_DUE: &str = concat!(
    "WITH ready AS (",
    claim_ready!(),
    "),
    expired AS (",
    claim_expired!(" AND CAST(?5 AS BIGINT) = 1 AND NOT EXISTS (SELECT 1 FROM ready)"),
    ")
    SELECT *, CAST(NULL AS BIGINT) FROM ready
    UNION ALL SELECT *, NULL FROM expired
    UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, (",
    next_due!("?4", "?5"),
    ") WHERE NOT EXISTS (SELECT 1 FROM ready) AND NOT EXISTS (SELECT 1 FROM expired)"
);

pub(crate) const CANCELLED_ROWS: &str = "SELECT id FROM cloaca_task_executions
    WHERE id IN (SELECT CAST(value AS BIGINT) FROM json_each(?1)) AND status = 'cancelled'";

pub(crate) fn cancelled_rows(conn: &mut dyn Conn, row_ids: &[i64]) -> Result<Vec<i64>> {
    let list = json_list(row_ids.iter().map(i64::to_string));
    conn.query_all(CANCELLED_ROWS, &[Param::Text(&list)], |row| row.int(0))
}

pub(crate) fn renew_leases(conn: &mut dyn Conn, owner: &str, row_ids: &[i64], expires_at: i64) -> Result<()> {
    let list = json_list(row_ids.iter().map(i64::to_string));
    conn.execute(RENEW_LEASES, &[Param::Text(owner), Param::Int(expires_at), Param::Text(&list)]).map(|_| ())
}

pub(crate) fn next_due(conn: &mut dyn Conn, workflows: &[WorkflowRef], recover: bool) -> Result<Option<i64>> {
    let list = workflow_list(workflows);
    conn.query_one(NEXT_DUE, &[Param::Text(&list), Param::Int(i64::from(recover))], |row| row.opt_int(0))
}

// ---- reading executions ------------------------------------------------------

/// The columns [`execution_record`] reads, in its order.
macro_rules! execution_columns {
    () => {
        "id, workflow_name, workflow_version, status, input_context, final_context, error_message, created_at, started_at, finished_at"
    };
}
pub(crate) const GET_EXECUTION: &str = concat!("SELECT ", execution_columns!(), " FROM cloaca_executions WHERE id = ?1");
// One statement per combination of filters, each an equality the planner can
// serve from its index (migration 4) in the order of the page: written as
// `(?1 IS NULL OR workflow_name = ?1)`, no index applies, and a filtered page
// walks every execution of the history newest first until it is full.
// One statement per combination of filters, each an equality the planner
// serves from its index (migration 4) in the order of the page. Written once
// as `(?1 IS NULL OR workflow_name = ?1)`, no index applies, and a filtered
// page walks the whole history newest first until it is full.
// `seq > 0` (every row) is the condition of the partial newest-first index,
// which only this statement may use (see migration 4).
pub(crate) const LIST_EXECUTIONS: &str =
    concat!("SELECT ", execution_columns!(), " FROM cloaca_executions WHERE seq > 0 ORDER BY created_at DESC, seq DESC LIMIT ?1");
pub(crate) const LIST_EXECUTIONS_OF_WORKFLOW: &str = concat!(
    "SELECT ",
    execution_columns!(),
    " FROM cloaca_executions WHERE workflow_name = ?1 ORDER BY created_at DESC, seq DESC LIMIT ?2"
);
pub(crate) const LIST_EXECUTIONS_IN_STATUS: &str =
    concat!("SELECT ", execution_columns!(), " FROM cloaca_executions WHERE status = ?1 ORDER BY created_at DESC, seq DESC LIMIT ?2");
pub(crate) const LIST_EXECUTIONS_OF_WORKFLOW_IN_STATUS: &str = concat!(
    "SELECT ",
    execution_columns!(),
    " FROM cloaca_executions WHERE workflow_name = ?1 AND status = ?2 ORDER BY created_at DESC, seq DESC LIMIT ?3"
);

fn execution_record(row: &dyn Row) -> Result<ExecutionRecord> {
    let final_context = match row.opt_text(5)? {
        Some(text) => Some(parse_context(&text, "a final context")?),
        None => None,
    };
    Ok(ExecutionRecord {
        id: row.text(0)?,
        workflow_name: row.text(1)?,
        workflow_version: row.text(2)?,
        status: ExecutionStatus::from_db(&row.text(3)?)?,
        input: parse_context(&row.text(4)?, "an execution input")?,
        final_context,
        error_message: row.opt_text(6)?,
        created_at: row.int(7)?,
        started_at: row.opt_int(8)?,
        finished_at: row.opt_int(9)?,
    })
}

pub(crate) fn get_execution(conn: &mut dyn Conn, execution_id: &str) -> Result<Option<ExecutionRecord>> {
    conn.query_opt(GET_EXECUTION, &[Param::Text(execution_id)], execution_record)
}

pub(crate) fn list_executions(
    conn: &mut dyn Conn,
    workflow_name: Option<&str>,
    status: Option<ExecutionStatus>,
    limit: i64,
) -> Result<Vec<ExecutionRecord>> {
    let status = status.map(ExecutionStatus::as_db);
    let (sql, params) = list_statement(workflow_name, status, limit);
    conn.query_all(sql, &params, execution_record)
}

/// The listing statement for the filters given, with its parameters.
pub(crate) fn list_statement<'a>(workflow_name: Option<&'a str>, status: Option<&'a str>, limit: i64) -> (&'static str, Vec<Param<'a>>) {
    match (workflow_name, status) {
        (None, None) => (LIST_EXECUTIONS, vec![Param::Int(limit)]),
        (Some(name), None) => (LIST_EXECUTIONS_OF_WORKFLOW, vec![Param::Text(name), Param::Int(limit)]),
        (None, Some(status)) => (LIST_EXECUTIONS_IN_STATUS, vec![Param::Text(status), Param::Int(limit)]),
        (Some(name), Some(status)) => {
            (LIST_EXECUTIONS_OF_WORKFLOW_IN_STATUS, vec![Param::Text(name), Param::Text(status), Param::Int(limit)])
        }
    }
}

pub(crate) const COMPLETED_OUTPUTS: &str =
    "SELECT task_id, output_context FROM cloaca_task_executions WHERE execution_id = ?1 AND status = 'completed'";

/// (task_id, output JSON) of every completed task of an execution.
pub(crate) fn completed_output_texts(conn: &mut dyn Conn, execution_id: &str) -> Result<Vec<(String, String)>> {
    conn.query_all(COMPLETED_OUTPUTS, &[Param::Text(execution_id)], output_text)
}

pub(crate) fn output_text(row: &dyn Row) -> Result<(String, String)> {
    Ok((row.text(0)?, row.opt_text(1)?.unwrap_or_else(|| "{}".into())))
}

// ---- recording an attempt's end ------------------------------------------------

// The lease owner stays on a finished row: it names the runner of the last
// attempt. A failed attempt (not the last one when it is retried) goes into
// the row's history, a JSON line written with the row.
const COMPLETE_ATTEMPT: &str = "UPDATE cloaca_task_executions
    SET status = 'completed', output_context = ?3, lease_expires_at = NULL, finished_at = ?4
    WHERE id = ?1 AND attempt = ?2 AND status = 'running'";
const FAIL_ATTEMPT: &str = "UPDATE cloaca_task_executions
    SET status = 'failed', failures = failures + 1, error_type = ?3, error_message = ?4, error_traceback = ?5,
        lease_expires_at = NULL, finished_at = ?6, history = COALESCE(history, '') || ?7
    WHERE id = ?1 AND attempt = ?2 AND status = 'running'";
const RESCHEDULE_ATTEMPT: &str = "UPDATE cloaca_task_executions
    SET status = ?8, failures = failures + 1, error_type = ?3, error_message = ?4, error_traceback = ?5,
        lease_expires_at = NULL, next_attempt_at = ?6, finished_at = ?9, history = COALESCE(history, '') || ?7
    WHERE id = ?1 AND attempt = ?2 AND status = 'running'";
// SET expressions read the row as it was, so `deps_remaining = 1` means
// "this was the last dependency".
pub(crate) const RELEASE_DEPENDENTS: &str = "UPDATE cloaca_task_executions
    SET deps_remaining = deps_remaining - 1,
        status = CASE WHEN deps_remaining = 1 AND status = 'pending' THEN 'ready' ELSE status END,
        next_attempt_at = CASE WHEN deps_remaining = 1 AND status = 'pending' THEN ?3 ELSE next_attempt_at END,
        ready_at = CASE WHEN deps_remaining = 1 AND status = 'pending' THEN ?3 ELSE ready_at END
    WHERE execution_id = ?1 AND task_id IN (SELECT value FROM json_each(?2))
    RETURNING status";
// A paused execution's newly ready tasks are held until resume_execution.
pub(crate) const HOLD_READIED: &str = "UPDATE cloaca_task_executions SET status = 'held'
    WHERE execution_id = ?1 AND status = 'ready' AND task_id IN (SELECT value FROM json_each(?2))";
pub(crate) const SKIP_TASKS: &str = "UPDATE cloaca_task_executions SET status = 'skipped', skip_reason = ?4, finished_at = ?3
    WHERE execution_id = ?1 AND status IN ('pending', 'ready', 'held') AND task_id IN (SELECT value FROM json_each(?2))";
pub(crate) const SKIP_UNFINISHED: &str = "UPDATE cloaca_task_executions
    SET status = 'skipped', skip_reason = ?3, finished_at = ?2, lease_expires_at = NULL
    WHERE execution_id = ?1 AND status IN ('pending', 'ready', 'held', 'running')";
// Updating the execution row locks it (PostgreSQL), so that a pause, a
// cancellation and this attempt's consequences are applied in one order;
// its status says whether readied tasks are to be held.
pub(crate) const DECREMENT_REMAINING: &str =
    "UPDATE cloaca_executions SET tasks_remaining = tasks_remaining - ?2 WHERE id = ?1 RETURNING tasks_remaining, status";
// What settling an execution reads: its input, its completed tasks' outputs
// and its failed tasks' errors, a row each, told apart by the first column.
pub(crate) const SETTLE_READ: &str = "SELECT 'input', CAST(NULL AS TEXT), input_context, CAST(NULL AS BIGINT), CAST(NULL AS TEXT),
        CAST(NULL AS TEXT), CAST(NULL AS TEXT)
    FROM cloaca_executions WHERE id = ?1
    UNION ALL
    SELECT status, task_id, CASE WHEN status = 'completed' THEN output_context END, attempt, error_type, error_message, error_traceback
    FROM cloaca_task_executions WHERE execution_id = ?1 AND status IN ('completed', 'failed')";
// Returns the finished record, for whoever waits for it in this process.
pub(crate) const FINISH_EXECUTION: &str = concat!(
    "UPDATE cloaca_executions
    SET status = ?2, final_context = ?3, error_message = ?4, finished_at = ?5, tasks_remaining = 0 WHERE id = ?1 RETURNING ",
    execution_columns!()
);
// PostgreSQL only (SQLite has no data-modifying WITH): FINISH_EXECUTION
// with its notification (?6: the channel) in the same round trip.
pub(crate) const FINISH_EXECUTION_AND_NOTIFY: &str = concat!(
    "WITH finished AS (UPDATE cloaca_executions
        SET status = ?2, final_context = ?3, error_message = ?4, finished_at = ?5, tasks_remaining = 0 WHERE id = ?1 RETURNING ",
    execution_columns!(),
    ") SELECT ",
    execution_columns!(),
    " FROM finished WHERE pg_notify(CAST(?6 AS TEXT), CAST(finished.id AS TEXT)) IS NOT NULL"
);
const EXECUTION_STATUS: &str = "SELECT status FROM cloaca_executions WHERE id = ?1";

/// Records the end of an attempt and everything that follows from it; run
/// inside one transaction.
pub(crate) fn record_attempt(
    conn: &mut dyn Conn,
    claim: &Claim,
    dag: &Dag,
    outcome: &AttemptOutcome,
    now: i64,
    next: Option<&NextClaim>,
) -> Result<AttemptRecorded> {
    let (mut recorded, claimed) = match outcome {
        AttemptOutcome::Completed(output) if conn.is_remote() && !dag.has_rules() => {
            record_completion_merged(conn, claim, dag, output, now, next)?
        }
        _ => (record_outcome(conn, claim, dag, outcome, now)?, None),
    };
    if !recorded.accepted {
        return Ok(recorded);
    }
    recorded.next = claimed;
    // On PostgreSQL only the dependent a completion readies is claimed with
    // it: the completions of one execution queue for its row until they
    // commit, and another claim (with its input read) would lengthen what
    // they queue for. The worker claims after the commit instead, in a
    // statement that does not wait for the WAL flush.
    if let (Some(next), None, false) = (next, &recorded.next, conn.locks_rows()) {
        let output = match outcome {
            AttemptOutcome::Completed(output) => Some(output),
            AttemptOutcome::Failed { .. } => None,
        };
        recorded.next = claim_next(conn, claim, dag, output, next, now)?;
        recorded.looked = true;
    }
    // Other workers are told of what this one does not take itself.
    let unclaimed = recorded.readied.saturating_sub(u64::from(recorded.next.is_some()));
    if unclaimed > 0 {
        conn.notify(Channel::Work, &unclaimed.to_string())?;
    }
    Ok(recorded)
}

/// The position of the task whose attempt is being recorded.
fn recorded_position(dag: &Dag, claim: &Claim) -> Result<usize> {
    dag.position(&claim.task_id)
        .ok_or_else(|| Error::corrupt("recording a task", format!("task {:?} is not part of workflow {:?}", claim.task_id, dag.name())))
}

/// The input of `next` (a task of the same execution) when its only
/// dependency is the task at `finished` that just produced `output`.
fn handed_input(dag: &Dag, finished: usize, next: &Claim, output: &Context) -> Option<Context> {
    let only_dependency = dag.position(&next.task_id).is_some_and(|p| dag.dependencies_of(p) == [finished]);
    only_dependency.then(|| merge(std::iter::once(output)))
}

/// Claims the runner's next attempt inside the transaction that recorded
/// `finished`, with its input: for a task whose only dependency is
/// `finished`, the output just recorded. Only where the database does not
/// lock rows one by one (see [`record_attempt`]): reading a root's input
/// may start its execution, which would take a second execution's row.
fn claim_next(
    conn: &mut dyn Conn,
    finished: &Claim,
    dag: &Dag,
    output: Option<&Context>,
    next: &NextClaim,
    now: i64,
) -> Result<Option<Claimed>> {
    let Some(claim) = claim(conn, next.owner, next.workflows, now, next.lease_ms, false)? else {
        return Ok(None);
    };
    let input = if claim.execution_id == finished.execution_id {
        // The same execution runs the same version: `dag` is its definition.
        let handed = match (output, dag.position(&finished.task_id)) {
            (Some(output), Some(position)) => handed_input(dag, position, &claim, output),
            _ => None,
        };
        match handed {
            Some(input) => Some(input),
            None => task_input(conn, &claim, dag, now)?,
        }
    } else {
        match next.registry.get_exact(&claim.workflow) {
            Some(workflow) => task_input(conn, &claim, &workflow.dag, now)?,
            None => None,
        }
    };
    Ok(Some(Claimed { claim, input }))
}

// "The row becomes ready now, and this statement claims it": the last
// dependency of a pending row completed, the worker asked for its next
// attempt (?7 = 1), and the execution did not look paused. A pause that
// commits between this statement's snapshot and its update of the
// execution row is seen in `counted` and undone (UNCLAIM_HELD).
macro_rules! claimed_now {
    () => {
        "(deps_remaining = 1 AND status = 'pending' AND CAST(?7 AS BIGINT) = 1
          AND (SELECT status FROM cloaca_executions WHERE id = ?5) <> 'paused')"
    };
}
// "The row becomes ready now, and this statement claims it", where the
// execution's row is locked first and was seen running (COMPLETE_ALONE): no
// pause can commit before this statement does.
macro_rules! claimed_alone {
    () => {
        "(deps_remaining = 1 AND status = 'pending' AND CAST(?7 AS BIGINT) = 1)"
    };
}
// The body shared by COMPLETE_RELEASE_COUNT and COMPLETE_ALONE: the attempt
// completed (fenced by its number, and by `$guard`), its dependents
// released (the one that becomes ready claimed where `$claimed!()` holds),
// the task counted off its execution, and `took`: the claimed dependent.
macro_rules! complete_release_count {
    ($guard:literal, $claimed:ident) => {
        concat!(
            "done AS (
        UPDATE cloaca_task_executions
        SET status = 'completed', output_context = ?3, lease_expires_at = NULL, finished_at = ?4
        WHERE id = ?1 AND attempt = ?2 AND status = 'running'",
            $guard,
            "
        RETURNING id),
    released AS (
        UPDATE cloaca_task_executions
        SET status = CASE WHEN ",
            $claimed!(),
            " THEN 'running' WHEN deps_remaining = 1 AND status = 'pending' THEN 'ready' ELSE status END,
            attempt = CASE WHEN ",
            $claimed!(),
            " THEN attempt + 1 ELSE attempt END,
            lease_owner = CASE WHEN ",
            $claimed!(),
            " THEN ?8 ELSE lease_owner END,
            lease_expires_at = CASE WHEN ",
            $claimed!(),
            " THEN ?9 ELSE lease_expires_at END,
            started_at = CASE WHEN ",
            $claimed!(),
            " THEN ?4 ELSE started_at END,
            next_attempt_at = CASE WHEN deps_remaining = 1 AND status = 'pending' THEN ?4 ELSE next_attempt_at END,
            ready_at = CASE WHEN deps_remaining = 1 AND status = 'pending' THEN ?4 ELSE ready_at END,
            deps_remaining = deps_remaining - 1
        WHERE execution_id = ?5 AND task_id IN (SELECT value FROM json_each(?6)) AND EXISTS (SELECT 1 FROM done)
        RETURNING id, task_id, workflow_name, workflow_version, attempt, failures, attempt_base, status),
    counted AS (
        UPDATE cloaca_executions SET tasks_remaining = tasks_remaining - 1
        WHERE id = ?5 AND EXISTS (SELECT 1 FROM done)
        RETURNING tasks_remaining, status),
    took AS (SELECT * FROM released WHERE status = 'running')"
        )
    };
}
// PostgreSQL only (SQLite has no data-modifying WITH): COMPLETE_ATTEMPT,
// RELEASE_DEPENDENTS and DECREMENT_REMAINING in one statement, one round
// trip where they were three, in the same order of row locks (the task,
// its dependents, the execution). With ?7 = 1 and one dependent, the
// statement that readies the dependent also claims it for the worker
// (?8 owner, ?9 lease expiry), as CLAIM_READY would.
const COMPLETE_RELEASE_COUNT: &str = concat!(
    "WITH ",
    complete_release_count!("", claimed_now),
    "
    SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM released WHERE status IN ('ready', 'running')),
        (SELECT tasks_remaining FROM counted), (SELECT status FROM counted),
        took.id, took.task_id, took.workflow_name, took.workflow_version, took.attempt, took.failures, took.attempt_base
    FROM (SELECT 1 AS one) AS one LEFT JOIN took ON true"
);
// PostgreSQL only: COMPLETE_RELEASE_COUNT as a statement that commits by
// itself, one round trip where a transaction is three. It locks the
// execution's row first (as steering does) and completes the task only
// when the execution is running and has another unfinished task, so that
// nothing is left to settle or to hold: `safe` says whether it did. It
// commits at the server's own durability (?10; the pool's connections
// commit without waiting for the flush), and notifies ?11 of the readied
// tasks the worker does not take.
const COMPLETE_ALONE: &str = concat!(
    "WITH guard AS (
        SELECT tasks_remaining > 1 AND status = 'running' AS safe,
            set_config('synchronous_commit', CAST(?10 AS TEXT), true) AS durability
        FROM cloaca_executions WHERE id = ?5 FOR UPDATE),
    ",
    complete_release_count!(" AND (SELECT safe FROM guard)", claimed_alone),
    ",
    tally AS (SELECT (SELECT count(*) FROM released WHERE status IN ('ready', 'running')) AS readied,
        (SELECT count(*) FROM took) AS took)
    SELECT CASE WHEN (SELECT safe FROM guard) THEN CAST(1 AS BIGINT) ELSE 0 END, (SELECT durability FROM guard), (SELECT count(*) FROM done),
        tally.readied, CASE WHEN tally.readied > tally.took
            THEN pg_notify(CAST(?11 AS TEXT), CAST(tally.readied - tally.took AS TEXT)) END,
        took.id, took.task_id, took.workflow_name, took.workflow_version, took.attempt, took.failures, took.attempt_base
    FROM tally LEFT JOIN took ON true"
);
// PostgreSQL only: the completion of a workflow's one leaf that is its
// execution's last unfinished task, and the execution's finish, as one
// statement that commits by itself (where a transaction is five round
// trips). Without trigger rules every other task is an ancestor of the
// leaf and completed before it ran, so the execution completes, and its
// final context is the leaf's output merged (?6). Locks, guards, commits
// and answers as COMPLETE_ALONE (?7 the commit level), then returns the
// finished record and notifies ?8 of it.
const FINISH_ALONE: &str = concat!(
    "WITH guard AS (
        SELECT tasks_remaining = 1 AND status = 'running' AS safe,
            set_config('synchronous_commit', CAST(?7 AS TEXT), true) AS durability
        FROM cloaca_executions WHERE id = ?5 FOR UPDATE),
    done AS (
        UPDATE cloaca_task_executions
        SET status = 'completed', output_context = ?3, lease_expires_at = NULL, finished_at = ?4
        WHERE id = ?1 AND attempt = ?2 AND status = 'running' AND (SELECT safe FROM guard)
        RETURNING id),
    finished AS (
        UPDATE cloaca_executions
        SET status = 'completed', final_context = ?6, error_message = NULL, finished_at = ?4, tasks_remaining = 0
        WHERE id = ?5 AND EXISTS (SELECT 1 FROM done)
        RETURNING ",
    execution_columns!(),
    ")
    SELECT finished.*, CASE WHEN (SELECT safe FROM guard) THEN CAST(1 AS BIGINT) ELSE 0 END, (SELECT durability FROM guard),
        (SELECT count(*) FROM done),
        CASE WHEN finished.id IS NOT NULL THEN pg_notify(CAST(?8 AS TEXT), CAST(finished.id AS TEXT)) END
    FROM (SELECT 1 AS one) AS one LEFT JOIN finished ON true"
);
// A dependent claimed by COMPLETE_RELEASE_COUNT in an execution that turned
// out to be paused: held instead, as if never claimed (its previous attempt
// left no runner or start on it: it was pending).
const UNCLAIM_HELD: &str = "UPDATE cloaca_task_executions
    SET status = 'held', attempt = attempt - 1, lease_owner = NULL, lease_expires_at = NULL, started_at = NULL
    WHERE id = ?1 AND attempt = ?2 AND status = 'running'";

/// What COMPLETE_RELEASE_COUNT and COMPLETE_ALONE are given for the
/// completion of the task at a position: its output as text, its
/// dependents as a list, and the claim asked for (a single dependent's).
struct Step<'n> {
    text: String,
    list: String,
    inline: Option<&'n NextClaim<'n>>,
}

impl<'n> Step<'n> {
    fn new(dag: &Dag, position: usize, output: &Context, next: Option<&'n NextClaim<'n>>) -> Result<Self> {
        let dependents: Vec<&str> = dag.dependents_of(position).iter().map(|&d| dag.task(d).id.as_str()).collect();
        let text = to_json(output, "storing a task output")?;
        Ok(Step { text, list: json_list(&dependents), inline: next.filter(|_| dependents.len() == 1) })
    }

    /// ?1-?9 of both statements.
    fn params<'a>(&'a self, claim: &'a Claim, now: i64) -> [Param<'a>; 9] {
        [
            Param::Int(claim.row_id),
            Param::Int(claim.attempt),
            Param::Text(&self.text),
            Param::Int(now),
            Param::Text(&claim.execution_id),
            Param::Text(&self.list),
            Param::Int(i64::from(self.inline.is_some())),
            Param::Text(self.inline.map_or("", |n| n.owner)),
            Param::Int(now + self.inline.map_or(0, |n| n.lease_ms)),
        ]
    }

    /// The dependent the statement claimed, from the columns from `at` on.
    fn took(&self, row: &dyn Row, at: usize, execution: &str, now: i64) -> Result<Option<Claim>> {
        let Some(row_id) = row.opt_int(at)? else {
            return Ok(None);
        };
        Ok(Some(Claim {
            row_id,
            execution_id: execution.to_string(),
            task_id: row.text(at + 1)?,
            workflow: WorkflowRef { name: row.text(at + 2)?, version: row.text(at + 3)? },
            attempt: row.int(at + 4)?,
            failures: row.int(at + 5)?,
            attempt_base: row.int(at + 6)?,
            owner: self.inline.map_or(String::new(), |n| n.owner.to_string()),
            claimed_at: now,
        }))
    }
}

/// [`record_outcome`] for a completion on a backend where each statement is
/// a round trip (see [`Conn::is_remote`]) and the workflow has no trigger
/// rules: one statement where there were three, and the claim of the one
/// dependent it readies when `next` asks (returned beside the record).
fn record_completion_merged(
    conn: &mut dyn Conn,
    claim: &Claim,
    dag: &Dag,
    output: &Context,
    now: i64,
    next: Option<&NextClaim>,
) -> Result<(AttemptRecorded, Option<Claimed>)> {
    let position = recorded_position(dag, claim)?;
    let execution = claim.execution_id.as_str();
    let step = Step::new(dag, position, output, next)?;
    let params = step.params(claim, now);
    let (done, readied, remaining, status, took) = conn.query_one(COMPLETE_RELEASE_COUNT, &params, |row| {
        let took = step.took(row, 4, execution, now)?;
        Ok((row.int(0)?, row.int(1)?, row.opt_int(2)?, row.opt_text(3)?, took))
    })?;
    if done != 1 {
        return Ok((AttemptRecorded::default(), None));
    }
    let (Some(remaining), Some(status)) = (remaining, status) else {
        return Err(Error::UnknownExecution(execution.to_string()));
    };
    let mut recorded = AttemptRecorded { accepted: true, readied: readied as u64, ..Default::default() };
    let mut took = took;
    if recorded.readied > 0 && ExecutionStatus::from_db(&status)? == ExecutionStatus::Paused {
        if let Some(claimed) = took.take() {
            conn.execute(UNCLAIM_HELD, &[Param::Int(claimed.row_id), Param::Int(claimed.attempt)])?;
        }
        conn.execute(HOLD_READIED, &[Param::Text(execution), Param::Text(&step.list)])?;
        recorded.readied = 0;
    }
    recorded.finished = settle(conn, execution, remaining, dag, now)?;
    // Its input is the output just recorded when that was its only dependency.
    let claimed = took.map(|claim| Claimed { input: handed_input(dag, position, &claim, output), claim });
    Ok((recorded, claimed))
}

/// How a completion may be recorded by one statement that commits by
/// itself ([`record_completion_alone`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alone {
    /// COMPLETE_ALONE: the task has dependents, each of which waits for it
    /// alone. That statement locks the execution's row before the task's
    /// and its dependents'; a transaction that records another task locks
    /// them the other way round, and must never want a row this one holds.
    Step,
    /// FINISH_ALONE: the task is the workflow's one leaf. It locks the
    /// execution's row first too; when it applies, no other task of the
    /// execution is unfinished, so no completion locks the other way round.
    Finish,
}

/// Whether and how a completion of `claim`'s task may be recorded by
/// itself; never in a workflow with trigger rules.
pub(crate) fn alone_kind(dag: &Dag, claim: &Claim) -> Option<Alone> {
    let position = dag.position(&claim.task_id)?;
    if dag.has_rules() {
        return None;
    }
    let dependents = dag.dependents_of(position);
    if dependents.is_empty() {
        let sole_leaf = (0..dag.len()).all(|i| i == position || !dag.dependents_of(i).is_empty());
        return sole_leaf.then_some(Alone::Finish);
    }
    // Another leaf is often the last task: its statement would find the
    // execution to settle, and the transaction run after it.
    dependents.iter().all(|&d| dag.dependencies_of(d) == [position]).then_some(Alone::Step)
}

/// [`record_attempt`] for a completion, in one statement that commits by
/// itself (one round trip where a transaction takes three to five), on a
/// backend that offers it ([`Conn::commit_level`]). None when the
/// statement did not apply and wrote nothing, and the completion is for a
/// transaction to record: the execution was not running (paused,
/// cancelled, timed out, unknown), or (for [`Alone::Step`]) this task was
/// its last unfinished one, or (for [`Alone::Finish`]) it was not.
pub(crate) fn record_completion_alone(
    conn: &mut dyn Conn,
    kind: Alone,
    claim: &Claim,
    dag: &Dag,
    output: &Context,
    now: i64,
    next: Option<&NextClaim>,
) -> Result<Option<AttemptRecorded>> {
    let Some(level) = conn.commit_level().map(str::to_string) else {
        return Ok(None);
    };
    match kind {
        Alone::Step => complete_step_alone(conn, &level, claim, dag, output, now, next),
        Alone::Finish => finish_alone(conn, &level, claim, dag, output, now),
    }
}

/// Whether a statement run alone applied (its `safe` column, at `at`),
/// with the commit level it set (the next column) checked against `level`.
fn checked_safe(row: &dyn Row, at: usize, level: &str) -> Result<bool> {
    let safe = row.int(at)? == 1;
    if safe {
        check_level("recording a task", row.opt_text(at + 1)?, level)?;
    }
    Ok(safe)
}

/// Fails when a statement that committed by itself did so at another
/// level (`set`, as its `set_config` returned it) than `level`.
fn check_level(action: &'static str, set: Option<String>, level: &str) -> Result<()> {
    match set {
        Some(set) if set == level => Ok(()),
        set => Err(Error::corrupt(action, format!("the commit ran at {set:?}, not at {level:?}"))),
    }
}

fn complete_step_alone(
    conn: &mut dyn Conn,
    level: &str,
    claim: &Claim,
    dag: &Dag,
    output: &Context,
    now: i64,
    next: Option<&NextClaim>,
) -> Result<Option<AttemptRecorded>> {
    let Some(channel) = conn.channel_name(Channel::Work).map(str::to_string) else {
        return Ok(None);
    };
    let position = recorded_position(dag, claim)?;
    let execution = claim.execution_id.as_str();
    let step = Step::new(dag, position, output, next)?;
    let params = [&step.params(claim, now)[..], &[Param::Text(level), Param::Text(&channel)]].concat();
    let (safe, done, readied, took) = conn.query_one(COMPLETE_ALONE, &params, |row| {
        let took = step.took(row, 5, execution, now)?;
        Ok((checked_safe(row, 0, level)?, row.int(2)?, row.int(3)?, took))
    })?;
    if !safe {
        return Ok(None);
    }
    if done != 1 {
        return Ok(Some(AttemptRecorded::default()));
    }
    let next = took.map(|claim| Claimed { input: handed_input(dag, position, &claim, output), claim });
    Ok(Some(AttemptRecorded { accepted: true, readied: readied as u64, next, ..Default::default() }))
}

/// The columns of an execution record, first in FINISH_ALONE's answer.
const RECORD_COLUMNS: usize = 10;

fn finish_alone(conn: &mut dyn Conn, level: &str, claim: &Claim, dag: &Dag, output: &Context, now: i64) -> Result<Option<AttemptRecorded>> {
    let Some(channel) = conn.channel_name(Channel::Done).map(str::to_string) else {
        return Ok(None);
    };
    let position = recorded_position(dag, claim)?;
    let text = to_json(output, "storing a task output")?;
    let outputs = HashMap::from([(position, output.clone())]);
    let final_text = to_json(&frontier_context(dag, &Context::new(), &outputs), "storing a final context")?;
    let params = [
        Param::Int(claim.row_id),
        Param::Int(claim.attempt),
        Param::Text(&text),
        Param::Int(now),
        Param::Text(&claim.execution_id),
        Param::Text(&final_text),
        Param::Text(level),
        Param::Text(&channel),
    ];
    let (safe, done, finished) = conn.query_one(FINISH_ALONE, &params, |row| {
        let done = row.int(RECORD_COLUMNS + 2)?;
        let finished = if done == 1 { Some(execution_record(row)?) } else { None };
        Ok((checked_safe(row, RECORD_COLUMNS, level)?, done, finished))
    })?;
    if !safe {
        return Ok(None);
    }
    if done != 1 {
        return Ok(Some(AttemptRecorded::default()));
    }
    Ok(Some(AttemptRecorded { accepted: true, finished, ..Default::default() }))
}

/// Writes an attempt's outcome and its consequences for the execution.
fn record_outcome(conn: &mut dyn Conn, claim: &Claim, dag: &Dag, outcome: &AttemptOutcome, now: i64) -> Result<AttemptRecorded> {
    let position = recorded_position(dag, claim)?;
    let execution = claim.execution_id.as_str();
    let fence = [Param::Int(claim.row_id), Param::Int(claim.attempt)];
    let mut recorded = AttemptRecorded { accepted: true, ..Default::default() };
    match outcome {
        AttemptOutcome::Completed(output) => {
            let text = to_json(output, "storing a task output")?;
            if conn.execute(COMPLETE_ATTEMPT, &[fence[0], fence[1], Param::Text(&text), Param::Int(now)])? != 1 {
                return Ok(AttemptRecorded::default());
            }
            let consequence = if dag.has_rules() {
                Consequence::decided(follow_end(conn, execution, dag, position, Ended::Completed, now)?)
            } else {
                let dependents: Vec<&str> = dag.dependents_of(position).iter().map(|&d| dag.task(d).id.as_str()).collect();
                let readied = if dependents.is_empty() { 0 } else { release_dependents(conn, execution, &dependents, now)? };
                Consequence { skipped: 0, readied, may_be_ready: json_list(&dependents) }
            };
            finish_consequence(conn, execution, dag, consequence, now, &mut recorded)?;
        }
        AttemptOutcome::Failed { failure, retry_at: Some(at) } => {
            let (_, status) = count_finished(conn, execution, 0)?;
            let [error_type, message, traceback] = failure_params(failure);
            let entry = failed_entry(claim, failure, now, Some(*at));
            let params = [fence[0], fence[1], error_type, message, traceback, Param::Int(*at), Param::Text(&entry)];
            let params = [&params[..], &[Param::Text(ready_status(status)), Param::Int(now)]].concat();
            if conn.execute(RESCHEDULE_ATTEMPT, &params)? != 1 {
                return Ok(AttemptRecorded::default());
            }
            // Other processes learn of the retry time at their next idle check.
            conn.notify(Channel::Work, "1")?;
        }
        AttemptOutcome::Failed { failure, retry_at: None } => {
            let [error_type, message, traceback] = failure_params(failure);
            let entry = failed_entry(claim, failure, now, None);
            let params = [fence[0], fence[1], error_type, message, traceback, Param::Int(now), Param::Text(&entry)];
            if conn.execute(FAIL_ATTEMPT, &params)? != 1 {
                return Ok(AttemptRecorded::default());
            }
            let consequence = if dag.has_rules() {
                Consequence::decided(follow_end(conn, execution, dag, position, Ended::Failed, now)?)
            } else {
                let descendants: Vec<&str> = dag.descendants_of(position).iter().map(|&d| dag.task(d).id.as_str()).collect();
                let skipped = if descendants.is_empty() {
                    0
                } else {
                    let list = json_list(&descendants);
                    conn.execute(
                        SKIP_TASKS,
                        &[Param::Text(execution), Param::Text(&list), Param::Int(now), Param::Text(SkipReason::UpstreamFailed.as_db())],
                    )?
                };
                Consequence { skipped: skipped as i64, readied: 0, may_be_ready: String::new() }
            };
            finish_consequence(conn, execution, dag, consequence, now, &mut recorded)?;
        }
    }
    Ok(recorded)
}

/// What an attempt's end did to the other tasks of its execution.
struct Consequence {
    /// Tasks skipped (each counts as finished besides the attempt's own).
    skipped: i64,
    /// Tasks made ready.
    readied: u64,
    /// A JSON list of the task ids that may have become ready (to hold them
    /// when the execution turns out to be paused).
    may_be_ready: String,
}

impl Consequence {
    fn decided(decided: Decided) -> Self {
        Consequence { skipped: decided.skipped, readied: decided.readied.len() as u64, may_be_ready: json_list(&decided.readied) }
    }
}

/// Counts the ended task and the skipped ones off the execution, holds or
/// announces what became ready, and finishes the execution when nothing is left.
fn finish_consequence(
    conn: &mut dyn Conn,
    execution: &str,
    dag: &Dag,
    consequence: Consequence,
    now: i64,
    recorded: &mut AttemptRecorded,
) -> Result<()> {
    // The execution row is locked last, as before steering existed: taken
    // first, it is held through the dependents' update and completions of
    // one execution queue on it longer (a fan-out on PostgreSQL lost a fifth
    // of its rate). A pause that committed meanwhile is seen here, and what
    // this attempt readied is held.
    let (remaining, status) = count_finished(conn, execution, 1 + consequence.skipped)?;
    recorded.readied = consequence.readied;
    if recorded.readied > 0 && status == ExecutionStatus::Paused {
        conn.execute(HOLD_READIED, &[Param::Text(execution), Param::Text(&consequence.may_be_ready)])?;
        recorded.readied = 0;
    }
    recorded.finished = settle(conn, execution, remaining, dag, now)?;
    Ok(())
}

fn failure_params(failure: &TaskFailure) -> [Param<'_>; 3] {
    [Param::Text(&failure.error_type), Param::Text(&failure.message), Param::NullableText(failure.traceback.as_deref())]
}

/// The history line of a failed attempt.
fn failed_entry(claim: &Claim, failure: &TaskFailure, now: i64, retry_at: Option<i64>) -> String {
    let mut entry = serde_json::json!({
        "o": "failed",
        "a": claim.attempt - claim.attempt_base,
        "r": claim.owner,
        "s": claim.claimed_at,
        "e": now,
        "t": failure.error_type,
        "m": failure.message,
    });
    if let Some(at) = retry_at {
        entry["retry_at"] = at.into();
    }
    format!("{entry}\n")
}

/// The status a task that becomes ready gets: held while its execution is paused.
fn ready_status(execution: ExecutionStatus) -> &'static str {
    if execution == ExecutionStatus::Paused {
        "held"
    } else {
        "ready"
    }
}

/// Counts `finished` tasks off the execution (locking its row); returns
/// how many are left and the execution's status.
pub(crate) fn count_finished(conn: &mut dyn Conn, execution_id: &str, finished: i64) -> Result<(i64, ExecutionStatus)> {
    conn.query_opt(DECREMENT_REMAINING, &[Param::Text(execution_id), Param::Int(finished)], |row| {
        Ok((row.int(0)?, ExecutionStatus::from_db(&row.text(1)?)?))
    })?
    .ok_or_else(|| Error::UnknownExecution(execution_id.to_string()))
}

/// Decrements the pending-dependency count of `dependents`; those reaching
/// zero become ready. Returns how many.
fn release_dependents(conn: &mut dyn Conn, execution_id: &str, dependents: &[&str], now: i64) -> Result<u64> {
    let list = json_list(dependents);
    let params = [Param::Text(execution_id), Param::Text(&list), Param::Int(now)];
    let statuses = conn.query_all(RELEASE_DEPENDENTS, &params, |row| row.text(0))?;
    Ok(statuses.iter().filter(|s| *s == "ready").count() as u64)
}

/// With no task left, finishes the execution with its final context and
/// error message, and returns its finished record.
pub(crate) fn settle(
    conn: &mut dyn Conn,
    execution_id: &str,
    remaining: i64,
    dag: &dyn Graph,
    now: i64,
) -> Result<Option<ExecutionRecord>> {
    if remaining > 0 {
        return Ok(None);
    }
    // One statement for all three, one round trip on PostgreSQL.
    let (mut input, mut outputs, mut failed) = (None, Vec::new(), Vec::new());
    conn.query(SETTLE_READ, &[Param::Text(execution_id)], &mut |row| {
        match row.text(0)?.as_str() {
            "input" => input = Some(row.text(2)?),
            "completed" => outputs.push((row.text(1)?, row.opt_text(2)?.unwrap_or_else(|| "{}".into()))),
            _ => failed.push(FailedTask {
                task_id: row.text(1)?,
                attempts: row.int(3)?,
                error_type: row.opt_text(4)?.unwrap_or_default(),
                error_message: row.opt_text(5)?.unwrap_or_default(),
                traceback: row.opt_text(6)?,
            }),
        }
        Ok(())
    })?;
    let input = parse_context(&input.ok_or_else(|| Error::UnknownExecution(execution_id.to_string()))?, "an execution input")?;
    let outputs = outputs_by_position(dag, outputs)?;
    let error = describe_failures(dag, &failed);
    let status = if error.is_some() { ExecutionStatus::Failed } else { ExecutionStatus::Completed };
    finish_execution(conn, execution_id, status, &frontier_context(dag, &input, &outputs), error.as_deref(), now).map(Some)
}

pub(crate) fn execution_input(conn: &mut dyn Conn, execution_id: &str) -> Result<Context> {
    let text = conn
        .query_opt(LOAD_INPUT, &[Param::Text(execution_id)], |row| row.text(0))?
        .ok_or_else(|| Error::UnknownExecution(execution_id.to_string()))?;
    parse_context(&text, "an execution input")
}

pub(crate) fn finish_execution(
    conn: &mut dyn Conn,
    execution_id: &str,
    status: ExecutionStatus,
    final_context: &Context,
    error: Option<&str>,
    now: i64,
) -> Result<ExecutionRecord> {
    let final_context = to_json(final_context, "storing a final context")?;
    let mut params = vec![
        Param::Text(execution_id),
        Param::Text(status.as_db()),
        Param::Text(&final_context),
        Param::NullableText(error),
        Param::Int(now),
    ];
    let channel = conn.channel_name(Channel::Done).map(str::to_string);
    let sql = match &channel {
        Some(name) => {
            params.push(Param::Text(name));
            FINISH_EXECUTION_AND_NOTIFY
        }
        None => FINISH_EXECUTION,
    };
    let record = conn.query_opt(sql, &params, execution_record)?.ok_or_else(|| Error::UnknownExecution(execution_id.to_string()))?;
    if channel.is_none() {
        conn.notify(Channel::Done, execution_id)?;
    }
    Ok(record)
}

/// Fails an unfinished execution: every unfinished task is skipped. Without
/// its definition (a version this process does not have) the final context
/// is the execution's input. Returns false when it had already finished.
pub(crate) fn abort_execution(conn: &mut dyn Conn, execution_id: &str, dag: Option<&Dag>, message: &str, now: i64) -> Result<bool> {
    let status = conn
        .query_opt(EXECUTION_STATUS, &[Param::Text(execution_id)], |row| ExecutionStatus::from_db(&row.text(0)?))?
        .ok_or_else(|| Error::UnknownExecution(execution_id.to_string()))?;
    if status.is_finished() {
        return Ok(false);
    }
    conn.execute(SKIP_UNFINISHED, &[Param::Text(execution_id), Param::Int(now), Param::Text(SkipReason::Stopped.as_db())])?;
    let input = execution_input(conn, execution_id)?;
    let final_context = match dag {
        Some(dag) => frontier_context(dag, &input, &outputs_by_position(dag, completed_output_texts(conn, execution_id)?)?),
        None => input,
    };
    finish_execution(conn, execution_id, ExecutionStatus::Failed, &final_context, Some(message), now)?;
    Ok(true)
}

/// Parses stored outputs and keys them by the task's topological position.
pub(crate) fn outputs_by_position(dag: &dyn Graph, texts: Vec<(String, String)>) -> Result<HashMap<usize, Context>> {
    let mut outputs = HashMap::new();
    for (task_id, text) in texts {
        if let Some(position) = dag.position(&task_id) {
            outputs.insert(position, parse_context(&text, "a task output")?);
        }
    }
    Ok(outputs)
}

/// Parses a stored JSON object.
pub(crate) fn parse_context(text: &str, what: &'static str) -> Result<Context> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::corrupt("reading stored JSON", format!("{what} is not a JSON object"))),
        Err(e) => Err(Error::corrupt("reading stored JSON", format!("{what}: {e}"))),
    }
}

fn to_json(context: &Context, action: &'static str) -> Result<String> {
    serde_json::to_string(context).map_err(|e| Error::database(action, e))
}

/// The claim filter value: `name@version` of each workflow (versions are hex, so `@` is unambiguous).
fn workflow_list(workflows: &[WorkflowRef]) -> String {
    json_list(workflows.iter().map(|w| format!("{}@{}", w.name, w.version)))
}

/// The error message of a failed execution: the first failed task (in
/// topological order) with its exception and traceback, then any others.
pub(crate) fn describe_failures(dag: &dyn Graph, failed: &[FailedTask]) -> Option<String> {
    let mut ordered: Vec<&FailedTask> = failed.iter().collect();
    ordered.sort_by_key(|f| dag.position(&f.task_id).unwrap_or(usize::MAX));
    let first = ordered.first()?;
    let mut message = format!("Task '{}' failed after {} attempt(s): {}", first.task_id, first.attempts, first.error_type);
    if !first.error_message.is_empty() {
        message.push_str(": ");
        message.push_str(&first.error_message);
    }
    if ordered.len() > 1 {
        let others: Vec<&str> = ordered[1..].iter().map(|f| f.task_id.as_str()).collect();
        message.push_str(&format!(" (other failed tasks: {})", others.join(", ")));
    }
    if let Some(traceback) = &first.traceback {
        message.push('\n');
        message.push_str(traceback.trim_end());
    }
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::super::conn::postgres_dialect;
    use super::*;

    #[test]
    fn claims_lock_their_row_on_postgres() {
        assert!(postgres_dialect(CLAIM_READY).contains("LIMIT 1 FOR UPDATE SKIP LOCKED)"));
        assert!(!postgres_dialect(CLAIM_READY).contains('?'));
        assert!(GET_EXECUTION.contains("error_message, created_at, started_at, finished_at FROM cloaca_executions"));
    }
}

//! What the store and the runner hand each other: claims, attempt
//! outcomes, loaded inputs, and the notification channels.

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::model::{Context, ExecutionRecord, WorkflowRef};
use crate::engine::workflow::{Registry, TaskFailure};

/// A task attempt a runner has claimed (and holds the lease of).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) row_id: i64,
    pub(crate) execution_id: String,
    pub(crate) task_id: String,
    pub(crate) workflow: WorkflowRef,
    /// The attempt number, 1-based; it fences every later write of this attempt.
    pub(crate) attempt: i64,
    /// Failed attempts so far (in this round).
    pub(crate) failures: i64,
    /// Attempts of earlier rounds (before a retry_execution): `attempt -
    /// attempt_base` is this attempt's number within its round.
    pub(crate) attempt_base: i64,
    /// The runner holding the lease, and when it claimed it (unix ms).
    pub(crate) owner: String,
    pub(crate) claimed_at: i64,
}

/// How an attempt ended, as the runner reports it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AttemptOutcome {
    Completed(Context),
    /// `retry_at` is set when the policy allows another attempt.
    Failed {
        failure: TaskFailure,
        retry_at: Option<i64>,
    },
}

/// A claimed attempt, with its input when the claim could load it in the
/// same transaction (else the runner loads it).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Claimed {
    pub(crate) claim: Claim,
    pub(crate) input: Option<Context>,
}

/// A worker looking for its next attempt: the runner it claims for and
/// what it may claim. Given to the transaction that records an attempt,
/// it claims the next one too, so that a worker going from task to task
/// commits once per task and needs no wake-up.
pub(crate) struct NextClaim<'a> {
    pub(crate) owner: &'a str,
    /// The workflow versions the runner serves.
    pub(crate) workflows: &'a [WorkflowRef],
    /// Their definitions, for the claimed task's dependencies.
    pub(crate) registry: &'a Registry,
    pub(crate) lease_ms: i64,
}

/// Asks the transaction that creates an execution to claim up to `count`
/// of its ready roots for this runner, whose idle workers take them from
/// it: a new execution's first tasks then cost no claim transaction.
pub(crate) struct RootClaims<'a> {
    pub(crate) owner: &'a str,
    pub(crate) lease_ms: i64,
    pub(crate) count: usize,
}

/// What a worker looking for work found.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Work {
    Claimed(Claimed),
    /// Nothing claimable now; the next task of the workflows comes due then.
    Idle {
        next_due: Option<i64>,
    },
}

/// What recording an attempt did.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct AttemptRecorded {
    /// False when the attempt had lost its claim (lease expired and taken
    /// over, execution aborted): nothing was written.
    pub(crate) accepted: bool,
    /// Dependents this attempt made ready.
    pub(crate) readied: u64,
    /// The execution's record, when this attempt finished it.
    pub(crate) finished: Option<ExecutionRecord>,
    /// The attempt claimed in the same transaction, when one was asked for
    /// ([`NextClaim`]) and a task was ready.
    pub(crate) next: Option<Claimed>,
    /// True when the transaction looked for any ready task to claim (so
    /// `next: None` means none was ready), not only for a dependent.
    pub(crate) looked: bool,
}

/// A failed task of an execution, for its error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FailedTask {
    pub(crate) task_id: String,
    pub(crate) attempts: i64,
    pub(crate) error_type: String,
    pub(crate) error_message: String,
    pub(crate) traceback: Option<String>,
}

/// What [`Store::load_contexts`] returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LoadedContexts {
    pub(crate) input: Option<Context>,
    pub(crate) outputs: HashMap<String, Context>,
}

/// The notification channels runners wake each other with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Channel {
    /// Tasks became claimable; the payload is how many.
    Work,
    /// An execution finished; the payload is its id.
    Done,
    /// An execution was cancelled; the payload is its id. Runners stop its
    /// running async tasks.
    Cancel,
}

/// Receives notifications: the channel and its payload.
pub(crate) type EventHandler = Arc<dyn Fn(Channel, &str) + Send + Sync>;

//! The values every layer of the engine shares: contexts, execution
//! statuses and records, workflow references.

use std::fmt;

use super::error::{Error, Result};

/// The state a workflow's tasks share: a JSON object.
pub(crate) type Context = serde_json::Map<String, serde_json::Value>;

/// Where an execution stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExecutionStatus {
    Pending,
    Running,
    /// Held by `pause_execution`: no new task of it is claimed.
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub(crate) const ALL: [ExecutionStatus; 6] =
        [Self::Pending, Self::Running, Self::Paused, Self::Completed, Self::Failed, Self::Cancelled];

    /// The spelling stored in the database.
    pub(crate) fn as_db(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Paused => "paused",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }

    /// The spelling Python sees (`PipelineResult.status`).
    pub(crate) fn display_name(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "Pending",
            ExecutionStatus::Running => "Running",
            ExecutionStatus::Paused => "Paused",
            ExecutionStatus::Completed => "Completed",
            ExecutionStatus::Failed => "Failed",
            ExecutionStatus::Cancelled => "Cancelled",
        }
    }

    pub(crate) fn from_db(value: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_db() == value)
            .ok_or_else(|| Error::corrupt("reading an execution", format!("unknown status {value:?}")))
    }

    /// Parses the Python spelling, for `list_executions(status=...)`.
    pub(crate) fn from_display(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.display_name() == value)
    }

    /// Completed, Failed or Cancelled: nothing runs any more (a Failed or
    /// Cancelled execution may still be run again by `retry_execution`).
    pub(crate) fn is_finished(self) -> bool {
        matches!(self, ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled)
    }

    /// The accepted Python spellings, for error messages.
    pub(crate) fn accepted() -> String {
        Self::ALL.iter().map(|s| format!("{:?}", s.display_name())).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.display_name())
    }
}

/// Identifies a workflow definition a runner can execute.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WorkflowRef {
    pub(crate) name: String,
    pub(crate) version: String,
}

/// An execution as stored.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ExecutionRecord {
    pub(crate) id: String,
    pub(crate) workflow_name: String,
    pub(crate) workflow_version: String,
    pub(crate) status: ExecutionStatus,
    pub(crate) input: Context,
    pub(crate) final_context: Option<Context>,
    pub(crate) error_message: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
}

/// Where one task of an execution stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskStatus {
    /// Waiting for its dependencies.
    Pending,
    /// Claimable (at its `next_attempt_at`).
    Ready,
    /// Ready, but its execution is paused ("held" in the database).
    Paused,
    Running,
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

impl TaskStatus {
    const ALL: [TaskStatus; 8] =
        [Self::Pending, Self::Ready, Self::Paused, Self::Running, Self::Completed, Self::Failed, Self::Skipped, Self::Cancelled];

    pub(crate) fn as_db(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Ready => "ready",
            TaskStatus::Paused => "held",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub(crate) fn display_name(self) -> &'static str {
        match self {
            TaskStatus::Pending => "Pending",
            TaskStatus::Ready => "Ready",
            TaskStatus::Paused => "Paused",
            TaskStatus::Running => "Running",
            TaskStatus::Completed => "Completed",
            TaskStatus::Failed => "Failed",
            TaskStatus::Skipped => "Skipped",
            TaskStatus::Cancelled => "Cancelled",
        }
    }

    pub(crate) fn from_db(value: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_db() == value)
            .ok_or_else(|| Error::corrupt("reading a task", format!("unknown task status {value:?}")))
    }
}

/// One task of an execution as stored: its state and its latest attempt.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TaskRecord {
    pub(crate) task_id: String,
    pub(crate) status: TaskStatus,
    /// Attempts started in the current round (since the last retry_execution).
    pub(crate) attempts: i64,
    /// When the latest attempt started and ended (unix ms).
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
    pub(crate) error_type: Option<String>,
    pub(crate) error_message: Option<String>,
    pub(crate) error_traceback: Option<String>,
    /// The runner that ran (or runs) the latest attempt.
    pub(crate) runner: Option<String>,
    /// When a failed task is tried again.
    pub(crate) next_retry_at: Option<i64>,
    /// Why a Skipped task was skipped: "trigger_rule", "upstream_failed" or "stopped".
    pub(crate) skip_reason: Option<String>,
}

impl TaskRecord {
    /// How long the latest attempt took, once it ended.
    pub(crate) fn duration_ms(&self) -> Option<i64> {
        match (self.started_at, self.finished_at) {
            (Some(start), Some(end)) if end >= start && self.status != TaskStatus::Running => Some(end - start),
            _ => None,
        }
    }
}

/// What happened in an execution. The declaration order breaks ties between
/// events of one task at the same millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum EventKind {
    ExecutionCreated,
    TaskReady,
    AttemptClaimed,
    LeaseExpired,
    AttemptSucceeded,
    AttemptFailed,
    AttemptCancelled,
    RetryScheduled,
    TaskSkipped,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionCancelled,
    ExecutionRetried,
    ExecutionFinished,
}

impl EventKind {
    const ALL: [EventKind; 14] = [
        Self::ExecutionCreated,
        Self::TaskReady,
        Self::AttemptClaimed,
        Self::LeaseExpired,
        Self::AttemptSucceeded,
        Self::AttemptFailed,
        Self::AttemptCancelled,
        Self::RetryScheduled,
        Self::TaskSkipped,
        Self::ExecutionPaused,
        Self::ExecutionResumed,
        Self::ExecutionCancelled,
        Self::ExecutionRetried,
        Self::ExecutionFinished,
    ];

    /// The spelling Python sees and the events table stores.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventKind::ExecutionCreated => "execution_created",
            EventKind::TaskReady => "task_ready",
            EventKind::AttemptClaimed => "attempt_claimed",
            EventKind::LeaseExpired => "lease_expired",
            EventKind::AttemptSucceeded => "attempt_succeeded",
            EventKind::AttemptFailed => "attempt_failed",
            EventKind::AttemptCancelled => "attempt_cancelled",
            EventKind::RetryScheduled => "retry_scheduled",
            EventKind::TaskSkipped => "task_skipped",
            EventKind::ExecutionPaused => "execution_paused",
            EventKind::ExecutionResumed => "execution_resumed",
            EventKind::ExecutionCancelled => "execution_cancelled",
            EventKind::ExecutionRetried => "execution_retried",
            EventKind::ExecutionFinished => "execution_finished",
        }
    }

    pub(crate) fn from_name(value: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == value)
            .ok_or_else(|| Error::corrupt("reading an execution event", format!("unknown event kind {value:?}")))
    }
}

/// One entry of an execution's history.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ExecutionEvent {
    /// Unix ms.
    pub(crate) at: i64,
    pub(crate) kind: EventKind,
    pub(crate) task_id: Option<String>,
    /// The attempt's number within its round.
    pub(crate) attempt: Option<i64>,
    pub(crate) runner: Option<String>,
    pub(crate) detail: Option<String>,
}

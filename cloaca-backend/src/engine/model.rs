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
    Completed,
    Failed,
}

impl ExecutionStatus {
    const ALL: [ExecutionStatus; 4] = [Self::Pending, Self::Running, Self::Completed, Self::Failed];

    /// The spelling stored in the database.
    pub(crate) fn as_db(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
        }
    }

    /// The spelling Python sees (`PipelineResult.status`).
    pub(crate) fn display_name(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "Pending",
            ExecutionStatus::Running => "Running",
            ExecutionStatus::Completed => "Completed",
            ExecutionStatus::Failed => "Failed",
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

    pub(crate) fn is_finished(self) -> bool {
        matches!(self, ExecutionStatus::Completed | ExecutionStatus::Failed)
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

//! What the store keeps of a task: its record, each status change with its
//! time, and how it ended.

use crate::tasks::TaskStatus;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// One status change and when it happened (milliseconds since the Unix
/// epoch, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub status: String,
    pub at_ms: u64,
}

/// A task as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Admission order: records are listed oldest first.
    pub order: u64,
    pub id: String,
    pub agent: String,
    pub task: String,
    pub expected_output: Option<String>,
    /// The session (front-end connection) that started its tree, as the
    /// process that ran it numbered them.
    pub session: u64,
    /// Tasks above this one, outermost first (its parent last).
    pub ancestors: Vec<String>,
    pub lineage: Vec<String>,
    /// `queued`, `running`, `completed`, `failed`, `stopped` or
    /// `interrupted`.
    pub status: String,
    /// Every status it has had, oldest first.
    pub transitions: Vec<Transition>,
    pub result: Option<String>,
    pub error: Option<String>,
    /// The output cap in force for it, and whether output was cut there.
    pub output_cap: u64,
    pub output_truncated: bool,
    /// Its model calls and tokens, once it ended having made some (absent
    /// from records written before this was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::tasks::ModelUse>,
}

impl TaskRecord {
    pub fn status(&self) -> Option<TaskStatus> {
        TaskStatus::parse(&self.status)
    }

    pub fn parent(&self) -> Option<&str> {
        self.ancestors.last().map(String::as_str)
    }
}

/// How a task ended, written with its final status in one transaction.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ending {
    pub result: Option<String>,
    pub error: Option<String>,
    /// Its whole output (within its cap), and whether it was cut there.
    pub output: String,
    pub truncated: bool,
    /// Its model calls and tokens.
    pub model: Option<crate::tasks::ModelUse>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The error text an interrupted task carries.
pub(super) fn interrupted_reason(was: TaskStatus) -> String {
    format!(
        "interrupted: the bgagents process running this task ended while it was {was}; \
         found at restart, {}",
        crate::clock::now_rfc3339()
    )
}

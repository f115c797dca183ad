//! What `wait` reports: the one report type every front-end renders.

use super::TaskStatus;

/// What `wait` reports, tasks in the order they were asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitReport {
    pub all_done: bool,
    pub timed_out: bool,
    pub tasks: Vec<WaitEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitEntry {
    pub task_id: String,
    /// `None` when the caller has no task with this id.
    pub status: Option<TaskStatus>,
    /// The result when completed, otherwise the live output (capped).
    pub output: Option<String>,
    pub error: Option<String>,
    /// `output` or `error` was cut to the toolset's wait output cap.
    pub truncated: bool,
}

impl WaitEntry {
    /// Finished, or unknown (so there is nothing to wait for).
    pub fn is_done(&self) -> bool {
        self.status.is_none_or(TaskStatus::is_final)
    }
}

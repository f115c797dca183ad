//! A task's record in the bucket.

use crate::tasks::{Outcome, Task, TaskStatus};
use serde::{Deserialize, Serialize};

/// The header naming which run of a task an output piece is from.
pub const ATTEMPT_HEADER: &str = "Bgagents-Attempt";

/// What the bucket holds of one task (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub agent: String,
    pub task: String,
    #[serde(default)]
    pub expected_output: Option<String>,
    /// Tasks above it, outermost first.
    #[serde(default)]
    pub ancestors: Vec<String>,
    /// Agent names from the session's agent down to this task's.
    #[serde(default)]
    pub lineage: Vec<String>,
    /// `queued`, `running`, `completed`, `failed`, `stopped` or
    /// `interrupted`.
    pub status: String,
    /// The worker that claimed it.
    #[serde(default)]
    pub worker: Option<String>,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    /// Output pieces the run that ended it published, once final.
    #[serde(default)]
    pub output_pieces: u64,
    /// Times it was queued again after its worker died (`retry: true`);
    /// its runs' output pieces carry this as [`ATTEMPT_HEADER`].
    #[serde(default)]
    pub retries: u32,
    /// When it was accepted (milliseconds since the Unix epoch).
    #[serde(default)]
    pub created_ms: u64,
    /// The BLAKE3 hash (hex) of the component its agent runs where it was
    /// queued; a worker runs it only with that component. `None` for an
    /// agent without one (a model or harness agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The model calls and tokens of the run that ended it, once final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::tasks::ModelUse>,
}

impl Record {
    /// A new task's record; `component` is the hash of its agent's
    /// component.
    pub(crate) fn queued(task: &Task, component: Option<String>) -> Record {
        Record {
            id: task.id.to_string(),
            agent: task.agent.clone(),
            task: task.task.clone(),
            expected_output: task.expected_output.clone(),
            ancestors: task.ancestors.iter().map(ToString::to_string).collect(),
            lineage: task.lineage.clone(),
            status: TaskStatus::Queued.as_str().to_string(),
            worker: None,
            result: None,
            error: None,
            output_pieces: 0,
            retries: 0,
            created_ms: crate::store::now_ms(),
            component,
            model: None,
        }
    }

    /// Its status; an unknown one reads as failed.
    pub fn status(&self) -> TaskStatus {
        TaskStatus::parse(&self.status).unwrap_or(TaskStatus::Failed)
    }

    pub(crate) fn encode(&self) -> bytes::Bytes {
        serde_json::to_vec(self)
            .expect("a record always serialises")
            .into()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Record, String> {
        serde_json::from_slice(bytes)
            .map_err(|error| format!("a task record in NATS is not one bgagents wrote: {error}"))
    }

    /// How the task ended, for a final record.
    pub(crate) fn outcome(&self) -> Outcome {
        let error = || self.error.clone().unwrap_or_default();
        match self.status() {
            TaskStatus::Completed => Outcome::Completed(self.result.clone().unwrap_or_default()),
            TaskStatus::Stopped => Outcome::Stopped,
            TaskStatus::Interrupted => Outcome::Interrupted(error()),
            _ => Outcome::Failed(error()),
        }
    }
}

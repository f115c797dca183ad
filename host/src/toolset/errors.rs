//! Every way a toolset call can be refused, with the texts every front-end
//! shows. Where docker-agent has a text for the same case, it is kept so
//! prompts written for docker-agent read the same errors.

use crate::tasks::TaskStatus;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolError {
    EmptyAgent,
    EmptyTask,
    /// The caller's `sub_agents` do not include the agent.
    NotASubAgent {
        agent: String,
        available: Vec<String>,
    },
    /// The operator named an agent the team does not define.
    UnknownAgent {
        agent: String,
        available: Vec<String>,
    },
    /// The calling agent was not granted the toolset.
    NoToolset {
        caller: String,
    },
    /// The agent exists but has no component to run.
    NoComponent {
        agent: String,
    },
    /// The calling task was stopped or ended before this call.
    CallerEnded,
    /// The calling task has started as many tasks as its agent may.
    SpawnLimit {
        agent: String,
        limit: usize,
    },
    /// The calling task has as many live sub-agent tasks as its agent may.
    ConcurrentSpawnLimit {
        agent: String,
        limit: usize,
    },
    /// Text or expected output over the size cap.
    TooLong {
        what: &'static str,
        limit: usize,
    },
    Cycle {
        chain: Vec<String>,
    },
    DepthExceeded {
        chain: Vec<String>,
        limit: usize,
    },
    RetainedFull {
        limit: usize,
    },
    NotFound {
        id: String,
    },
    NotRunning {
        id: String,
        status: TaskStatus,
    },
    WaitIdCount,
    WaitTimeout,
    DuplicateId {
        id: String,
    },
    ShuttingDown,
    /// The task store cannot be written, so no task is admitted.
    StoreFailing {
        reason: String,
    },
    /// The front-end's session was closed.
    SessionClosed,
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ToolError::EmptyAgent => write!(f, "agent name must not be empty"),
            ToolError::EmptyTask => write!(f, "task must not be empty"),
            ToolError::NotASubAgent { agent, available } if available.is_empty() => write!(
                f,
                "agent {agent:?} is not in the sub-agents list. This agent has no sub-agents configured."
            ),
            ToolError::NotASubAgent { agent, available } => write!(
                f,
                "agent {agent:?} is not in the sub-agents list. Available: {}",
                available.join(", ")
            ),
            ToolError::UnknownAgent { agent, available } => write!(
                f,
                "agent {agent:?} is not defined in the team. Available: {}",
                available.join(", ")
            ),
            ToolError::NoToolset { caller } => write!(
                f,
                "agent {caller:?} does not have the background_agents toolset; add \
                 `toolsets: [{{type: background_agents}}]` to it in the team file"
            ),
            ToolError::NoComponent { agent } => write!(
                f,
                "agent {agent:?} has no component to run; give agents.{agent} a `component:` in the team file"
            ),
            ToolError::CallerEnded => {
                write!(
                    f,
                    "the calling task is no longer running; it cannot start tasks"
                )
            }
            ToolError::SpawnLimit { agent, limit } => write!(
                f,
                "spawn limit reached: a task of agent {agent:?} may start at most {limit} tasks \
                 (limits.spawns) and this one has started them all"
            ),
            ToolError::ConcurrentSpawnLimit { agent, limit } => write!(
                f,
                "spawn limit reached: a task of agent {agent:?} may have at most {limit} tasks \
                 queued or running at once (limits.concurrent_spawns); wait for some to finish"
            ),
            ToolError::TooLong { what, limit } => write!(
                f,
                "{what} is longer than {limit} bytes; shorten it or pass a reference to the data instead"
            ),
            ToolError::Cycle { chain } => {
                write!(f, "delegation cycle detected: {}", chain.join(" -> "))
            }
            ToolError::DepthExceeded { chain, limit } => write!(
                f,
                "delegation depth limit exceeded: {} (at most {limit} levels)",
                chain.join(" -> ")
            ),
            ToolError::RetainedFull { limit } => write!(
                f,
                "maximum total background agent tasks ({limit}) reached; every retained task is \
                 still queued or running — stop some or wait for them to finish"
            ),
            ToolError::NotFound { id } => write!(f, "task not found: {id}"),
            ToolError::StoreFailing { reason } => write!(
                f,
                "no new task is started while the task store cannot be written ({reason}); \
                 it is tried again every second — free space on its filesystem or fix the \
                 error above"
            ),
            ToolError::NotRunning { id, status } => {
                write!(f, "task {id} is not running (status: {status})")
            }
            ToolError::WaitIdCount => write!(f, "task_ids must contain 1 to 100 distinct task IDs"),
            ToolError::WaitTimeout => write!(f, "timeout must be between 0 and 3600 seconds"),
            ToolError::DuplicateId { id } => write!(f, "duplicate task ID: {id}"),
            ToolError::ShuttingDown => {
                write!(f, "the host is shutting down; no new tasks are started")
            }
            ToolError::SessionClosed => {
                write!(
                    f,
                    "this session was closed; open a new session to start tasks"
                )
            }
        }
    }
}

impl std::error::Error for ToolError {}

//! Who is calling, and what they may see. A front-end connection is a
//! *session*; a guest calling through its imports is a *task caller*. Each
//! sees only the tasks it started and their descendants.

use super::task::{Task, TaskId};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

/// One front-end connection (a CLI run, an MCP client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(u64);

impl SessionId {
    /// Tasks restored from the task store: started by a session of a
    /// process that has ended. Only the operator sees them.
    pub(crate) const RESTORED: SessionId = SessionId(0);

    pub(crate) fn raw(self) -> u64 {
        self.0
    }

    pub(crate) fn next() -> SessionId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SessionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The identity a toolset operation runs under. Only the host makes callers:
/// front-ends get theirs from a session, guests from their task.
#[derive(Debug, Clone)]
pub struct Caller {
    pub(crate) session: SessionId,
    /// The agent the caller acts as: its `sub_agents` are what it may start.
    /// `None` is the operator at a terminal, who may start any agent.
    pub(crate) agent: Option<String>,
    /// The calling task, when the caller is a guest.
    pub(crate) task: Option<TaskId>,
    /// The ancestors a task started by this caller gets: the caller's own
    /// ancestors, then the caller itself (empty for a front-end).
    pub(crate) ancestors_for_children: Vec<TaskId>,
    /// Agent names from the session's agent down to the caller.
    pub(crate) lineage: Vec<String>,
    /// Tasks this caller starts are cancelled with this token: the session's
    /// for a front-end, the calling task's own for a guest.
    pub(crate) spawn_token: CancellationToken,
    /// Which sessions' tasks it sees besides its own descendants'.
    pub(crate) reach: Reach,
}

/// Which tasks an operator session sees (lists, views, stops, waits for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The tasks it started (and their descendants).
    OwnTasks,
    /// Those, and the tasks restored from a task store (a daemon's command
    /// line).
    OwnAndRestored,
    /// Every task on the host: a task id is enough (a daemon's operator).
    Everything,
}

impl Caller {
    /// The operator of a session: may start any agent of the team.
    pub(crate) fn operator(session: SessionId, spawn_token: CancellationToken) -> Caller {
        Caller {
            session,
            agent: None,
            task: None,
            ancestors_for_children: Vec::new(),
            lineage: Vec::new(),
            spawn_token,
            reach: Reach::OwnTasks,
        }
    }

    /// An operator that sees as far as `reach`.
    pub(crate) fn operator_reaching(
        session: SessionId,
        spawn_token: CancellationToken,
        reach: Reach,
    ) -> Caller {
        Caller {
            reach,
            ..Caller::operator(session, spawn_token)
        }
    }

    /// A session acting as `agent` (an MCP client acting as `root`).
    pub(crate) fn acting_as(
        session: SessionId,
        agent: &str,
        spawn_token: CancellationToken,
    ) -> Caller {
        Caller {
            session,
            agent: Some(agent.to_string()),
            task: None,
            ancestors_for_children: Vec::new(),
            lineage: vec![agent.to_string()],
            spawn_token,
            reach: Reach::OwnTasks,
        }
    }

    /// A running task calling through its imports.
    pub(crate) fn for_task(task: &Task) -> Caller {
        let mut ancestors_for_children = task.ancestors.clone();
        ancestors_for_children.push(task.id.clone());
        Caller {
            session: task.session,
            agent: Some(task.agent.clone()),
            task: Some(task.id.clone()),
            ancestors_for_children,
            lineage: task.lineage.clone(),
            spawn_token: task.cancel.clone(),
            reach: Reach::OwnTasks,
        }
    }

    /// This caller starting tasks on behalf of a task that runs elsewhere (a
    /// cluster's worker running a task whose parent ran on another
    /// machine): its tasks get `ancestors` and extend `lineage`, as that
    /// task's own would.
    pub(crate) fn on_behalf_of(&self, ancestors: Vec<TaskId>, lineage: Vec<String>) -> Caller {
        Caller {
            ancestors_for_children: ancestors,
            lineage,
            ..self.clone()
        }
    }

    /// The session this caller belongs to.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The agent this caller acts as (`None` for the operator).
    pub fn agent(&self) -> Option<&str> {
        self.agent.as_deref()
    }

    /// Whether `task` was started by this caller or one of its descendants.
    pub(crate) fn can_see(&self, task: &Task) -> bool {
        match self.reach {
            Reach::Everything => return true,
            Reach::OwnAndRestored if task.session == SessionId::RESTORED => return true,
            _ => {}
        }
        task.session == self.session
            && match &self.task {
                None => true,
                Some(id) => task.ancestors.contains(id),
            }
    }
}

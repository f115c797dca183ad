//! The daemon's sessions: the command line's one shared session, and one
//! per MCP connection, kept after the connection ends while it still holds
//! tasks (a task started over the socket outlives its client). Any task on
//! the daemon can be found by its id, whichever session started it.

use crate::tasks::TaskInfo;
use crate::toolset::{Session, Toolset};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Who started a task, as `ps --all` shows it: the command line,
pub const CLI_LABEL: &str = "cli";
/// or an earlier daemon of the same state directory (from the task store).
pub const RESTORED_LABEL: &str = "restored";

pub struct Sessions {
    toolset: Toolset,
    /// Shared by every `bgagents start`/`ps`/... connection.
    cli: Arc<Session>,
    /// An operator session that starts nothing: what it sees are the tasks
    /// restored from the store.
    restored: Arc<Session>,
    connections: Mutex<Vec<Connection>>,
}

struct Connection {
    number: u64,
    label: String,
    session: Arc<Session>,
    connected: bool,
}

impl Sessions {
    pub fn new(toolset: Toolset) -> Sessions {
        let operator = || {
            let session = toolset.open_session(None);
            Arc::new(session.expect("the operator session needs no agent"))
        };
        Sessions {
            cli: operator(),
            restored: operator(),
            toolset,
            connections: Mutex::default(),
        }
    }

    pub fn toolset(&self) -> &Toolset {
        &self.toolset
    }

    pub fn cli(&self) -> Arc<Session> {
        self.cli.clone()
    }

    /// Records connection `number`'s session, so that its tasks can be
    /// found from other connections.
    pub fn register(&self, number: u64, client: &str, session: Arc<Session>) {
        let label = format!("mcp#{number} ({client})");
        self.connections.lock().unwrap().push(Connection {
            number,
            label,
            session,
            connected: true,
        });
    }

    /// Connection `number` ended: its session stays while it holds tasks.
    pub fn disconnected(&self, number: u64) {
        let mut connections = self.connections.lock().unwrap();
        for connection in connections.iter_mut() {
            if connection.number == number {
                connection.connected = false;
            }
        }
        self.prune(&mut connections);
    }

    /// Drops the sessions of ended connections none of whose tasks is
    /// retained any more.
    fn prune(&self, connections: &mut Vec<Connection>) {
        connections.retain(|connection| {
            connection.connected
                || !(self.toolset)
                    .list_background_agents(connection.session.caller())
                    .is_empty()
        });
    }

    /// Every session with its label: the restored tasks' first (every
    /// operator session sees those), then the command line's.
    fn all(&self) -> Vec<(String, Arc<Session>)> {
        let mut connections = self.connections.lock().unwrap();
        self.prune(&mut connections);
        let mut all = vec![
            (RESTORED_LABEL.to_string(), self.restored.clone()),
            (CLI_LABEL.to_string(), self.cli.clone()),
        ];
        all.extend(
            connections
                .iter()
                .map(|connection| (connection.label.clone(), connection.session.clone())),
        );
        all
    }

    /// The session that sees task `id` (`own` first), if any does.
    pub fn owner(&self, own: &Arc<Session>, id: &str) -> Option<Arc<Session>> {
        let sees = |session: &Arc<Session>| self.toolset.task_status(session.caller(), id).is_ok();
        if sees(own) {
            return Some(own.clone());
        }
        self.all()
            .into_iter()
            .map(|(_, session)| session)
            .find(|session| sees(session))
    }

    /// The session that sees the most of `ids` (`own` when it sees them all
    /// or none is better), for a wait over tasks of another session.
    pub fn owner_of_all(&self, own: &Arc<Session>, ids: &[String]) -> Arc<Session> {
        let seen = |session: &Arc<Session>| {
            ids.iter()
                .filter(|id| self.toolset.task_status(session.caller(), id).is_ok())
                .count()
        };
        let mut best = (seen(own), own.clone());
        if best.0 == ids.len() {
            return best.1;
        }
        for (_, session) in self.all() {
            let count = seen(&session);
            if count > best.0 {
                best = (count, session);
            }
        }
        best.1
    }

    /// Every task on the daemon with the label of the session that started
    /// it, session by session (restored, the command line's, then each
    /// connection's), each oldest first: the toolset orders tasks only
    /// within what one session sees.
    pub fn list_all(&self) -> Vec<(TaskInfo, String)> {
        let mut seen = HashSet::new();
        let mut tasks = Vec::new();
        for (label, session) in self.all() {
            for info in self.toolset.list_background_agents(session.caller()) {
                if seen.insert(info.id.clone()) {
                    tasks.push((info, label.clone()));
                }
            }
        }
        tasks
    }
}

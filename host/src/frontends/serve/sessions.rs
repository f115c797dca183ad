//! The sessions of a long-lived server: the command line's one shared
//! session, the one HTTP requests outside an MCP session share, and one per
//! MCP connection, kept after the connection ends while it still holds
//! tasks (a task started over the socket outlives its client). On the
//! daemon any task can be found by its id, whichever session started it;
//! clients acting as an agent (`mcp --http`) reach only their own.

use crate::tasks::Reach;
use crate::tasks::{SessionId, TaskEvent, TaskInfo};
use crate::toolset::{Session, Toolset};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

/// Who started a task, as `ps --all` shows it: the command line;
pub const CLI_LABEL: &str = "cli";
/// HTTP requests outside an MCP session (the JSON API, 2026-07-28 MCP);
pub const HTTP_LABEL: &str = "http";
/// an earlier daemon of the same state directory (from the task store).
pub const RESTORED_LABEL: &str = "restored";

pub struct Sessions {
    toolset: Toolset,
    /// Shared by every `bgagents start`/`ps`/... connection.
    cli: Arc<Session>,
    /// Sees every session's tasks: for view, stop, wait and output by id.
    every: Arc<Session>,
    /// Shared by HTTP requests made outside an MCP session.
    http: Arc<Session>,
    numbers: AtomicU64,
    connections: Mutex<Vec<Connection>>,
    /// The agent clients act as (`bgagents mcp --http`); `None`: the
    /// operator (`serve`).
    agent: Option<String>,
}

struct Connection {
    number: u64,
    label: String,
    session: Arc<Session>,
    connected: bool,
}

impl Sessions {
    pub fn new(toolset: Toolset) -> Sessions {
        Sessions {
            // The command line's `ps` lists earlier daemons' tasks too.
            cli: Arc::new(toolset.open_operator_session(Reach::OwnAndRestored)),
            every: Arc::new(toolset.open_operator_session(Reach::Everything)),
            http: Arc::new(toolset.open_operator_session(Reach::OwnTasks)),
            numbers: AtomicU64::new(0),
            toolset,
            connections: Mutex::default(),
            agent: None,
        }
    }

    /// Sessions whose clients act as `agent` of the team, as a client of
    /// `bgagents mcp` does: they start its sub_agents and see what they
    /// started (no task id reaches another client's task).
    pub fn acting_as(toolset: Toolset, agent: &str) -> Result<Sessions, String> {
        let open = || toolset.open_session(Some(agent)).map(Arc::new);
        let http = open().map_err(|error| error.to_string())?;
        Ok(Sessions {
            cli: http.clone(),
            every: http.clone(),
            http,
            numbers: AtomicU64::new(0),
            connections: Mutex::default(),
            agent: Some(agent.to_string()),
            toolset,
        })
    }

    /// A new client's own session.
    pub fn open_own(&self) -> Result<Arc<Session>, String> {
        (self.toolset.open_session(self.agent.as_deref()))
            .map(Arc::new)
            .map_err(|error| error.to_string())
    }

    pub fn toolset(&self) -> &Toolset {
        &self.toolset
    }

    /// A number for a new connection, for logs and `ps --all`.
    pub fn next_number(&self) -> u64 {
        self.numbers.fetch_add(1, AtomicOrdering::Relaxed) + 1
    }

    /// The session HTTP requests without an MCP session share (the
    /// 2026-07-28 revision has none).
    pub fn http(&self) -> Arc<Session> {
        self.http.clone()
    }

    pub fn cli(&self) -> Arc<Session> {
        self.cli.clone()
    }

    /// Records connection `number`'s session, so that its tasks can be
    /// found from other connections.
    pub fn register(&self, number: u64, transport: &str, client: &str, session: Arc<Session>) {
        let label = format!("{transport}#{number} ({client})");
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

    /// Every session with its label: the command line's, then each
    /// connection's.
    fn all(&self) -> Vec<(String, Arc<Session>)> {
        let mut connections = self.connections.lock().unwrap();
        self.prune(&mut connections);
        let mut all = vec![
            (CLI_LABEL.to_string(), self.cli.clone()),
            (HTTP_LABEL.to_string(), self.http.clone()),
        ];
        all.extend(
            connections
                .iter()
                .map(|connection| (connection.label.clone(), connection.session.clone())),
        );
        all
    }

    /// The operator's view of every session: a task id is enough to view,
    /// stop or wait for a task here, whichever session started it.
    pub fn every(&self) -> Arc<Session> {
        self.every.clone()
    }

    /// What the HTTP API lists: for the operator every task on the
    /// daemon, else the tasks of the session HTTP requests share; oldest
    /// first, with the label of the session that started each.
    pub fn list_visible(&self) -> Vec<(TaskInfo, String)> {
        if self.is_operator() {
            return self.list_all();
        }
        (self
            .toolset
            .list_background_agents(self.http.caller())
            .into_iter())
        .map(|info| (info, HTTP_LABEL.to_string()))
        .collect()
    }

    /// Whether the HTTP API's event stream may carry `event`: the operator
    /// sees every task's, an agent the tasks of the session HTTP requests
    /// share.
    pub fn may_see(&self, event: &TaskEvent) -> bool {
        self.is_operator() || event.session == self.http.caller().session()
    }

    /// Whether clients act as the operator (`serve`), not as an agent of
    /// the team (`mcp --http`).
    pub fn is_operator(&self) -> bool {
        self.agent.is_none()
    }

    /// Every task on the daemon, oldest first, with the label of the
    /// session that started it.
    pub fn list_all(&self) -> Vec<(TaskInfo, String)> {
        let labels: HashMap<SessionId, String> = self
            .all()
            .into_iter()
            .map(|(label, session)| (session.caller().session(), label))
            .collect();
        self.toolset
            .list_every_session()
            .into_iter()
            .map(|(info, session)| {
                let label = match labels.get(&session) {
                    Some(label) => label.clone(),
                    None if session == SessionId::RESTORED => RESTORED_LABEL.to_string(),
                    // A session no longer tracked (its connection ended).
                    None => "ended".to_string(),
                };
                (info, label)
            })
            .collect()
    }
}

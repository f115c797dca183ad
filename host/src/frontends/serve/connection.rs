//! One MCP client connection, on the daemon's socket or over HTTP: the MCP
//! server of `bgagents mcp` (same tools, texts and notifications), plus
//! the daemon's own tools — every session's tasks (for the operator), and
//! a task's output read from an offset (a long poll, for `logs -f`).
//!
//! On the daemon (`serve`) every client is the operator. A connection
//! whose MCP client calls itself [`CLI_CLIENT`] joins the command line's
//! shared session; any other gets a session of its own, which outlives the
//! connection while it holds tasks. A task id is a capability there: view,
//! stop, wait and the output tool take the id of any task on the daemon,
//! whichever session started it; listing stays per session
//! (`list_all_background_agents` is the operator's view). Clients of
//! `mcp --http` act as an agent of the team instead, and reach only the
//! tasks of their own session.

// Logging notifications are deprecated in the newest MCP revision but still
// what clients listen to.
#![allow(deprecated)]

use super::sessions::Sessions;
use crate::frontends::mcp::notify::{self, LogFilter};
use crate::frontends::mcp::server::McpServer;
use crate::frontends::mcp::transport::LineTransport;
use crate::toolset::Session;
use crate::toolset::render;
use crate::toolset::tools::args::Args;
use crate::toolset::tools::background::{STOP, VIEW, WAIT};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    GetTaskParams, GetTaskResult, InitializeRequestParams, InitializeResult, ListToolsResult,
    PaginatedRequestParams, ServerConfig, SetLevelRequestParams, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// The MCP client name the `bgagents` command line connects with.
pub const CLI_CLIENT: &str = "bgagents-cli";

/// Every task of every session on the daemon.
pub const LIST_ALL: &str = "list_all_background_agents";
/// A task's output from a byte offset, waiting for more if asked.
pub const READ_OUTPUT: &str = "read_background_agent_output";

/// The longest a [`READ_OUTPUT`] call waits for output.
pub use crate::toolset::READ_MAX_WAIT_SECS;

#[derive(Clone)]
pub struct Connection {
    sessions: Arc<Sessions>,
    number: u64,
    /// Switched to the command line's session at `initialize` when the
    /// client is the CLI.
    server: Arc<RwLock<McpServer>>,
    is_cli: Arc<AtomicBool>,
    /// Over HTTP: what ends with the client's MCP session.
    http: Option<Arc<HttpLife>>,
}

/// An HTTP client's MCP session: rmcp keeps its handler while the session
/// lives and drops it when the session ends (closed by the client, or idle
/// too long); then its calls end and its events stop, and its tasks stay.
struct HttpLife {
    sessions: Arc<Sessions>,
    number: u64,
    client_gone: CancellationToken,
    notifier: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for HttpLife {
    fn drop(&mut self) {
        self.client_gone.cancel();
        if let Some(notifier) = self.notifier.lock().unwrap().take() {
            notifier.abort();
        }
        self.sessions.disconnected(self.number);
    }
}

impl Connection {
    /// The handler of one HTTP client: of its MCP session when it opens one
    /// (`initialize`), else of one request, in the shared HTTP session.
    pub fn over_http(sessions: Arc<Sessions>) -> Connection {
        let number = sessions.next_number();
        let client_gone = CancellationToken::new();
        let server = McpServer {
            toolset: sessions.toolset().clone(),
            session: sessions.http(),
            log_filter: Arc::new(LogFilter::default()),
            client_gone: client_gone.clone(),
        };
        Connection {
            http: Some(Arc::new(HttpLife {
                sessions: sessions.clone(),
                number,
                client_gone,
                notifier: Mutex::default(),
            })),
            sessions,
            number,
            server: Arc::new(RwLock::new(server)),
            is_cli: Arc::new(AtomicBool::new(false)),
        }
    }

    /// An HTTP client opened an MCP session: it gets a session of its own,
    /// and its tasks' events as notifications.
    fn open_http_session(&self, life: &HttpLife, client: &str, peer: rmcp::Peer<RoleServer>) {
        let toolset = self.sessions.toolset().clone();
        let own = match self.sessions.open_own() {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(connection = self.number, %error, "cannot open a session");
                return;
            }
        };
        self.server.write().unwrap().session = own.clone();
        self.sessions
            .register(self.number, "http", client, own.clone());
        let events = toolset.events().subscribe();
        let session = own;
        let log_filter = self.server().log_filter;
        let notifier = tokio::spawn(async move {
            notify::forward_events(toolset, events, session, peer, &log_filter).await
        });
        *life.notifier.lock().unwrap() = Some(notifier);
    }

    fn server(&self) -> McpServer {
        self.server.read().unwrap().clone()
    }

    fn session(&self) -> Arc<Session> {
        self.server().session
    }

    /// The server for the tools that take a task id: on the daemon, acting
    /// as the operator of every session (the id is enough, whoever started
    /// the task); for clients acting as an agent (`mcp --http`), in the
    /// client's own session, which reaches only its own tasks.
    fn server_for_any_task(&self) -> McpServer {
        let mut server = self.server();
        if self.sessions.is_operator() {
            server.session = self.sessions.every();
        }
        server
    }

    /// The tools this connection adds to `bgagents mcp`'s: the operator's
    /// view of every session only for the operator.
    fn extra_tools(&self) -> Vec<Tool> {
        let mut tools = Self::all_extra_tools();
        if !self.sessions.is_operator() {
            tools.retain(|tool| tool.name != LIST_ALL);
        }
        tools
    }

    fn all_extra_tools() -> Vec<Tool> {
        let tool = |name: &str, description: &str, schema: Value| {
            let Value::Object(schema) = schema else {
                unreachable!("tool schemas are objects")
            };
            Tool::new(name.to_string(), description.to_string(), Arc::new(schema))
                .with_annotations(ToolAnnotations::new().read_only(true))
        };
        vec![
            tool(
                LIST_ALL,
                "List every task on this daemon, whichever client or session started it, \
                 with the session that started it (the operator's view).",
                json!({"type": "object", "properties": {}, "additionalProperties": false}),
            ),
            tool(
                READ_OUTPUT,
                "Read a task's live output from a byte offset: returns the output from \
                 `offset` on, the offset to ask from next, and the task's status. With \
                 `wait`, waits up to that many seconds for output past `offset` or for the \
                 task to finish, whichever comes first.",
                json!({
                    "type": "object",
                    "properties": {
                        "task_id": {"type": "string", "description": "The task ID."},
                        "offset": {"type": "integer", "minimum": 0, "description": "Byte offset to read from (0: the start)."},
                        "wait": {"type": "integer", "minimum": 0, "maximum": READ_MAX_WAIT_SECS, "description": "Seconds to wait for more output; 0 or absent: answer at once."}
                    },
                    "required": ["task_id"],
                    "additionalProperties": false
                }),
            ),
        ]
    }

    fn list_all(&self, args: &Args) -> Result<CallToolResult, String> {
        args.only(&[])?;
        let tasks = self.sessions.list_all();
        let infos: Vec<_> = tasks.iter().map(|(info, _)| info.clone()).collect();
        let records: Vec<Value> = (tasks.iter())
            .map(|(info, session)| render::info_record(info, Some(session)))
            .collect();
        let mut result = CallToolResult::success(vec![ContentBlock::text(render::list(&infos))]);
        result.structured_content = Some(json!({"tasks": records}));
        Ok(result)
    }

    async fn read_output(&self, args: &Args) -> Result<CallToolResult, String> {
        args.only(&["task_id", "offset", "wait"])?;
        let id = args.string("task_id")?.unwrap_or_default();
        let offset = match args.raw("offset") {
            None | Some(Value::Null) => 0,
            Some(value) => value
                .as_u64()
                .ok_or("offset must be a whole number of bytes")?,
        };
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let wait = crate::toolset::read_wait(args.timeout("wait")?)?;
        let server = self.server_for_any_task();
        let read = (server.toolset)
            .read_output(server.session.caller(), &id, offset, wait)
            .await
            .map_err(|error| error.to_string())?;
        let mut result = CallToolResult::success(vec![ContentBlock::text(read.output.clone())]);
        result.structured_content = Some(render::output_record(&read));
        Ok(result)
    }

    /// A daemon-only tool, ended the moment the client cancels it or goes
    /// away; `None` when `name` is not one.
    async fn call_extra(
        &self,
        name: &str,
        args: &Args,
        context: &RequestContext<RoleServer>,
    ) -> Option<CallToolResult> {
        let server = self.server();
        let call = async {
            match name {
                LIST_ALL if self.sessions.is_operator() => Some(self.list_all(args)),
                READ_OUTPUT => Some(self.read_output(args).await),
                _ => None,
            }
        };
        let outcome = tokio::select! {
            biased;
            _ = context.ct.cancelled() => Some(Err("the request was cancelled".to_string())),
            _ = server.client_gone.cancelled() => Some(Err("the client disconnected".to_string())),
            outcome = call => outcome,
        }?;
        Some(outcome.unwrap_or_else(|text| CallToolResult::error(vec![ContentBlock::text(text)])))
    }
}

impl ServerHandler for Connection {
    fn get_info(&self) -> ServerConfig {
        let mut info = self.server().get_info();
        let instructions = info.instructions.take().unwrap_or_default();
        info.instructions = Some(match self.sessions.is_operator() {
            true => format!(
                "{instructions}\n\nThis is a long-lived bgagents daemon: tasks keep running \
                 after you disconnect. A task ID is a capability here: view, stop and wait take \
                 any task on the daemon. {LIST_ALL} lists every session's tasks; {READ_OUTPUT} \
                 reads a task's output from an offset, waiting for more."
            ),
            false => format!(
                "{instructions}\n\n{READ_OUTPUT} reads one of your tasks' output from an \
                 offset, waiting for more."
            ),
        });
        info
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        let client = request.client_info.name.as_str();
        if client == CLI_CLIENT {
            self.server.write().unwrap().session = self.sessions.cli();
            self.is_cli.store(true, Ordering::Relaxed);
        } else if let Some(life) = &self.http {
            self.open_http_session(life, client, context.peer.clone());
        } else {
            self.sessions
                .register(self.number, "mcp", client, self.session());
        }
        tracing::info!(connection = self.number, client, "client connected");
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let answer = self.server_for_any_task().get_task(request, context).await;
        self.once_settled(answer).await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let answer = (self.server_for_any_task())
            .cancel_task(request, context)
            .await;
        self.once_settled(answer).await
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.server().set_level(request, context).await
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = self.server().list_tools(request, context).await?;
        tools.tools.extend(self.extra_tools());
        Ok(tools)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let toolset = self.sessions.toolset().clone();
        let response = self.call_any_tool(request, context).await;
        // Nothing is told that a crash could take back.
        match (toolset.settled().await, response) {
            (Err(error), Ok(CallToolResponse::Complete(result))) => {
                let answer: String = (result.content.iter())
                    .filter_map(|content| content.as_text().map(|text| text.text.as_str()))
                    .collect();
                let text = format!(
                    "the daemon cannot save its tasks: {error}\nIts answer, which a crash \
                     would take back:\n{answer}"
                );
                Ok(CallToolResult::error(vec![ContentBlock::text(text)]).into())
            }
            (_, response) => response,
        }
    }
}

impl Connection {
    /// `answer`, once every change made before it is on disk: a status is
    /// told only once a crash cannot take it back. (A failing store is
    /// logged by the store.)
    async fn once_settled<T>(&self, answer: T) -> T {
        let _ = self.sessions.toolset().settled().await;
        answer
    }

    async fn call_any_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Args::new(request.arguments.clone());
        if let Some(result) = self.call_extra(&request.name, &args, &context).await {
            return Ok(result.into());
        }
        let server = match request.name.as_ref() {
            VIEW | STOP | WAIT => self.server_for_any_task(),
            _ => self.server(),
        };
        server.call_tool(request, context).await
    }
}

/// Serves connection `number` until the client goes away. Its tasks keep
/// running.
pub async fn serve(sessions: Arc<Sessions>, stream: UnixStream, number: u64) {
    let toolset = sessions.toolset().clone();
    let own = match toolset.open_session(None) {
        Ok(session) => Arc::new(session),
        Err(error) => {
            tracing::warn!(connection = number, %error, "cannot open a session");
            return;
        }
    };
    let client_gone = CancellationToken::new();
    let log_filter = Arc::new(LogFilter::default());
    let connection = Connection {
        sessions: sessions.clone(),
        number,
        server: Arc::new(RwLock::new(McpServer {
            toolset: toolset.clone(),
            session: own,
            log_filter: log_filter.clone(),
            client_gone: client_gone.clone(),
        })),
        is_cli: Arc::new(AtomicBool::new(false)),
        http: None,
    };
    // Subscribed before any request is served, so no task event is missed.
    let events = toolset.events().subscribe();
    let (input, output) = stream.into_split();
    let running = match connection
        .clone()
        .serve(LineTransport::new(input, output, client_gone.clone()))
        .await
    {
        Ok(running) => running,
        Err(error) => {
            tracing::info!(connection = number, %error, "MCP handshake failed");
            sessions.disconnected(number);
            return;
        }
    };
    // The command line polls; other clients are told of their tasks.
    let notifier = (!connection.is_cli.load(Ordering::Relaxed)).then(|| {
        let peer = running.peer().clone();
        let session = connection.session();
        let toolset = toolset.clone();
        tokio::spawn(async move {
            notify::forward_events(toolset, events, session, peer, &log_filter).await
        })
    });
    let finished = running.waiting();
    tokio::pin!(finished);
    tokio::select! {
        _ = &mut finished => {}
        _ = client_gone.cancelled() => {
            let _ = finished.await;
        }
    }
    if let Some(notifier) = notifier {
        notifier.abort();
    }
    sessions.disconnected(number);
    tracing::info!(connection = number, "client disconnected");
}

//! The MCP front-end: `bgagents mcp` serves the toolset over the Model
//! Context Protocol on stdio, the client acting as one agent of the team.
//! It only adapts JSON arguments and results; the operations are the
//! toolset's. Task activity is pushed as logging notifications, and `wait`
//! reports progress as tasks finish.

// Logging notifications are deprecated in the newest MCP revision but still
// what clients listen to.
#![allow(deprecated)]

use crate::tasks::{Caller, EventKind, SessionId, TaskEvent, TaskStatus};
use crate::toolset::{
    Session, ToolError, Toolset, WAIT_MAX_IDS, WAIT_MAX_TIMEOUT_SECS, WaitReport, render,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

const RUN: &str = "run_background_agent";
const LIST: &str = "list_background_agents";
const VIEW: &str = "view_background_agent";
const STOP: &str = "stop_background_agent";
const WAIT: &str = "wait_background_agents";

/// Serves `toolset` on stdin/stdout as agent `agent` until the client goes
/// away, then stops every task the client started.
pub async fn serve(toolset: Toolset, agent: &str) -> Result<(), String> {
    let spec = toolset
        .team()
        .agent(agent)
        .ok_or_else(|| format!("agent {agent:?} is not defined in the team"))?;
    if !spec.background_agents {
        return Err(ToolError::NoToolset {
            caller: agent.to_string(),
        }
        .to_string());
    }
    let session = Arc::new(
        toolset
            .open_session(Some(agent))
            .map_err(|e| e.to_string())?,
    );
    let server = McpServer {
        toolset: toolset.clone(),
        session: session.clone(),
    };
    // Subscribed before any request is served, so no task event is missed.
    let events = toolset.events().subscribe();
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|error| format!("MCP handshake failed: {error}"))?;
    let notifier = tokio::spawn(forward_events(
        events,
        session.caller().session(),
        running.peer().clone(),
    ));
    let _ = running.waiting().await;
    notifier.abort();
    session.close().await;
    toolset.shutdown().await;
    Ok(())
}

#[derive(Clone)]
struct McpServer {
    toolset: Toolset,
    session: Arc<Session>,
}

impl McpServer {
    fn caller(&self) -> &Caller {
        self.session.caller()
    }

    /// Who the client may dispatch, for the server instructions.
    fn instructions(&self) -> String {
        let team = self.toolset.team();
        let agent = self.caller().agent().unwrap_or("root");
        let mut text = format!(
            "Background agents: each runs as a sandboxed WebAssembly component. You act as \
             agent {agent:?} and may start these agents with {RUN}:\n"
        );
        for name in &team
            .agent(agent)
            .map(|spec| spec.sub_agents.clone())
            .unwrap_or_default()
        {
            let description = team.agent(name).map(|spec| spec.description.as_str());
            match description {
                Some(description) if !description.is_empty() => {
                    text.push_str(&format!("- {name}: {description}\n"))
                }
                _ => text.push_str(&format!("- {name}\n")),
            }
        }
        text.push_str(&format!(
            "\nStart independent tasks together, then call {WAIT} once to collect their \
             results instead of polling {VIEW}. Task activity is also sent as logging \
             notifications."
        ));
        text
    }

    async fn call(
        &self,
        name: &str,
        args: &Args,
        context: &RequestContext<RoleServer>,
    ) -> Result<String, String> {
        let toolset = &self.toolset;
        let caller = self.caller();
        match name {
            RUN => {
                args.only(&["agent", "task", "expected_output"])?;
                let agent = args.string("agent")?.unwrap_or_default();
                let task = args.string("task")?.unwrap_or_default();
                let expected = args.string("expected_output")?;
                let info = toolset
                    .run_background_agent(caller, &agent, &task, expected.as_deref())
                    .map_err(|e| e.to_string())?;
                Ok(render::started(&info, &task))
            }
            LIST => Ok(render::list(&toolset.list_background_agents(caller))),
            VIEW => {
                args.only(&["task_id"])?;
                let id = args.string("task_id")?.unwrap_or_default();
                let view = toolset
                    .view_background_agent(caller, &id)
                    .map_err(|e| e.to_string())?;
                Ok(render::view(&view))
            }
            STOP => {
                args.only(&["task_id"])?;
                let id = args.string("task_id")?.unwrap_or_default();
                let info = toolset
                    .stop_background_agent(caller, &id)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(render::stopped(&info))
            }
            WAIT => {
                args.only(&["task_ids", "timeout"])?;
                let ids = args.strings("task_ids")?;
                let timeout = args.timeout("timeout")?;
                let report = self.wait_with_progress(&ids, timeout, context).await;
                Ok(render::wait(&report.map_err(|e| e.to_string())?))
            }
            other => Err(format!(
                "unknown tool {other:?}; the tools are {RUN}, {LIST}, {VIEW}, {STOP}, {WAIT}"
            )),
        }
    }

    /// Waits like the toolset does, telling a client that asked for
    /// progress how many of the awaited tasks have finished as they finish.
    async fn wait_with_progress(
        &self,
        ids: &[String],
        timeout: u64,
        context: &RequestContext<RoleServer>,
    ) -> Result<WaitReport, ToolError> {
        let caller = self.caller();
        let mut events = self.toolset.events().subscribe();
        let wait = self.toolset.wait_background_agents(caller, ids, timeout);
        let Some(token) = context.meta.get_progress_token() else {
            return wait.await;
        };
        tokio::pin!(wait);
        let total = ids.len() as f64;
        // Ids, not a counter: a task that finishes while this starts is seen twice.
        let mut finished: HashSet<String> = ids
            .iter()
            .filter(|id| {
                self.toolset
                    .task_status(caller, id)
                    .is_ok_and(TaskStatus::is_final)
            })
            .cloned()
            .collect();
        let progress = |finished: &HashSet<String>, last: &str| {
            ProgressNotificationParam::new(token.clone(), finished.len() as f64)
                .with_total(total)
                .with_message(last.to_string())
        };
        let awaited = |event: &TaskEvent| {
            matches!(event.kind, EventKind::Finished(_))
                && event.session == caller.session()
                && ids.iter().any(|id| id == event.id.as_str())
        };
        let report = loop {
            tokio::select! {
                report = &mut wait => break report,
                event = events.recv() => match event {
                    Ok(event) if awaited(&event) && finished.insert(event.id.to_string()) => {
                        let text = format!("{} {}", event.id, describe(&event.kind));
                        let _ = context.peer.notify_progress(progress(&finished, &text)).await;
                    }
                    Err(RecvError::Closed) => break wait.await,
                    _ => {}
                },
            }
        };
        // Finishes announced while the wait was returning.
        while let Ok(event) = events.try_recv() {
            if awaited(&event) && finished.insert(event.id.to_string()) {
                let text = format!("{} {}", event.id, describe(&event.kind));
                let _ = context
                    .peer
                    .notify_progress(progress(&finished, &text))
                    .await;
            }
        }
        report
    }
}

fn describe(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Finished(status) => status.as_str(),
        _ => "",
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new("bgagents", env!("CARGO_PKG_VERSION")))
        .with_instructions(self.instructions())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = Args(request.arguments.unwrap_or_default());
        let result = match self.call(&request.name, &args, &context).await {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(text) => CallToolResult::error(vec![ContentBlock::text(text)]),
        };
        Ok(result.into())
    }
}

/// Sends the session's task activity to the client as logging notifications.
async fn forward_events(
    mut events: broadcast::Receiver<TaskEvent>,
    session: SessionId,
    peer: Peer<RoleServer>,
) {
    loop {
        let event = match events.recv().await {
            Ok(event) if event.session == session => event,
            Ok(_) => continue,
            Err(RecvError::Lagged(missed)) => {
                let data = json!({"missed_events": missed});
                let _ = notify(&peer, LoggingLevel::Warning, data).await;
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let (level, data) = match &event.kind {
            EventKind::Queued => (LoggingLevel::Debug, json!({"event": "queued"})),
            EventKind::Started => (LoggingLevel::Info, json!({"event": "started"})),
            EventKind::Output(text) => (
                LoggingLevel::Info,
                json!({"event": "output", "output": text}),
            ),
            EventKind::Finished(status) => (
                LoggingLevel::Notice,
                json!({"event": "finished", "status": status.as_str()}),
            ),
        };
        let mut data = data;
        data["task_id"] = json!(event.id.as_str());
        data["agent"] = json!(&*event.agent);
        if notify(&peer, level, data).await.is_err() {
            return;
        }
    }
}

async fn notify(peer: &Peer<RoleServer>, level: LoggingLevel, data: Value) -> Result<(), ()> {
    let message = LoggingMessageNotificationParam::new(level, data).with_logger("bgagents");
    peer.notify_logging_message(message).await.map_err(|_| ())
}

/// A tool call's arguments, checked the way the schemas describe them.
struct Args(JsonObject);

impl Args {
    fn only(&self, known: &[&str]) -> Result<(), String> {
        match self.0.keys().find(|key| !known.contains(&key.as_str())) {
            Some(key) => Err(format!(
                "unknown argument {key:?}; expected: {}",
                known.join(", ")
            )),
            None => Ok(()),
        }
    }

    fn string(&self, name: &str) -> Result<Option<String>, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(format!("{name} must be a string")),
        }
    }

    fn strings(&self, name: &str) -> Result<Vec<String>, String> {
        let bad = || format!("{name} must be an array of task ID strings");
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string).ok_or_else(bad))
                .collect(),
            Some(_) => Err(bad()),
        }
    }

    /// Seconds; the toolset refuses values over its maximum, this only
    /// refuses what is not a whole non-negative number.
    fn timeout(&self, name: &str) -> Result<u64, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(number)) => number
                .as_u64()
                .ok_or_else(|| ToolError::WaitTimeout.to_string()),
            Some(_) => Err(format!("{name} must be a whole number of seconds")),
        }
    }
}

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("tool schemas are objects"),
    }
}

/// The five tools, with docker-agent's names and parameter schemas.
fn tools() -> Vec<Tool> {
    let read_only = || ToolAnnotations::new().read_only(true);
    vec![
        Tool::new(
            RUN,
            "Start one of your sub-agents on a task in the background and get its task ID back \
             at once. Start every independent task this way before waiting on any, so they run \
             in parallel; then collect results with wait_background_agents rather than polling \
             view_background_agent. If the host is busy the task is queued and starts by itself.",
            schema(json!({
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "description": "Name of the sub-agent to run (one of those listed in the server instructions)."},
                    "task": {"type": "string", "description": "What the sub-agent should do, with everything it needs to know."},
                    "expected_output": {"type": "string", "description": "What you expect back (format, length, content)."}
                },
                "required": ["agent", "task"],
                "additionalProperties": false
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(false)),
        Tool::new(
            LIST,
            "List the background tasks you started (and the tasks they started) with their \
             status and runtime, oldest first.",
            schema(json!({"type": "object", "properties": {}})),
        )
        .with_annotations(read_only()),
        Tool::new(
            VIEW,
            "Show one background task: its status and runtime, and its live output while it \
             runs, its result once completed, or its error once failed.",
            schema(json!({
                "type": "object",
                "properties": {
                    "task_id": {"type": "string", "description": "The task ID returned by run_background_agent."}
                },
                "required": ["task_id"],
                "additionalProperties": false
            })),
        )
        .with_annotations(read_only()),
        Tool::new(
            STOP,
            "Stop a queued or running background task and every task it started. The stop \
             takes effect at once and is final.",
            schema(json!({
                "type": "object",
                "properties": {
                    "task_id": {"type": "string", "description": "The task ID to stop."}
                },
                "required": ["task_id"],
                "additionalProperties": false
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(false)),
        Tool::new(
            WAIT,
            "Wait until all the given background tasks have finished, or the timeout passes, \
             then report each one's status and output (up to 4096 bytes each) in the order \
             given. This is the way to collect results; it never stops the tasks.",
            schema(json!({
                "type": "object",
                "properties": {
                    "task_ids": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "maxItems": WAIT_MAX_IDS,
                        "uniqueItems": true,
                        "description": "The task IDs to wait for."
                    },
                    "timeout": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": WAIT_MAX_TIMEOUT_SECS,
                        "description": "Seconds to wait at most; 0 or absent means 300."
                    }
                },
                "required": ["task_ids"],
                "additionalProperties": false
            })),
        )
        .with_annotations(read_only()),
    ]
}

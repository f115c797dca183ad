//! The MCP server handler: the toolset's five operations as tools, the
//! logging level, and requests that end the moment the client cancels them
//! or goes away.

use super::notify::{LogFilter, WaitProgress};
use super::schemas::tools;
use super::tasks::RUN_AGENT;
use crate::tasks::{Caller, EventKind, TaskStatus, WaitReport};
use crate::toolset::tools;
use crate::toolset::tools::args::Args;
use crate::toolset::tools::background::{self, RUN, VIEW, WAIT};
use crate::toolset::{Session, ToolError, Toolset};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    GetTaskParams, GetTaskResult, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, SetLevelRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct McpServer {
    pub toolset: Toolset,
    pub session: Arc<Session>,
    pub log_filter: Arc<LogFilter>,
    /// Cancelled when the client's input ends.
    pub client_gone: CancellationToken,
}

impl McpServer {
    fn caller(&self) -> &Caller {
        self.session.caller()
    }

    /// Who the client may dispatch, for the server instructions.
    fn instructions(&self) -> String {
        let you = match self.caller().agent() {
            Some(agent) => format!("act as agent {agent:?}"),
            // The operator (the `serve` daemon's clients) may start any.
            None => "are the operator".to_string(),
        };
        let mut text = format!(
            "Background agents: each runs as a sandboxed WebAssembly component. You {you} \
             and may start these agents with {RUN}:\n"
        );
        for spec in background::startable(&self.toolset, self.caller()) {
            let name = &spec.name;
            match spec.description.as_str() {
                "" => text.push_str(&format!("- {name}\n")),
                description => text.push_str(&format!("- {name}: {description}\n")),
            }
        }
        text.push_str(&format!(
            "\nStart independent tasks together, then call {WAIT} once to collect their \
             results instead of polling {VIEW}. For one sub-agent's result, {RUN_AGENT} \
             runs it and answers when it has finished (with the MCP tasks extension: at once, \
             with a task). Task activity is also sent as logging notifications."
        ));
        text
    }

    async fn call(
        &self,
        name: &str,
        args: &Args,
        context: &RequestContext<RoleServer>,
    ) -> Result<String, String> {
        let wait = |ids: Vec<String>, timeout| async move {
            (self.wait_with_progress(&ids, timeout, context).await).map_err(|e| e.to_string())
        };
        if name == super::tasks::RUN_AGENT {
            return super::tasks::run_to_end(&self.toolset, self.caller(), args).await;
        }
        background::call(&self.toolset, self.caller(), name, args, wait)
            .await
            .unwrap_or_else(|| Err(tools::unknown_tool(name, &background::specs(""))))
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
        let already_final = ids
            .iter()
            .filter(|id| {
                self.toolset
                    .task_status(caller, id)
                    .is_ok_and(TaskStatus::is_final)
            })
            .cloned();
        let visible = (ids.iter())
            .filter(|id| self.toolset.task_status(caller, id).is_ok())
            .cloned()
            .collect();
        let mut progress = WaitProgress::new(&context.peer, token, ids, visible, already_final);
        let report = loop {
            tokio::select! {
                report = &mut wait => break report,
                event = events.recv() => match event {
                    Ok(event) => {
                        if matches!(event.kind, EventKind::Finished(_)) {
                            // Told once on disk, like every status.
                            let _ = self.toolset.settled().await;
                        }
                        progress.on_event(&event).await
                    }
                    Err(RecvError::Closed) => break wait.await,
                    Err(RecvError::Lagged(_)) => {}
                },
            }
        };
        // Finishes announced while the wait was returning.
        while let Ok(event) = events.try_recv() {
            progress.on_event(&event).await;
        }
        report
    }
}

impl ServerHandler for McpServer {
    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        super::tasks::get(&self.toolset, self.caller(), &request.task_id).map(GetTaskResult::new)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        super::tasks::cancel(&self.toolset, self.caller(), &request.task_id).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("bgagents", env!("CARGO_PKG_VERSION")))
        .with_instructions(self.instructions())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.log_filter.set(request.level);
        Ok(())
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
        let args = Args::new(request.arguments);
        let starts_task =
            request.name == background::RUN || request.name == super::tasks::RUN_AGENT;
        if starts_task && super::tasks::client_supports_tasks(&context) {
            return Ok(
                match super::tasks::start(&self.toolset, self.caller(), &args) {
                    Ok(task) => CallToolResponse::Task(task),
                    Err(text) => CallToolResult::error(vec![ContentBlock::text(text)]).into(),
                },
            );
        }
        // A cancelled request or a departed client ends the call at once;
        // rmcp drops the reply of a cancelled request.
        let outcome = tokio::select! {
            // Checked first: a cancelled wait must not report one more finish.
            biased;
            _ = context.ct.cancelled() => Err("the request was cancelled".to_string()),
            _ = self.client_gone.cancelled() => Err("the client disconnected".to_string()),
            outcome = self.call(&request.name, &args, &context) => outcome,
        };
        let result = match outcome {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(text) => CallToolResult::error(vec![ContentBlock::text(text)]),
        };
        Ok(result.into())
    }
}

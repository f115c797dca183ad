//! The MCP tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) for
//! clients that declare it: `run_background_agent` answers with an MCP task
//! whose id is the bgagents task id, `tasks/get` reports its status and
//! result, and `tasks/cancel` stops it. Clients that do not declare it get
//! the tool's text, as before. [`RUN_AGENT`] runs a sub-agent for its
//! result: an MCP task to clients that declare the extension, else an
//! answer once the sub-agent has finished. Only adapts: every operation is
//! the toolset's, under the caller's scope.

use crate::tasks::{Caller, TaskStatus, TaskView};
use crate::toolset::tools::args::Args;
use crate::toolset::tools::{ToolSpec, background};
use crate::toolset::{Toolset, WAIT_MAX_TIMEOUT_SECS, render};
use rmcp::model::{
    CallToolResult, ContentBlock, CreateTaskResult, DetailedTask, JsonObject, Task, TaskPayload,
    TaskStatus as McpTaskStatus,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::json;

/// How often a client is asked to poll `tasks/get`.
const POLL_INTERVAL_MS: u64 = 500;

/// Runs a sub-agent and answers with its result (or, to a client with the
/// tasks extension, with the MCP task that will have it).
pub const RUN_AGENT: &str = "run_agent";

/// [`RUN_AGENT`]: `run_background_agent`'s parameters, answered with the
/// result.
pub fn run_agent_spec(agents: &str) -> ToolSpec {
    let parameters = (background::specs(agents).into_iter())
        .find(|spec| spec.name == background::RUN)
        .map(|spec| spec.parameters)
        .unwrap_or_default();
    ToolSpec {
        name: RUN_AGENT.into(),
        description: "Run one of your sub-agents on a task and get its result. Clients with \
            the MCP tasks extension get an MCP task at once, to poll with tasks/get or stop \
            with tasks/cancel; other clients get the answer when the sub-agent has finished, \
            and cancelling the request stops the sub-agent. To run several sub-agents in \
            parallel, use run_background_agent and wait_background_agents instead."
            .into(),
        parameters,
        read_only: false,
    }
}

/// [`RUN_AGENT`] for a client without the tasks extension: starts the task
/// and answers once it has finished, `Err` unless it completed. Dropped
/// before then (the request was cancelled, the client went away), it
/// stops the task: nobody is left to receive its result.
pub async fn run_to_end(toolset: &Toolset, caller: &Caller, args: &Args) -> Result<String, String> {
    let (info, _) = background::start(toolset, caller, args)?;
    let id = info.id.to_string();
    let mut unfinished = StopOnDrop {
        toolset: toolset.clone(),
        caller: caller.clone(),
        id: Some(id.clone()),
    };
    let ids = [id.clone()];
    loop {
        let report = (toolset
            .wait_background_agents(caller, &ids, WAIT_MAX_TIMEOUT_SECS)
            .await)
            .map_err(|error| error.to_string())?;
        match report.tasks.first().and_then(|entry| entry.status) {
            Some(status) if status.is_final() => break,
            Some(_) => {}
            // Pruned as soon as it ended (the host keeps few finished
            // tasks): its result is gone.
            None => {
                unfinished.id = None;
                return Err(format!(
                    "task {id} ended and was pruned before its result was read"
                ));
            }
        }
    }
    unfinished.id = None;
    let view = (toolset.view_background_agent(caller, &id)).map_err(|error| error.to_string())?;
    match view.info.status {
        TaskStatus::Completed => Ok(render::view(&view)),
        _ => Err(render::view(&view)),
    }
}

/// Stops task `id`, if still set, when dropped.
struct StopOnDrop {
    toolset: Toolset,
    caller: Caller,
    id: Option<String>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let (toolset, caller) = (self.toolset.clone(), self.caller.clone());
        tracing::info!(task = %id, "{RUN_AGENT} abandoned by its client: stopping the task");
        tokio::spawn(async move {
            let _ = toolset.stop_background_agent(&caller, &id).await;
        });
    }
}

/// Whether the client of this request declared the tasks extension: in the
/// request's `_meta` (2026-07-28 clients declare their capabilities on every
/// request), else at `initialize`.
pub fn client_supports_tasks(context: &RequestContext<RoleServer>) -> bool {
    context
        .client_capabilities()
        .is_some_and(|capabilities| capabilities.supports_tasks())
}

/// Starts `run_background_agent`'s task and answers with it as an MCP task.
pub fn start(toolset: &Toolset, caller: &Caller, args: &Args) -> Result<CreateTaskResult, String> {
    let (info, _) = crate::toolset::tools::background::start(toolset, caller, args)?;
    let created = crate::clock::rfc3339_of(info.created);
    let task = Task::new(
        info.id.as_str(),
        McpTaskStatus::Working,
        created.clone(),
        created,
    )
    .with_poll_interval_ms(POLL_INTERVAL_MS)
    .with_status_message(format!("{} queued", info.agent));
    Ok(CreateTaskResult::new(task))
}

/// The task `id` as `tasks/get` reports it.
pub fn get(toolset: &Toolset, caller: &Caller, id: &str) -> Result<DetailedTask, ErrorData> {
    let view = toolset
        .view_background_agent(caller, id)
        .map_err(|error| ErrorData::invalid_params(error.to_string(), None))?;
    Ok(detailed(&view))
}

/// Stops task `id` for `tasks/cancel`.
pub async fn cancel(toolset: &Toolset, caller: &Caller, id: &str) -> Result<(), ErrorData> {
    match toolset.stop_background_agent(caller, id).await {
        Ok(_) => Ok(()),
        // Already final: cancelling it changes nothing.
        Err(crate::toolset::ToolError::NotRunning { .. }) => Ok(()),
        Err(error) => Err(ErrorData::invalid_params(error.to_string(), None)),
    }
}

/// A task as `tasks/get` and `notifications/tasks` report it.
fn detailed(view: &TaskView) -> DetailedTask {
    let status = view.info.status;
    let payload = match status {
        TaskStatus::Queued | TaskStatus::Running => TaskPayload::Working,
        TaskStatus::Completed => {
            let text = render::view(view);
            let result = CallToolResult::success(vec![ContentBlock::text(text)]);
            TaskPayload::Completed {
                result: to_object(json!(result)),
            }
        }
        TaskStatus::Stopped => TaskPayload::Cancelled,
        TaskStatus::Failed | TaskStatus::Interrupted => TaskPayload::Failed {
            error: to_object(json!({
                "code": -32603,
                "message": view.error.clone().unwrap_or_else(|| status.as_str().to_string()),
            })),
        },
    };
    let updated = crate::clock::now_rfc3339();
    let created = crate::clock::rfc3339_of(view.info.created);
    let task = Task::new(view.info.id.as_str(), payload.status(), created, updated)
        .with_poll_interval_ms(POLL_INTERVAL_MS)
        .with_status_message(format!("{} {}", view.info.agent, status.as_str()));
    DetailedTask::new(task, payload)
}

fn to_object(value: serde_json::Value) -> JsonObject {
    match value {
        serde_json::Value::Object(object) => object,
        _ => JsonObject::new(),
    }
}

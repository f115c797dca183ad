//! The MCP tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) for
//! clients that declare it: `run_background_agent` answers with an MCP task
//! whose id is the bgagents task id, `tasks/get` reports its status and
//! result, and `tasks/cancel` stops it. Clients that do not declare it get
//! the tool's text, as before. Only adapts: every operation is the
//! toolset's, under the caller's scope.

use crate::tasks::{Caller, TaskStatus, TaskView};
use crate::toolset::tools::args::Args;
use crate::toolset::{Toolset, render};
use rmcp::model::{
    CallToolResult, ContentBlock, CreateTaskResult, DetailedTask, JsonObject, Task, TaskPayload,
    TaskStatus as McpTaskStatus,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::json;

/// How often a client is asked to poll `tasks/get`.
const POLL_INTERVAL_MS: u64 = 500;

/// Whether the client of this request declared the tasks extension.
pub fn client_supports_tasks(context: &RequestContext<RoleServer>) -> bool {
    context
        .peer
        .peer_info()
        .is_some_and(|info| info.capabilities.supports_tasks())
}

/// Starts `run_background_agent`'s task and answers with it as an MCP task.
pub fn start(toolset: &Toolset, caller: &Caller, args: &Args) -> Result<CreateTaskResult, String> {
    let (info, _) = crate::toolset::tools::background::start(toolset, caller, args)?;
    let now = crate::clock::now_rfc3339();
    let task = Task::new(info.id.as_str(), McpTaskStatus::Working, now.clone(), now)
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
    let created = crate::clock::rfc3339_ago(view.info.runtime);
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

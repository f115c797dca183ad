//! `transfer_task`: run a sub-agent on a task and answer with its result,
//! the synchronous delegation docker-agent gives every agent with
//! `sub_agents`.

use super::ToolSpec;
use super::args::Args;
use crate::tasks::{Caller, TaskStatus};
use crate::toolset::Toolset;
use crate::toolset::ops::Via;
use serde_json::json;

pub const TRANSFER: &str = "transfer_task";

pub fn spec(agents: &str) -> ToolSpec {
    ToolSpec {
        name: TRANSFER.into(),
        description: "Hand a task to one of your team's agents and wait for its answer, which \
            comes back as this tool's result. Say exactly what it should do and what you \
            expect back."
            .into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "agent": {"type": "string", "description": format!("The agent to hand the task to ({agents}).")},
                "task": {"type": "string", "description": "What the agent should achieve, with everything it needs to know."},
                "expected_output": {"type": "string", "description": "What you expect back (optional)."}
            },
            "required": ["agent", "task"],
            "additionalProperties": false
        }),
        read_only: false,
    }
}

/// Starts the task and waits for it to end; `blocked` runs the wait (a
/// guest lends its running slot meanwhile). The result is the agent's
/// answer; a failure or stop is an error naming the agent.
pub async fn transfer<B, F>(
    toolset: &Toolset,
    caller: &Caller,
    args: &Args,
    blocked: B,
) -> Result<String, String>
where
    B: FnOnce(tokio_util::sync::WaitForCancellationFutureOwned) -> F,
    F: Future<Output = ()>,
{
    args.only(&["agent", "task", "expected_output"])?;
    let agent = args.string("agent")?.unwrap_or_default();
    let task = args.string("task")?.unwrap_or_default();
    let expected = args.string("expected_output")?;
    let info = toolset
        .start(caller, &agent, &task, expected.as_deref(), Via::Transfer)
        .map_err(|error| error.to_string())?;
    let record = toolset
        .visible_task(caller, info.id.as_str())
        .map_err(|error| error.to_string())?;
    blocked(record.exited.opened_owned()).await;
    let view = record.view();
    match view.info.status {
        TaskStatus::Completed => Ok(view.result.unwrap_or_default()),
        TaskStatus::Failed => Err(format!(
            "agent {agent:?} failed: {}",
            view.error.unwrap_or_default()
        )),
        _ => Err(format!("agent {agent:?} was stopped before it finished")),
    }
}

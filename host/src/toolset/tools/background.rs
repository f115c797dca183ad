//! The background-agents toolset as tools: docker-agent's names and
//! parameter schemas, descriptions of our own, and each call checked and
//! answered with the texts every front-end shares.

use super::ToolSpec;
use super::args::Args;
use crate::config::AgentSpec;
use crate::tasks::{Caller, TaskInfo};
use crate::toolset::{ToolError, Toolset, WAIT_MAX_IDS, WAIT_MAX_TIMEOUT_SECS, render};
use serde_json::json;

pub const RUN: &str = "run_background_agent";
pub const LIST: &str = "list_background_agents";
pub const VIEW: &str = "view_background_agent";
pub const STOP: &str = "stop_background_agent";
pub const WAIT: &str = "wait_background_agents";

/// The five tools. `agents` describes who the `agent` argument may name
/// (where the caller finds the list).
pub fn specs(agents: &str) -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: RUN.into(),
            description: "Start one of your sub-agents on a task in the background and get its \
                task ID back at once. Start every independent task this way before waiting on \
                any, so they run in parallel; then collect results with wait_background_agents \
                rather than polling view_background_agent. If the host is busy the task is \
                queued and starts by itself."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "description": format!("Name of the sub-agent to run ({agents}).")},
                    "task": {"type": "string", "description": "What the sub-agent should do, with everything it needs to know."},
                    "expected_output": {"type": "string", "description": "What you expect back (format, length, content)."}
                },
                "required": ["agent", "task"],
                "additionalProperties": false
            }),
            read_only: false,
        },
        ToolSpec {
            name: LIST.into(),
            description: "List the background tasks you started (and the tasks they started) \
                with their status and runtime, oldest first."
                .into(),
            parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            read_only: true,
        },
        ToolSpec {
            name: VIEW.into(),
            description: "Show one background task: its status and runtime, and its live output \
                while it runs, its result once completed, or its error once failed."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "task_id": {"type": "string", "description": "The task ID returned by run_background_agent."}
                },
                "required": ["task_id"],
                "additionalProperties": false
            }),
            read_only: true,
        },
        ToolSpec {
            name: STOP.into(),
            description: "Stop a queued or running background task and every task it started. \
                The stop takes effect at once and is final."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "task_id": {"type": "string", "description": "The task ID to stop."}
                },
                "required": ["task_id"],
                "additionalProperties": false
            }),
            read_only: false,
        },
        ToolSpec {
            name: WAIT.into(),
            description: "Wait until all the given background tasks have finished, or the \
                timeout passes, then report each one's status and output (up to 4096 bytes \
                each) in the order given. This is the way to collect results; it never stops \
                the tasks."
                .into(),
            parameters: json!({
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
            }),
            read_only: true,
        },
    ]
}

/// The arguments of a `wait_background_agents` call: the ids and timeout.
pub fn wait_args(args: &Args) -> Result<(Vec<String>, u64), String> {
    args.only(&["task_ids", "timeout"])?;
    Ok((
        args.strings("task_ids", "task ID")?,
        args.timeout("timeout")?,
    ))
}

/// The arguments of a `run_background_agent` call.
pub struct RunArgs {
    pub agent: String,
    pub task: String,
    pub expected_output: Option<String>,
}

impl RunArgs {
    pub fn parse(args: &Args) -> Result<RunArgs, String> {
        args.only(&["agent", "task", "expected_output"])?;
        Ok(RunArgs {
            agent: args.string("agent")?.unwrap_or_default(),
            task: args.string("task")?.unwrap_or_default(),
            expected_output: args.string("expected_output")?,
        })
    }

    /// Starts the task for `caller`.
    pub fn start(&self, toolset: &Toolset, caller: &Caller) -> Result<TaskInfo, ToolError> {
        let expected = self.expected_output.as_deref();
        toolset.run_background_agent(caller, &self.agent, &self.task, expected)
    }
}

/// `run_background_agent` with `args`: the started task and its task text.
pub fn start(
    toolset: &Toolset,
    caller: &Caller,
    args: &Args,
) -> Result<(TaskInfo, String), String> {
    let run = RunArgs::parse(args)?;
    let info = run.start(toolset, caller).map_err(|e| e.to_string())?;
    Ok((info, run.task))
}

/// The agents `caller` may start, with their descriptions: an agent's
/// `sub_agents`, or for the operator every agent that can run.
pub fn startable<'a>(toolset: &'a Toolset, caller: &Caller) -> Vec<&'a AgentSpec> {
    let team = toolset.team();
    match caller.agent() {
        Some(agent) => (team.agent(agent).into_iter())
            .flat_map(|spec| spec.sub_agents.iter())
            .filter_map(|name| team.agent(name))
            .collect(),
        None => (team.agents.values())
            .filter(|spec| {
                spec.component.is_some() || spec.model.is_some() || spec.harness.is_some()
            })
            .collect(),
    }
}

/// Runs one of the five tools for `caller`; `None` when `name` is not one
/// of them. `wait` is how a wait is run (front-ends add progress, guests
/// lend their running slot).
pub async fn call<F, W>(
    toolset: &Toolset,
    caller: &Caller,
    name: &str,
    args: &Args,
    wait: W,
) -> Option<Result<String, String>>
where
    W: FnOnce(Vec<String>, u64) -> F,
    F: Future<Output = Result<crate::tasks::WaitReport, String>>,
{
    let outcome = match name {
        RUN => start(toolset, caller, args).map(|(info, task)| render::started(&info, &task)),
        LIST => args
            .only(&[])
            .map(|()| render::list(&toolset.list_background_agents(caller))),
        VIEW => {
            async {
                args.only(&["task_id"])?;
                let id = args.string("task_id")?.unwrap_or_default();
                let view = toolset
                    .view_background_agent(caller, &id)
                    .map_err(|e| e.to_string())?;
                Ok(render::view(&view))
            }
            .await
        }
        STOP => {
            async {
                args.only(&["task_id"])?;
                let id = args.string("task_id")?.unwrap_or_default();
                let info = toolset
                    .stop_background_agent(caller, &id)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(render::stopped(&info))
            }
            .await
        }
        WAIT => {
            async {
                let (ids, timeout) = wait_args(args)?;
                Ok(render::wait(&wait(ids, timeout).await?))
            }
            .await
        }
        _ => return None,
    };
    Some(outcome)
}

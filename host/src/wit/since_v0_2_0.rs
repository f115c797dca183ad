//! `bgagents:agents@0.2.0`, the newest version: the background-agents
//! toolset, live output, the model and the agent's tools.

use super::{AgentHost, Bridge, HostRef, ModelCallError, RunRequest};
use crate::model;
use crate::tasks::{TaskInfo, TaskStatus, TaskView, WaitReport};
use wasmtime::Store;
use wasmtime::component::{InstancePre, Linker};

pub const VERSION: &str = "0.2.0";

wasmtime::component::bindgen!({
    path: "../wit/bgagents.wit",
    world: "sub-agent",
    imports: { default: async },
    exports: { default: async },
});

use self::bgagents::agents::{background_agents, model as wit_model, output, tools, types};
use self::exports::bgagents::agents::agent::Request;

/// The interface a 0.2 guest exports.
const AGENT_EXPORT: &str = "bgagents:agents/agent@0.2.0";

pub(super) fn add_to_linker<T: AgentHost>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    SubAgent::add_to_linker::<T, Bridge<T>>(linker, |state| HostRef(state))
}

pub(super) fn prepare<T: AgentHost>(
    pre: InstancePre<T>,
    shown: &str,
) -> Result<SubAgentPre<T>, String> {
    super::signature::check_run::<T, Request>(&pre, AGENT_EXPORT, shown)?;
    SubAgentPre::new(pre).map_err(|error| {
        format!(
            "{shown} does not fit the `sub-agent` world ({error:#}); it must export \
             `{AGENT_EXPORT}` with `run: func(request) -> result<string, string>`, as the WIT \
             `bgagents wit` writes describes"
        )
    })
}

pub(super) async fn instantiate<T: AgentHost>(
    pre: &SubAgentPre<T>,
    store: &mut Store<T>,
) -> wasmtime::Result<SubAgent> {
    pre.instantiate_async(&mut *store).await
}

pub(super) async fn run<T: AgentHost>(
    instance: &SubAgent,
    store: &mut Store<T>,
    request: &RunRequest,
) -> wasmtime::Result<Result<String, String>> {
    let request = Request {
        task_id: request.task_id.clone(),
        agent: request.agent.clone(),
        instruction: request.instruction.clone(),
        task: request.task.clone(),
        expected_output: request.expected_output.clone(),
        sub_agents: request.sub_agents.clone(),
        description: request.description.clone(),
        date: request.date.clone(),
        max_iterations: request.max_iterations,
    };
    instance
        .bgagents_agents_agent()
        .call_run(&mut *store, &request)
        .await
}

impl<T: AgentHost> types::Host for HostRef<'_, T> {}

impl<T: AgentHost> output::Host for HostRef<'_, T> {
    async fn write(&mut self, text: String) {
        self.0.write_output(&text);
    }
}

impl<T: AgentHost> background_agents::Host for HostRef<'_, T> {
    async fn run_background_agent(
        &mut self,
        agent: String,
        task: String,
        expected_output: Option<String>,
    ) -> Result<types::TaskInfo, String> {
        (self.0)
            .run_background_agent(&agent, &task, expected_output.as_deref())
            .map(|info| wit_info(&info))
    }

    async fn list_background_agents(&mut self) -> Vec<types::TaskInfo> {
        self.0
            .list_background_agents()
            .iter()
            .map(wit_info)
            .collect()
    }

    async fn view_background_agent(&mut self, task_id: String) -> Result<types::TaskView, String> {
        self.0.view_background_agent(&task_id).map(wit_view)
    }

    async fn stop_background_agent(&mut self, task_id: String) -> Result<types::TaskInfo, String> {
        let info = self.0.stop_background_agent(task_id).await?;
        Ok(wit_info(&info))
    }

    async fn wait_background_agents(
        &mut self,
        task_ids: Vec<String>,
        timeout_seconds: u32,
    ) -> Result<types::WaitReport, String> {
        let report = (self.0)
            .wait_background_agents(task_ids, timeout_seconds.into())
            .await?;
        Ok(wit_report(report))
    }
}

impl<T: AgentHost> wit_model::Host for HostRef<'_, T> {
    async fn name(&mut self) -> Option<String> {
        self.0.model_name()
    }

    async fn complete(
        &mut self,
        messages: Vec<wit_model::Message>,
        tools: Vec<wit_model::ToolDefinition>,
    ) -> Result<wit_model::Completion, wit_model::Error> {
        let messages = messages.into_iter().map(host_message).collect();
        let tools = tools.into_iter().map(host_tool).collect();
        match self.0.complete(messages, tools).await {
            Ok((completion, total)) => Ok(wit_model::Completion {
                content: completion.content,
                tool_calls: completion.tool_calls.into_iter().map(wit_call).collect(),
                finish_reason: wit_finish(completion.finish_reason),
                usage: wit_usage(completion.usage),
                total: wit_usage(total),
            }),
            Err(error) => Err(match error {
                ModelCallError::NoModel(text) => wit_model::Error::NoModel(text),
                ModelCallError::BudgetExhausted(text) => wit_model::Error::BudgetExhausted(text),
                ModelCallError::RateLimited(text) => wit_model::Error::RateLimited(text),
                ModelCallError::Provider(text) => wit_model::Error::ProviderError(text),
                ModelCallError::InvalidRequest(text) => wit_model::Error::InvalidRequest(text),
            }),
        }
    }
}

impl<T: AgentHost> tools::Host for HostRef<'_, T> {
    async fn definitions(&mut self) -> Vec<wit_model::ToolDefinition> {
        (self.0.tool_definitions().await.into_iter())
            .map(|tool| wit_model::ToolDefinition {
                name: tool.name,
                description: tool.description,
                parameters: tool.parameters,
            })
            .collect()
    }

    async fn call(&mut self, name: String, arguments: String) -> Result<String, String> {
        self.0.call_tool(name, arguments).await
    }
}

fn host_message(message: wit_model::Message) -> model::Message {
    model::Message {
        role: match message.role {
            wit_model::Role::System => model::Role::System,
            wit_model::Role::User => model::Role::User,
            wit_model::Role::Assistant => model::Role::Assistant,
            wit_model::Role::Tool => model::Role::Tool,
        },
        content: message.content,
        tool_calls: (message.tool_calls.into_iter())
            .map(|call| model::ToolCall {
                id: call.id,
                name: call.name,
                arguments: call.arguments,
            })
            .collect(),
        tool_call_id: message.tool_call_id,
    }
}

fn host_tool(tool: wit_model::ToolDefinition) -> model::ToolDefinition {
    model::ToolDefinition {
        name: tool.name,
        description: tool.description,
        parameters: tool.parameters,
    }
}

fn wit_call(call: model::ToolCall) -> wit_model::ToolCall {
    wit_model::ToolCall {
        id: call.id,
        name: call.name,
        arguments: call.arguments,
    }
}

fn wit_finish(reason: model::FinishReason) -> wit_model::FinishReason {
    match reason {
        model::FinishReason::Stop => wit_model::FinishReason::Stop,
        model::FinishReason::ToolCalls => wit_model::FinishReason::ToolCalls,
        model::FinishReason::Length => wit_model::FinishReason::Length,
        model::FinishReason::ContentFilter => wit_model::FinishReason::ContentFilter,
        model::FinishReason::Other => wit_model::FinishReason::Other,
    }
}

fn wit_usage(usage: model::Usage) -> wit_model::Usage {
    wit_model::Usage {
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
    }
}

/// The one place the host's statuses become WIT's. WIT's `task-status` has
/// no `interrupted`: an interrupted task is `failed` to a guest, and its
/// error (set when it was restored) says it was interrupted.
fn wit_status(status: TaskStatus) -> types::TaskStatus {
    match status {
        TaskStatus::Interrupted => types::TaskStatus::Failed,
        TaskStatus::Queued => types::TaskStatus::Queued,
        TaskStatus::Running => types::TaskStatus::Running,
        TaskStatus::Completed => types::TaskStatus::Completed,
        TaskStatus::Failed => types::TaskStatus::Failed,
        TaskStatus::Stopped => types::TaskStatus::Stopped,
    }
}

fn wit_info(info: &TaskInfo) -> types::TaskInfo {
    types::TaskInfo {
        id: info.id.to_string(),
        agent: info.agent.clone(),
        status: wit_status(info.status),
        runtime_ms: info.runtime.as_millis().try_into().unwrap_or(u64::MAX),
        parent_id: info.parent.as_ref().map(ToString::to_string),
    }
}

fn wit_view(view: TaskView) -> types::TaskView {
    types::TaskView {
        info: wit_info(&view.info),
        task: view.task,
        output: view.output.text,
        truncated: view.output.truncated,
        result: view.result,
        error: view.error,
    }
}

fn wit_report(report: WaitReport) -> types::WaitReport {
    types::WaitReport {
        all_done: report.all_done,
        timed_out: report.timed_out,
        tasks: report
            .tasks
            .into_iter()
            .map(|entry| types::WaitEntry {
                task_id: entry.task_id,
                status: entry.status.map(wit_status),
                output: entry.output,
                error: entry.error,
                truncated: entry.truncated,
            })
            .collect(),
    }
}

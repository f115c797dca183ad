//! The data of one guest's Store: its sandbox (WASI context, resource table,
//! limiter, output) and, once bound to a task, what its imports need to
//! call back into the toolset as that task. Its [`AgentHost`]
//! implementation is where a guest's imports reach the toolset.
//!
//! The two halves are apart because a warm instance is made before its task
//! is known (see [`super::warm`]): the sandbox half comes with the Store,
//! the task half is set by [`GuestState::bind`] just before `agent.run`.

use super::slots::Slot;
use super::tools::{self, args::Args, background, think::Thoughts, todo::TodoList};
use super::warm::LiveStore;
use super::{LoadedAgent, Toolset};
use crate::config::TodoSettings;
use crate::model::{Completion, Message, ToolDefinition, Usage};
use crate::sandbox::{OutputBuffer, SandboxOutput, TaskHttp, TaskLimiter, task_context};
use crate::tasks::{Caller, Task, TaskInfo, TaskView, WaitReport};
use crate::wit::{AgentHost, ModelCallError};
use std::future::Future;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

pub(crate) struct GuestState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    /// Its outgoing `wasi:http` requests, allowed to `grants.http`.
    pub(super) http: TaskHttp,
    pub(super) limiter: TaskLimiter,
    /// Where its WASI stdout and stderr, its `output.write` calls and the
    /// sandbox's refusal notes go.
    pub(super) output: Arc<SandboxOutput>,
    /// The task it runs; `None` until [`GuestState::bind`].
    pub(super) task: Option<TaskBinding>,
    /// An import that needs the task was called before there was one (by
    /// the guest's start-up code): the instance must not be used.
    pub(super) called_unbound: bool,
    /// Counts this Store as live while it is.
    _live: LiveStore,
}

/// What a guest's imports reach, as the task it runs.
pub(super) struct TaskBinding {
    /// The task itself, as the caller of its imports.
    pub(super) caller: Caller,
    pub(super) toolset: Toolset,
    pub(super) agent: Arc<LoadedAgent>,
    pub(super) task: Arc<Task>,
    pub(super) output: Arc<OutputBuffer>,
    /// The `think` tool's notes.
    pub(super) thoughts: Thoughts,
    /// The `todo` tool's list: the task's own, or the team's when shared.
    pub(super) todos: TodoList,
    /// This task's slot under the host's running cap.
    pub(super) slot: Option<Slot>,
    /// The `shell` toolset's state: this task's background jobs, killed
    /// when the task ends.
    pub(super) shell: Option<tools::shell::Shell>,
    /// The agent's tools, its MCP servers' included; listed on first use.
    pub(super) tools: Option<Arc<Vec<tools::ToolSpec>>>,
}

/// What an import needing the task answers before there is one.
const UNBOUND: &str = "the bgagents imports can be called only while the agent runs (from \
                       `agent.run`), not while the component is being instantiated";

impl GuestState {
    /// The sandbox of a guest of `agent` (named `name`), its output going
    /// to `output`. Fails only if a granted directory cannot be opened any
    /// more.
    pub(super) fn new(
        name: &str,
        agent: &LoadedAgent,
        output: Arc<SandboxOutput>,
        live: LiveStore,
    ) -> Result<GuestState, String> {
        let limits = &agent.spec.limits;
        // Every handle a guest holds open (file, directory, socket, stream,
        // pollable) is one entry of its table: capping the table caps them all.
        let mut table = ResourceTable::new();
        table.set_max_capacity(limits.open_files);
        Ok(GuestState {
            wasi: task_context(name, &agent.grants, &output)?,
            table,
            http: TaskHttp::new(name, &agent.grants, &output),
            limiter: TaskLimiter::new(limits.memory),
            output,
            task: None,
            called_unbound: false,
            _live: live,
        })
    }

    /// Opens `agent`'s granted directories anew, for an instance made
    /// before its task: the task sees them as they are when it starts.
    pub(super) fn reopen_grants(&mut self, agent: &LoadedAgent) -> Result<(), String> {
        if !agent.grants.dirs.is_empty() {
            self.wasi = task_context(&agent.spec.name, &agent.grants, &self.output)?;
        }
        Ok(())
    }

    /// Makes this guest run `task` for `toolset`, holding `slot`.
    pub(super) fn bind(
        &mut self,
        toolset: &Toolset,
        task: &Arc<Task>,
        agent: &Arc<LoadedAgent>,
        slot: Slot,
    ) {
        self.output.bind(&task.output);
        self.task = Some(TaskBinding {
            caller: Caller::for_task(task),
            toolset: toolset.clone(),
            agent: agent.clone(),
            task: task.clone(),
            output: task.output.clone(),
            thoughts: Thoughts::default(),
            todos: match agent.spec.todo {
                Some(TodoSettings { shared: true }) => toolset.shared_todos(task.session),
                _ => TodoList::default(),
            },
            slot: Some(slot),
            shell: (agent.spec.shell.as_ref())
                .map(|settings| tools::shell::Shell::new(settings, &agent.spec.grants)),
            tools: None,
        });
    }

    /// The task, for an import that needs it.
    fn binding(&mut self) -> Result<&mut TaskBinding, String> {
        match &mut self.task {
            Some(binding) => Ok(binding),
            None => {
                self.called_unbound = true;
                Err(UNBOUND.into())
            }
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.http.view(&mut self.table)
    }
}

impl TaskBinding {
    /// Runs `blocked` (a host call that only waits, such as waiting on
    /// sub-agents) with this task's running slot lent out, so that the tasks
    /// it waits on can use the slot instead of queueing behind it. The slot
    /// is taken back before the guest resumes.
    async fn lending_slot<F: Future>(&mut self, blocked: F) -> F::Output {
        self.slot = None;
        let output = blocked.await;
        self.slot = self.toolset.slots().claim_first().granted().await;
        output
    }

    /// The agent's built-in tools and those of its MCP servers, starting
    /// the servers on first use. A server that cannot start is reported in
    /// the task's output and gives no tools.
    async fn tools(&mut self) -> Arc<Vec<tools::ToolSpec>> {
        if let Some(tools) = &self.tools {
            return tools.clone();
        }
        let mut tools = self.agent.tools.clone();
        for toolset in &self.agent.spec.mcp {
            match self.toolset.mcp().tools(toolset).await {
                Ok(found) => {
                    for tool in found {
                        if tools.iter().any(|known| known.name == tool.name) {
                            self.output.append_line(&format!(
                                "[mcp: {}: tool {:?} is already defined; the first one is kept]",
                                toolset.server.label(),
                                tool.name
                            ));
                        } else {
                            tools.push(tool);
                        }
                    }
                }
                Err(why) => self
                    .output
                    .append_line(&format!("[mcp: {}: {why}]", toolset.server.label())),
            }
        }
        let tools = Arc::new(tools);
        self.tools = Some(tools.clone());
        tools
    }

    /// Runs one of the built-in tools that reach past the sandbox:
    /// filesystem, shell, fetch, memory. `None` if `name` is none of them.
    async fn call_confined_tool(
        &mut self,
        name: &str,
        args: &Args,
    ) -> Option<Result<String, String>> {
        let agent = self.agent.clone();
        if let Some(files) = &agent.files
            && let Some(answer) = files.call(name, args).await
        {
            return Some(answer);
        }
        if let Some(shell) = &mut self.shell
            && let Some(answer) = shell.call(name, args).await
        {
            return Some(answer);
        }
        if let Some(fetcher) = &agent.fetcher
            && let Some(answer) = fetcher.call(name, args).await
        {
            return Some(answer);
        }
        if let Some(memory) = &agent.memory
            && let Some(answer) = memory.call(name, args).await
        {
            return Some(answer);
        }
        None
    }

    /// Runs tool `name` of the agent's MCP servers.
    fn call_mcp_tool(
        &self,
        name: &str,
        args: &Args,
    ) -> impl Future<Output = Option<Result<String, String>>> + Send + use<> {
        let (toolset, agent) = (self.toolset.clone(), self.agent.clone());
        let (name, args) = (name.to_string(), Args::new(Some(args.as_map().clone())));
        async move {
            for server in &agent.spec.mcp {
                if let Some(answer) = toolset.mcp().call(server, &name, &args).await {
                    return Some(answer);
                }
            }
            None
        }
    }
}

impl TaskBinding {
    async fn wait_background_agents(
        &mut self,
        task_ids: Vec<String>,
        timeout_seconds: u64,
    ) -> Result<WaitReport, String> {
        let (toolset, caller) = (self.toolset.clone(), self.caller.clone());
        let waited = toolset.wait_background_agents(&caller, &task_ids, timeout_seconds);
        self.lending_slot(waited)
            .await
            .map_err(|error| error.to_string())
    }

    async fn call_tool(&mut self, name: String, arguments: String) -> Result<String, String> {
        let known = self.tools().await;
        if !known.iter().any(|tool| tool.name == name) {
            return Err(tools::unknown_tool(&name, &known));
        }
        // Shown in the live output, so a person watching sees the agent act.
        self.output.append_line(&format!("[tool: {name}]"));
        let args = Args::parse(&arguments)?;
        // A name the built-in toolsets do not give (after their `tools:`
        // filters) is an MCP server's, even when a built-in tool has it.
        if !self.agent.tools.iter().any(|tool| tool.name == name) {
            return (self.call_mcp_tool(&name, &args).await)
                .unwrap_or_else(|| Err(tools::unknown_tool(&name, &known)));
        }
        let (toolset, caller) = (self.toolset.clone(), self.caller.clone());
        if name == tools::TRANSFER {
            return tools::transfer(&toolset, &caller, &args, |exited| self.lending_slot(exited))
                .await;
        }
        if name == tools::think::THINK {
            return self.thoughts.think(&args);
        }
        if let Some(answer) = self.todos.call(&name, &args) {
            return answer;
        }
        if let Some(answer) = self.call_confined_tool(&name, &args).await {
            return answer;
        }
        background::call(&toolset, &caller, &name, &args, |ids, timeout| {
            self.wait_background_agents(ids, timeout)
        })
        .await
        .unwrap_or_else(|| Err(tools::unknown_tool(&name, &known)))
    }
}

/// Each import reaches the task the guest runs; before it is bound (only
/// start-up code can call then) they answer as if there were nothing, and
/// the instance is marked unusable.
impl AgentHost for GuestState {
    fn write_output(&mut self, text: &str) {
        self.output.append(text.as_bytes());
    }

    fn run_background_agent(
        &mut self,
        agent: &str,
        task: &str,
        expected_output: Option<&str>,
    ) -> Result<TaskInfo, String> {
        let binding = self.binding()?;
        (binding.toolset)
            .run_background_agent(&binding.caller, agent, task, expected_output)
            .map_err(|error| error.to_string())
    }

    fn list_background_agents(&mut self) -> Vec<TaskInfo> {
        match self.binding() {
            Ok(binding) => binding.toolset.list_background_agents(&binding.caller),
            Err(_) => Vec::new(),
        }
    }

    fn view_background_agent(&mut self, task_id: &str) -> Result<TaskView, String> {
        let binding = self.binding()?;
        (binding.toolset)
            .view_background_agent(&binding.caller, task_id)
            .map_err(|error| error.to_string())
    }

    async fn stop_background_agent(&mut self, task_id: String) -> Result<TaskInfo, String> {
        let binding = self.binding()?;
        (binding.toolset)
            .stop_background_agent(&binding.caller, &task_id)
            .await
            .map_err(|error| error.to_string())
    }

    async fn wait_background_agents(
        &mut self,
        task_ids: Vec<String>,
        timeout_seconds: u64,
    ) -> Result<WaitReport, String> {
        (self.binding()?)
            .wait_background_agents(task_ids, timeout_seconds)
            .await
    }

    fn model_name(&mut self) -> Option<String> {
        let binding = self.binding().ok()?;
        binding.agent.model.as_ref().map(|client| client.name())
    }

    async fn complete(
        &mut self,
        messages: Vec<Message>,
        tools: Vec<ToolDefinition>,
    ) -> Result<(Completion, Usage), ModelCallError> {
        (self.binding().map_err(ModelCallError::InvalidRequest)?)
            .complete_turn(messages, tools)
            .await
    }

    async fn tool_definitions(&mut self) -> Vec<ToolDefinition> {
        match self.binding() {
            Ok(binding) => {
                let tools = binding.tools().await;
                tools.iter().map(tools::ToolSpec::definition).collect()
            }
            Err(_) => Vec::new(),
        }
    }

    async fn call_tool(&mut self, name: String, arguments: String) -> Result<String, String> {
        self.binding()?.call_tool(name, arguments).await
    }
}

//! `bgagents:agents@0.1.0`: the background-agents toolset and live output,
//! before the model and tools. Its shapes are the newest version's (the
//! `types` interface did not change), and its imports answer through the
//! newest version's implementations.

use super::since_v0_2_0 as latest;
use super::{AgentHost, Bridge, HostRef, RunRequest};
use wasmtime::Store;
use wasmtime::component::{InstancePre, Linker};

pub const VERSION: &str = "0.1.0";

wasmtime::component::bindgen!({
    path: "../wit/v0.1.0/bgagents.wit",
    world: "sub-agent",
    imports: { default: async },
    exports: { default: async },
    with: {
        "bgagents:agents/types": latest::bgagents::agents::types,
    },
});

use self::bgagents::agents::{background_agents, output};
use self::exports::bgagents::agents::agent::Request;
use latest::bgagents::agents::types;

/// The interface a 0.1 guest exports.
const AGENT_EXPORT: &str = "bgagents:agents/agent@0.1.0";

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
            "{shown} does not fit the 0.1.0 `sub-agent` world ({error:#}); it must export \
             `{AGENT_EXPORT}` with `run: func(request) -> result<string, string>`"
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
    };
    instance
        .bgagents_agents_agent()
        .call_run(&mut *store, &request)
        .await
}

impl<T: AgentHost> output::Host for HostRef<'_, T> {
    async fn write(&mut self, text: String) {
        latest::bgagents::agents::output::Host::write(self, text).await
    }
}

impl<T: AgentHost> background_agents::Host for HostRef<'_, T> {
    async fn run_background_agent(
        &mut self,
        agent: String,
        task: String,
        expected_output: Option<String>,
    ) -> Result<types::TaskInfo, String> {
        use latest::bgagents::agents::background_agents::Host;
        Host::run_background_agent(self, agent, task, expected_output).await
    }

    async fn list_background_agents(&mut self) -> Vec<types::TaskInfo> {
        use latest::bgagents::agents::background_agents::Host;
        Host::list_background_agents(self).await
    }

    async fn view_background_agent(&mut self, task_id: String) -> Result<types::TaskView, String> {
        use latest::bgagents::agents::background_agents::Host;
        Host::view_background_agent(self, task_id).await
    }

    async fn stop_background_agent(&mut self, task_id: String) -> Result<types::TaskInfo, String> {
        use latest::bgagents::agents::background_agents::Host;
        Host::stop_background_agent(self, task_id).await
    }

    async fn wait_background_agents(
        &mut self,
        task_ids: Vec<String>,
        timeout_seconds: u32,
    ) -> Result<types::WaitReport, String> {
        use latest::bgagents::agents::background_agents::Host;
        Host::wait_background_agents(self, task_ids, timeout_seconds).await
    }
}

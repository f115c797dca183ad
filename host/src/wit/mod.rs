//! The WIT boundary, in one place: the `bgagents:agents` package versions a
//! guest may be built for, one module per version (`since_v0_1_0`,
//! `since_v0_2_0`), each owning its generated bindings and its host
//! implementations; the linker that provides them all; and the version and
//! signature checks a component passes at load.
//!
//! Below this line nothing knows WIT: the imports call into an [`AgentHost`]
//! (the task's store data, which the toolset implements) with the host's own
//! types, and the toolset instantiates a guest with [`AgentPre::instantiate`]
//! and runs a task in it with [`AgentInstance::run`] and a
//! version-independent [`RunRequest`].

mod signature;
mod since_v0_1_0;
mod since_v0_2_0;
mod wasi;

use crate::model::{Completion, Message, ToolDefinition, Usage};
use crate::tasks::{TaskInfo, TaskView, WaitReport};
use std::future::Future;
use std::marker::PhantomData;
use wasmtime::component::{Component, HasData, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiView;
use wasmtime_wasi_http::WasiHttpView;

/// The newest WIT package, as `bgagents wit` writes it and new guests build
/// against.
pub const WIT: &str = include_str!("../../../wit/bgagents.wit");
/// The package's name.
pub const WIT_PACKAGE: &str = "bgagents:agents";
/// Every version a guest may be built for, oldest first.
const SUPPORTED: [&str; 2] = [since_v0_1_0::VERSION, since_v0_2_0::VERSION];

/// What a guest's imports need from the task they run for. The toolset
/// implements it for its store data; each WIT version adapts its imports
/// onto it.
pub(crate) trait AgentHost: WasiView + WasiHttpView + Send + 'static {
    /// `output.write`.
    fn write_output(&mut self, text: &str);

    fn run_background_agent(
        &mut self,
        agent: &str,
        task: &str,
        expected_output: Option<&str>,
    ) -> Result<TaskInfo, String>;
    fn list_background_agents(&mut self) -> Vec<TaskInfo>;
    fn view_background_agent(&mut self, task_id: &str) -> Result<TaskView, String>;
    fn stop_background_agent(
        &mut self,
        task_id: String,
    ) -> impl Future<Output = Result<TaskInfo, String>> + Send;
    fn wait_background_agents(
        &mut self,
        task_ids: Vec<String>,
        timeout_seconds: u64,
    ) -> impl Future<Output = Result<WaitReport, String>> + Send;

    /// `provider/model` of the agent's model, if it has one.
    fn model_name(&mut self) -> Option<String>;
    /// One model turn; returns the completion and the task's usage so far.
    fn complete(
        &mut self,
        messages: Vec<Message>,
        tools: Vec<ToolDefinition>,
    ) -> impl Future<Output = Result<(Completion, Usage), ModelCallError>> + Send;

    /// The agent's tools, including those of its MCP servers (started on
    /// first use, hence async).
    fn tool_definitions(&mut self) -> impl Future<Output = Vec<ToolDefinition>> + Send;
    fn call_tool(
        &mut self,
        name: String,
        arguments: String,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// Why a model call failed, as the guest sees it. Each carries a sentence
/// for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelCallError {
    NoModel(String),
    BudgetExhausted(String),
    RateLimited(String),
    Provider(String),
    InvalidRequest(String),
}

/// What a task is asked to do, whatever WIT version its guest speaks.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub task_id: String,
    pub agent: String,
    pub instruction: String,
    pub task: String,
    pub expected_output: Option<String>,
    pub sub_agents: Vec<String>,
    pub description: String,
    pub date: Option<String>,
    pub max_iterations: u32,
}

/// The imports' view of a task's store data: each version's host traits are
/// implemented for it, over [`AgentHost`].
pub(crate) struct HostRef<'a, T>(&'a mut T);

/// Tells the generated `add_to_linker` functions to hand the imports a
/// [`HostRef`].
struct Bridge<T>(PhantomData<T>);

impl<T: 'static> HasData for Bridge<T> {
    type Data<'a> = HostRef<'a, T>;
}

/// A linker with WASI 0.2 (symlink creation refused; `wasi:http` outgoing
/// requests through the task's origin gate) and every supported version of
/// the bgagents imports: each version's interfaces have their own
/// names (`…/output@0.1.0`, `…/output@0.2.0`), so one linker serves all.
pub(crate) fn linker<T: AgentHost>(engine: &Engine) -> wasmtime::Result<Linker<T>> {
    let mut linker = Linker::new(engine);
    wasi::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    since_v0_1_0::add_to_linker(&mut linker)?;
    since_v0_2_0::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// A component checked against the WIT version it was built for and
/// pre-instantiated: a task only has to instantiate it.
pub(crate) enum AgentPre<T: 'static> {
    V0_1(since_v0_1_0::SubAgentPre<T>),
    V0_2(since_v0_2_0::SubAgentPre<T>),
}

impl<T: 'static> Clone for AgentPre<T> {
    fn clone(&self) -> Self {
        match self {
            AgentPre::V0_1(pre) => AgentPre::V0_1(pre.clone()),
            AgentPre::V0_2(pre) => AgentPre::V0_2(pre.clone()),
        }
    }
}

impl<T: AgentHost> AgentPre<T> {
    /// Checks `component` (shown to people as `shown`) against the WIT
    /// version it was built for and links it. The error is a sentence naming
    /// the file and what to do.
    pub fn new(
        engine: &Engine,
        linker: &Linker<T>,
        component: &Component,
        shown: &str,
    ) -> Result<AgentPre<T>, String> {
        let version = guest_version(engine, component, shown)?;
        let pre = linker.instantiate_pre(component).map_err(|error| {
            format!(
                "{shown} imports something bgagents does not provide ({error:#}); a sub-agent may \
                 import WASI 0.2 and the {WIT_PACKAGE} interfaces in the WIT `bgagents wit` \
                 writes (output, background-agents, model, tools)"
            )
        })?;
        match version {
            Some(since_v0_1_0::VERSION) => since_v0_1_0::prepare(pre, shown).map(AgentPre::V0_1),
            _ => since_v0_2_0::prepare(pre, shown).map(AgentPre::V0_2),
        }
    }

    /// The WIT version the guest was built for.
    pub fn version(&self) -> &'static str {
        match self {
            AgentPre::V0_1(_) => since_v0_1_0::VERSION,
            AgentPre::V0_2(_) => since_v0_2_0::VERSION,
        }
    }

    /// Instantiates the guest in `store`, ready for one [`AgentInstance::run`].
    pub async fn instantiate(&self, store: &mut Store<T>) -> wasmtime::Result<AgentInstance>
    where
        T: Send,
    {
        Ok(match self {
            AgentPre::V0_1(pre) => {
                AgentInstance::V0_1(since_v0_1_0::instantiate(pre, store).await?)
            }
            AgentPre::V0_2(pre) => {
                AgentInstance::V0_2(since_v0_2_0::instantiate(pre, store).await?)
            }
        })
    }
}

/// A guest instantiated in its Store, whatever WIT version it speaks.
pub(crate) enum AgentInstance {
    V0_1(since_v0_1_0::SubAgent),
    V0_2(since_v0_2_0::SubAgent),
}

impl AgentInstance {
    /// Calls the guest's `agent.run` (in the Store it was instantiated in).
    pub async fn run<T: AgentHost>(
        &self,
        store: &mut Store<T>,
        request: &RunRequest,
    ) -> wasmtime::Result<Result<String, String>> {
        match self {
            AgentInstance::V0_1(instance) => since_v0_1_0::run(instance, store, request).await,
            AgentInstance::V0_2(instance) => since_v0_2_0::run(instance, store, request).await,
        }
    }
}

/// The supported version of our package the component was built for (the
/// `0.minor` it names, as `"0.1.0"` or `"0.2.0"`); `None` when it names none
/// (the export check then says what is missing). An unsupported version is
/// refused, naming both sides, before linking would give a vaguer error.
fn guest_version(
    engine: &Engine,
    component: &Component,
    shown: &str,
) -> Result<Option<&'static str>, String> {
    let ty = component.component_type();
    let imports = ty.imports(engine).map(|(name, _)| name);
    let exports = ty.exports(engine).map(|(name, _)| name);
    let mut found = None;
    for name in imports.chain(exports) {
        let Some(version) = name
            .strip_prefix(WIT_PACKAGE)
            .and_then(|rest| rest.split_once('@'))
            .map(|(_, version)| version)
        else {
            continue;
        };
        let Some(supported) = supported_version(version) else {
            return Err(format!(
                "{shown} was built for {WIT_PACKAGE}@{version}, but this host provides \
                 {WIT_PACKAGE}@{}; rebuild the plugin against the WIT that `bgagents wit` \
                 writes (a host accepts guests of the same 0.minor version)",
                SUPPORTED.join(" and @")
            ));
        };
        match found {
            Some(other) if other != supported => {
                return Err(format!(
                    "{shown} mixes {WIT_PACKAGE}@{other} and @{supported}; build it against one \
                     version of the WIT (`bgagents wit` writes the newest)"
                ));
            }
            _ => found = Some(supported),
        }
    }
    Ok(found)
}

/// The supported version a guest's `version` is compatible with: the same
/// minor while the major is 0, the same major after.
fn supported_version(version: &str) -> Option<&'static str> {
    let parse = |text: &str| -> Option<(u64, u64)> {
        let mut parts = text.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    };
    let (major, minor) = parse(version)?;
    SUPPORTED.into_iter().find(|ours| match parse(ours) {
        Some((0, our_minor)) => major == 0 && minor == our_minor,
        Some((our_major, _)) => major == our_major,
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_wit_declares_the_newest_version() {
        let newest = SUPPORTED[SUPPORTED.len() - 1];
        assert!(WIT.contains(&format!("package {WIT_PACKAGE}@{newest};")));
    }

    #[test]
    fn versions_are_compatible_within_a_minor_while_major_is_zero() {
        assert_eq!(supported_version("0.1.0"), Some("0.1.0"));
        assert_eq!(supported_version("0.1.7"), Some("0.1.0"));
        assert_eq!(supported_version("0.2.3"), Some("0.2.0"));
        assert_eq!(supported_version("0.3.0"), None);
        assert_eq!(supported_version("1.1.0"), None);
        assert_eq!(supported_version("nonsense"), None);
    }
}

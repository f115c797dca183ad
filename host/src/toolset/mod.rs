//! The background-agents toolset: the one place where run, list, view, stop
//! and wait are implemented. Every front-end (the WIT imports a guest calls,
//! the CLI, MCP) is a thin adapter over [`Toolset`] and a [`Caller`].

mod errors;
mod guest;
mod model;
mod ops;
pub mod render;
mod runner;
mod slots;
mod tail;
pub mod tools;
mod trap;
mod warm;

pub use warm::WarmStats;

pub use errors::ToolError;
pub(crate) use guest::GuestState;
pub use ops::{
    MAX_EXPECTED_OUTPUT_BYTES, MAX_TASK_BYTES, WAIT_DEFAULT_TIMEOUT_SECS, WAIT_MAX_IDS,
    WAIT_MAX_TIMEOUT_SECS, WAIT_OUTPUT_CAP,
};
pub use tail::{OutputRead, READ_MAX_WAIT_SECS, Told, read_wait};

pub use crate::components::LoadProgress;
use crate::components::{
    Allocator, BUNDLED_AGENT, CacheOutcome, ComponentCache, EngineOptions, load_component,
    load_embedded, new_engine,
};
use crate::config::{AgentSpec, CacheSetting, Grants, Team};
use crate::model::ModelClient;
use crate::store::Store;
use crate::tasks::{Caller, Events, Reach, Registry, SessionId, Task};
use crate::wit::AgentPre;
use slots::Slots;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wasmtime::Engine;

/// A loaded team, ready to run tasks. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Toolset(Arc<Shared>);

/// Lock order, wherever more than one is held: `registry`, then a task's
/// state (`Task::finish`, `Task::retained_bytes`), then the event channel —
/// a task's events are sent under its state lock, so they arrive in the
/// order its status changed. No lock is held across an await (the guards
/// are std mutex guards, which a spawned future could not carry).
struct Shared {
    team: Team,
    engine: Engine,
    fuel_metering: bool,
    epoch_interruption: bool,
    report: LoadReport,
    agents: HashMap<String, Arc<LoadedAgent>>,
    registry: Mutex<Registry>,
    /// The running cap: a task waiting for a slot is queued.
    slots: Slots,
    events: Events,
    /// Parent of every session's token: cancelling it stops everything.
    shutdown: CancellationToken,
    /// Each session's todo list, for agents whose `todo` toolset is
    /// `shared: true`; dropped with the session.
    shared_todos: Mutex<HashMap<SessionId, tools::todo::TodoList>>,
    /// The MCP servers the agents' `type: mcp` toolsets name, each started
    /// once, on first use.
    mcp: tools::mcp::McpServers,
    /// Where tasks are kept, when the host keeps them.
    store: Option<Store>,
    /// Guest Stores alive, warm or running.
    live_stores: warm::LiveStores,
    /// Where tasks run when not here (a cluster's coordinator).
    remote: std::sync::OnceLock<Arc<dyn crate::cluster::Remote>>,
}

/// How the bundled LLM agent is named in reports and errors.
const BUNDLED_AGENT_NAME: &str = "<bundled LLM agent>";

/// An agent whose component compiled and fits the world, or whose
/// harness CLI was found.
struct LoadedAgent {
    spec: AgentSpec,
    /// Shared with every task's socket check.
    grants: Arc<Grants>,
    pre: GuestPre,
    /// A harness agent's CLI, which its tasks run instead of a component.
    harness: Option<Arc<crate::harness::HarnessAgent>>,
    /// The tools its `toolsets:` grant.
    tools: Vec<tools::ToolSpec>,
    /// Its `model:`, ready to call.
    model: Option<ModelClient>,
    /// Its `filesystem` toolset over its granted directories.
    files: Option<tools::filesystem::Files>,
    /// Its `fetch` toolset.
    fetcher: Option<tools::fetch::Fetcher>,
    /// Its `memory` toolset's store, shared with agents naming the same path.
    memory: Option<Arc<tools::memory::MemoryStore>>,
    /// Its instances made ahead of its tasks.
    warm: warm::WarmPool,
}

/// The component an agent's tasks instantiate; a harness agent has none
/// (its tasks run its CLI, see `runner::drive`).
struct GuestPre(Option<AgentPre<GuestState>>);

impl GuestPre {
    async fn instantiate(
        &self,
        store: &mut wasmtime::Store<GuestState>,
    ) -> wasmtime::Result<crate::wit::AgentInstance> {
        match &self.0 {
            Some(pre) => pre.instantiate(store).await,
            None => Err(wasmtime::Error::msg(
                "a harness agent has no component to instantiate",
            )),
        }
    }
}

/// What loading a team did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub allocator: Allocator,
    /// `None` when the cache is off.
    pub cache_dir: Option<PathBuf>,
    /// One entry per distinct component, in load order.
    pub components: Vec<ComponentReport>,
}

#[derive(Debug, Clone)]
pub struct ComponentReport {
    pub path: PathBuf,
    pub cache: CacheOutcome,
    pub took: Duration,
}

/// Components that could not be loaded, one line per problem.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub problems: Vec<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for LoadError {}

/// A front-end connection: a [`Caller`] whose tasks are all stopped when the
/// session is closed or dropped.
pub struct Session {
    toolset: Toolset,
    caller: Caller,
}

impl Toolset {
    /// Compiles (or loads from the cache) every agent's component. All
    /// problems are reported together.
    pub fn load(team: Team) -> Result<Toolset, LoadError> {
        Toolset::load_inner(team, true, true, &|_| {}, None)
    }

    /// Like [`Toolset::load`], telling `progress` when a component has to be
    /// compiled (not in the cache) and when that ends, so a front-end can
    /// say why nothing happens for a while.
    pub fn load_with_progress(
        team: Team,
        progress: impl Fn(LoadProgress),
    ) -> Result<Toolset, LoadError> {
        Toolset::load_inner(team, true, true, &progress, None)
    }

    /// Like [`Toolset::load`] with fuel metering and epoch interruption off:
    /// tasks have no CPU budget and cannot be stopped inside loops. Only to
    /// measure what metering costs.
    #[doc(hidden)]
    pub fn load_unmetered(team: Team) -> Result<Toolset, LoadError> {
        Toolset::load_inner(team, false, false, &|_| {}, None)
    }

    /// Like [`Toolset::load`] with only fuel metering or only epoch
    /// interruption on. Only to measure what each costs.
    #[doc(hidden)]
    pub fn load_with(
        team: Team,
        fuel_metering: bool,
        epoch_interruption: bool,
    ) -> Result<Toolset, LoadError> {
        Toolset::load_inner(team, fuel_metering, epoch_interruption, &|_| {}, None)
    }

    /// Like [`Toolset::load`], keeping every task in `store`: the tasks it
    /// holds from earlier runs (finished, or interrupted when their process
    /// ended) are listed and viewable by the operator, and every new task's
    /// status, result and output are written to it as they happen. No grant
    /// may reach the store's directory. `progress` is told of compilations,
    /// as with [`Toolset::load_with_progress`].
    pub fn load_with_store(
        team: Team,
        store: Store,
        progress: impl Fn(LoadProgress),
    ) -> Result<Toolset, LoadError> {
        Toolset::load_inner(team, true, true, &progress, Some(store))
    }

    fn load_inner(
        team: Team,
        fuel_metering: bool,
        epoch_interruption: bool,
        progress: &dyn Fn(LoadProgress),
        store: Option<Store>,
    ) -> Result<Toolset, LoadError> {
        crate::sandbox::raise_open_file_limit();
        let fail = |problem: String| LoadError {
            problems: vec![problem],
        };
        let options = EngineOptions {
            pooling: team.engine.pooling,
            pool_size: team.engine.pool_size,
            fuel_metering,
            epoch_interruption,
        };
        let (engine, allocator) = new_engine(&options).map_err(|error| {
            fail(format!(
                "engine: cannot create the WebAssembly engine: {error}"
            ))
        })?;
        let cache_dir = match &team.engine.cache {
            CacheSetting::DefaultDir => ComponentCache::default_dir(),
            CacheSetting::Dir(dir) => Some(dir.clone()),
            CacheSetting::Off => None,
        };
        // (agent, granted host directory) of every agent.
        let granted_dirs = || {
            team.agents.values().flat_map(|spec| {
                let agent = spec.name.as_str();
                (spec.grants.dirs.iter()).map(move |grant| (agent, grant.host.as_path()))
            })
        };
        if let Some(dir) = &cache_dir {
            let problems = crate::components::check_grants_avoid_cache(dir, granted_dirs());
            if !problems.is_empty() {
                return Err(LoadError { problems });
            }
        }
        if let Some(state_dir) = store.as_ref().and_then(|store| store.path().parent()) {
            let protected = crate::config::grants::Protected {
                what: "the state directory",
                why: "a guest could read every task's text and output in its task store, or \
                      reach the daemon's socket and act as its operator",
                fix: "choose another state directory with --state",
            };
            let problems =
                crate::config::grants::check_grants_avoid(state_dir, &protected, granted_dirs());
            if !problems.is_empty() {
                return Err(LoadError { problems });
            }
        }
        let cache = ComponentCache::new(cache_dir, team.engine.cache_max);
        let linker = crate::wit::linker(&engine)
            .map_err(|error| fail(format!("cannot set up host imports: {error:#}")))?;
        let mut agents = HashMap::new();
        let mut problems = Vec::new();
        let mut components = Vec::new();
        // Agents that share a component share its compilation.
        // Agents that share a component share its compilation; `None` is
        // the bundled LLM agent, which agents with `model:` and no
        // `component:` run.
        let mut compiled: HashMap<Option<&Path>, Result<AgentPre<GuestState>, String>> =
            HashMap::new();
        let mut memory_stores: HashMap<PathBuf, Arc<tools::memory::MemoryStore>> = HashMap::new();
        for spec in team.agents.values() {
            if let Some(harness) = &spec.harness {
                match crate::harness::HarnessAgent::load(spec, harness) {
                    Ok(loaded) => {
                        let loaded = LoadedAgent {
                            spec: spec.clone(),
                            grants: Arc::new(spec.grants.clone()),
                            pre: GuestPre(None),
                            harness: Some(Arc::new(loaded)),
                            tools: Vec::new(),
                            model: None,
                            files: None,
                            fetcher: None,
                            memory: None,
                            warm: warm::WarmPool::new(0),
                        };
                        agents.insert(spec.name.clone(), Arc::new(loaded));
                    }
                    Err(problem) => {
                        problems.push(format!("agents.{}.harness: {problem}", spec.name))
                    }
                }
                continue;
            }
            let model = match spec.model.as_ref().map(ModelClient::new).transpose() {
                Ok(model) => model,
                Err(problem) => {
                    problems.push(format!("agents.{}.model: {problem}", spec.name));
                    continue;
                }
            };
            let source = match (&spec.component, &model) {
                (Some(path), _) => Some(path.as_path()),
                (None, Some(_)) => None,
                (None, None) => continue,
            };
            let loaded = compiled.entry(source).or_insert_with(|| {
                let loaded = match source {
                    Some(path) => load_component(&engine, &cache, path, progress)?,
                    None => {
                        load_embedded(&engine, &cache, BUNDLED_AGENT, BUNDLED_AGENT_NAME, progress)?
                    }
                };
                let pre = AgentPre::new(&engine, &linker, &loaded.component, &loaded.shown)?;
                tracing::info!(
                    component = %loaded.shown,
                    wit = pre.version(),
                    cache = ?loaded.cache,
                    took_ms = loaded.took.as_millis() as u64,
                    "component loaded"
                );
                components.push(ComponentReport {
                    path: PathBuf::from(&loaded.shown),
                    cache: loaded.cache,
                    took: loaded.took,
                });
                Ok(pre)
            });
            let mut unusable = false;
            if spec.shell.is_some()
                && let Err(why) = tools::shell::probe()
            {
                problems.push(format!("agents.{}.toolsets: shell: {why}", spec.name));
                unusable = true;
            }
            for toolset in &spec.mcp {
                if let Err(why) = tools::mcp::probe(&toolset.server) {
                    problems.push(format!(
                        "agents.{}.toolsets: mcp {}: {why}",
                        spec.name,
                        toolset.server.label()
                    ));
                    unusable = true;
                }
            }
            if unusable {
                continue;
            }
            let grants = Arc::new(spec.grants.clone());
            let fetcher = match &spec.fetch {
                Some(settings) => {
                    match tools::fetch::Fetcher::new(&spec.name, settings, grants.clone()) {
                        Ok(fetcher) => Some(fetcher),
                        Err(problem) => {
                            problems
                                .push(format!("agents.{}.toolsets: fetch: {problem}", spec.name));
                            continue;
                        }
                    }
                }
                None => None,
            };
            let memory = match &spec.memory {
                Some(settings) => match memory_stores.get(&settings.path) {
                    Some(store) => Some(store.clone()),
                    None => match tools::memory::MemoryStore::open(&settings.path) {
                        Ok(store) => {
                            memory_stores.insert(settings.path.clone(), store.clone());
                            Some(store)
                        }
                        Err(problem) => {
                            problems
                                .push(format!("agents.{}.toolsets: memory: {problem}", spec.name));
                            continue;
                        }
                    },
                },
                None => None,
            };
            let tools = match tools::for_agent(&team, spec) {
                Ok(tools) => tools,
                Err(problem) => {
                    problems.push(format!("agents.{}.toolsets: {problem}", spec.name));
                    continue;
                }
            };
            match loaded {
                Ok(pre) => {
                    let loaded = LoadedAgent {
                        spec: spec.clone(),
                        grants,
                        pre: GuestPre(Some(pre.clone())),
                        harness: None,
                        tools,
                        model,
                        files: spec
                            .filesystem
                            .then(|| tools::filesystem::Files::new(&spec.grants.dirs)),
                        fetcher,
                        memory,
                        warm: warm::WarmPool::new(team.engine.warm_instances),
                    };
                    agents.insert(spec.name.clone(), Arc::new(loaded));
                }
                Err(problem) => problems.push(format!("agents.{}.component: {problem}", spec.name)),
            }
        }
        if !problems.is_empty() {
            return Err(LoadError { problems });
        }
        let mcp = tools::mcp::McpServers::new(&team);
        let report = LoadReport {
            allocator,
            cache_dir: cache.dir().map(Path::to_path_buf),
            components,
        };
        let registry = match store.clone() {
            Some(store) => Registry::with_store(team.limits.max_retained, store)
                .map_err(|error| fail(error.to_string()))?,
            None => Registry::new(team.limits.max_retained),
        };
        Ok(Toolset(Arc::new(Shared {
            registry: Mutex::new(registry),
            slots: Slots::new(team.limits.max_running),
            team,
            engine,
            fuel_metering,
            epoch_interruption,
            report,
            agents,
            events: Events::default(),
            shutdown: CancellationToken::new(),
            shared_todos: Default::default(),
            mcp,
            store,
            live_stores: Default::default(),
            remote: Default::default(),
        })))
    }

    /// Instance slots of the pooling allocator; `None` when instances are
    /// allocated on demand.
    fn pool_slots(&self) -> Option<usize> {
        match self.0.report.allocator {
            Allocator::Pooling { slots } => Some(slots as usize),
            Allocator::OnDemand { .. } => None,
        }
    }

    fn live_stores(&self) -> &warm::LiveStores {
        &self.0.live_stores
    }

    /// Drops every agent's ready warm instances, giving their instance
    /// slots back to tasks.
    fn evict_warm_instances(&self) {
        for agent in self.0.agents.values() {
            agent.warm.evict();
        }
    }

    /// How `agent`'s instances made ahead of its tasks are doing
    /// (`engine.warm_instances`; made after its first task); all zero for
    /// an agent the team does not have.
    pub fn warm_stats(&self, agent: &str) -> WarmStats {
        (self.0.agents.get(agent)).map_or_else(WarmStats::default, |agent| agent.warm.stats())
    }

    /// How loading went: the allocator and each component's compilation.
    pub fn load_report(&self) -> &LoadReport {
        &self.0.report
    }

    pub fn team(&self) -> &Team {
        &self.0.team
    }

    pub fn events(&self) -> &Events {
        &self.0.events
    }

    /// Runs every task through `remote` from now on instead of in this
    /// process (a cluster's coordinator). Set once, before tasks start;
    /// false if one was set already.
    pub(crate) fn set_remote(&self, remote: Arc<dyn crate::cluster::Remote>) -> bool {
        let pruned = remote.clone();
        let set = self.0.remote.set(remote).is_ok();
        if set {
            (self.registry()).on_prune(Box::new(move |id| pruned.pruned(id)));
        }
        set
    }

    fn remote(&self) -> Option<&Arc<dyn crate::cluster::Remote>> {
        self.0.remote.get()
    }

    /// The store tasks are kept in, when the toolset keeps one.
    pub(crate) fn store(&self) -> Option<&Store> {
        self.0.store.as_ref()
    }

    /// Waits until every task change made so far is on disk, when the
    /// toolset keeps a store (at once when not). Front-ends await it before
    /// they tell a client anything, so no client learns of a task, a status
    /// or a result that a crash could take back.
    pub async fn settled(&self) -> Result<(), String> {
        match &self.0.store {
            Some(store) => store.settled().await,
            None => Ok(()),
        }
    }

    // The shared state's other parts, for the toolset's own modules.

    /// The retained tasks; see the lock order on [`Shared`].
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.0.registry.lock().unwrap()
    }

    fn mcp(&self) -> &tools::mcp::McpServers {
        &self.0.mcp
    }

    fn slots(&self) -> &Slots {
        &self.0.slots
    }

    fn shutdown_token(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    fn engine(&self) -> &Engine {
        &self.0.engine
    }

    /// The todo list `session`'s shared-todo agents use.
    fn shared_todos(&self, session: SessionId) -> tools::todo::TodoList {
        let mut lists = self.0.shared_todos.lock().unwrap();
        lists.entry(session).or_default().clone()
    }

    fn fuel_metering(&self) -> bool {
        self.0.fuel_metering
    }

    fn epoch_interruption(&self) -> bool {
        self.0.epoch_interruption
    }

    /// Opens a session. With `agent`, the session acts as that agent (it may
    /// start its `sub_agents`); without, it is the operator and may start any.
    pub fn open_session(&self, agent: Option<&str>) -> Result<Session, ToolError> {
        let token = self.shutdown_token().child_token();
        let session = SessionId::next();
        let caller = match agent {
            None => Caller::operator(session, token),
            Some(name) if self.team().agent(name).is_some() => {
                Caller::acting_as(session, name, token)
            }
            Some(name) => {
                return Err(ToolError::UnknownAgent {
                    agent: name.to_string(),
                    available: self.team().agents.keys().cloned().collect(),
                });
            }
        };
        Ok(Session {
            toolset: self.clone(),
            caller,
        })
    }

    /// An operator session of a long-lived host that sees as far as
    /// `reach` (lists, views, stops, waits for those tasks). Tasks it
    /// starts are its own, as with [`Toolset::open_session`].
    pub fn open_operator_session(&self, reach: Reach) -> Session {
        let token = self.shutdown_token().child_token();
        Session {
            toolset: self.clone(),
            caller: Caller::operator_reaching(SessionId::next(), token, reach),
        }
    }

    /// Stops every task of every session and returns once no guest runs.
    pub async fn shutdown(&self) {
        self.shutdown_token().cancel();
        self.stop_and_wait(|_| true).await;
    }

    /// Marks every live task matching `which` stopped, cancels it, and waits
    /// until none of their guests runs.
    async fn stop_and_wait(&self, which: impl Fn(&Task) -> bool) {
        let tasks: Vec<Arc<Task>> = self
            .0
            .registry
            .lock()
            .unwrap()
            .iter()
            .filter(|task| which(task))
            .cloned()
            .collect();
        for task in &tasks {
            runner::stop(self, task);
        }
        for task in &tasks {
            task.exited.opened().await;
        }
    }

    /// Tasks currently retained (for tests and diagnostics).
    pub fn retained(&self) -> usize {
        self.registry().len()
    }
}

impl Session {
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    pub fn toolset(&self) -> &Toolset {
        &self.toolset
    }

    /// Stops every task this session started (and their descendants) and
    /// returns once none of them runs.
    pub async fn close(&self) {
        self.caller.spawn_token.cancel();
        let session = self.caller.session;
        self.toolset
            .stop_and_wait(|task| task.session == session)
            .await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Without waiting: the runners notice the cancellation on their own.
        self.caller.spawn_token.cancel();
        // Tasks still running keep their handle to the list.
        (self.toolset.0.shared_todos.lock().unwrap()).remove(&self.caller.session);
    }
}

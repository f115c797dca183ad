//! Team configuration: the YAML file (docker-agent's `agents:` shape) read,
//! checked and resolved into a [`Team`] with every default filled in.
//!
//! Loading reports *all* problems it finds, each naming the file, the key and
//! (for syntax and type mistakes) the line, with what to write instead.

mod file;
pub mod grants;
pub mod units;

use file::{AgentFile, TeamFile, ToolsetFile};
pub use grants::{ConnectGrant, DirGrant, Grants};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use units::format_size;

/// Host-wide limits (top-level `limits:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLimits {
    /// Tasks whose guest may execute at once; more are queued.
    pub max_running: usize,
    /// Tasks kept for list/view; finished ones are pruned oldest first.
    pub max_retained: usize,
    /// Live output kept per task; later bytes are dropped and the view says so.
    pub max_output: u64,
    /// Deepest delegation chain (a front-end's task is depth 1).
    pub max_depth: usize,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            max_running: 20,
            max_retained: 100,
            max_output: 10 << 20,
            max_depth: 10,
        }
    }
}

/// Whether to use the pooling instance allocator (`engine.pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Pooling, or on-demand allocation if the pool cannot be reserved.
    #[default]
    Auto,
    /// Pooling, or refuse to start.
    On,
    /// On-demand allocation only.
    Off,
}

/// Where compiled components are cached (`engine.cache`, `engine.cache_dir`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CacheSetting {
    /// `$BGAGENTS_CACHE_DIR`, else `$XDG_CACHE_HOME/bgagents`, else `~/.cache/bgagents`.
    #[default]
    DefaultDir,
    Dir(PathBuf),
    Off,
}

/// How the engine runs tasks (top-level `engine:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSettings {
    pub pooling: Pooling,
    /// Task instances the pool holds; defaults to `limits.max_retained`
    /// (which bounds how many tasks can be live at once), at most 1000.
    pub pool_size: u32,
    /// Fuel a guest burns between two yields to the scheduler: bounds how
    /// long a CPU-bound guest can delay a stop, at some metering cost.
    pub fuel_yield_interval: u64,
    pub cache: CacheSetting,
    /// Bytes of cache entries kept; the least recently used go first.
    pub cache_max: u64,
}

impl EngineSettings {
    /// The defaults for a host with `limits`.
    pub fn defaults(limits: &HostLimits) -> EngineSettings {
        // Live instances never outnumber live tasks, which never outnumber
        // the retained ones; past a thousand slots the pool's address-space
        // reservation (two 4 GiB-guarded memories per slot) starts to fail.
        let pool_size = limits.max_retained.min(DEFAULT_POOL_CAP);
        EngineSettings {
            pooling: Pooling::Auto,
            pool_size: u32::try_from(pool_size).unwrap_or(1),
            fuel_yield_interval: DEFAULT_FUEL_YIELD_INTERVAL,
            cache: CacheSetting::DefaultDir,
            cache_max: DEFAULT_CACHE_MAX,
        }
    }
}

/// Default `engine.cache_max`.
pub const DEFAULT_CACHE_MAX: u64 = 2 << 30;

/// The largest default `engine.pool_size` (it is `limits.max_retained` up to this).
pub const DEFAULT_POOL_CAP: usize = 1000;

/// Default `engine.fuel_yield_interval`, chosen by measurement (BENCHMARKS.md).
pub const DEFAULT_FUEL_YIELD_INTERVAL: u64 = 1_000_000;

/// Per-agent limits (`agents.NAME.limits:`); each task of the agent gets its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLimits {
    /// Fuel units (about one per WebAssembly instruction) a task may burn.
    pub fuel: u64,
    /// Linear memory a task may hold, in bytes, summed over its memories.
    pub memory: u64,
    /// Wall-clock time a task may run, including time blocked in host calls.
    pub timeout: Duration,
    /// Live output kept for a task; at most the host's `max_output`.
    pub output: u64,
    /// Tasks one task may start over its whole life.
    pub spawns: usize,
    /// Tasks one task may have queued or running at once.
    pub concurrent_spawns: usize,
    /// Bytes of a task's result or error kept; the rest is cut and noted.
    pub result: u64,
    /// Handles (files, directories, sockets, streams) a task may hold open.
    pub open_files: usize,
}

impl Default for AgentLimits {
    fn default() -> Self {
        AgentLimits {
            fuel: 100_000_000_000,
            memory: 128 << 20,
            timeout: Duration::from_secs(600),
            output: HostLimits::default().max_output,
            spawns: 100,
            concurrent_spawns: 20,
            result: 1 << 20,
            open_files: 256,
        }
    }
}

/// Ceilings no agent's limits may exceed, whatever the team file says.
pub const MAX_AGENT_MEMORY: u64 = 4 << 30;
pub const MAX_AGENT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// A result is handed over in one call, so it can be at most what one call
/// may carry (`toolset::HOSTCALL_BYTES`).
pub const MAX_AGENT_RESULT: u64 = 4 << 20;
pub const MAX_AGENT_OPEN_FILES: usize = 4096;

/// One agent of the team, resolved.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: String,
    pub description: String,
    pub instruction: String,
    /// Agents this one may dispatch (when it has the background_agents toolset).
    pub sub_agents: Vec<String>,
    /// Whether the agent was granted the `background_agents` toolset.
    pub background_agents: bool,
    /// Absolute path of the component; `None` for an agent that is only used
    /// as an identity by a front-end (an MCP client acting as `root`).
    pub component: Option<PathBuf>,
    pub limits: AgentLimits,
    /// Files, environment and network the agent's tasks may reach.
    pub grants: Grants,
}

/// A loaded team file.
#[derive(Debug, Clone)]
pub struct Team {
    /// The file it came from (for messages).
    pub source: PathBuf,
    pub limits: HostLimits,
    pub engine: EngineSettings,
    pub agents: BTreeMap<String, AgentSpec>,
}

/// Everything wrong with a team file, each problem on its own line.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub source: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {problem}", self.source.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Team {
    /// Reads and checks a team file.
    pub fn load(path: impl AsRef<Path>) -> Result<Team, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            source: path.to_path_buf(),
            problems: vec![format!("cannot read the team file: {error}")],
        })?;
        let base = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        Team::parse(&text, path, base)
    }

    /// Checks team YAML `text`; `source` names it in messages and relative
    /// `component:` paths are resolved against `base_dir`.
    pub fn parse(text: &str, source: &Path, base_dir: &Path) -> Result<Team, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError {
            source: source.to_path_buf(),
            problems,
        };
        if text.trim().is_empty() {
            return Err(fail(vec![
                "the team file is empty; it needs an `agents:` map (see examples/team.yaml)".into(),
            ]));
        }
        let file: TeamFile = serde_yaml::from_str(text).map_err(|error| {
            let problem = match error.location() {
                // serde_yaml appends "at line L column C"; lead with it instead.
                Some(at) => format!("line {}: {}", at.line(), strip_location(&error.to_string())),
                None => error.to_string(),
            };
            fail(vec![problem])
        })?;
        let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        resolve(file, &base_dir)
            .map_err(fail)
            .map(|(limits, engine, agents)| Team {
                source: source.to_path_buf(),
                limits,
                engine,
                agents,
            })
    }

    /// A team of one: the component at `path`, run as an agent named after
    /// the file, with default limits and no grants (`bgagents run x.wasm`).
    pub fn single_component(path: &Path) -> Team {
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().replace([' ', ','], "_"))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "agent".to_string());
        let component = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let limits = HostLimits::default();
        let engine = EngineSettings::defaults(&limits);
        let agent = AgentSpec {
            name: name.clone(),
            description: String::new(),
            instruction: String::new(),
            sub_agents: Vec::new(),
            background_agents: false,
            component: Some(component),
            limits: AgentLimits::default(),
            grants: Grants::default(),
        };
        Team {
            source: path.to_path_buf(),
            limits,
            engine,
            agents: BTreeMap::from([(name, agent)]),
        }
    }

    /// The agent called `name`.
    pub fn agent(&self, name: &str) -> Option<&AgentSpec> {
        self.agents.get(name)
    }

    /// A one-line summary of an agent's limits, for `check` and errors.
    pub fn describe_limits(limits: &AgentLimits) -> String {
        format!(
            "fuel {}, memory {}, timeout {}, output {}, spawns {} ({} at once)",
            limits.fuel,
            format_size(limits.memory),
            crate::toolset::render::runtime(limits.timeout),
            format_size(limits.output),
            limits.spawns,
            limits.concurrent_spawns
        )
    }
}

fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => message,
    }
}

fn resolve(
    file: TeamFile,
    base_dir: &Path,
) -> Result<(HostLimits, EngineSettings, BTreeMap<String, AgentSpec>), Vec<String>> {
    let mut problems = Vec::new();
    if file.models.is_some() {
        problems.push(
            "models: model-backed agents are not supported yet; bgagents runs WebAssembly \
             components — remove `models:` and give each agent a `component:`"
                .to_string(),
        );
    }
    let limits = resolve_host_limits(&file, &mut problems);
    let engine = resolve_engine(&file, &limits, base_dir, &mut problems);
    if file.agents.is_empty() {
        problems.push("agents: no agents are defined; add at least one under `agents:`".into());
    }
    let mut agents = BTreeMap::new();
    for (name, agent) in &file.agents {
        if let Some(spec) = resolve_agent(name, agent, &file, &limits, base_dir, &mut problems) {
            agents.insert(name.clone(), spec);
        }
    }
    if problems.is_empty() {
        Ok((limits, engine, agents))
    } else {
        Err(problems)
    }
}

fn resolve_engine(
    file: &TeamFile,
    limits: &HostLimits,
    base_dir: &Path,
    problems: &mut Vec<String>,
) -> EngineSettings {
    let given = &file.engine;
    let mut engine = EngineSettings::defaults(limits);
    if let Some(pooling) = given.pooling {
        engine.pooling = match pooling {
            file::PoolingFile::Auto => Pooling::Auto,
            file::PoolingFile::On => Pooling::On,
            file::PoolingFile::Off => Pooling::Off,
        };
    }
    match given.pool_size.map(|count| u32::try_from(count.0)) {
        None => {}
        Some(Ok(size)) if size > 0 => engine.pool_size = size,
        Some(_) => problems.push(format!(
            "engine.pool_size: must be between 1 and {}",
            u32::MAX
        )),
    }
    match given.fuel_yield_interval {
        None => {}
        Some(count) if count.0 > 0 => engine.fuel_yield_interval = count.0,
        Some(_) => problems.push("engine.fuel_yield_interval: must be at least 1".into()),
    }
    engine.cache = match (given.cache, &given.cache_dir) {
        (Some(false), Some(_)) => {
            problems.push("engine.cache_dir: given, but engine.cache is false".into());
            CacheSetting::Off
        }
        (Some(false), None) => CacheSetting::Off,
        (_, Some(dir)) => CacheSetting::Dir(base_dir.join(dir)),
        (_, None) => CacheSetting::DefaultDir,
    };
    if let Some(size) = given.cache_max {
        engine.cache_max = size.0;
    }
    engine
}

fn resolve_host_limits(file: &TeamFile, problems: &mut Vec<String>) -> HostLimits {
    let defaults = HostLimits::default();
    let given = &file.limits;
    let mut at_least_one = |key: &str, value: Option<usize>, default: usize| match value {
        Some(0) => {
            problems.push(format!("limits.{key}: must be at least 1"));
            default
        }
        Some(value) => value,
        None => default,
    };
    HostLimits {
        max_running: at_least_one("max_running", given.max_running, defaults.max_running),
        max_retained: at_least_one("max_retained", given.max_retained, defaults.max_retained),
        max_depth: at_least_one("max_depth", given.max_depth, defaults.max_depth),
        max_output: given.max_output.map_or(defaults.max_output, |size| size.0),
    }
}

fn resolve_agent(
    name: &str,
    agent: &AgentFile,
    file: &TeamFile,
    host: &HostLimits,
    base_dir: &Path,
    problems: &mut Vec<String>,
) -> Option<AgentSpec> {
    let before = problems.len();
    let at = format!("agents.{name}");
    if name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c == ',') {
        problems.push(format!(
            "{at}: agent names must be non-empty and contain no spaces or commas"
        ));
    }
    if agent.component.is_none() {
        for (key, given) in [("model", &agent.model), ("harness", &agent.harness)] {
            if given.is_some() {
                problems.push(format!(
                    "{at}.{key}: `{key}:` agents are not supported yet; bgagents runs \
                     WebAssembly components — give the agent `component: path/to/agent.wasm`"
                ));
            }
        }
    }
    let mut seen = Vec::new();
    for sub in &agent.sub_agents {
        if seen.contains(&sub) {
            problems.push(format!("{at}.sub_agents: `{sub}` is listed twice"));
            continue;
        }
        seen.push(sub);
        match file.agents.get(sub) {
            None => problems.push(format!(
                "{at}.sub_agents: `{sub}` is not defined under `agents:` (defined: {})",
                file.agents.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(target) if target.component.is_none() => problems.push(format!(
                "{at}.sub_agents: `{sub}` has no `component:`, so it could never run; \
                 give agents.{sub} a component"
            )),
            Some(_) => {}
        }
    }
    let background_agents = match agent.toolsets.as_slice() {
        [] => false,
        [ToolsetFile::BackgroundAgents] => true,
        _ => {
            problems.push(format!(
                "{at}.toolsets: background_agents is listed more than once"
            ));
            true
        }
    };
    let limits = resolve_agent_limits(&at, agent, host, problems);
    let grants = grants::resolve(&agent.grants, &at, base_dir, problems);
    (problems.len() == before).then(|| AgentSpec {
        name: name.to_string(),
        description: agent.description.clone(),
        instruction: agent.instruction.clone(),
        sub_agents: agent.sub_agents.clone(),
        background_agents,
        component: agent.component.as_ref().map(|path| {
            let path = base_dir.join(path);
            path.canonicalize().unwrap_or(path)
        }),
        limits,
        grants,
    })
}

fn resolve_agent_limits(
    at: &str,
    agent: &AgentFile,
    host: &HostLimits,
    problems: &mut Vec<String>,
) -> AgentLimits {
    let defaults = AgentLimits::default();
    let given = &agent.limits;
    let limits = AgentLimits {
        fuel: given.fuel.map_or(defaults.fuel, |count| count.0),
        memory: given.memory.map_or(defaults.memory, |size| size.0),
        timeout: given.timeout.map_or(defaults.timeout, |time| time.0),
        output: given.output.map_or(host.max_output, |size| size.0),
        spawns: given.spawns.unwrap_or(defaults.spawns),
        concurrent_spawns: given
            .concurrent_spawns
            .unwrap_or(defaults.concurrent_spawns),
        result: given.result.map_or(defaults.result, |size| size.0),
        open_files: given.open_files.unwrap_or(defaults.open_files),
    };
    if limits.result > MAX_AGENT_RESULT {
        problems.push(format!(
            "{at}.limits.result: {} is above the ceiling of {}",
            format_size(limits.result),
            format_size(MAX_AGENT_RESULT)
        ));
    }
    if limits.open_files == 0 || limits.open_files > MAX_AGENT_OPEN_FILES {
        problems.push(format!(
            "{at}.limits.open_files: {} is outside 1 to {MAX_AGENT_OPEN_FILES}",
            limits.open_files
        ));
    }
    if limits.fuel == 0 {
        problems.push(format!("{at}.limits.fuel: must be at least 1"));
    }
    if limits.memory < 64 << 10 {
        problems.push(format!(
            "{at}.limits.memory: {} is below one WebAssembly page (64KiB)",
            format_size(limits.memory)
        ));
    }
    if limits.memory > MAX_AGENT_MEMORY {
        problems.push(format!(
            "{at}.limits.memory: {} is above the ceiling of {} (what a 32-bit guest can address)",
            format_size(limits.memory),
            format_size(MAX_AGENT_MEMORY)
        ));
    }
    if limits.timeout.is_zero() {
        problems.push(format!("{at}.limits.timeout: must be longer than zero"));
    }
    if limits.timeout > MAX_AGENT_TIMEOUT {
        problems.push(format!("{at}.limits.timeout: must be at most 24h"));
    }
    if limits.output > host.max_output {
        problems.push(format!(
            "{at}.limits.output: {} is above the host's limits.max_output of {}",
            format_size(limits.output),
            format_size(host.max_output)
        ));
    }
    if limits.concurrent_spawns > limits.spawns {
        problems.push(format!(
            "{at}.limits.concurrent_spawns: {} is above limits.spawns ({})",
            limits.concurrent_spawns, limits.spawns
        ));
    }
    limits
}

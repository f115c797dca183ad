//! Team configuration: the YAML file (docker-agent's `agents:` shape) read,
//! checked and resolved into a [`Team`] with every default filled in.
//!
//! Loading reports *all* problems it finds, each naming the file, the key and
//! (for syntax and type mistakes) the line, with what to write instead.

mod file;
pub mod grants;
mod harness;
mod locate;
mod models;
pub mod read;
mod resolve;
mod toolsets;
pub mod units;

pub use grants::{ConnectGrant, DirGrant, Grants, HttpGrant};
pub use harness::{HarnessKind, HarnessSpec};
pub use models::{ModelApi, ModelBinding, TodoSettings};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use toolsets::{FetchSettings, McpServerSpec, McpToolsetSpec, MemorySettings, ShellSettings};
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
    /// Instances of each agent made ahead of its tasks (each used once),
    /// so a task starts without waiting for instantiation.
    pub warm_instances: u32,
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
            warm_instances: DEFAULT_WARM_INSTANCES,
            cache: CacheSetting::DefaultDir,
            cache_max: DEFAULT_CACHE_MAX,
        }
    }
}

/// Default `engine.cache_max`.
pub const DEFAULT_CACHE_MAX: u64 = 2 << 30;

/// The largest default `engine.pool_size` (it is `limits.max_retained` up to this).
pub const DEFAULT_POOL_CAP: usize = 1000;

/// Default `engine.warm_instances`: enough for a coordinator that starts
/// its helpers one after another; a burst past it is instantiated on demand.
pub const DEFAULT_WARM_INSTANCES: u32 = 2;

/// Ceiling of `engine.warm_instances` (per agent): each holds its memory.
pub const MAX_WARM_INSTANCES: u32 = 64;

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
    /// Model tokens (input plus output, summed over calls) a task may use.
    pub tokens: u64,
    /// Model calls a task may make.
    pub model_calls: u32,
    /// Time one model call may take, retries included.
    pub model_timeout: Duration,
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
            tokens: 2_000_000,
            model_calls: 200,
            model_timeout: Duration::from_secs(300),
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
/// Ceilings of a task's model use: bounds on what one task can spend.
pub const MAX_AGENT_TOKENS: u64 = 1_000_000_000;
pub const MAX_AGENT_MODEL_CALLS: u32 = 100_000;
/// Fewer handles than this would not even hold a task's own stdio streams,
/// pollables and granted directories.
pub const MIN_AGENT_OPEN_FILES: usize = 16;

/// Ceiling of `limits.max_output`: live output is held in memory for every
/// retained task, so this times `max_retained` bounds what output can take.
pub const MAX_HOST_OUTPUT: u64 = 1 << 30;

/// Ceiling of `engine.fuel_yield_interval`: a CPU-bound guest notices a
/// timeout or a stop only when it yields, so the interval bounds how late.
/// At this ceiling that is a few hundred milliseconds of guest CPU (the
/// spinner's 1 s timeout fired after 1.24 s, against 1.06 s at the default).
pub const MAX_FUEL_YIELD_INTERVAL: u64 = 1_000_000_000;

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
    /// The agent's model (`model:`), held by the host.
    pub model: Option<ModelBinding>,
    /// Whether the task's prompt carries today's date (`add_date`).
    pub add_date: bool,
    /// Model turns a task may take (`max_iterations`); 0 for no bound.
    pub max_iterations: u32,
    /// On a cluster (`serve --nats`): a task whose worker died is run again
    /// on another (`retry: true`) instead of ending `interrupted`.
    pub retry: bool,
    /// Whether the agent has the `think` toolset.
    pub think: bool,
    /// The `todo` toolset, if the agent has it.
    pub todo: Option<TodoSettings>,
    /// Whether the agent has the `filesystem` toolset (confined to
    /// `grants.files`).
    pub filesystem: bool,
    /// The `shell` toolset, if the agent has it.
    pub shell: Option<ShellSettings>,
    /// The `fetch` toolset, if the agent has it (confined to `grants.http`).
    pub fetch: Option<FetchSettings>,
    /// The `memory` toolset, if the agent has it.
    pub memory: Option<MemorySettings>,
    /// The agent's `type: mcp` toolsets, in file order.
    pub mcp: Vec<McpToolsetSpec>,
    /// `tools:` of its built-in toolsets: toolset type → the only tools of
    /// it the agent gets (MCP toolsets carry their own).
    pub tool_filters: BTreeMap<String, Vec<String>>,
    /// Whether the prompt describes the task's environment
    /// (`add_environment_info`).
    pub add_environment_info: bool,
    /// Absolute path of the component; `None` for a model-backed agent
    /// (which runs the bundled agent component) or for an agent that is only
    /// used as an identity by a front-end (an MCP client acting as `root`).
    pub component: Option<PathBuf>,
    /// The CLI a harness agent runs (`harness:`); such an agent has no
    /// component and no model.
    pub harness: Option<HarnessSpec>,
    pub limits: AgentLimits,
    /// Files, environment and network the agent's tasks may reach.
    pub grants: Grants,
}

/// A loaded team file.
#[derive(Debug, Clone)]
pub struct Team {
    /// The file it came from (for messages).
    pub source: PathBuf,
    /// The YAML it was read from, as read (empty for a team of one
    /// component): what a cluster's coordinator ships to its workers.
    pub text: std::sync::Arc<str>,
    /// The directory its relative paths were resolved against (absolute).
    pub base_dir: PathBuf,
    pub limits: HostLimits,
    pub engine: EngineSettings,
    pub agents: BTreeMap<String, AgentSpec>,
    /// docker-agent keys that were read and are ignored, one line each
    /// (`line N: agents.root: ...`), for `check` and `run` to show.
    pub warnings: Vec<String>,
}

/// Everything wrong with a team file, each problem on its own line.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub source: PathBuf,
    /// The problems listed, at most [`MAX_LISTED_PROBLEMS`].
    pub problems: Vec<String>,
    /// Problems found beyond those listed.
    pub more: usize,
}

/// The most problems one error lists; the rest are counted.
pub const MAX_LISTED_PROBLEMS: usize = 50;

/// Bytes of team file parsed again to find the lines of problems: all 50
/// for files up to 64 KiB, fewer (the first ones) for bigger files.
const LINE_LOOKUP_BUDGET: usize = 50 * (64 << 10);

impl ConfigError {
    fn new(source: &Path, mut problems: Vec<String>) -> ConfigError {
        let more = problems.len().saturating_sub(MAX_LISTED_PROBLEMS);
        problems.truncate(MAX_LISTED_PROBLEMS);
        ConfigError {
            source: source.to_path_buf(),
            problems,
            more,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {problem}", self.source.display())?;
        }
        if self.more > 0 {
            write!(
                f,
                "\n{}: … and {} more problem(s) not listed; fix these and run check again",
                self.source.display(),
                self.more
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Team {
    /// Reads and checks a team file. Only a regular file of at most
    /// [`read::MAX_TEAM_FILE`] bytes is read (symlinks are followed).
    pub fn load(path: impl AsRef<Path>) -> Result<Team, ConfigError> {
        let path = path.as_ref();
        let fail = |problem: String| ConfigError::new(path, vec![problem]);
        let bytes = read::read_regular_file(path, read::MAX_TEAM_FILE).map_err(|error| {
            fail(format!(
                "cannot read the team file: it {}",
                error.describe(read::MAX_TEAM_FILE)
            ))
        })?;
        let text = String::from_utf8(bytes).map_err(|error| {
            fail(format!(
                "the team file is not UTF-8 text (invalid byte at offset {})",
                error.utf8_error().valid_up_to()
            ))
        })?;
        let base = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        Team::parse(&text, path, base)
    }

    /// Checks team YAML `text`; `source` names it in messages and relative
    /// `component:` paths are resolved against `base_dir`.
    ///
    /// Every problem is reported in one go: unknown keys, values of the
    /// wrong type, settings that contradict each other, and — when there is
    /// any of those — component files that are missing or not components
    /// (with no problems, loading the components finds those). Only a YAML
    /// parser error, a file over the size cap or nesting deeper than
    /// [`read::MAX_NESTING`] stops the check early, and the message says so.
    pub fn parse(text: &str, source: &Path, base_dir: &Path) -> Result<Team, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError::new(source, problems);
        if text.trim().is_empty() {
            return Err(fail(vec![
                "the team file is empty; it needs an `agents:` map (see examples/team.yaml)".into(),
            ]));
        }
        if text.len() as u64 > read::MAX_TEAM_FILE {
            return Err(fail(vec![format!(
                "the team file is {} — more than the {} bgagents reads",
                format_size(text.len() as u64),
                format_size(read::MAX_TEAM_FILE)
            )]));
        }
        if let Some(line) = read::too_deep(text) {
            return Err(fail(vec![format!(
                "line {line}: maps and lists are nested more than {} levels deep here, more \
                 than a team file may use; nothing was checked",
                read::MAX_NESTING
            )]));
        }
        let root: serde_yaml::Value = serde_yaml::from_str(text).map_err(|error| {
            let why = strip_location(&error.to_string());
            let problem = match error.location() {
                // serde_yaml appends "at line L column C"; lead with it instead.
                Some(at) => format!("line {}: {why}", at.line()),
                None => why,
            };
            fail(vec![format!(
                "{problem} (the YAML parser stops at its first error: fix it and run check again)"
            )])
        })?;
        let mut reader = file::Reader::default();
        let file = file::read_team(&mut reader, &root);
        // Looking a line up parses the text again: only for problems that
        // are listed, and only as many as a budget of re-parsed bytes allows
        // (all of them for a file of normal size).
        let lookups = (LINE_LOOKUP_BUDGET / text.len().max(1)).min(MAX_LISTED_PROBLEMS);
        let mut problems = located_lines(text, &reader.problems, lookups);
        let warnings = located_lines(text, &reader.warnings, lookups);
        let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        match resolve::resolve(&file, &base_dir) {
            Ok((limits, engine, agents)) if problems.is_empty() => Ok(Team {
                source: source.to_path_buf(),
                text: text.into(),
                base_dir,
                limits,
                engine,
                agents,
                warnings,
            }),
            Ok(_) => {
                problems.extend(resolve::component_file_problems(&file, &base_dir));
                Err(fail(problems))
            }
            Err(more) => {
                problems.extend(more);
                problems.extend(resolve::component_file_problems(&file, &base_dir));
                Err(fail(problems))
            }
        }
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
        let base_dir = component
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let limits = HostLimits::default();
        let engine = EngineSettings::defaults(&limits);
        let agent = AgentSpec {
            name: name.clone(),
            description: String::new(),
            instruction: String::new(),
            sub_agents: Vec::new(),
            background_agents: false,
            model: None,
            add_date: false,
            max_iterations: 0,
            retry: false,
            think: false,
            todo: None,
            filesystem: false,
            shell: None,
            fetch: None,
            memory: None,
            mcp: Vec::new(),
            tool_filters: BTreeMap::new(),
            add_environment_info: false,
            component: Some(component),
            harness: None,
            limits: AgentLimits::default(),
            grants: Grants::default(),
        };
        Team {
            source: path.to_path_buf(),
            text: "".into(),
            base_dir,
            limits,
            engine,
            agents: BTreeMap::from([(name, agent)]),
            warnings: Vec::new(),
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
            units::format_duration(limits.timeout),
            format_size(limits.output),
            limits.spawns,
            limits.concurrent_spawns
        )
    }
}

/// The message without serde_yaml's " at line L column C" (the line is
/// given in front instead).
fn strip_location(message: &str) -> String {
    let Some(at) = message.find(" at line ") else {
        return message.to_string();
    };
    let rest = &message[at + " at line ".len()..];
    let digits = |text: &str| {
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len())
    };
    let line_end = digits(rest);
    let Some(after) = rest[line_end..].strip_prefix(" column ") else {
        return message.to_string();
    };
    let column_end = digits(after);
    format!("{}{}", &message[..at], &after[column_end..])
}

/// `problems` as lines, in the order of the file, each led by its line
/// number when it is one of the first `lookups` (looking a line up parses
/// the text again).
fn located_lines(text: &str, problems: &[file::Problem], lookups: usize) -> Vec<String> {
    let mut located: Vec<(Option<usize>, &file::Problem)> = problems
        .iter()
        .enumerate()
        .map(|(index, problem)| {
            let line = (index < lookups)
                .then(|| locate::line_of(text, &problem.locate, problem.at_key))
                .flatten();
            (line, problem)
        })
        .collect();
    // The sort is stable; unknown lines last.
    located.sort_by_key(|(line, _)| line.unwrap_or(usize::MAX));
    located
        .into_iter()
        .map(|(line, problem)| {
            let mut out = String::new();
            if let Some(line) = line {
                out.push_str(&format!("line {line}: "));
            }
            if !problem.shown.is_empty() {
                out.push_str(&problem.shown);
                out.push_str(": ");
            }
            out.push_str(&problem.message);
            out
        })
        .collect()
}

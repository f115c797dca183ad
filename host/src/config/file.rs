//! The team file exactly as written, read from a parsed YAML value section
//! by section and key by key, so that one mistake never hides another: every
//! unknown key and every value of the wrong type is collected as a
//! [`Problem`] with its key path (lines are added later, see `locate`).

use super::locate::{Step, render};
use super::units::{ByteSize, Count, HumanDuration};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One mistake in the file as written.
#[derive(Debug, Clone)]
pub(super) struct Problem {
    /// The key path shown before the message (empty at the top level).
    pub shown: String,
    /// Where the line is looked up.
    pub locate: Vec<Step>,
    /// Whether the line is that of the last key itself (unknown keys).
    pub at_key: bool,
    pub message: String,
}

#[derive(Debug, Default)]
pub(super) struct TeamFile {
    /// Named models (`models:`).
    pub models: BTreeMap<String, ModelFile>,
    /// Custom providers (`providers:`).
    pub providers: BTreeMap<String, ProviderFile>,
    pub limits: HostLimitsFile,
    pub engine: EngineFile,
    pub agents: BTreeMap<String, AgentFile>,
    /// Whether `agents:` was given (even if it could not be read).
    pub agents_given: bool,
}

/// One `models:` entry. docker-agent's other model keys are accepted and
/// ignored (see `MODEL_KEYS`).
#[derive(Debug, Default, Clone)]
pub(super) struct ModelFile {
    pub provider: Option<String>,
    pub model: Option<String>,
    pub base_url: Option<String>,
    pub token_key: Option<String>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub parallel_tool_calls: Option<bool>,
}

/// One `providers:` entry.
#[derive(Debug, Default)]
pub(super) struct ProviderFile {
    pub api_type: Option<String>,
    pub base_url: Option<String>,
    pub token_key: Option<String>,
}

#[derive(Debug, Default)]
pub(super) struct EngineFile {
    pub pooling: Option<PoolingFile>,
    pub pool_size: Option<Count>,
    pub fuel_yield_interval: Option<Count>,
    pub warm_instances: Option<Count>,
    pub cache: Option<bool>,
    pub cache_dir: Option<PathBuf>,
    pub cache_max: Option<ByteSize>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum PoolingFile {
    Auto,
    On,
    Off,
}

#[derive(Debug, Default)]
pub(super) struct HostLimitsFile {
    pub max_running: Option<usize>,
    pub max_retained: Option<usize>,
    pub max_output: Option<ByteSize>,
    pub max_depth: Option<usize>,
}

#[derive(Debug, Default)]
pub(super) struct AgentFile {
    pub description: String,
    pub instruction: String,
    pub sub_agents: Vec<String>,
    pub toolsets: Vec<ToolsetFile>,
    pub component: Option<PathBuf>,
    pub limits: AgentLimitsFile,
    pub grants: GrantsFile,
    /// A `models:` name or `provider/model`.
    pub model: Option<String>,
    pub add_date: bool,
    pub max_iterations: Option<u32>,
    /// Re-run a task whose cluster worker died (`retry`).
    pub retry: bool,
    /// A harness agent's CLI (`harness:`).
    pub harness: Option<super::harness::HarnessFile>,
    pub add_environment_info: bool,
}

#[derive(Debug, Default)]
pub(super) struct AgentLimitsFile {
    pub fuel: Option<Count>,
    pub memory: Option<ByteSize>,
    pub timeout: Option<HumanDuration>,
    pub output: Option<ByteSize>,
    pub spawns: Option<usize>,
    pub concurrent_spawns: Option<usize>,
    pub result: Option<ByteSize>,
    pub open_files: Option<usize>,
    pub tokens: Option<Count>,
    pub model_calls: Option<Count>,
    pub model_timeout: Option<HumanDuration>,
}

/// What an agent may touch beyond computing (everything else is denied).
#[derive(Debug, Default)]
pub(super) struct GrantsFile {
    pub files: Vec<DirGrantFile>,
    /// `NAME` (the host's value) or `NAME=value`.
    pub env: Vec<String>,
    pub network: NetworkGrantFile,
    /// Origins (`https://host[:port]`) HTTP requests may go to.
    pub http: Vec<String>,
    /// A harness agent runs without bubblewrap.
    pub unconfined: bool,
}

#[derive(Debug)]
pub(super) struct DirGrantFile {
    /// Host directory, relative to the team file.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    pub mode: DirMode,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum DirMode {
    #[default]
    ReadOnly,
    ReadWrite,
}

#[derive(Debug, Default)]
pub(super) struct NetworkGrantFile {
    /// `host:port` pairs the guest may open TCP connections to.
    pub connect: Vec<String>,
    /// Whether the guest may resolve names.
    pub dns: bool,
    /// Whether shell commands share the host's network.
    pub shell: bool,
}

/// One `toolsets:` entry. docker-agent's other types are named as not
/// supported yet, with what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ToolsetFile {
    pub kind: ToolsetKind,
    /// `tools:` — only these of the toolset's tools.
    pub tools: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ToolsetKind {
    BackgroundAgents,
    Think,
    Todo { shared: bool },
    Filesystem,
    Shell { env: BTreeMap<String, String> },
    Fetch { timeout: Option<u64> },
    Memory { path: PathBuf },
    Mcp(McpFile),
}

impl ToolsetKind {
    pub fn name(&self) -> &'static str {
        match self {
            ToolsetKind::BackgroundAgents => "background_agents",
            ToolsetKind::Think => "think",
            ToolsetKind::Todo { .. } => "todo",
            ToolsetKind::Filesystem => "filesystem",
            ToolsetKind::Shell { .. } => "shell",
            ToolsetKind::Fetch { .. } => "fetch",
            ToolsetKind::Memory { .. } => "memory",
            ToolsetKind::Mcp(_) => "mcp",
        }
    }
}

/// Where a `type: mcp` toolset's server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum McpFile {
    Command {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
    Remote {
        url: String,
        headers: BTreeMap<String, String>,
    },
    Docker {
        name: String,
    },
}

const TOP_KEYS: &[&str] = &[
    "version",
    "metadata",
    "models",
    "providers",
    "limits",
    "engine",
    "agents",
];
const MODEL_KEYS: &[&str] = &[
    "provider",
    "model",
    "base_url",
    "token_key",
    "max_tokens",
    "temperature",
    "top_p",
    "parallel_tool_calls",
    // docker-agent's keys that are accepted and have no effect: sampling
    // knobs and provider options not passed on, usage tracking (always on)
    // and routing between models.
    "frequency_penalty",
    "presence_penalty",
    "provider_opts",
    "track_usage",
    "thinking_budget",
    "routing",
];
const PROVIDER_KEYS: &[&str] = &["api_type", "base_url", "token_key"];
const ENGINE_KEYS: &[&str] = &[
    "pooling",
    "pool_size",
    "fuel_yield_interval",
    "warm_instances",
    "cache",
    "cache_dir",
    "cache_max",
];
const HOST_LIMIT_KEYS: &[&str] = &["max_running", "max_retained", "max_output", "max_depth"];
const AGENT_KEYS: &[&str] = &[
    "description",
    "instruction",
    "sub_agents",
    "toolsets",
    "component",
    "limits",
    "grants",
    "model",
    "add_date",
    "max_iterations",
    "harness",
    "add_environment_info",
    "retry",
];
const AGENT_LIMIT_KEYS: &[&str] = &[
    "fuel",
    "memory",
    "timeout",
    "output",
    "spawns",
    "concurrent_spawns",
    "result",
    "open_files",
    "tokens",
    "model_calls",
    "model_timeout",
];
const GRANT_KEYS: &[&str] = &["files", "env", "network", "http", "unconfined"];
const DIR_GRANT_KEYS: &[&str] = &["host", "guest", "mode"];
const NETWORK_KEYS: &[&str] = &["connect", "dns", "shell"];

/// Top-level keys of docker-agent team files that bgagents has no use for.
const DOCKER_AGENT_TOP_KEYS: &[(&str, &str)] = &[];

/// Agent keys of docker-agent's model-backed agents that bgagents reads
/// and ignores, each with a warning saying what that means here.
const DOCKER_AGENT_AGENT_KEYS: &[(&str, &str)] = &[
    (
        "fallback",
        "fallback models are not used; each agent has its one `model:`",
    ),
    ("welcome_message", "bgagents shows no welcome message"),
    (
        "handoffs",
        "hand-offs are not used; dispatch with `sub_agents` (transfer_task) or \
         `toolsets: [{type: background_agents}]`",
    ),
    (
        "rag",
        "retrieval is not used; grant the documents with `grants.files` and the \
         filesystem toolset instead",
    ),
    ("code_mode_tools", "tools are called one by one"),
    (
        "add_description_parameter",
        "tool schemas are used as they are",
    ),
    (
        "num_history_items",
        "a task keeps its whole conversation, bounded by `limits.tokens`",
    ),
    (
        "add_prompt_files",
        "prompt files are not read; put the text in `instruction:`",
    ),
    ("commands", "there are no slash commands"),
    (
        "structured_output",
        "a task's result is the model's text; describe the format in `instruction:`",
    ),
    ("skills", "skills are not loaded"),
    ("hooks", "hooks are not run"),
];

/// Keys every docker-agent toolset may carry that bgagents ignores.
const DOCKER_AGENT_TOOLSET_KEYS: &[(&str, &str)] = &[
    (
        "instruction",
        "toolset instructions are not added; put the text in the agent's `instruction:`",
    ),
    ("toon", "tool results are passed as they are"),
    ("model", "tool results go to the agent's own model"),
    ("defer", "every tool is listed from the start"),
];

/// Keys of particular docker-agent toolsets that bgagents ignores.
const DOCKER_AGENT_FILESYSTEM_KEYS: &[(&str, &str)] = &[
    (
        "ignore_vcs",
        "searches cover every granted file (.gitignore is not read)",
    ),
    (
        "post_edit",
        "no host command runs after an edit; give the agent the shell toolset to run it",
    ),
];
const DOCKER_AGENT_MCP_KEYS: &[(&str, &str)] = &[
    (
        "version",
        "nothing is installed automatically; the command must be on PATH",
    ),
    ("config", "no configuration is passed to the server"),
];

/// docker-agent toolset types that bgagents does not provide, with what to
/// do instead.
const DOCKER_AGENT_TOOLSETS: &[(&str, &str)] = &[
    (
        "script",
        "remove it and give the agent the shell toolset (its commands run in an OS sandbox)",
    ),
    (
        "api",
        "remove it and give the agent the fetch toolset with the origins in `grants.http`",
    ),
    ("a2a", "remove it; components cannot reach A2A agents yet"),
    ("lsp", "remove it; components cannot reach language servers"),
    ("user_prompt", "remove it; a component cannot ask the user"),
    (
        "transfer_task",
        "remove it and dispatch with `sub_agents` and `- type: background_agents`",
    ),
    (
        "handoff",
        "remove it and dispatch with `sub_agents` and `- type: background_agents`",
    ),
];

/// The toolset types bgagents provides, for messages.
const PROVIDED_TOOLSETS: &str =
    "background_agents, think, todo, filesystem, shell, fetch, memory, mcp";

/// Collects the problems found while reading.
#[derive(Default)]
pub(super) struct Reader {
    pub problems: Vec<Problem>,
    /// docker-agent keys read and ignored: the file still loads.
    pub warnings: Vec<Problem>,
}

impl Reader {
    pub(super) fn push(&mut self, path: &[Step], message: String) {
        self.problems.push(Problem {
            shown: render(path),
            locate: path.to_vec(),
            at_key: false,
            message,
        });
    }

    fn push_at_key(&mut self, parent: &[Step], key: &str, message: String) {
        let mut locate = parent.to_vec();
        locate.push(Step::Key(key.to_string()));
        self.problems.push(Problem {
            shown: render(parent),
            locate,
            at_key: true,
            message,
        });
    }

    /// The map at `path` with its keys checked against `known` (and
    /// `elsewhere`: keys another tool uses, with advice); `None` (and a
    /// problem) if the value is not a map. `null` reads as an empty map.
    pub(super) fn section<'v>(
        &mut self,
        value: Option<&'v Value>,
        path: &[Step],
        known: &[&str],
        elsewhere: &[(&str, &str)],
    ) -> Option<Section<'v>> {
        static EMPTY: std::sync::LazyLock<Mapping> = std::sync::LazyLock::new(Mapping::new);
        let map = match value {
            None | Some(Value::Null) => &*EMPTY,
            Some(Value::Mapping(map)) => map,
            Some(other) => {
                self.push(
                    path,
                    format!(
                        "expected a map of keys ({}), found {}",
                        known.join(", "),
                        kind(other)
                    ),
                );
                return None;
            }
        };
        for key in map.keys() {
            let Some(key) = key_text(key) else {
                self.push(path, format!("keys must be names, found {}", kind(key)));
                continue;
            };
            if known.contains(&key.as_str()) {
                continue;
            }
            if let Some((_, meaning)) = elsewhere.iter().find(|(name, _)| *name == key) {
                let mut locate = path.to_vec();
                locate.push(Step::Key(key.clone()));
                self.warnings.push(Problem {
                    shown: render(path),
                    locate,
                    at_key: true,
                    message: format!(
                        "`{}` (a docker-agent key) is ignored: {meaning}",
                        shorten(&key)
                    ),
                });
                continue;
            }
            let message = format!(
                "unknown field `{}`, expected one of {}",
                shorten(&key),
                known
                    .iter()
                    .map(|key| format!("`{key}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.push_at_key(path, &key, message);
        }
        Some(Section {
            map,
            path: path.to_vec(),
        })
    }
}

/// A map being read key by key.
pub(super) struct Section<'v> {
    map: &'v Mapping,
    path: Vec<Step>,
}

impl<'v> Section<'v> {
    pub(super) fn raw(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key)
    }

    pub(super) fn at(&self, key: &str) -> Vec<Step> {
        let mut path = self.path.clone();
        path.push(Step::Key(key.to_string()));
        path
    }

    /// The value of `key` as a `T`, or `None` if absent or (with a problem)
    /// of the wrong type.
    pub(super) fn get<T: DeserializeOwned>(&self, reader: &mut Reader, key: &str) -> Option<T> {
        let value = self.map.get(key)?;
        convert(reader, value, &self.at(key))
    }

    pub(super) fn get_or_default<T: DeserializeOwned + Default>(
        &self,
        reader: &mut Reader,
        key: &str,
    ) -> T {
        self.get(reader, key).unwrap_or_default()
    }

    /// A list under `key`, each item read by `item` (items that fail are
    /// left out, with their problems).
    fn list<T>(
        &self,
        reader: &mut Reader,
        key: &str,
        mut item: impl FnMut(&mut Reader, &Value, &[Step]) -> Option<T>,
    ) -> Vec<T> {
        let path = self.at(key);
        match self.map.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(index, value)| {
                    let mut path = path.clone();
                    path.push(Step::Index(index));
                    item(reader, value, &path)
                })
                .collect(),
            Some(other) => {
                reader.push(
                    &path,
                    format!("invalid type: {}, expected a sequence", kind(other)),
                );
                Vec::new()
            }
        }
    }
}

fn convert<T: DeserializeOwned>(reader: &mut Reader, value: &Value, path: &[Step]) -> Option<T> {
    match serde_yaml::from_value(value.clone()) {
        Ok(value) => Some(value),
        Err(error) => {
            reader.push(path, error.to_string());
            None
        }
    }
}

/// Reads the whole file; `problems` of `reader` say what could not be read.
pub(super) fn read_team(reader: &mut Reader, root: &Value) -> TeamFile {
    let mut team = TeamFile::default();
    let Some(top) = reader.section(Some(root), &[], TOP_KEYS, DOCKER_AGENT_TOP_KEYS) else {
        return team;
    };
    team.models = named_entries(reader, &top, "models", |reader, value, path| {
        let entry = reader.section(Some(value), path, MODEL_KEYS, &[])?;
        Some(ModelFile {
            provider: entry.get(reader, "provider"),
            model: entry.get(reader, "model"),
            base_url: entry.get(reader, "base_url"),
            token_key: entry.get(reader, "token_key"),
            max_tokens: entry.get(reader, "max_tokens"),
            temperature: entry.get(reader, "temperature"),
            top_p: entry.get(reader, "top_p"),
            parallel_tool_calls: entry.get(reader, "parallel_tool_calls"),
        })
    });
    team.providers = named_entries(reader, &top, "providers", |reader, value, path| {
        let entry = reader.section(Some(value), path, PROVIDER_KEYS, &[])?;
        Some(ProviderFile {
            api_type: entry.get(reader, "api_type"),
            base_url: entry.get(reader, "base_url"),
            token_key: entry.get(reader, "token_key"),
        })
    });
    if let Some(limits) = reader.section(top.raw("limits"), &top.at("limits"), HOST_LIMIT_KEYS, &[])
    {
        team.limits = HostLimitsFile {
            max_running: limits.get(reader, "max_running"),
            max_retained: limits.get(reader, "max_retained"),
            max_output: limits.get(reader, "max_output"),
            max_depth: limits.get(reader, "max_depth"),
        };
    }
    if let Some(engine) = reader.section(top.raw("engine"), &top.at("engine"), ENGINE_KEYS, &[]) {
        team.engine = EngineFile {
            pooling: engine.get(reader, "pooling"),
            pool_size: engine.get(reader, "pool_size"),
            fuel_yield_interval: engine.get(reader, "fuel_yield_interval"),
            warm_instances: engine.get(reader, "warm_instances"),
            cache: engine.get(reader, "cache"),
            cache_dir: engine.get(reader, "cache_dir"),
            cache_max: engine.get(reader, "cache_max"),
        };
    }
    let agents_path = top.at("agents");
    match top.raw("agents") {
        None => {}
        Some(Value::Mapping(agents)) => {
            team.agents_given = true;
            for (name, agent) in agents {
                let Some(name) = key_text(name) else {
                    reader.push(
                        &agents_path,
                        format!("agent names must be text, found {}", kind(name)),
                    );
                    continue;
                };
                let mut path = agents_path.clone();
                path.push(Step::Key(name.clone()));
                if let Some(agent) = read_agent(reader, agent, &path) {
                    team.agents.insert(name, agent);
                }
            }
        }
        Some(other) => {
            team.agents_given = true;
            reader.push(
                &agents_path,
                format!(
                    "expected a map from agent names to agents, found {}",
                    kind(other)
                ),
            );
        }
    }
    team
}

fn read_agent(reader: &mut Reader, value: &Value, path: &[Step]) -> Option<AgentFile> {
    if value.is_null() {
        reader.push(
            path,
            "the agent is empty; give it at least `component: path/to/agent.wasm`".into(),
        );
        return None;
    }
    let agent = reader.section(Some(value), path, AGENT_KEYS, DOCKER_AGENT_AGENT_KEYS)?;
    let limits = reader
        .section(
            agent.raw("limits"),
            &agent.at("limits"),
            AGENT_LIMIT_KEYS,
            &[],
        )
        .map(|limits| AgentLimitsFile {
            fuel: limits.get(reader, "fuel"),
            memory: limits.get(reader, "memory"),
            timeout: limits.get(reader, "timeout"),
            output: limits.get(reader, "output"),
            spawns: limits.get(reader, "spawns"),
            concurrent_spawns: limits.get(reader, "concurrent_spawns"),
            result: limits.get(reader, "result"),
            open_files: limits.get(reader, "open_files"),
            tokens: limits.get(reader, "tokens"),
            model_calls: limits.get(reader, "model_calls"),
            model_timeout: limits.get(reader, "model_timeout"),
        })
        .unwrap_or_default();
    let grants = reader
        .section(agent.raw("grants"), &agent.at("grants"), GRANT_KEYS, &[])
        .map(|grants| read_grants(reader, &grants))
        .unwrap_or_default();
    Some(AgentFile {
        description: agent.get_or_default(reader, "description"),
        instruction: agent.get_or_default(reader, "instruction"),
        sub_agents: agent.get_or_default(reader, "sub_agents"),
        toolsets: agent.list(reader, "toolsets", read_toolset),
        component: agent.get(reader, "component"),
        limits,
        grants,
        model: agent.get(reader, "model"),
        add_date: agent.get_or_default(reader, "add_date"),
        max_iterations: agent.get(reader, "max_iterations"),
        retry: agent.get_or_default(reader, "retry"),
        harness: super::harness::read(reader, &agent),
        add_environment_info: agent.get_or_default(reader, "add_environment_info"),
    })
}

/// A map from names to entries under `key` of `top` (`models:`,
/// `providers:`), each read by `item`.
fn named_entries<T>(
    reader: &mut Reader,
    top: &Section,
    key: &str,
    mut item: impl FnMut(&mut Reader, &Value, &[Step]) -> Option<T>,
) -> BTreeMap<String, T> {
    let path = top.at(key);
    let mut entries = BTreeMap::new();
    match top.raw(key) {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(map)) => {
            for (name, value) in map {
                let Some(name) = key_text(name) else {
                    reader.push(&path, format!("names must be text, found {}", kind(name)));
                    continue;
                };
                let mut at = path.clone();
                at.push(Step::Key(name.clone()));
                if let Some(entry) = item(reader, value, &at) {
                    entries.insert(name, entry);
                }
            }
        }
        Some(other) => reader.push(
            &path,
            format!(
                "expected a map from names to entries, found {}",
                kind(other)
            ),
        ),
    }
    entries
}

fn read_grants(reader: &mut Reader, grants: &Section) -> GrantsFile {
    let files = grants.list(reader, "files", |reader, value, path| {
        let entry = reader.section(Some(value), path, DIR_GRANT_KEYS, &[])?;
        let host = entry.get::<PathBuf>(reader, "host");
        let guest = entry.get::<String>(reader, "guest");
        let mode = entry.get_or_default(reader, "mode");
        for (key, missing) in [("host", host.is_none()), ("guest", guest.is_none())] {
            if missing && entry.raw(key).is_none() {
                reader.push(path, format!("missing field `{key}`"));
            }
        }
        Some(DirGrantFile {
            host: host?,
            guest: guest?,
            mode,
        })
    });
    let network = reader
        .section(
            grants.raw("network"),
            &grants.at("network"),
            NETWORK_KEYS,
            &[],
        )
        .map(|network| NetworkGrantFile {
            connect: network.get_or_default(reader, "connect"),
            dns: network.get_or_default(reader, "dns"),
            shell: network.get_or_default(reader, "shell"),
        })
        .unwrap_or_default();
    GrantsFile {
        files,
        env: grants.get_or_default(reader, "env"),
        network,
        http: grants.get_or_default(reader, "http"),
        unconfined: grants.get_or_default(reader, "unconfined"),
    }
}

fn read_toolset(reader: &mut Reader, value: &Value, path: &[Step]) -> Option<ToolsetFile> {
    let Value::Mapping(entry) = value else {
        reader.push(
            path,
            format!(
                "expected a toolset such as `{{type: background_agents}}`, found {}",
                kind(value)
            ),
        );
        return None;
    };
    let Some(kind_value) = entry.get("type") else {
        reader.push(
            path,
            "toolset entry has no `type`; write `- type: background_agents`".into(),
        );
        return None;
    };
    let Some(toolset) = kind_value.as_str() else {
        reader.push(
            path,
            "toolset `type` must be a string such as background_agents".into(),
        );
        return None;
    };
    let (options, ignored): (&[&str], &[(&str, &str)]) = match toolset {
        "background_agents" | "think" => (&[], &[]),
        "todo" => (&["shared"], &[]),
        "filesystem" => (&[], DOCKER_AGENT_FILESYSTEM_KEYS),
        "shell" => (&["env"], &[]),
        "fetch" => (&["timeout"], &[]),
        "memory" => (&["path"], &[]),
        "mcp" => (
            &["command", "args", "env", "remote", "ref"],
            DOCKER_AGENT_MCP_KEYS,
        ),
        other => {
            let message = match DOCKER_AGENT_TOOLSETS
                .iter()
                .find(|(name, _)| *name == other)
            {
                Some((_, advice)) => format!(
                    "toolset type `{other}` is not supported yet — {advice} \
                     (bgagents provides: {PROVIDED_TOOLSETS})"
                ),
                None => format!(
                    "unknown toolset type `{}`; bgagents provides: {PROVIDED_TOOLSETS}",
                    shorten(other)
                ),
            };
            reader.push(path, message);
            return None;
        }
    };
    let mut known = vec!["type", "tools"];
    known.extend_from_slice(options);
    let elsewhere: Vec<(&str, &str)> = (ignored.iter().chain(DOCKER_AGENT_TOOLSET_KEYS))
        .copied()
        .collect();
    let before = reader.problems.len();
    let section = reader.section(Some(value), path, &known, &elsewhere)?;
    let tools: Option<Vec<String>> = section.get(reader, "tools");
    let kind = match toolset {
        "background_agents" => Some(ToolsetKind::BackgroundAgents),
        "think" => Some(ToolsetKind::Think),
        "todo" => Some(ToolsetKind::Todo {
            shared: section.get_or_default(reader, "shared"),
        }),
        "filesystem" => Some(ToolsetKind::Filesystem),
        "shell" => Some(ToolsetKind::Shell {
            env: section.get_or_default(reader, "env"),
        }),
        "fetch" => Some(ToolsetKind::Fetch {
            timeout: section.get(reader, "timeout"),
        }),
        "memory" => match section.get::<PathBuf>(reader, "path") {
            Some(path) if !path.as_os_str().is_empty() => Some(ToolsetKind::Memory { path }),
            Some(_) => {
                reader.push(&section.at("path"), "the path is empty".into());
                None
            }
            None => {
                if section.raw("path").is_none() {
                    reader.push(
                        path,
                        "the memory toolset needs `path:`, the store's file (relative to the \
                         team file), e.g. `path: memory.db`"
                            .into(),
                    );
                }
                None
            }
        },
        _ => read_mcp(reader, &section, path).map(ToolsetKind::Mcp),
    };
    (reader.problems.len() == before)
        .then_some(kind)
        .flatten()
        .map(|kind| ToolsetFile { kind, tools })
}

/// A `type: mcp` entry: exactly one of `command:`, `remote:` and `ref:`.
fn read_mcp(reader: &mut Reader, section: &Section, path: &[Step]) -> Option<McpFile> {
    let given: Vec<&str> = ["command", "remote", "ref"]
        .into_iter()
        .filter(|key| section.raw(key).is_some())
        .collect();
    if given.len() != 1 {
        let found = match given.is_empty() {
            true => "none".to_string(),
            false => given.join(" and "),
        };
        reader.push(
            path,
            format!(
                "an mcp toolset needs exactly one of `command:` (a local server), `remote:` \
                 (a URL) or `ref: docker:NAME`; found {found}"
            ),
        );
        return None;
    }
    for key in ["args", "env"] {
        if given[0] != "command" && section.raw(key).is_some() {
            reader.push_at_key(
                path,
                key,
                format!("`{key}` is for `command:` servers; remove it"),
            );
        }
    }
    match given[0] {
        "command" => {
            let command: String = section.get(reader, "command")?;
            if command.trim().is_empty() {
                reader.push(&section.at("command"), "the command is empty".into());
                return None;
            }
            Some(McpFile::Command {
                command,
                args: section.get_or_default(reader, "args"),
                env: section.get_or_default(reader, "env"),
            })
        }
        "ref" => {
            let reference: String = section.get(reader, "ref")?;
            match reference.strip_prefix("docker:") {
                Some(name) if !name.is_empty() => Some(McpFile::Docker {
                    name: name.to_string(),
                }),
                _ => {
                    reader.push(
                        &section.at("ref"),
                        format!(
                            "`{}` is not a reference bgagents knows; write `ref: docker:NAME` \
                             (a server of Docker's MCP catalog)",
                            shorten(&reference)
                        ),
                    );
                    None
                }
            }
        }
        _ => {
            let at = section.at("remote");
            let remote = reader.section(
                section.raw("remote"),
                &at,
                &["url", "transport_type", "headers"],
                &[],
            )?;
            let url: Option<String> = remote.get(reader, "url");
            let transport: Option<String> = remote.get(reader, "transport_type");
            let headers: BTreeMap<String, String> = remote.get_or_default(reader, "headers");
            if let Some(transport) = transport
                && !matches!(
                    transport.as_str(),
                    "streamable" | "streamable-http" | "http"
                )
            {
                reader.push(
                    &remote.at("transport_type"),
                    format!(
                        "transport `{}` is not supported; bgagents reaches remote MCP servers \
                         over Streamable HTTP (remove the key, or write `streamable`)",
                        shorten(&transport)
                    ),
                );
                return None;
            }
            let Some(url) = url else {
                if remote.raw("url").is_none() {
                    reader.push(&at, "missing field `url`".into());
                }
                return None;
            };
            match reqwest::Url::parse(&url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                    if !parsed.username().is_empty() || parsed.password().is_some() {
                        reader.push(
                            &remote.at("url"),
                            "the URL carries credentials; remove them and send them in \
                             `headers:`"
                                .into(),
                        );
                        return None;
                    }
                    Some(McpFile::Remote { url, headers })
                }
                _ => {
                    reader.push(
                        &remote.at("url"),
                        "not an http(s) URL; write the server's endpoint, e.g. \
                         https://mcp.example.com/mcp"
                            .into(),
                    );
                    None
                }
            }
        }
    }
}

/// A map key as text, if it is a scalar.
fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(value) => Some(value.to_string()),
        _ => None,
    }
}

/// What kind of value this is, for messages.
pub(super) fn kind(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".into(),
        Value::Bool(value) => format!("boolean `{value}`"),
        Value::Number(number) => format!("number `{number}`"),
        Value::String(text) => format!("string \"{}\"", shorten(text)),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a map".into(),
        Value::Tagged(tagged) => format!("a value tagged `{}`", shorten(&tagged.tag.to_string())),
    }
}

/// Text from the file for a message: cut to a length that keeps one message
/// on a screen, with control, bidirectional and zero-width characters shown
/// as escapes so that a name cannot rewrite the reviewer's terminal.
pub(super) fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::new();
    for (index, c) in text.chars().enumerate() {
        if index == MAX {
            out.push('…');
            break;
        }
        if c == '\t' || c == '\n' || crate::text::acts_on_terminal(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

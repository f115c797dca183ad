//! The team file exactly as written: serde types that reject unknown keys and
//! wrong types, so every mistake is reported with its key path and line.

use super::units::{ByteSize, Count, HumanDuration};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TeamFile {
    /// Accepted for compatibility with docker-agent team files; not interpreted.
    #[allow(dead_code)]
    pub version: Option<serde_yaml::Value>,
    /// Free-form, for people (authors, license, ...); not interpreted.
    #[allow(dead_code)]
    pub metadata: Option<serde_yaml::Value>,
    /// docker-agent's model registry; rejected with a pointer to `component:`.
    pub models: Option<serde_yaml::Value>,
    #[serde(default)]
    pub limits: HostLimitsFile,
    #[serde(default)]
    pub engine: EngineFile,
    pub agents: BTreeMap<String, AgentFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EngineFile {
    pub pooling: Option<PoolingFile>,
    pub pool_size: Option<super::units::Count>,
    pub fuel_yield_interval: Option<super::units::Count>,
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HostLimitsFile {
    pub max_running: Option<usize>,
    pub max_retained: Option<usize>,
    pub max_output: Option<ByteSize>,
    pub max_depth: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentFile {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub instruction: String,
    #[serde(default)]
    pub sub_agents: Vec<String>,
    #[serde(default)]
    pub toolsets: Vec<ToolsetFile>,
    pub component: Option<PathBuf>,
    #[serde(default)]
    pub limits: AgentLimitsFile,
    #[serde(default)]
    pub grants: GrantsFile,
    /// docker-agent's LLM agents; reported as not supported.
    pub model: Option<serde_yaml::Value>,
    /// docker-agent's external harness agents; reported as not supported.
    pub harness: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AgentLimitsFile {
    pub fuel: Option<Count>,
    pub memory: Option<ByteSize>,
    pub timeout: Option<HumanDuration>,
    pub output: Option<ByteSize>,
    pub spawns: Option<usize>,
    pub concurrent_spawns: Option<usize>,
    pub result: Option<ByteSize>,
    pub open_files: Option<usize>,
}

/// What an agent may touch beyond computing (everything else is denied).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantsFile {
    #[serde(default)]
    pub files: Vec<DirGrantFile>,
    /// `NAME` (the host's value) or `NAME=value`.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub network: NetworkGrantFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DirGrantFile {
    /// Host directory, relative to the team file.
    pub host: PathBuf,
    /// Where the guest sees it.
    pub guest: String,
    #[serde(default)]
    pub mode: DirMode,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum DirMode {
    #[default]
    ReadOnly,
    ReadWrite,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetworkGrantFile {
    /// `host:port` pairs the guest may open TCP connections to.
    #[serde(default)]
    pub connect: Vec<String>,
    /// Whether the guest may resolve names.
    #[serde(default)]
    pub dns: bool,
}

/// One `toolsets:` entry. Only `background_agents` exists today; docker-agent's
/// other types are named as not supported yet rather than as unknown keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ToolsetFile {
    BackgroundAgents,
}

/// Toolset types docker-agent knows that bgagents does not provide (yet).
const KNOWN_ELSEWHERE: &[&str] = &[
    "think",
    "todo",
    "memory",
    "mcp",
    "filesystem",
    "shell",
    "script",
    "fetch",
    "api",
    "a2a",
    "lsp",
    "user_prompt",
    "transfer_task",
];

impl<'de> Deserialize<'de> for ToolsetFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entry = BTreeMap::<String, serde_yaml::Value>::deserialize(deserializer)?;
        let Some(kind) = entry.get("type") else {
            return Err(de::Error::custom(
                "toolset entry has no `type`; write `- type: background_agents`",
            ));
        };
        let Some(kind) = kind.as_str() else {
            return Err(de::Error::custom(
                "toolset `type` must be a string such as background_agents",
            ));
        };
        match kind {
            "background_agents" => {
                if let Some(extra) = entry.keys().find(|key| *key != "type") {
                    return Err(de::Error::custom(format!(
                        "the background_agents toolset takes no options; remove `{extra}`"
                    )));
                }
                Ok(ToolsetFile::BackgroundAgents)
            }
            other if KNOWN_ELSEWHERE.contains(&other) => Err(de::Error::custom(format!(
                "toolset type `{other}` is not supported yet; bgagents provides: background_agents"
            ))),
            other => Err(de::Error::custom(format!(
                "unknown toolset type `{other}`; bgagents provides: background_agents"
            ))),
        }
    }
}

//! The settings of the toolsets that reach beyond the sandbox — filesystem,
//! shell, fetch, memory and MCP servers — as the team file gives them,
//! resolved (paths made absolute, environment read) so the toolset only has
//! to apply them. What each may touch comes from the agent's [`Grants`].
//!
//! [`Grants`]: super::Grants

use std::path::PathBuf;
use std::time::Duration;

/// The `shell` toolset's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellSettings {
    /// Variables the toolset's `env:` gives every command, beyond the
    /// agent's `grants.env` (which commands also get).
    pub env: Vec<(String, String)>,
    /// Longest a foreground command may run before it is killed.
    pub timeout: Duration,
    /// Bytes of a command's output kept (stdout and stderr together).
    pub max_output: usize,
    /// Processes a command (and a background job) may have at once.
    pub max_processes: u32,
    /// Largest file a command may write.
    pub max_file_size: u64,
    /// Bytes of memory a command (and a background job) may use, all its
    /// processes and its files in the sandbox's `/tmp` and `/dev/shm`
    /// together.
    pub max_memory: u64,
}

impl Default for ShellSettings {
    fn default() -> Self {
        ShellSettings {
            env: Vec::new(),
            timeout: Duration::from_secs(120),
            max_output: 256 << 10,
            max_processes: 256,
            max_file_size: 256 << 20,
            max_memory: 1 << 30,
        }
    }
}

/// The `fetch` toolset's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSettings {
    /// Longest one fetch may take (`timeout:`, seconds in the file).
    pub timeout: Duration,
    /// Bytes of a response body read; the rest is cut and the answer says so.
    pub max_body: usize,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            timeout: Duration::from_secs(30),
            max_body: 1 << 20,
        }
    }
}

/// The `memory` toolset's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySettings {
    /// The store's file (`path:`, relative to the team file). Agents naming
    /// the same path share one store.
    pub path: PathBuf,
}

/// One `type: mcp` toolset: a server and the tools taken from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpToolsetSpec {
    pub server: McpServerSpec,
    /// `tools:` — only these of the server's tools; `None` for all.
    pub tools: Option<Vec<String>>,
}

/// How to reach an MCP server. Two toolsets naming the same server share
/// one running server for the team.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum McpServerSpec {
    /// `command:`/`args:`/`env:` — a local server over stdio, started by
    /// the host with only the listed environment.
    Command {
        command: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        /// The team file's directory.
        cwd: PathBuf,
    },
    /// `remote:` — a server over Streamable HTTP.
    Remote {
        url: String,
        headers: Vec<(String, String)>,
    },
    /// `ref: docker:NAME` — run through Docker's MCP gateway.
    Docker { name: String },
}

impl McpServerSpec {
    /// A short name for messages: the command, the URL's
    /// `scheme://host[:port]`, or `docker:NAME`. Never carries a URL's path
    /// or query (either can carry a key), header values or environment
    /// values.
    pub fn label(&self) -> String {
        match self {
            McpServerSpec::Command { command, .. } => command.clone(),
            McpServerSpec::Remote { url, .. } => match reqwest::Url::parse(url) {
                Ok(parsed) => {
                    let port = parsed.port().map(|port| format!(":{port}"));
                    format!(
                        "{}://{}{}",
                        parsed.scheme(),
                        parsed.host_str().unwrap_or(""),
                        port.unwrap_or_default()
                    )
                }
                Err(_) => "remote server".to_string(),
            },
            McpServerSpec::Docker { name } => format!("docker:{name}"),
        }
    }
}

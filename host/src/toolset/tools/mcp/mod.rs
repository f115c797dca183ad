//! `type: mcp` toolsets: MCP servers the host starts (or reaches) once per
//! team, on first use. Stub: filled in by the MCP work.

use super::ToolSpec;
use super::args::Args;
use crate::config::{McpServerSpec, McpToolsetSpec, Team};

/// The team's MCP servers, each started on first use and shut down when the
/// last clone is dropped. Cheap to clone.
#[derive(Clone, Default)]
pub struct McpServers {}

impl McpServers {
    /// The servers `team`'s agents name, none started yet.
    pub fn new(team: &Team) -> McpServers {
        let _ = team;
        McpServers {}
    }

    /// The tools `toolset` gives (after its `tools:` filter), starting its
    /// server if needed. A server that cannot start gives no tools; the
    /// error says why, for the task's output.
    pub async fn tools(&self, toolset: &McpToolsetSpec) -> Result<Vec<ToolSpec>, String> {
        let _ = toolset;
        Ok(Vec::new())
    }

    /// Calls tool `name` of `toolset`'s server; `None` if the toolset has no
    /// such tool.
    pub async fn call(
        &self,
        toolset: &McpToolsetSpec,
        name: &str,
        args: &Args,
    ) -> Option<Result<String, String>> {
        let _ = (toolset, name, args);
        None
    }
}

/// Whether `server` can be started on this host (its command, or `docker`,
/// on PATH), for `bgagents check`.
pub fn probe(server: &McpServerSpec) -> Result<(), String> {
    let _ = server;
    Ok(())
}

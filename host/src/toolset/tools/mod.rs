//! The tools an agent's `toolsets:` grant, under docker-agent's names and
//! schemas, run by the host for the task that calls them: the
//! background-agents toolset (shared with the MCP front-end),
//! `transfer_task` for agents with `sub_agents`, `think` and `todo`, and the
//! toolsets that reach past the sandbox, each confined by the agent's
//! grants: `filesystem`, `shell`, `fetch`, `memory` and `mcp`.

pub mod args;
pub mod background;
pub mod fetch;
pub mod filesystem;
pub mod mcp;
pub mod memory;
pub mod shell;
pub mod think;
pub mod todo;
mod transfer;

use crate::config::{AgentSpec, Team};
use crate::model::ToolDefinition;
use serde_json::Value;

pub use transfer::{TRANSFER, transfer};

/// One tool as the toolset describes it; front-ends and guests get it in
/// their own shape.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
    /// The tool changes nothing (MCP's read-only hint).
    pub read_only: bool,
}

impl ToolSpec {
    pub fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: self.name.to_string(),
            description: self.description.clone(),
            parameters: self.parameters.to_string(),
        }
    }
}

/// How a toolset lists its tools.
type SpecsOf<'a> = &'a dyn Fn() -> Vec<ToolSpec>;

/// The tools `spec`'s built-in toolsets grant, in a stable order (its MCP
/// servers' tools are added when they start), each toolset cut to its
/// `tools:` list. The error names a listed tool the toolset does not have.
pub fn for_agent(team: &Team, spec: &AgentSpec) -> Result<Vec<ToolSpec>, String> {
    let agents = sub_agent_list(team, spec);
    let toolsets: [(&str, bool, SpecsOf); 8] = [
        ("background_agents", spec.background_agents, &|| {
            background::specs(&agents)
        }),
        ("transfer_task", !spec.sub_agents.is_empty(), &|| {
            vec![transfer::spec(&agents)]
        }),
        ("think", spec.think, &|| vec![think::spec()]),
        ("todo", spec.todo.is_some(), &todo::specs),
        ("filesystem", spec.filesystem, &filesystem::specs),
        ("shell", spec.shell.is_some(), &shell::specs),
        ("fetch", spec.fetch.is_some(), &fetch::specs),
        ("memory", spec.memory.is_some(), &memory::specs),
    ];
    let mut tools = Vec::new();
    for (toolset, granted, specs) in toolsets {
        if !granted {
            continue;
        }
        let mut specs = specs();
        if let Some(only) = spec.tool_filters.get(toolset) {
            if let Some(missing) = only
                .iter()
                .find(|name| !specs.iter().any(|s| &s.name == *name))
            {
                let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                return Err(format!(
                    "the {toolset} toolset has no tool {missing:?} (its tools: {}); fix `tools:`",
                    names.join(", ")
                ));
            }
            specs.retain(|s| only.contains(&s.name));
        }
        tools.extend(specs);
    }
    Ok(tools)
}

/// "one of: a (what a does), b" — the agents `spec` may dispatch, for the
/// `agent` parameter's description.
fn sub_agent_list(team: &Team, spec: &AgentSpec) -> String {
    let names: Vec<String> = (spec.sub_agents.iter())
        .map(
            |name| match team.agent(name).map(|sub| sub.description.trim()) {
                Some(description) if !description.is_empty() => format!("{name}: {description}"),
                _ => name.clone(),
            },
        )
        .collect();
    format!("one of: {}", names.join("; "))
}

/// The error a call to a tool the agent does not have gets.
pub fn unknown_tool(name: &str, tools: &[ToolSpec]) -> String {
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_str()).collect();
    match names.is_empty() {
        true => format!("unknown tool {name:?}: this agent has no tools"),
        false => format!("unknown tool {name:?}; the tools are {}", names.join(", ")),
    }
}

/// What an agent with `add_environment_info` is told about where it runs:
/// its working directory and the rest of what its grants let its tools
/// reach, so it does not try paths or hosts it cannot.
pub fn environment_info(spec: &AgentSpec) -> String {
    let grants = &spec.grants;
    let mut lines = vec!["<environment>".to_string()];
    match grants.dirs.first() {
        Some(first) => lines.push(format!("Working directory: {}", first.guest)),
        None => lines.push("Working directory: none (no directory is granted)".to_string()),
    }
    for dir in &grants.dirs {
        let mode = if dir.writable {
            "read-write"
        } else {
            "read-only"
        };
        lines.push(format!("Granted directory: {} ({mode})", dir.guest));
    }
    if spec.shell.is_some() {
        let network = match grants.shell_network {
            true => "with network access",
            false => "without network access",
        };
        lines.push(format!(
            "Shell: commands run on {} in an isolated sandbox {network}, seeing only the \
             granted directories",
            std::env::consts::OS
        ));
    }
    if spec.fetch.is_some() {
        let origins: Vec<String> = grants.http.iter().map(ToString::to_string).collect();
        lines.push(match origins.is_empty() {
            true => "Fetch: no origin is reachable".to_string(),
            false => format!("Fetch: only {}", origins.join(", ")),
        });
    }
    lines.push("</environment>".to_string());
    lines.join("\n")
}

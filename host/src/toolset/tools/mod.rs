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

/// The tools `spec`'s built-in toolsets grant, in a stable order (its MCP
/// servers' tools are added when they start).
pub fn for_agent(team: &Team, spec: &AgentSpec) -> Vec<ToolSpec> {
    let mut tools = Vec::new();
    let agents = sub_agent_list(team, spec);
    if spec.background_agents {
        tools.extend(background::specs(&agents));
    }
    if !spec.sub_agents.is_empty() {
        tools.push(transfer::spec(&agents));
    }
    if spec.think {
        tools.push(think::spec());
    }
    if spec.todo.is_some() {
        tools.extend(todo::specs());
    }
    if spec.filesystem {
        tools.extend(filesystem::specs());
    }
    if spec.shell.is_some() {
        tools.extend(shell::specs());
    }
    if spec.fetch.is_some() {
        tools.extend(fetch::specs());
    }
    if spec.memory.is_some() {
        tools.extend(memory::specs());
    }
    tools
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

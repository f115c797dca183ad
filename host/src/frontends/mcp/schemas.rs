//! The background-agents tools as MCP lists them, from the toolset's specs.

use crate::toolset::tools::{ToolSpec, background};
use rmcp::model::{Tool, ToolAnnotations};
use serde_json::Value;
use std::sync::Arc;

/// The five tools and [`RUN_AGENT`](super::tasks::RUN_AGENT); the `agent`
/// argument names one of the agents the server instructions list.
pub fn tools() -> Vec<Tool> {
    let agents = "one of those listed in the server instructions";
    (background::specs(agents).into_iter())
        .chain([super::tasks::run_agent_spec(agents)])
        .map(mcp_tool)
        .collect()
}

fn mcp_tool(spec: ToolSpec) -> Tool {
    let Value::Object(schema) = spec.parameters else {
        unreachable!("tool schemas are objects")
    };
    Tool::new(spec.name, spec.description, Arc::new(schema))
        .with_annotations(ToolAnnotations::new().read_only(spec.read_only))
}

//! The background-agents tools as MCP lists them, from the toolset's specs.

use crate::toolset::tools::{ToolSpec, background};
use rmcp::model::{Tool, ToolAnnotations};
use serde_json::Value;
use std::sync::Arc;

/// The five tools; the `agent` argument names one of the agents the server
/// instructions list.
pub fn tools() -> Vec<Tool> {
    background::specs("one of those listed in the server instructions")
        .into_iter()
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

//! The five tools as MCP lists them: docker-agent's names, descriptions of
//! our own, and docker-agent's parameter schemas.

use crate::toolset::{WAIT_MAX_IDS, WAIT_MAX_TIMEOUT_SECS};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};
use std::sync::Arc;

pub const RUN: &str = "run_background_agent";
pub const LIST: &str = "list_background_agents";
pub const VIEW: &str = "view_background_agent";
pub const STOP: &str = "stop_background_agent";
pub const WAIT: &str = "wait_background_agents";

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("tool schemas are objects"),
    }
}

/// The five tools, with docker-agent's names and parameter schemas.
pub fn tools() -> Vec<Tool> {
    let read_only = || ToolAnnotations::new().read_only(true);
    vec![
        Tool::new(
            RUN,
            "Start one of your sub-agents on a task in the background and get its task ID back \
             at once. Start every independent task this way before waiting on any, so they run \
             in parallel; then collect results with wait_background_agents rather than polling \
             view_background_agent. If the host is busy the task is queued and starts by itself.",
            schema(json!({
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "description": "Name of the sub-agent to run (one of those listed in the server instructions)."},
                    "task": {"type": "string", "description": "What the sub-agent should do, with everything it needs to know."},
                    "expected_output": {"type": "string", "description": "What you expect back (format, length, content)."}
                },
                "required": ["agent", "task"],
                "additionalProperties": false
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(false)),
        Tool::new(
            LIST,
            "List the background tasks you started (and the tasks they started) with their \
             status and runtime, oldest first.",
            schema(json!({"type": "object", "properties": {}, "additionalProperties": false})),
        )
        .with_annotations(read_only()),
        Tool::new(
            VIEW,
            "Show one background task: its status and runtime, and its live output while it \
             runs, its result once completed, or its error once failed.",
            schema(json!({
                "type": "object",
                "properties": {
                    "task_id": {"type": "string", "description": "The task ID returned by run_background_agent."}
                },
                "required": ["task_id"],
                "additionalProperties": false
            })),
        )
        .with_annotations(read_only()),
        Tool::new(
            STOP,
            "Stop a queued or running background task and every task it started. The stop \
             takes effect at once and is final.",
            schema(json!({
                "type": "object",
                "properties": {
                    "task_id": {"type": "string", "description": "The task ID to stop."}
                },
                "required": ["task_id"],
                "additionalProperties": false
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(false)),
        Tool::new(
            WAIT,
            "Wait until all the given background tasks have finished, or the timeout passes, \
             then report each one's status and output (up to 4096 bytes each) in the order \
             given. This is the way to collect results; it never stops the tasks.",
            schema(json!({
                "type": "object",
                "properties": {
                    "task_ids": {
                        "type": "array",
                        "items": {"type": "string"},
                        "minItems": 1,
                        "maxItems": WAIT_MAX_IDS,
                        "uniqueItems": true,
                        "description": "The task IDs to wait for."
                    },
                    "timeout": {
                        "type": "integer",
                        "minimum": 0,
                        "maximum": WAIT_MAX_TIMEOUT_SECS,
                        "description": "Seconds to wait at most; 0 or absent means 300."
                    }
                },
                "required": ["task_ids"],
                "additionalProperties": false
            })),
        )
        .with_annotations(read_only()),
    ]
}

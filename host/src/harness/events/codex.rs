//! Codex's stream.

use super::{Event, Recent, number, text};
use serde_json::Value;

/// Codex's `exec --json`: items started and completed, turns completed or
/// failed. The last agent message is the answer.
#[derive(Default)]
pub struct Codex {
    last_message: Option<String>,
    /// Tool items shown, by id.
    pub(super) tools: Recent<()>,
    /// A top-level `error` event's message, kept in case no turn completes.
    error: Option<String>,
}

impl Codex {
    /// The last top-level `error` event's message.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

impl Codex {
    pub(super) fn event(&mut self, value: &Value, events: &mut Vec<Event>) {
        match value.get("type").and_then(Value::as_str) {
            Some("item.started") => {
                if let Some(item) = value.get("item") {
                    self.tool(item, events);
                }
            }
            Some("item.completed") => {
                let Some(item) = value.get("item") else {
                    return;
                };
                match item.get("type").and_then(Value::as_str) {
                    Some("agent_message") => {
                        if let Some(text) = text(item, "text") {
                            self.last_message = Some(text.clone());
                            events.push(Event::Text(format!("{text}\n")));
                        }
                    }
                    Some("reasoning") => {
                        if let Some(text) = text(item, "text") {
                            events.push(Event::Reasoning(text));
                        }
                    }
                    _ => self.tool(item, events),
                }
            }
            Some("turn.completed") => {
                let usage = value.get("usage").unwrap_or(&Value::Null);
                events.push(Event::Usage {
                    input: number(usage, "input_tokens"),
                    output: number(usage, "output_tokens"),
                    calls: 1,
                });
                events.push(Event::End(Ok(self
                    .last_message
                    .clone()
                    .unwrap_or_default())));
            }
            Some("turn.failed") => {
                let error = value.get("error").unwrap_or(&Value::Null);
                let message = text(error, "message")
                    .or_else(|| text(error, "code"))
                    .unwrap_or_else(|| "Codex reported that the turn failed".to_string());
                events.push(Event::End(Err(message)));
            }
            Some("error") => {
                self.error = text(value, "message").or_else(|| text(value, "code"));
            }
            _ => {}
        }
    }

    /// A tool item (shown once, when it starts or, if its start was not
    /// reported, when it completes).
    fn tool(&mut self, item: &Value, events: &mut Vec<Event>) {
        let name = match item.get("type").and_then(Value::as_str) {
            Some("command_execution") => "shell".to_string(),
            Some("file_change") => "apply_patch".to_string(),
            Some("web_search") => "web_search".to_string(),
            Some("mcp_tool_call") => match (text(item, "server"), text(item, "tool")) {
                (Some(server), Some(tool)) => format!("{server}.{tool}"),
                (_, Some(tool)) => tool,
                _ => "mcp".to_string(),
            },
            _ => return,
        };
        if let Some(id) = text(item, "id")
            && !self.tools.insert(id, ())
        {
            return;
        }
        events.push(Event::Tool(name));
    }
}

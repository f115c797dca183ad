//! OpenCode's stream.

use super::{Event, number, text};
use serde_json::Value;

/// OpenCode's `run --format json`: steps, each with its parts (text,
/// reasoning, tool calls) and a `step_finish` with its tokens. A step that
/// finishes for a reason other than calling tools ends the run; its text
/// is the answer.
pub struct OpenCode {
    /// Text of the current step, at most `cap` bytes of it.
    step_text: String,
    cap: usize,
}

impl OpenCode {
    /// A parser keeping at most `cap` bytes of a step's text.
    pub fn with_cap(cap: usize) -> OpenCode {
        OpenCode {
            step_text: String::new(),
            cap,
        }
    }

    /// The current step's text: the answer if the stream ends here.
    pub fn answer(&self) -> &str {
        &self.step_text
    }
}

impl OpenCode {
    pub(super) fn event(&mut self, value: &Value, events: &mut Vec<Event>) {
        let part = value.get("part").unwrap_or(&Value::Null);
        match value.get("type").and_then(Value::as_str) {
            Some("step_start") => self.step_text.clear(),
            Some("text") => {
                if let Some(text) = text(part, "text") {
                    if self.step_text.len() < self.cap {
                        if !self.step_text.is_empty() {
                            self.step_text.push('\n');
                        }
                        self.step_text.push_str(&text);
                        if self.step_text.len() > self.cap {
                            let mut end = self.cap;
                            while !self.step_text.is_char_boundary(end) {
                                end -= 1;
                            }
                            self.step_text.truncate(end);
                        }
                    }
                    events.push(Event::Text(format!("{text}\n")));
                }
            }
            Some("reasoning") => {
                if let Some(text) = text(part, "text") {
                    events.push(Event::Reasoning(text));
                }
            }
            Some("tool_use" | "tool") => {
                let state = part.get("state").unwrap_or(&Value::Null);
                let status = state.get("status").and_then(Value::as_str);
                if matches!(status, Some("completed" | "error")) {
                    let name = text(part, "tool").unwrap_or_else(|| "tool".to_string());
                    events.push(Event::Tool(name));
                }
            }
            Some("step_finish") => {
                let tokens = part.get("tokens").unwrap_or(&Value::Null);
                let cache = tokens.get("cache").unwrap_or(&Value::Null);
                events.push(Event::Usage {
                    input: number(tokens, "input")
                        .saturating_add(number(cache, "read"))
                        .saturating_add(number(cache, "write")),
                    output: number(tokens, "output").saturating_add(number(tokens, "reasoning")),
                    calls: 1,
                });
                let reason = text(part, "reason").unwrap_or_default();
                if !matches!(reason.as_str(), "" | "tool-calls" | "tool_calls") {
                    events.push(Event::End(Ok(self.step_text.clone())));
                }
            }
            Some("error") => {
                let error = value.get("error").unwrap_or(&Value::Null);
                let message = text(error, "message")
                    .or_else(|| error.get("data").and_then(|data| text(data, "message")))
                    .or_else(|| text(error, "name"))
                    .or_else(|| error.as_str().map(str::to_string))
                    .unwrap_or_else(|| "OpenCode reported an error".to_string());
                let message = match text(error, "type").or_else(|| text(error, "name")) {
                    Some(kind) if !message.contains(&kind) => format!("{kind}: {message}"),
                    _ => message,
                };
                events.push(Event::End(Err(message)));
            }
            _ => {}
        }
    }
}

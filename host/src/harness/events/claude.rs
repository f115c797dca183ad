//! Claude Code's stream.

use super::{Event, Recent, number, text};
use serde_json::Value;

/// Claude Code's `--output-format stream-json --verbose`, with or without
/// `--include-partial-messages`. With partial messages, text arrives as
/// deltas and the whole message is repeated in an `assistant` event,
/// which is then skipped (the text was shown), as are tool calls already
/// shown.
#[derive(Default)]
pub struct Claude {
    /// Messages (by id) whose text came as deltas.
    streamed: Recent<()>,
    /// Whether deltas came since the last `assistant` event (for messages
    /// without an id).
    deltas_since_assistant: bool,
    /// The message being streamed.
    current: Option<String>,
    /// Tool calls shown, by id.
    tools: Recent<()>,
    /// Tokens (input, output) counted per message, by id: an `assistant`
    /// event repeats its message's usage for each of its blocks.
    counted: Recent<(u64, u64)>,
    /// Tokens (input, output) and messages counted before the `result`,
    /// which reports the run's totals.
    so_far: (u64, u64, u32),
}

/// Claude's `usage` object as (input, output) tokens.
fn claude_usage(usage: &Value) -> (u64, u64) {
    (
        number(usage, "input_tokens")
            .saturating_add(number(usage, "cache_creation_input_tokens"))
            .saturating_add(number(usage, "cache_read_input_tokens")),
        number(usage, "output_tokens"),
    )
}

impl Claude {
    pub(super) fn event(&mut self, value: &Value, events: &mut Vec<Event>) {
        match value.get("type").and_then(Value::as_str) {
            Some("stream_event") => {
                if let Some(event) = value.get("event") {
                    self.stream_event(event, events);
                }
            }
            Some("assistant") => self.assistant(value, events),
            Some("result") => self.result(value, events),
            _ => {}
        }
    }

    fn stream_event(&mut self, event: &Value, events: &mut Vec<Event>) {
        match event.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                self.current = event.get("message").and_then(|message| text(message, "id"));
            }
            Some("content_block_start") => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let name = text(block, "name").unwrap_or_else(|| "tool".to_string());
                    if let Some(id) = text(block, "id") {
                        self.tools.insert(id, ());
                    }
                    events.push(Event::Tool(name));
                }
            }
            Some("content_block_delta") => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                let shown = match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => text(delta, "text").map(Event::Text),
                    Some("thinking_delta") => text(delta, "thinking").map(Event::Reasoning),
                    _ => None,
                };
                if let Some(shown) = shown {
                    self.deltas_since_assistant = true;
                    if let Some(id) = &self.current {
                        self.streamed.insert(id.clone(), ());
                    }
                    events.push(shown);
                }
            }
            _ => {}
        }
    }

    /// Counts the tokens of an `assistant` message as it arrives (each
    /// message once, by id), so a run is held to its limit before its end.
    fn count(&mut self, message: &Value, events: &mut Vec<Event>) {
        let Some(usage) = message.get("usage") else {
            return;
        };
        let (input, output) = claude_usage(usage);
        let (before, new) = match text(message, "id") {
            Some(id) => {
                let before = self.counted.get(&id).copied().unwrap_or((0, 0));
                let now = (before.0.max(input), before.1.max(output));
                (before, self.counted.insert(id, now))
            }
            None => ((0, 0), true),
        };
        let added = (
            input.saturating_sub(before.0),
            output.saturating_sub(before.1),
        );
        let calls = u32::from(new);
        if added == (0, 0) && calls == 0 {
            return;
        }
        self.so_far.0 = self.so_far.0.saturating_add(added.0);
        self.so_far.1 = self.so_far.1.saturating_add(added.1);
        self.so_far.2 = self.so_far.2.saturating_add(calls);
        events.push(Event::Usage {
            input: added.0,
            output: added.1,
            calls,
        });
    }

    fn assistant(&mut self, value: &Value, events: &mut Vec<Event>) {
        let message = value.get("message").unwrap_or(&Value::Null);
        self.count(message, events);
        let streamed = match text(message, "id") {
            Some(id) => self.streamed.contains(&id),
            None => self.deltas_since_assistant,
        };
        self.deltas_since_assistant = false;
        let blocks = message.get("content").and_then(Value::as_array);
        for block in blocks.into_iter().flatten() {
            match block.get("type").and_then(Value::as_str) {
                Some("text") if !streamed => {
                    if let Some(text) = text(block, "text") {
                        events.push(Event::Text(text));
                    }
                }
                Some("thinking") if !streamed => {
                    if let Some(text) = text(block, "thinking") {
                        events.push(Event::Reasoning(text));
                    }
                }
                Some("tool_use") => {
                    let id = text(block, "id");
                    if id.as_ref().is_some_and(|id| self.tools.contains(id)) {
                        continue;
                    }
                    if let Some(id) = id {
                        self.tools.insert(id, ());
                    }
                    events.push(Event::Tool(
                        text(block, "name").unwrap_or_else(|| "tool".to_string()),
                    ));
                }
                _ => {}
            }
        }
    }

    fn result(&mut self, value: &Value, events: &mut Vec<Event>) {
        // The run's totals: what the messages did not already count.
        if let Some(usage) = value.get("usage") {
            let (input, output) = claude_usage(usage);
            let turns = u32::try_from(number(value, "num_turns")).unwrap_or(u32::MAX);
            events.push(Event::Usage {
                input: input.saturating_sub(self.so_far.0),
                output: output.saturating_sub(self.so_far.1),
                calls: turns.saturating_sub(self.so_far.2),
            });
        }
        let subtype = text(value, "subtype").unwrap_or_default();
        let result = text(value, "result");
        let first_error = value
            .get("errors")
            .and_then(Value::as_array)
            .and_then(|errors| errors.first())
            .map(|error| match error.as_str() {
                Some(text) => text.to_string(),
                None => error.to_string(),
            });
        let is_error = value.get("is_error").and_then(Value::as_bool) == Some(true);
        let end = match subtype.as_str() {
            "success" if !is_error => Ok(result.unwrap_or_default()),
            "success" => Err(result
                .or(first_error)
                .unwrap_or_else(|| "Claude Code reported an error".to_string())),
            "error_max_turns" => Err(format!(
                "Claude Code stopped at its maximum number of turns (error_max_turns){}",
                first_error.map_or(String::new(), |error| format!(": {error}"))
            )),
            other => Err(format!(
                "{}: {}",
                if other.is_empty() { "error" } else { other },
                first_error
                    .or(result)
                    .unwrap_or_else(|| "Claude Code reported an error".to_string())
            )),
        };
        events.push(Event::End(end));
    }
}

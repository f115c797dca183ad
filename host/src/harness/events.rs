//! Reading a harness CLI's NDJSON events: one parser per CLI turns each
//! line into what the task shows and keeps — live text, reasoning,
//! `[tool: name]` lines, token use, and the run's end (its final message,
//! or its error). A line that is not JSON, or JSON of a shape the parser
//! does not know, never fails a run: the first is shown as it came, the
//! second skipped.

use crate::config::HarnessKind;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};

/// Ids a parser remembers at most (tool calls shown, messages streamed or
/// counted): the oldest are forgotten past this, so a long run's stream
/// cannot grow the host's memory.
const REMEMBERED: usize = 1024;

/// A map of the last [`REMEMBERED`] ids inserted.
struct Recent<V> {
    values: HashMap<String, V>,
    order: VecDeque<String>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            values: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Recent<V> {
    fn get(&self, id: &str) -> Option<&V> {
        self.values.get(id)
    }

    fn contains(&self, id: &str) -> bool {
        self.values.contains_key(id)
    }

    /// Sets `id`'s value; whether `id` was new.
    fn insert(&mut self, id: String, value: V) -> bool {
        if let Some(old) = self.values.get_mut(&id) {
            *old = value;
            return false;
        }
        if self.order.len() >= REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.values.remove(&oldest);
        }
        self.order.push_back(id.clone());
        self.values.insert(id, value);
        true
    }
}

/// What one line meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Text of the answer, to append to the live output as it is.
    Text(String),
    /// Reasoning, shown as such.
    Reasoning(String),
    /// The CLI ran a tool.
    Tool(String),
    /// A line that was not JSON: shown as a line of its own.
    Raw(String),
    /// Tokens used since the last usage event (`calls` model turns).
    Usage { input: u64, output: u64, calls: u32 },
    /// The run ended: its final message, or why it failed.
    End(Result<String, String>),
}

/// A parser of one CLI's stream.
pub enum Parser {
    Claude(Claude),
    Codex(Codex),
    OpenCode(OpenCode),
}

impl Parser {
    #[cfg(test)]
    pub fn new(kind: HarnessKind) -> Parser {
        Parser::with_text_cap(kind, usize::MAX)
    }

    /// A parser keeping at most `cap` bytes of an answer it builds from
    /// the stream (OpenCode's step text): the rest could never be the
    /// task's result, which is capped so.
    pub fn with_text_cap(kind: HarnessKind, cap: usize) -> Parser {
        match kind {
            HarnessKind::ClaudeCode => Parser::Claude(Claude::default()),
            HarnessKind::Codex => Parser::Codex(Codex::default()),
            HarnessKind::OpenCode => Parser::OpenCode(OpenCode {
                step_text: String::new(),
                cap,
            }),
        }
    }

    /// The events of one line of the stream (without its newline).
    pub fn line(&mut self, line: &str) -> Vec<Event> {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            return Vec::new();
        }
        let value: Value = match serde_json::from_str(line) {
            Ok(value @ Value::Object(_)) => value,
            _ => return vec![Event::Raw(line.to_string())],
        };
        let mut events = Vec::new();
        match self {
            Parser::Claude(parser) => parser.event(&value, &mut events),
            Parser::Codex(parser) => parser.event(&value, &mut events),
            Parser::OpenCode(parser) => parser.event(&value, &mut events),
        }
        events
    }

    /// How the run ended when the stream closed without an end event and
    /// the CLI exited successfully: OpenCode's last step's text is its
    /// answer; the others must say they finished.
    pub fn ended_without_end(&self, name: &str) -> Result<String, String> {
        match self {
            Parser::OpenCode(parser) if !parser.step_text.is_empty() => {
                Ok(parser.step_text.clone())
            }
            Parser::Codex(parser) if parser.error.is_some() => {
                Err(parser.error.clone().unwrap_or_default())
            }
            _ => Err(format!(
                "{name} exited without reporting the end of its run (no result event)"
            )),
        }
    }
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_string)
}

fn number(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

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
    fn event(&mut self, value: &Value, events: &mut Vec<Event>) {
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

/// Codex's `exec --json`: items started and completed, turns completed or
/// failed. The last agent message is the answer.
#[derive(Default)]
pub struct Codex {
    last_message: Option<String>,
    /// Tool items shown, by id.
    tools: Recent<()>,
    /// A top-level `error` event's message, kept in case no turn completes.
    error: Option<String>,
}

impl Codex {
    fn event(&mut self, value: &Value, events: &mut Vec<Event>) {
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
    fn event(&mut self, value: &Value, events: &mut Vec<Event>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn all(kind: HarnessKind, lines: &[&str]) -> Vec<Event> {
        let mut parser = Parser::new(kind);
        lines.iter().flat_map(|line| parser.line(line)).collect()
    }

    #[test]
    fn claude_text_streamed_as_deltas_is_not_repeated_by_the_assistant_event() {
        let events = all(
            HarnessKind::ClaudeCode,
            &[
                r#"{"type":"stream_event","event":{"type":"message_start","message":{"id":"m1"}}}"#,
                r#"{"type":"stream_event","event":{"type":"content_block_delta","delta":{"type":"text_delta","text":"he"}}}"#,
                r#"{"type":"stream_event","event":{"type":"content_block_delta","delta":{"type":"text_delta","text":"llo"}}}"#,
                r#"{"type":"assistant","message":{"id":"m1","content":[{"type":"text","text":"hello"}]}}"#,
                r#"{"type":"assistant","message":{"id":"m2","content":[{"type":"text","text":"again"},{"type":"tool_use","id":"t1","name":"Read"}]}}"#,
                r#"{"type":"result","subtype":"success","result":"hello","num_turns":2,"usage":{"input_tokens":5,"output_tokens":7}}"#,
            ],
        );
        assert_eq!(
            events,
            [
                Event::Text("he".into()),
                Event::Text("llo".into()),
                Event::Text("again".into()),
                Event::Tool("Read".into()),
                Event::Usage {
                    input: 5,
                    output: 7,
                    calls: 2
                },
                Event::End(Ok("hello".into())),
            ]
        );
    }

    #[test]
    fn lines_that_are_not_json_objects_are_shown_and_others_skipped() {
        let events = all(
            HarnessKind::Codex,
            &["warning: something", "[1,2]", "", r#"{"type":"mystery"}"#],
        );
        assert_eq!(
            events,
            [
                Event::Raw("warning: something".into()),
                Event::Raw("[1,2]".into())
            ]
        );
    }

    #[test]
    fn opencode_ends_at_a_step_that_does_not_call_tools() {
        let mut parser = Parser::new(HarnessKind::OpenCode);
        let tool_step = [
            r#"{"type":"step_start","part":{}}"#,
            r#"{"type":"text","part":{"text":"Looking."}}"#,
            r#"{"type":"step_finish","part":{"reason":"tool-calls","tokens":{"input":3,"output":1}}}"#,
        ];
        for line in tool_step {
            assert!(
                !parser
                    .line(line)
                    .iter()
                    .any(|event| matches!(event, Event::End(_)))
            );
        }
        parser.line(r#"{"type":"step_start","part":{}}"#);
        parser.line(r#"{"type":"text","part":{"text":"Done."}}"#);
        let end = parser.line(r#"{"type":"step_finish","part":{"reason":"stop"}}"#);
        assert_eq!(end.last(), Some(&Event::End(Ok("Done.".into()))));
    }

    #[test]
    fn claude_counts_each_messages_tokens_once_as_it_arrives_and_the_result_reconciles() {
        let usage = r#""usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":20}"#;
        let events = all(
            HarnessKind::ClaudeCode,
            &[
                &format!(
                    r#"{{"type":"assistant","message":{{"id":"m1",{usage},"content":[{{"type":"text","text":"a"}}]}}}}"#
                ),
                // The same message's next block repeats its usage.
                &format!(
                    r#"{{"type":"assistant","message":{{"id":"m1",{usage},"content":[{{"type":"tool_use","id":"t1","name":"Read"}}]}}}}"#
                ),
                r#"{"type":"assistant","message":{"id":"m2","usage":{"input_tokens":40,"output_tokens":2},"content":[]}}"#,
                r#"{"type":"result","subtype":"success","result":"a","num_turns":2,"usage":{"input_tokens":60,"output_tokens":30}}"#,
            ],
        );
        let usage: Vec<&Event> = (events.iter())
            .filter(|event| matches!(event, Event::Usage { .. }))
            .collect();
        assert_eq!(
            usage,
            [
                &Event::Usage {
                    input: 15,
                    output: 20,
                    calls: 1
                },
                &Event::Usage {
                    input: 40,
                    output: 2,
                    calls: 1
                },
                &Event::Usage {
                    input: 5,
                    output: 8,
                    calls: 0
                },
            ]
        );
    }

    #[test]
    fn remembered_ids_and_opencodes_answer_are_bounded() {
        let mut parser = Parser::with_text_cap(HarnessKind::OpenCode, 10);
        parser.line(r#"{"type":"text","part":{"text":"0123456789abcdef"}}"#);
        parser.line(r#"{"type":"text","part":{"text":"more"}}"#);
        let end = parser.line(r#"{"type":"step_finish","part":{"reason":"stop"}}"#);
        assert_eq!(end.last(), Some(&Event::End(Ok("0123456789".into()))));

        let mut parser = Parser::new(HarnessKind::Codex);
        for n in 0..3 * REMEMBERED {
            parser.line(&format!(
                r#"{{"type":"item.started","item":{{"id":"i{n}","type":"command_execution"}}}}"#
            ));
        }
        let Parser::Codex(codex) = &parser else {
            unreachable!()
        };
        assert_eq!(codex.tools.values.len(), REMEMBERED);
        assert_eq!(codex.tools.order.len(), REMEMBERED);
    }
}

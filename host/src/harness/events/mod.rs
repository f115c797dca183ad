//! Reading a harness CLI's NDJSON events: one parser per CLI turns each
//! line into what the task shows and keeps — live text, reasoning,
//! `[tool: name]` lines, token use, and the run's end (its final message,
//! or its error). A line that is not JSON, or JSON of a shape the parser
//! does not know, never fails a run: the first is shown as it came, the
//! second skipped.

use crate::config::HarnessKind;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};

mod claude;
mod codex;
mod opencode;

pub use claude::Claude;
pub use codex::Codex;
pub use opencode::OpenCode;

/// Ids a parser remembers at most (tool calls shown, messages streamed or
/// counted): the oldest are forgotten past this, so a long run's stream
/// cannot grow the host's memory.
const REMEMBERED: usize = 1024;

/// A map of the last [`REMEMBERED`] ids inserted.
pub(super) struct Recent<V> {
    pub(super) values: HashMap<String, V>,
    pub(super) order: VecDeque<String>,
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
    pub(super) fn get(&self, id: &str) -> Option<&V> {
        self.values.get(id)
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.values.contains_key(id)
    }

    /// Sets `id`'s value; whether `id` was new.
    pub(super) fn insert(&mut self, id: String, value: V) -> bool {
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
            HarnessKind::OpenCode => Parser::OpenCode(OpenCode::with_cap(cap)),
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
            Parser::OpenCode(parser) if !parser.answer().is_empty() => {
                Ok(parser.answer().to_string())
            }
            Parser::Codex(parser) if parser.error().is_some() => {
                Err(parser.error().unwrap_or_default().to_string())
            }
            _ => Err(format!(
                "{name} exited without reporting the end of its run (no result event)"
            )),
        }
    }
}

pub(super) fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_string)
}

pub(super) fn number(value: &Value, key: &str) -> u64 {
    value.get(key).and_then(Value::as_u64).unwrap_or(0)
}

#[cfg(test)]
mod tests;

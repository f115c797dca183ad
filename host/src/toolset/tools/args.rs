//! A tool call's arguments, checked the way the tool schemas describe them.

use crate::toolset::ToolError;
use serde_json::{Map, Value};

pub struct Args(Map<String, Value>);

impl Args {
    pub fn new(arguments: Option<Map<String, Value>>) -> Args {
        Args(arguments.unwrap_or_default())
    }

    /// Arguments as a model wrote them: a JSON object (empty text counts as
    /// no arguments).
    pub fn parse(text: &str) -> Result<Args, String> {
        if text.trim().is_empty() {
            return Ok(Args::new(None));
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Args(map)),
            Ok(Value::Null) => Ok(Args::new(None)),
            Ok(_) => Err("the arguments must be a JSON object".to_string()),
            Err(error) => Err(format!("the arguments are not valid JSON ({error})")),
        }
    }

    /// Refuses any argument not in `known`: every tool has a closed schema,
    /// and a misspelt optional argument should not be silently ignored.
    pub fn only(&self, known: &[&str]) -> Result<(), String> {
        let Some(unknown) = self.0.keys().find(|key| !known.contains(&key.as_str())) else {
            return Ok(());
        };
        let expected = if known.is_empty() {
            "this tool takes no arguments".to_string()
        } else {
            format!("expected: {}", known.join(", "))
        };
        Err(format!("unknown argument {unknown:?}; {expected}"))
    }

    /// All the arguments, for tools whose schema is checked elsewhere (an
    /// MCP server's).
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The argument as given, for shapes checked by the tool itself.
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(format!("{name} must be a string")),
        }
    }

    /// An array of strings; `what` names the items in the error.
    pub fn strings(&self, name: &str, what: &str) -> Result<Vec<String>, String> {
        let bad = || format!("{name} must be an array of {what} strings");
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string).ok_or_else(bad))
                .collect(),
            Some(_) => Err(bad()),
        }
    }

    /// Seconds; the toolset refuses values over its maximum, this only
    /// refuses what is not a whole non-negative number.
    pub fn timeout(&self, name: &str) -> Result<u64, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(number)) => number
                .as_u64()
                .ok_or_else(|| ToolError::WaitTimeout.to_string()),
            Some(_) => Err(format!("{name} must be a whole number of seconds")),
        }
    }
}

//! A tool call's arguments, checked the way the tool schemas describe them.

use crate::toolset::ToolError;
use rmcp::model::JsonObject;
use serde_json::Value;

pub struct Args(JsonObject);

impl Args {
    pub fn new(arguments: Option<JsonObject>) -> Args {
        Args(arguments.unwrap_or_default())
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

    pub fn string(&self, name: &str) -> Result<Option<String>, String> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(format!("{name} must be a string")),
        }
    }

    pub fn strings(&self, name: &str) -> Result<Vec<String>, String> {
        let bad = || format!("{name} must be an array of task ID strings");
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

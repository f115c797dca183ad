//! `think`: a scratchpad the model writes its reasoning to; it answers with
//! every thought of the task so far, as docker-agent's does.

use super::ToolSpec;
use super::args::Args;
use serde_json::json;

pub const THINK: &str = "think";

/// Thought bytes a task may keep; past it `think` refuses, so a model that
/// thinks in a loop cannot grow the host's memory (or its own context)
/// without bound.
const MAX_THOUGHTS_BYTES: usize = 256 << 10;

pub fn spec() -> ToolSpec {
    ToolSpec {
        name: THINK.into(),
        description: "Write down a thought: reasoning, a plan, a check of what you know before \
            acting. Nothing is looked up or changed; the answer is every thought so far."
            .into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "thought": {"type": "string", "description": "The thought to note."}
            },
            "required": ["thought"],
            "additionalProperties": false
        }),
        read_only: true,
    }
}

/// One task's thoughts.
#[derive(Debug, Default)]
pub struct Thoughts {
    notes: Vec<String>,
    bytes: usize,
}

impl Thoughts {
    pub fn think(&mut self, args: &Args) -> Result<String, String> {
        args.only(&["thought"])?;
        let thought = args.string("thought")?.unwrap_or_default();
        if self.bytes + thought.len() > MAX_THOUGHTS_BYTES {
            return Err(format!(
                "the thoughts of this task reached {} KiB; act on them instead of thinking more",
                MAX_THOUGHTS_BYTES >> 10
            ));
        }
        self.bytes += thought.len();
        self.notes.push(thought);
        Ok(format!("Thoughts:\n{}", self.notes.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thoughts_accumulate_and_stop_at_their_cap() {
        let mut thoughts = Thoughts::default();
        let note = |text: &str| Args::parse(&json!({"thought": text}).to_string()).unwrap();
        assert_eq!(thoughts.think(&note("a")).unwrap(), "Thoughts:\na");
        assert_eq!(thoughts.think(&note("b")).unwrap(), "Thoughts:\na\nb");
        let big = "x".repeat(MAX_THOUGHTS_BYTES);
        let refused = thoughts.think(&note(&big)).unwrap_err();
        assert!(refused.contains("reached 256 KiB"), "{refused}");
        assert!(thoughts.bytes <= MAX_THOUGHTS_BYTES);
        let unknown = thoughts.think(&Args::parse(r#"{"idea": "x"}"#).unwrap());
        assert_eq!(
            unknown.unwrap_err(),
            "unknown argument \"idea\"; expected: thought"
        );
    }
}

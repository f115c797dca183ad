//! A bgagents sub-agent. Build it with
//! `cargo build --release --target wasm32-wasip2`, then run it with
//! `bgagents run team.yaml "some task"`.

wit_bindgen::generate!({ path: "wit", world: "sub-agent" });

use bgagents::agents::output;
use exports::bgagents::agents::agent::{Guest, Request};

struct Agent;

impl Guest for Agent {
    /// `Ok` becomes the task's result, `Err` its failure reason.
    fn run(request: Request) -> Result<String, String> {
        let task = request.task.trim();
        if !task.chars().any(char::is_alphabetic) {
            return Err("give me some text with letters to work on".into());
        }
        // Live output: what `view` shows while the task runs.
        output::write(&format!("working on {} characters\n", task.len()));
        let words = task.split_whitespace().count();
        Ok(format!("{words} words; reversed: {}", task.chars().rev().collect::<String>()))
    }
}

export!(Agent);

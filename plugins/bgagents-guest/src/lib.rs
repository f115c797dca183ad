//! Write a bgagents sub-agent in Rust with one trait impl and one macro call:
//!
//! ```ignore
//! use bgagents_guest::{Agent, Request};
//!
//! struct Greeter;
//!
//! impl Agent for Greeter {
//!     fn run(request: Request) -> Result<String, String> {
//!         bgagents_guest::print(&format!("greeting {}\n", request.task));
//!         Ok(format!("Hello, {}!", request.task))
//!     }
//! }
//!
//! bgagents_guest::export_agent!(Greeter);
//! ```
//!
//! Build the crate (`crate-type = ["cdylib"]`) with
//! `cargo build --release --target wasm32-wasip2`; the `.wasm` it produces
//! is the component a team file's `component:` names. The helpers below
//! stream output and dispatch sub-agents; the raw imports are in
//! [`toolset`] and [`output`].

wit_bindgen::generate!({
    path: "wit",
    world: "sub-agent",
    pub_export_macro: true,
    export_macro_name: "export_agent",
    default_bindings_module: "bgagents_guest",
});

pub use bgagents::agents::background_agents as toolset;
pub use bgagents::agents::output;
pub use bgagents::agents::types::{TaskInfo, TaskStatus, TaskView, WaitEntry, WaitReport};
/// The trait a sub-agent implements: `run` gets the task, returns the result.
pub use exports::bgagents::agents::agent::Guest as Agent;
pub use exports::bgagents::agents::agent::Request;

/// Appends `text` to this task's live output (what `view` shows while it runs).
pub fn print(text: &str) {
    output::write(text);
}

/// Starts `agent` (one of `request.sub_agents`) on `task` in the background
/// and returns its task id at once.
pub fn start(agent: &str, task: &str) -> Result<String, String> {
    toolset::run_background_agent(agent, task, None).map(|info| info.id)
}

/// Waits until every task in `ids` has finished and returns their views, in
/// the same order. Waiting lends this task's running slot to them.
pub fn wait_all(ids: &[String]) -> Result<Vec<TaskView>, String> {
    for batch in ids.chunks(100) {
        while !toolset::wait_background_agents(batch, 0)?.all_done {}
    }
    ids.iter()
        .map(|id| toolset::view_background_agent(id))
        .collect()
}

/// Runs `agent` on `task` and waits for it: its result, or its failure
/// (or stop) as the error.
pub fn delegate(agent: &str, task: &str) -> Result<String, String> {
    let id = start(agent, task)?;
    let view = wait_all(&[id])?.remove(0);
    outcome(&view)
}

/// A finished task's result, or why it has none.
pub fn outcome(view: &TaskView) -> Result<String, String> {
    match view.info.status {
        TaskStatus::Completed => Ok(view.result.clone().unwrap_or_default()),
        TaskStatus::Failed => Err(view.error.clone().unwrap_or_else(|| "failed".into())),
        TaskStatus::Stopped => Err("stopped".into()),
        TaskStatus::Queued | TaskStatus::Running => Err("still running".into()),
    }
}

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
//!
//! An LLM agent asks the model its team file binds with [`complete`] and
//! runs the tools its `toolsets:` grant with [`tool_definitions`] and
//! [`call_tool`]; [`Message`] has constructors for each role. The raw
//! imports are in [`model`] and [`tools`].
//!
//! ```ignore
//! use bgagents_guest::{Message, call_tool, complete, tool_definitions};
//!
//! let tools = tool_definitions();
//! let mut messages = vec![Message::system("Be brief."), Message::user("What is 6 × 7?")];
//! loop {
//!     let completion = complete(&messages, &tools).map_err(|error| error.message().to_string())?;
//!     messages.push(completion.to_message());
//!     if completion.tool_calls.is_empty() {
//!         return Ok(completion.content);
//!     }
//!     for call in &completion.tool_calls {
//!         let text = call_tool(&call.name, &call.arguments).unwrap_or_else(|error| error);
//!         messages.push(Message::tool(&call.id, text));
//!     }
//! }
//! ```

wit_bindgen::generate!({
    path: "wit",
    world: "sub-agent",
    pub_export_macro: true,
    export_macro_name: "export_agent",
    default_bindings_module: "bgagents_guest",
});

pub use bgagents::agents::background_agents as toolset;
pub use bgagents::agents::model;
/// Why a model call failed.
pub use bgagents::agents::model::Error as ModelError;
pub use bgagents::agents::model::{
    Completion, FinishReason, Message, Role, ToolCall, ToolDefinition, Usage,
};
pub use bgagents::agents::output;
pub use bgagents::agents::tools;
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

/// One model turn: the conversation so far and the tools the model may
/// call. The host streams the answer into the live output as it arrives.
pub fn complete(messages: &[Message], tools: &[ToolDefinition]) -> Result<Completion, ModelError> {
    model::complete(messages, tools)
}

/// `provider/model` of the model the team file binds; `None` without `model:`.
pub fn model_name() -> Option<String> {
    model::name()
}

/// The tools the agent's `toolsets:` grant, to hand to [`complete`].
pub fn tool_definitions() -> Vec<ToolDefinition> {
    tools::definitions()
}

/// Runs tool `name` with `arguments` (a JSON object text, as the model
/// wrote it). `Ok` is the text for the model; `Err` is an error text meant
/// for the model too (an unknown tool, bad arguments, a refused operation),
/// so it can correct itself.
pub fn call_tool(name: &str, arguments: &str) -> Result<String, String> {
    tools::call(name, arguments)
}

impl Message {
    fn text(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }

    /// An `assistant` message, with the tool calls it asked for (if any).
    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        Message {
            tool_calls,
            ..Self::text(Role::Assistant, content)
        }
    }

    /// A `tool` message: the answer to the assistant's tool call `call_id`.
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            tool_call_id: Some(call_id.into()),
            ..Self::text(Role::Tool, content)
        }
    }
}

impl Completion {
    /// The `assistant` message that records this answer in the conversation
    /// (its text and tool calls), to send back on the next turn.
    pub fn to_message(&self) -> Message {
        Message::assistant(self.content.clone(), self.tool_calls.clone())
    }
}

impl ModelError {
    /// The kind of failure as the WIT names it (`no-model`, `budget-exhausted`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::NoModel(_) => "no-model",
            ModelError::BudgetExhausted(_) => "budget-exhausted",
            ModelError::RateLimited(_) => "rate-limited",
            ModelError::ProviderError(_) => "provider-error",
            ModelError::InvalidRequest(_) => "invalid-request",
        }
    }

    /// The host's sentence for a person.
    pub fn message(&self) -> &str {
        match self {
            ModelError::NoModel(text)
            | ModelError::BudgetExhausted(text)
            | ModelError::RateLimited(text)
            | ModelError::ProviderError(text)
            | ModelError::InvalidRequest(text) => text,
        }
    }
}

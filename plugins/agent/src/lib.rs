//! The LLM sub-agent bundled with bgagents: docker-agent's agent loop over
//! the model and the tools the host grants this agent.
//!
//! - [`prompt`] builds the opening conversation from the request: the
//!   agent's `instruction`, today's date (when `add_date` is set) and the
//!   delegated task, laid out as docker-agent lays out a sub-agent's task.
//! - [`turns`] runs the loop: ask the model, record its answer, run the
//!   tool calls it asked for (in order), and repeat until it answers
//!   without tool calls. That answer is the task's result.
//!
//! The component holds no provider, endpoint or key: the host runs the
//! model and the tools, counts them against the agent's limits and streams
//! the model's text into the task's live output.

pub mod prompt;
pub mod turns;

// The component's entry point. Natively (the unit tests) there is no host
// to import from, and a native cdylib cannot carry the WIT export names.
#[cfg(target_arch = "wasm32")]
mod component {
    use crate::{prompt, turns};
    use bgagents_guest::{
        Agent, Completion, Message, ModelError, Request, ToolDefinition, call_tool, complete,
        tool_definitions,
    };

    /// The model and tools of the host this component runs in.
    struct Host;

    impl turns::Backend for Host {
        fn tool_definitions(&mut self) -> Vec<ToolDefinition> {
            tool_definitions()
        }

        fn complete(
            &mut self,
            messages: &[Message],
            tools: &[ToolDefinition],
        ) -> Result<Completion, ModelError> {
            complete(messages, tools)
        }

        fn call_tool(&mut self, name: &str, arguments: &str) -> Result<String, String> {
            call_tool(name, arguments)
        }
    }

    struct LlmAgent;

    impl Agent for LlmAgent {
        fn run(request: Request) -> Result<String, String> {
            let messages = prompt::opening_messages(&request);
            turns::run(&mut Host, messages, request.max_iterations)
        }
    }

    bgagents_guest::export_agent!(LlmAgent);
}

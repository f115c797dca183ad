//! The agent loop, as docker-agent runs it.
//!
//! 1. Fetch the tool definitions once.
//! 2. Ask the model, with the conversation so far and those tools.
//! 3. Record its answer (text and tool calls) as an `assistant` message.
//! 4. No tool calls: the answer is the result. Otherwise run each call in
//!    the order the model gave them and record each answer as a `tool`
//!    message carrying the call's id (a failed call's error text goes to the
//!    model too, so it can correct itself), then go back to 2.
//!
//! `max_iterations` (0: no limit) bounds the model turns; running out fails
//! the task. A failed model call fails the task with the host's sentence.
//! Nothing the model sends can make the loop panic: names and arguments go
//! to the host unread, and the host answers unknown tools with an error.

use bgagents_guest::{Completion, Message, ModelError, Role, ToolDefinition};

/// What the loop needs from its surroundings: the host's model and tools
/// in the component, a script in the tests.
pub trait Backend {
    fn tool_definitions(&mut self) -> Vec<ToolDefinition>;
    fn complete(
        &mut self,
        messages: &[Message],
        tools: &[ToolDefinition],
    ) -> Result<Completion, ModelError>;
    fn call_tool(&mut self, name: &str, arguments: &str) -> Result<String, String>;
}

/// Runs the conversation that starts with `messages` to its end: the
/// result is the content of the last assistant message.
pub fn run(
    backend: &mut impl Backend,
    mut messages: Vec<Message>,
    max_iterations: u32,
) -> Result<String, String> {
    let tools = backend.tool_definitions();
    let mut turns: u64 = 0;
    loop {
        if max_iterations > 0 && turns >= u64::from(max_iterations) {
            return Err(out_of_iterations(max_iterations));
        }
        turns += 1;
        let completion = backend
            .complete(&messages, &tools)
            .map_err(|error| model_failed(turns, &error))?;

        // An answer with neither text nor tool calls ends the task without
        // being recorded (providers refuse empty messages), as in docker-agent.
        if completion.content.trim().is_empty() && completion.tool_calls.is_empty() {
            return Ok(last_assistant_content(&messages));
        }
        messages.push(completion.to_message());
        if completion.tool_calls.is_empty() {
            return Ok(last_assistant_content(&messages));
        }
        for call in completion.tool_calls {
            let answer = match backend.call_tool(&call.name, &call.arguments) {
                Ok(text) | Err(text) => text,
            };
            messages.push(Message::tool(call.id, answer));
        }
    }
}

/// The trimmed content of the last assistant message ("" when there is none).
fn last_assistant_content(messages: &[Message]) -> String {
    messages
        .iter()
        .rev()
        .find(|message| message.role == Role::Assistant)
        .map(|message| message.content.trim().to_string())
        .unwrap_or_default()
}

fn out_of_iterations(max_iterations: u32) -> String {
    format!(
        "the agent did not finish within {max_iterations} model turns (its max_iterations); \
         raise max_iterations in its team-file entry (0 means no limit) or give it a smaller task"
    )
}

fn model_failed(turn: u64, error: &ModelError) -> String {
    format!(
        "model call {turn} failed ({}): {}",
        error.kind(),
        error.message()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bgagents_guest::{FinishReason, ToolCall, Usage};
    use std::collections::VecDeque;

    /// Plays back the model's answers and records what the loop sent.
    #[derive(Default)]
    struct Script {
        answers: VecDeque<Result<Completion, ModelError>>,
        seen: Vec<Vec<Message>>,
        calls: Vec<(String, String)>,
        definitions_fetched: usize,
    }

    impl Backend for Script {
        fn tool_definitions(&mut self) -> Vec<ToolDefinition> {
            self.definitions_fetched += 1;
            vec![ToolDefinition {
                name: "think".into(),
                description: "Think".into(),
                parameters: "{}".into(),
            }]
        }

        fn complete(
            &mut self,
            messages: &[Message],
            tools: &[ToolDefinition],
        ) -> Result<Completion, ModelError> {
            assert_eq!(tools.len(), 1);
            self.seen.push(messages.to_vec());
            self.answers
                .pop_front()
                .expect("the model was asked too often")
        }

        fn call_tool(&mut self, name: &str, arguments: &str) -> Result<String, String> {
            self.calls.push((name.into(), arguments.into()));
            match name {
                "think" => Ok(format!("Thoughts:\n{arguments}")),
                _ => Err(format!("tool {name} not found")),
            }
        }
    }

    fn answer(content: &str, calls: &[(&str, &str, &str)]) -> Result<Completion, ModelError> {
        let usage = Usage {
            input_tokens: 1,
            output_tokens: 1,
        };
        Ok(Completion {
            content: content.into(),
            tool_calls: calls
                .iter()
                .map(|(id, name, arguments)| ToolCall {
                    id: (*id).into(),
                    name: (*name).into(),
                    arguments: (*arguments).into(),
                })
                .collect(),
            finish_reason: if calls.is_empty() {
                FinishReason::Stop
            } else {
                FinishReason::ToolCalls
            },
            usage,
            total: usage,
        })
    }

    fn script(answers: Vec<Result<Completion, ModelError>>) -> Script {
        Script {
            answers: answers.into(),
            ..Script::default()
        }
    }

    fn start() -> Vec<Message> {
        vec![Message::system("task"), Message::user("Please proceed.")]
    }

    #[test]
    fn tool_calls_run_in_order_and_their_answers_go_back() {
        let mut backend = script(vec![
            answer(
                "let me think",
                &[("a", "think", r#"{"thought":"x"}"#), ("b", "nope", "{")],
            ),
            answer("  done  ", &[]),
        ]);
        let result = run(&mut backend, start(), 0);
        assert_eq!(result.as_deref(), Ok("done"));
        assert_eq!(backend.definitions_fetched, 1);
        assert_eq!(
            backend.calls,
            [
                ("think".to_string(), r#"{"thought":"x"}"#.to_string()),
                ("nope".to_string(), "{".to_string())
            ]
        );
        let second = &backend.seen[1];
        assert_eq!(second.len(), 5);
        assert_eq!(second[2].role, Role::Assistant);
        assert_eq!(second[2].content, "let me think");
        assert_eq!(second[2].tool_calls.len(), 2);
        assert_eq!(second[3].role, Role::Tool);
        assert_eq!(second[3].tool_call_id.as_deref(), Some("a"));
        assert_eq!(second[3].content, "Thoughts:\n{\"thought\":\"x\"}");
        assert_eq!(second[4].tool_call_id.as_deref(), Some("b"));
        assert_eq!(second[4].content, "tool nope not found");
    }

    #[test]
    fn an_empty_answer_ends_with_the_last_recorded_one() {
        let mut backend = script(vec![
            answer("checking", &[("a", "think", "{}")]),
            answer("", &[]),
        ]);
        assert_eq!(run(&mut backend, start(), 0).as_deref(), Ok("checking"));

        let mut backend = script(vec![answer("", &[])]);
        assert_eq!(run(&mut backend, start(), 0).as_deref(), Ok(""));
    }

    #[test]
    fn max_iterations_bounds_the_model_turns() {
        let mut backend = script(vec![
            answer("", &[("a", "think", "{}")]),
            answer("", &[("b", "think", "{}")]),
        ]);
        let error = run(&mut backend, start(), 2).unwrap_err();
        assert_eq!(backend.seen.len(), 2);
        assert_eq!(backend.calls.len(), 2, "the last turn's calls still run");
        assert!(error.contains("max_iterations"), "{error}");
        assert!(error.contains("within 2 model turns"), "{error}");

        let mut backend = script(vec![answer("", &[("a", "think", "{}")]), answer("ok", &[])]);
        assert_eq!(run(&mut backend, start(), 2).as_deref(), Ok("ok"));
    }

    #[test]
    fn a_model_error_names_the_call_that_failed() {
        let mut backend = script(vec![
            answer("", &[("a", "think", "{}")]),
            Err(ModelError::BudgetExhausted(
                "the task used its 1000 tokens".into(),
            )),
        ]);
        assert_eq!(
            run(&mut backend, start(), 0).unwrap_err(),
            "model call 2 failed (budget-exhausted): the task used its 1000 tokens"
        );
    }
}

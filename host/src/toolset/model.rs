//! The model capability: a task's turns with its agent's model. The host
//! holds the client (provider, endpoint, key); the guest hands over
//! messages and tool definitions and gets the completion back. Each turn is
//! checked against `limits.model_calls` and `limits.tokens`, bounded by
//! `limits.model_timeout`, and its text is streamed into the task's live
//! output as it arrives.

use super::guest::TaskBinding;
use crate::model::{Completion, Message, ModelError, Role, ToolDefinition, Usage};
use crate::tasks::ModelUse;
use crate::wit::ModelCallError;
use std::time::Instant;

impl TaskBinding {
    pub(super) async fn complete_turn(
        &mut self,
        messages: Vec<Message>,
        tools: Vec<ToolDefinition>,
    ) -> Result<(Completion, Usage), ModelCallError> {
        let agent = self.agent.clone();
        let name = &agent.spec.name;
        let Some(client) = &agent.model else {
            return Err(ModelCallError::NoModel(format!(
                "agent {name:?} has no model: give it `model:` in the team file"
            )));
        };
        let limits = &agent.spec.limits;
        let used = self.task.model.lock().unwrap().unwrap_or_default();
        if used.calls >= limits.model_calls {
            return Err(ModelCallError::BudgetExhausted(format!(
                "this task made its {} model calls; raise agents.{name}.limits.model_calls",
                limits.model_calls
            )));
        }
        if used.tokens() >= limits.tokens {
            return Err(ModelCallError::BudgetExhausted(format!(
                "this task used {} of its {} tokens; raise agents.{name}.limits.tokens",
                used.tokens(),
                limits.tokens
            )));
        }
        check_conversation(&messages, &tools)?;
        self.record(ModelUse {
            calls: 1,
            ..ModelUse::default()
        });
        let deadline = tokio::time::Instant::now() + limits.model_timeout;
        let output = self.output.clone();
        let started = Instant::now();
        let mut on_text = |text: &str| output.append(text.as_bytes());
        let answer = client
            .complete(&messages, &tools, deadline, &mut on_text)
            .await;
        match answer {
            Ok(completion) => {
                let total = self.record(ModelUse {
                    calls: 0,
                    input_tokens: completion.usage.input_tokens,
                    output_tokens: completion.usage.output_tokens,
                });
                tracing::debug!(
                    took_ms = started.elapsed().as_millis() as u64,
                    input_tokens = completion.usage.input_tokens,
                    output_tokens = completion.usage.output_tokens,
                    tool_calls = completion.tool_calls.len(),
                    "model call"
                );
                let total = Usage {
                    input_tokens: total.input_tokens,
                    output_tokens: total.output_tokens,
                };
                Ok((completion, total))
            }
            Err(error) => {
                tracing::info!(error = ?error, "model call failed");
                Err(match error {
                    ModelError::RateLimited(text) => ModelCallError::RateLimited(text),
                    ModelError::Provider(text) => ModelCallError::Provider(text),
                    ModelError::InvalidRequest(text) => ModelCallError::InvalidRequest(text),
                })
            }
        }
    }

    /// Adds `more` to the task's model use; returns the new total.
    fn record(&self, more: ModelUse) -> ModelUse {
        let mut used = self.task.model.lock().unwrap();
        let total = used.get_or_insert_with(ModelUse::default);
        total.calls = total.calls.saturating_add(more.calls);
        total.input_tokens = total.input_tokens.saturating_add(more.input_tokens);
        total.output_tokens = total.output_tokens.saturating_add(more.output_tokens);
        *total
    }
}

/// Refuses what no provider would take, with a sentence saying what is
/// wrong (before a request is spent on it).
fn check_conversation(
    messages: &[Message],
    tools: &[ToolDefinition],
) -> Result<(), ModelCallError> {
    let invalid = |text: String| Err(ModelCallError::InvalidRequest(text));
    if messages.is_empty() {
        return invalid("the conversation has no messages".into());
    }
    let mut open_calls: Vec<&str> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        match message.role {
            Role::Assistant => {
                open_calls.extend(message.tool_calls.iter().map(|call| call.id.as_str()))
            }
            Role::Tool => match message.tool_call_id.as_deref() {
                None => {
                    return invalid(format!(
                        "message {index} is a tool answer without a tool-call-id"
                    ));
                }
                Some(id) if !open_calls.contains(&id) => {
                    return invalid(format!(
                        "message {index} answers tool call {id:?}, which no earlier assistant message made"
                    ));
                }
                Some(_) => {}
            },
            Role::System | Role::User if !message.tool_calls.is_empty() => {
                return invalid(format!(
                    "message {index} carries tool calls but is not from the assistant"
                ));
            }
            _ => {}
        }
    }
    for tool in tools {
        if serde_json::from_str::<serde_json::Value>(&tool.parameters)
            .map_or(true, |schema| !schema.is_object())
        {
            return invalid(format!(
                "tool {:?}'s parameters are not a JSON Schema object",
                tool.name
            ));
        }
    }
    Ok(())
}

//! Anthropic's messages protocol.

use super::{Builder, Completion, FinishReason, Message, Role, ToolDefinition, Usage, sse};
use crate::config::ModelBinding;
use serde_json::{Value, json};

/// `max_tokens` is required by the protocol; this is used when the team
/// file gives none.
pub(super) const DEFAULT_MAX_TOKENS: u64 = 8192;

/// The request body for `POST {base}/v1/messages`: system messages go to
/// `system`, tool results to `tool_result` blocks of a user message and
/// assistant tool calls to `tool_use` blocks; turns of the same role are
/// merged.
pub(super) fn request(
    binding: &ModelBinding,
    messages: &[Message],
    tools: &[ToolDefinition],
) -> Value {
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.role {
            Role::System => {
                system.push(message.content.as_str());
                continue;
            }
            Role::User => (
                "user",
                vec![json!({"type": "text", "text": message.content})],
            ),
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id.clone().unwrap_or_default(),
                    "content": message.content,
                })],
            ),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !message.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": message.content}));
                }
                for call in &message.tool_calls {
                    let input = match serde_json::from_str::<Value>(&call.arguments) {
                        Ok(value @ Value::Object(_)) => value,
                        _ => json!({}),
                    };
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": input,
                    }));
                }
                ("assistant", blocks)
            }
        };
        // The protocol refuses empty text blocks.
        let blocks: Vec<Value> = blocks
            .into_iter()
            .filter(|block| block.get("type") != Some(&json!("text")) || block["text"] != json!(""))
            .collect();
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = json!({
        "model": binding.model,
        "max_tokens": binding.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages,
        "stream": true,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": super::openai::schema(&tool.parameters),
                })
            })
            .collect();
        if let Some(parallel) = binding.parallel_tool_calls {
            body["tool_choice"] = json!({"type": "auto", "disable_parallel_tool_use": !parallel});
        }
    }
    if let Some(temperature) = binding.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(top_p) = binding.top_p {
        body["top_p"] = json!(top_p);
    }
    body
}

fn finish_reason(text: &str) -> FinishReason {
    match text {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" => FinishReason::Length,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

fn error_of(value: &Value) -> Option<String> {
    if value.get("type").and_then(Value::as_str) != Some("error") {
        return None;
    }
    let error = value.get("error");
    let kind = error
        .and_then(|error| error.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("error");
    let message = error
        .and_then(|error| error.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("no message");
    Some(format!(
        "the provider reported an error ({kind}): {message}"
    ))
}

/// A streamed answer: message_start, content blocks, message_delta,
/// message_stop.
#[derive(Debug, Default)]
pub(super) struct Stream {
    builder: Builder,
    started: bool,
    stopped: bool,
}

impl Stream {
    pub fn event(
        &mut self,
        event: &sse::Event,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), String> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        // The event itself is not quoted: it could carry the key, cut where
        // no scrubbing would find it.
        let value: Value = serde_json::from_str(data)
            .map_err(|error| format!("sent an event that is not JSON ({error})"))?;
        if let Some(error) = error_of(&value) {
            return Err(error);
        }
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.name.as_str());
        if self.stopped && kind != "ping" {
            return Err(format!("sent `{kind}` after message_stop"));
        }
        let builder = &mut self.builder;
        match kind {
            "message_start" => {
                self.started = true;
                let usage = value
                    .get("message")
                    .and_then(|message| message.get("usage"));
                if let Some(usage) = usage {
                    builder.usage = usage_of(usage);
                }
            }
            "content_block_start" => {
                let index = index_of(&value)?;
                let block = value
                    .get("content_block")
                    .ok_or("sent content_block_start without a content_block")?;
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(text) = block.get("text").and_then(Value::as_str) {
                            builder.text(text, on_text)?;
                        }
                    }
                    Some("tool_use") => {
                        let id = block.get("id").and_then(Value::as_str);
                        let name = block.get("name").and_then(Value::as_str);
                        // The input arrives as input_json_delta; a start
                        // with a non-empty input carries it whole.
                        let input = block
                            .get("input")
                            .filter(|input| input.as_object().is_some_and(|map| !map.is_empty()))
                            .map(Value::to_string);
                        builder.call_part(index, id, name, input.as_deref())?;
                    }
                    // Thinking and other blocks are not part of the answer.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = index_of(&value)?;
                let delta = value
                    .get("delta")
                    .ok_or("sent content_block_delta without a delta")?;
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        builder.text(text, on_text)?;
                    }
                    Some("input_json_delta") => {
                        let part = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if !builder.calls.iter().any(|(at, _)| *at == index) {
                            return Err(format!(
                                "sent tool input for block {index}, which is not a tool_use block"
                            ));
                        }
                        builder.call_part(index, None, None, Some(part))?;
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = value
                    .get("delta")
                    .and_then(|delta| delta.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    builder.finish = Some(finish_reason(reason));
                }
                if let Some(output) = value
                    .get("usage")
                    .and_then(|usage| usage.get("output_tokens"))
                    .and_then(Value::as_u64)
                {
                    builder.usage.output_tokens = output;
                }
            }
            "message_stop" => self.stopped = true,
            _ => {}
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Completion, String> {
        if !self.started {
            return Err(
                "the answer stream held no message_start (not an Anthropic event stream)".into(),
            );
        }
        if !self.stopped {
            return Err("the answer stream ended before message_stop (truncated)".into());
        }
        self.builder.done(FinishReason::Other)
    }
}

fn index_of(value: &Value) -> Result<u64, String> {
    value
        .get("index")
        .and_then(Value::as_u64)
        .ok_or_else(|| "sent a content block event without an index".to_string())
}

/// A non-streamed answer.
pub(super) fn whole(
    value: &Value,
    on_text: &mut (dyn FnMut(&str) + Send),
) -> Result<Completion, String> {
    if let Some(error) = error_of(value) {
        return Err(error);
    }
    let blocks = value
        .get("content")
        .and_then(Value::as_array)
        .ok_or("the answer has no `content` list")?;
    let mut builder = Builder::default();
    for (index, block) in blocks.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => builder.text(
                block.get("text").and_then(Value::as_str).unwrap_or(""),
                on_text,
            )?,
            Some("tool_use") => {
                let input = block.get("input").map(Value::to_string);
                builder.call_part(
                    index as u64,
                    block.get("id").and_then(Value::as_str),
                    block.get("name").and_then(Value::as_str),
                    input.as_deref(),
                )?;
            }
            _ => {}
        }
    }
    if let Some(usage) = value.get("usage") {
        builder.usage = usage_of(usage);
    }
    if let Some(reason) = value.get("stop_reason").and_then(Value::as_str) {
        builder.finish = Some(finish_reason(reason));
    }
    builder.done(FinishReason::Stop)
}

/// Tokens a `usage` object reports; cached input counts as input. Summed
/// saturating: the numbers are the provider's, not to be trusted.
fn usage_of(usage: &Value) -> Usage {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: count("input_tokens")
            .saturating_add(count("cache_creation_input_tokens"))
            .saturating_add(count("cache_read_input_tokens")),
        output_tokens: count("output_tokens"),
    }
}

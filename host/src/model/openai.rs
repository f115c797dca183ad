//! OpenAI's chat completions protocol (and every server compatible with it).

use super::{Builder, Completion, FinishReason, Message, Role, ToolDefinition, sse};
use crate::config::ModelBinding;
use serde_json::{Value, json};

/// The request body for `POST {base}/chat/completions`.
pub(super) fn request(
    binding: &ModelBinding,
    messages: &[Message],
    tools: &[ToolDefinition],
) -> Value {
    let messages: Vec<Value> = messages.iter().map(message).collect();
    let mut body = json!({
        "model": binding.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": schema(&tool.parameters),
                    }
                })
            })
            .collect();
        if let Some(parallel) = binding.parallel_tool_calls {
            body["parallel_tool_calls"] = json!(parallel);
        }
    }
    if let Some(max_tokens) = binding.max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    if let Some(temperature) = binding.temperature {
        body["temperature"] = json!(temperature);
    }
    if let Some(top_p) = binding.top_p {
        body["top_p"] = json!(top_p);
    }
    body
}

/// A tool's schema as JSON (an empty object schema if the text is not JSON).
pub(super) fn schema(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => value,
        _ => json!({"type": "object", "properties": {}}),
    }
}

fn message(message: &Message) -> Value {
    match message.role {
        Role::System => json!({"role": "system", "content": message.content}),
        Role::User => json!({"role": "user", "content": message.content}),
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": message.tool_call_id.clone().unwrap_or_default(),
            "content": message.content,
        }),
        Role::Assistant => {
            let mut out = json!({"role": "assistant", "content": message.content});
            if !message.tool_calls.is_empty() {
                if message.content.is_empty() {
                    out["content"] = Value::Null;
                }
                out["tool_calls"] = message
                    .tool_calls
                    .iter()
                    .map(|call| {
                        json!({
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        })
                    })
                    .collect();
            }
            out
        }
    }
}

fn finish_reason(text: &str) -> FinishReason {
    match text {
        "stop" => FinishReason::Stop,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// The provider's own error, if the value is one.
fn error_of(value: &Value) -> Option<String> {
    let error = value.get("error")?;
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .or(error.as_str())
        .unwrap_or("no message");
    Some(format!("the provider reported an error: {message}"))
}

fn usage(builder: &mut Builder, value: &Value) {
    if let Some(usage) = value.get("usage").filter(|usage| usage.is_object()) {
        let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
        builder.usage.input_tokens = count("prompt_tokens");
        builder.usage.output_tokens = count("completion_tokens");
    }
}

/// A streamed answer: `data: {chunk}` events, then `data: [DONE]`.
#[derive(Debug, Default)]
pub(super) struct Stream {
    builder: Builder,
    done: bool,
}

impl Stream {
    pub fn event(
        &mut self,
        event: &sse::Event,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), String> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if self.done {
            return Err("sent data after [DONE]".into());
        }
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
        if !value.is_object() {
            return Err("sent an event that is not a JSON object".into());
        }
        usage(&mut self.builder, &value);
        let choices = match value.get("choices") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(choices)) => choices,
            Some(_) => return Err("sent `choices` that is not a list".into()),
        };
        // One answer is asked for; only the first choice counts.
        let Some(choice) = choices
            .iter()
            .find(|choice| choice.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        else {
            return Ok(());
        };
        if let Some(delta) = choice.get("delta") {
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                self.builder.text(text, on_text)?;
            }
            if let Some(calls) = delta.get("tool_calls") {
                let calls = calls
                    .as_array()
                    .ok_or("sent `tool_calls` that is not a list")?;
                for (position, call) in calls.iter().enumerate() {
                    let index = call
                        .get("index")
                        .and_then(Value::as_u64)
                        .unwrap_or(position as u64);
                    let function = call.get("function");
                    let part =
                        |key: &str| function.and_then(|f| f.get(key)).and_then(Value::as_str);
                    self.builder.call_part(
                        index,
                        call.get("id").and_then(Value::as_str),
                        part("name"),
                        part("arguments"),
                    )?;
                }
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.builder.finish = Some(finish_reason(reason));
        }
        Ok(())
    }

    pub fn finish(self) -> Result<Completion, String> {
        if !self.done {
            return Err(
                "the answer stream ended before `data: [DONE]` (truncated or not an OpenAI \
                 event stream)"
                    .into(),
            );
        }
        if self.builder.finish.is_none()
            && self.builder.content.is_empty()
            && self.builder.calls.is_empty()
        {
            return Err("the answer stream held no answer (no choices)".into());
        }
        self.builder.done(FinishReason::Other)
    }
}

/// A non-streamed answer.
pub(super) fn whole(
    value: &Value,
    on_text: &mut (dyn FnMut(&str) + Send),
) -> Result<Completion, String> {
    if let Some(error) = error_of(value) {
        return Err(error);
    }
    let message = value
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|choices| choices.first())
        .ok_or("the answer has no `choices`")?;
    let mut builder = Builder::default();
    usage(&mut builder, value);
    let body = message
        .get("message")
        .ok_or("the answer's choice has no `message`")?;
    if let Some(text) = body.get("content").and_then(Value::as_str) {
        builder.text(text, on_text)?;
    }
    if let Some(calls) = body.get("tool_calls").and_then(Value::as_array) {
        for (index, call) in calls.iter().enumerate() {
            let function = call.get("function");
            let part = |key: &str| function.and_then(|f| f.get(key)).and_then(Value::as_str);
            builder.call_part(
                index as u64,
                call.get("id").and_then(Value::as_str),
                part("name"),
                part("arguments"),
            )?;
        }
    }
    if let Some(reason) = message.get("finish_reason").and_then(Value::as_str) {
        builder.finish = Some(finish_reason(reason));
    }
    builder.done(FinishReason::Stop)
}

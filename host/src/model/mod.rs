//! Model clients: the host calls the agent's model on its behalf, over
//! HTTPS, with the key read from the environment; the guest sees neither the
//! key, the URL nor the network. One [`ModelClient`] per agent; all share
//! one connection pool.
//!
//! A call streams the answer (server-sent events), hands each text delta to
//! the caller as it arrives, and assembles tool calls, usage and the finish
//! reason. Failures before the answer starts (429, 5xx, connection errors)
//! are retried with exponential backoff until the call's deadline. Dropping
//! the future aborts the request.

mod anthropic;
mod openai;
mod sse;

use crate::config::{ModelApi, ModelBinding};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// The calls an assistant message made.
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
}

impl Message {
    fn new(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.to_string(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
    pub fn system(content: &str) -> Message {
        Message::new(Role::System, content)
    }
    pub fn user(content: &str) -> Message {
        Message::new(Role::User, content)
    }
    pub fn assistant(content: &str, tool_calls: Vec<ToolCall>) -> Message {
        Message {
            tool_calls,
            ..Message::new(Role::Assistant, content)
        }
    }
    pub fn tool(call_id: &str, content: &str) -> Message {
        Message {
            tool_call_id: Some(call_id.to_string()),
            ..Message::new(Role::Tool, content)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    /// A JSON Schema, as text.
    pub parameters: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    ToolCalls,
    Length,
    ContentFilter,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
}

/// Why a call failed. The texts never contain the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// Still rate limited (429) when the deadline came.
    RateLimited(String),
    /// The provider failed, was unreachable, or answered with something
    /// that is not a valid answer.
    Provider(String),
    /// The provider refused the request as malformed (400, 404, 413, 422).
    InvalidRequest(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ModelError::RateLimited(text)
            | ModelError::Provider(text)
            | ModelError::InvalidRequest(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for ModelError {}

/// A key: never shown by `Debug`.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl Secret {
    /// `text` with every occurrence of the key replaced.
    fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "[redacted]")
        }
    }
}

/// Bytes of content and tool-call arguments one answer may carry.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Bytes of an error body read for its message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Characters of a provider's error message kept in ours.
const MAX_ERROR_TEXT: usize = 500;

/// The first retry's wait; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A client for one agent's model.
#[derive(Clone)]
pub struct ModelClient {
    inner: Arc<Inner>,
}

struct Inner {
    provider: String,
    model: String,
    api: ModelApi,
    /// The full endpoint URL.
    url: String,
    key: Option<Secret>,
    binding: ModelBinding,
    http: reqwest::Client,
}

impl fmt::Debug for ModelClient {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("ModelClient")
            .field("provider", &self.inner.provider)
            .field("model", &self.inner.model)
            .field("api", &self.inner.api)
            .field("url", &self.inner.url)
            .field("key", &self.inner.key)
            .finish()
    }
}

/// The connection pool the host's own HTTP requests share (model calls and
/// the fetch tool). Redirects are never followed automatically: a model
/// call's key must not reach another host, and each hop of a fetch is
/// checked against the agent's grants.
pub(crate) fn http_client() -> Result<reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            // Fails only if a provider is installed already, which is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .pool_idle_timeout(Duration::from_secs(60))
                .user_agent(concat!("bgagents/", env!("CARGO_PKG_VERSION")))
                // A redirect could carry the key's header to another host.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|error| format!("cannot set up the HTTP client: {error}"))
        })
        .clone()
}

/// What one attempt ended with.
enum Attempt {
    Done(Result<Completion, ModelError>),
    /// Worth another try (429, 5xx, connection failure), after at least
    /// the wait the server asked for.
    Retry {
        error: ModelError,
        after: Option<Duration>,
    },
}

impl ModelClient {
    /// A client for `binding`; the key is read from its variable now.
    pub fn new(binding: &ModelBinding) -> Result<ModelClient, String> {
        let key = match &binding.key_var {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(value) if !value.is_empty() => Some(Secret(value)),
                Ok(_) | Err(std::env::VarError::NotPresent) => {
                    return Err(format!(
                        "model {}: the API key variable {var} is not set; `export {var}=…` \
                         before running bgagents",
                        binding.name()
                    ));
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(format!(
                        "model {}: the API key variable {var} is not valid UTF-8",
                        binding.name()
                    ));
                }
            },
        };
        ModelClient::with_key(binding, key)
    }

    /// A client for `binding` with `key` (already read).
    fn with_key(binding: &ModelBinding, key: Option<Secret>) -> Result<ModelClient, String> {
        if let Some(key) = &key
            && reqwest::header::HeaderValue::from_str(&key.0).is_err()
        {
            return Err(format!(
                "model {}: the API key in {} contains characters an HTTP header cannot carry",
                binding.name(),
                binding.key_var.as_deref().unwrap_or_default()
            ));
        }
        let base = binding.base_url.trim_end_matches('/');
        let url = match binding.api {
            ModelApi::OpenAiChat => format!("{base}/chat/completions"),
            ModelApi::AnthropicMessages => format!("{base}/v1/messages"),
        };
        reqwest::Url::parse(&url)
            .map_err(|error| format!("model {}: bad endpoint {url}: {error}", binding.name()))?;
        Ok(ModelClient {
            inner: Arc::new(Inner {
                provider: binding.provider.clone(),
                model: binding.model.clone(),
                api: binding.api,
                url,
                key,
                binding: binding.clone(),
                http: http_client()?,
            }),
        })
    }

    /// `provider/model`.
    pub fn name(&self) -> String {
        self.inner.binding.name()
    }

    /// Asks the model for the next turn of `messages`, offering `tools`.
    /// Each text delta goes to `on_text` as it arrives. Fails past
    /// `deadline`; dropping the future aborts the request.
    pub async fn complete(
        &self,
        messages: &[Message],
        tools: &[ToolDefinition],
        deadline: Instant,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, ModelError> {
        let body = match self.inner.api {
            ModelApi::OpenAiChat => openai::request(&self.inner.binding, messages, tools),
            ModelApi::AnthropicMessages => anthropic::request(&self.inner.binding, messages, tools),
        };
        let body = serde_json::to_vec(&body).map_err(|error| {
            ModelError::InvalidRequest(format!(
                "{}: cannot encode the request: {error}",
                self.name()
            ))
        })?;
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let attempt = tokio::time::timeout_at(deadline, self.attempt(&body, on_text)).await;
            let (error, after) = match attempt {
                Err(_) => {
                    return Err(ModelError::Provider(format!(
                        "{}: no complete answer before the model call's deadline \
                         (limits.model_timeout)",
                        self.name()
                    )));
                }
                Ok(Attempt::Done(result)) => return result,
                Ok(Attempt::Retry { error, after }) => (error, after),
            };
            // The server's `retry-after` wins; a zero is taken as a short pause.
            let wait = after.map_or(backoff, |after| after.max(Duration::from_millis(50)));
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if Instant::now() + wait >= deadline {
                let gave_up = format!(
                    "{error} (gave up after {attempts} attempt(s): the model call's deadline, \
                     limits.model_timeout, comes before the next retry)"
                );
                return Err(match error {
                    ModelError::RateLimited(_) => ModelError::RateLimited(gave_up),
                    ModelError::InvalidRequest(_) => ModelError::InvalidRequest(gave_up),
                    ModelError::Provider(_) => ModelError::Provider(gave_up),
                });
            }
            tracing::debug!(model = %self.name(), %error, ?wait, "model call retried");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, body: &[u8], on_text: &mut (dyn FnMut(&str) + Send)) -> Attempt {
        let inner = &*self.inner;
        let mut request = inner
            .http
            .post(&inner.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                reqwest::header::ACCEPT,
                "text/event-stream, application/json",
            )
            .body(body.to_vec());
        request = match (inner.api, &inner.key) {
            (ModelApi::OpenAiChat, Some(key)) => request.header(
                reqwest::header::AUTHORIZATION,
                sensitive(&format!("Bearer {}", key.0)),
            ),
            (ModelApi::AnthropicMessages, key) => {
                let request = request.header("anthropic-version", "2023-06-01");
                match key {
                    Some(key) => request.header("x-api-key", sensitive(&key.0)),
                    None => request,
                }
            }
            (ModelApi::OpenAiChat, None) => request,
        };
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let error = ModelError::Provider(self.scrub(&format!(
                    "{}: cannot reach {}: {}",
                    self.name(),
                    self.endpoint(),
                    describe_reqwest(&error)
                )));
                return Attempt::Retry { error, after: None };
            }
        };
        let status = response.status();
        if !status.is_success() {
            let after = retry_after(response.headers());
            let text = self.error_text(&mut response).await;
            let message = format!("{}: the provider answered {status}{text}", self.name());
            return match status.as_u16() {
                429 => Attempt::Retry {
                    error: ModelError::RateLimited(message),
                    after,
                },
                408 | 500..=599 => Attempt::Retry {
                    error: ModelError::Provider(message),
                    after,
                },
                400 | 404 | 413 | 422 => Attempt::Done(Err(ModelError::InvalidRequest(message))),
                401 | 403 => Attempt::Done(Err(ModelError::Provider(format!(
                    "{message} — the key was refused; check {}",
                    inner
                        .binding
                        .key_var
                        .as_deref()
                        .unwrap_or("the provider's settings")
                )))),
                _ => Attempt::Done(Err(ModelError::Provider(message))),
            };
        }
        let streamed = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        let result = if streamed {
            self.read_stream(&mut response, on_text).await
        } else {
            self.read_whole(&mut response, on_text).await
        };
        Attempt::Done(result.map_err(|why| ModelError::Provider(self.scrub(&why))))
    }

    async fn read_stream(
        &self,
        response: &mut reqwest::Response,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, String> {
        let mut decode = Decode::new(self.inner.api, &self.name());
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => decode.feed(&chunk, on_text)?,
                Ok(None) => return decode.finish(on_text),
                Err(error) => {
                    return Err(format!(
                        "{}: the answer stream broke off: {}",
                        self.name(),
                        describe_reqwest(&error)
                    ));
                }
            }
        }
    }

    async fn read_whole(
        &self,
        response: &mut reqwest::Response,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, String> {
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_ANSWER_BYTES {
                        return Err(format!(
                            "{}: the answer is larger than {} MiB",
                            self.name(),
                            MAX_ANSWER_BYTES >> 20
                        ));
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    return Err(format!(
                        "{}: the answer broke off: {}",
                        self.name(),
                        describe_reqwest(&error)
                    ));
                }
            }
        }
        decode_whole(self.inner.api, &self.name(), &body, on_text)
    }

    /// The gist of an error body: its `error.message`, or its start.
    async fn error_text(&self, response: &mut reqwest::Response) -> String {
        let mut body = Vec::new();
        while body.len() < MAX_ERROR_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&body);
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|value| {
                let error = value.get("error")?;
                error
                    .get("message")
                    .and_then(|message| message.as_str())
                    .or(error.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| text.trim().to_string());
        // Scrubbed before and after cleaning: cleaning drops invisible
        // characters, which could otherwise hide a key from the first pass.
        let message = self.scrub(&printable(&self.scrub(&message)));
        if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        }
    }

    fn endpoint(&self) -> String {
        self.inner.binding.endpoint_host()
    }

    fn scrub(&self, text: &str) -> String {
        match &self.inner.key {
            Some(key) => key.scrub(text),
            None => text.to_string(),
        }
    }
}

/// A header value marked sensitive (kept out of reqwest's own Debug output).
fn sensitive(value: &str) -> reqwest::header::HeaderValue {
    // Checked in `new`.
    let mut value = reqwest::header::HeaderValue::from_str(value)
        .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
    value.set_sensitive(true);
    value
}

/// A reqwest error in one line, with its causes (without the URL).
fn describe_reqwest(error: &reqwest::Error) -> String {
    let mut text = if error.is_connect() {
        "connection failed".to_string()
    } else if error.is_timeout() {
        "timed out".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    printable(&text)
}

/// `retry-after` in seconds (HTTP dates are treated as absent), capped.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

/// Provider text made safe for one line of a message: cut, with control
/// and invisible characters dropped.
fn printable(text: &str) -> String {
    let mut out = String::new();
    for (index, c) in text.chars().enumerate() {
        if index == MAX_ERROR_TEXT {
            out.push('…');
            break;
        }
        if c == '\n' || c == '\t' {
            out.push(' ');
        } else if !crate::text::acts_on_terminal(c) {
            out.push(c);
        }
    }
    out
}

/// Assembles an answer from deltas, within [`MAX_ANSWER_BYTES`].
#[derive(Debug, Default)]
struct Builder {
    content: String,
    /// Calls by position (OpenAI's `index`, Anthropic's block index).
    calls: Vec<(u64, ToolCall)>,
    bytes: usize,
    finish: Option<FinishReason>,
    usage: Usage,
}

impl Builder {
    fn count(&mut self, added: usize) -> Result<(), String> {
        self.bytes += added;
        if self.bytes > MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer is larger than {} MiB",
                MAX_ANSWER_BYTES >> 20
            ));
        }
        Ok(())
    }

    fn text(&mut self, text: &str, on_text: &mut (dyn FnMut(&str) + Send)) -> Result<(), String> {
        if text.is_empty() {
            return Ok(());
        }
        self.count(text.len())?;
        self.content.push_str(text);
        on_text(text);
        Ok(())
    }

    /// The call at `index`, started if new.
    fn call(&mut self, index: u64) -> Result<&mut ToolCall, String> {
        let position = match self.calls.iter().position(|(at, _)| *at == index) {
            Some(position) => position,
            None => {
                if self.calls.len() >= 1024 {
                    return Err("the answer has more than 1024 tool calls".into());
                }
                self.calls.push((
                    index,
                    ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    },
                ));
                self.calls.len() - 1
            }
        };
        Ok(&mut self.calls[position].1)
    }

    fn call_part(
        &mut self,
        index: u64,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
    ) -> Result<(), String> {
        let added =
            id.map_or(0, str::len) + name.map_or(0, str::len) + arguments.map_or(0, str::len);
        self.count(added)?;
        let call = self.call(index)?;
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            call.id = id.to_string();
        }
        if let Some(name) = name {
            call.name.push_str(name);
        }
        if let Some(arguments) = arguments {
            call.arguments.push_str(arguments);
        }
        Ok(())
    }

    fn done(self, default_finish: FinishReason) -> Result<Completion, String> {
        let mut tool_calls = Vec::new();
        for (position, (_, mut call)) in self.calls.into_iter().enumerate() {
            if call.name.is_empty() {
                return Err(format!("tool call {position} has no name"));
            }
            if call.id.is_empty() {
                call.id = format!("call_{position}");
            }
            if call.arguments.trim().is_empty() {
                call.arguments = "{}".into();
            }
            tool_calls.push(call);
        }
        let finish_reason = match self.finish {
            Some(reason) => reason,
            None if !tool_calls.is_empty() => FinishReason::ToolCalls,
            None => default_finish,
        };
        Ok(Completion {
            content: self.content,
            tool_calls,
            finish_reason,
            usage: self.usage,
        })
    }
}

/// A streamed answer being decoded, protocol by protocol.
struct Decode {
    name: String,
    sse: sse::Decoder,
    protocol: Protocol,
}

enum Protocol {
    OpenAi(openai::Stream),
    Anthropic(anthropic::Stream),
}

impl Decode {
    fn new(api: ModelApi, name: &str) -> Decode {
        Decode {
            name: name.to_string(),
            sse: sse::Decoder::default(),
            protocol: match api {
                ModelApi::OpenAiChat => Protocol::OpenAi(openai::Stream::default()),
                ModelApi::AnthropicMessages => Protocol::Anthropic(anthropic::Stream::default()),
            },
        }
    }

    fn feed(&mut self, bytes: &[u8], on_text: &mut (dyn FnMut(&str) + Send)) -> Result<(), String> {
        let events = self.sse.feed(bytes).map_err(|why| self.wrap(&why))?;
        for event in events {
            self.event(&event, on_text)?;
        }
        Ok(())
    }

    fn event(
        &mut self,
        event: &sse::Event,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), String> {
        let result = match &mut self.protocol {
            Protocol::OpenAi(stream) => stream.event(event, on_text),
            Protocol::Anthropic(stream) => stream.event(event, on_text),
        };
        result.map_err(|why| self.wrap(&why))
    }

    fn finish(mut self, on_text: &mut (dyn FnMut(&str) + Send)) -> Result<Completion, String> {
        if let Some(event) = self.sse.finish().map_err(|why| self.wrap(&why))? {
            self.event(&event, on_text)?;
        }
        let name = self.name;
        let result = match self.protocol {
            Protocol::OpenAi(stream) => stream.finish(),
            Protocol::Anthropic(stream) => stream.finish(),
        };
        result.map_err(|why| format!("{name}: {why}"))
    }

    fn wrap(&self, why: &str) -> String {
        format!("{}: {}", self.name, printable(why))
    }
}

/// An answer that came as one JSON body (the provider did not stream).
fn decode_whole(
    api: ModelApi,
    name: &str,
    body: &[u8],
    on_text: &mut (dyn FnMut(&str) + Send),
) -> Result<Completion, String> {
    let text =
        std::str::from_utf8(body).map_err(|_| format!("{name}: the answer is not valid UTF-8"))?;
    // The answer is not quoted: it could carry the key, cut where no
    // scrubbing would find it.
    let value: serde_json::Value = serde_json::from_str(text).map_err(|error| {
        format!(
            "{name}: the answer is neither an event stream nor JSON ({error}; {} bytes)",
            text.len()
        )
    })?;
    let result = match api {
        ModelApi::OpenAiChat => openai::whole(&value, on_text),
        ModelApi::AnthropicMessages => anthropic::whole(&value, on_text),
    };
    result.map_err(|why| format!("{name}: {}", printable(&why)))
}

/// Decodes a whole response body as the client would (for tests): SSE when
/// `streamed`, else one JSON answer.
#[cfg(test)]
fn decode_body(
    api: ModelApi,
    chunks: &[&[u8]],
    streamed: bool,
    on_text: &mut (dyn FnMut(&str) + Send),
) -> Result<Completion, String> {
    if streamed {
        let mut decode = Decode::new(api, "test/model");
        for chunk in chunks {
            decode.feed(chunk, on_text)?;
        }
        decode.finish(on_text)
    } else {
        decode_whole(api, "test/model", &chunks.concat(), on_text)
    }
}

#[cfg(test)]
mod tests;

//! A scripted model server for tests: it speaks the OpenAI chat completions
//! and the Anthropic Messages wire protocols on 127.0.0.1, and answers each
//! request with the next turn of a script written by the test.
//!
//! ```ignore
//! let server = ModelServer::start(Script::new([
//!     Turn::tool_calls([("read_file", r#"{"path":"a.txt"}"#)]),
//!     Turn::text("Done."),
//! ]))
//! .await;
//! // An OpenAI client posts to {base_url}/chat/completions,
//! // an Anthropic client to {anthropic_base_url}/v1/messages.
//! let openai_base = server.base_url(); // http://127.0.0.1:PORT/v1
//! let anthropic_base = server.anthropic_base_url(); // http://127.0.0.1:PORT
//! // ... run the code under test ...
//! let seen = server.wait_for_requests(2, Duration::from_secs(5)).await;
//! assert_eq!(seen[0].header("authorization"), Some("Bearer test-key"));
//! ```
//!
//! How a request is answered:
//! - `POST` to a path ending in `/chat/completions` is an OpenAI request,
//!   `POST` to a path ending in `/messages` an Anthropic one. Any other path
//!   gets 404 and takes no turn. The body must be JSON (else 400, no turn).
//! - Each answered request takes the next turn. The turn is written in the
//!   request's protocol, streamed (server-sent events) when the body has
//!   `"stream": true`, one JSON body otherwise. OpenAI streams end with a
//!   usage chunk when `stream_options.include_usage` is true, then
//!   `data: [DONE]`.
//! - With [`Script::per_model`], the turn comes from the script for the
//!   body's `model` field, so agents running in parallel each see their own
//!   order. A model with no script gets 500.
//! - When the script is exhausted the answer is 500 with a body saying
//!   "script exhausted", in the protocol's error shape.
//! - Tool-call ids are `call_1`, `call_2`, … (OpenAI) and `toolu_1`, … (Anthropic),
//!   numbered per script (per model with routing) in the order they are sent.
//! - Text is streamed a word at a time, tool-call arguments in pieces of at
//!   most 8 characters; clients must concatenate the deltas.
//! - Usage defaults to about a token per 4 bytes: the request body for the
//!   input, the text and arguments for the output; [`Turn::usage`] sets it.
//!
//! Every request is recorded ([`ModelServer::requests`]) with its method,
//! path, all headers and JSON body. When the client closes the connection
//! during a turn's delay or between stream chunks, the request's outcome
//! becomes [`Outcome::ClientClosed`] ([`ModelServer::aborted`]). A close is
//! only seen while the server waits, so give the turn a `delay` or
//! `chunk_delay` when a test needs to see it.

use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Turn {
    kind: Kind,
    delay: Duration,
    chunk_delay: Duration,
    usage: Option<(u64, u64)>,
    truncate: Option<Truncate>,
}

#[derive(Clone, Debug)]
enum Kind {
    Reply {
        text: Option<String>,
        calls: Vec<(String, String)>,
    },
    Error {
        status: u16,
        body: ErrorBody,
        retry_after: Option<String>,
        location: Option<String>,
    },
    Garbage(Vec<u8>),
    /// Decided when the request arrives, from its JSON body.
    FromRequest(TurnFn),
}

/// Picks a turn from a request's body.
#[derive(Clone)]
pub struct TurnFn(std::sync::Arc<dyn Fn(&Value) -> Turn + Send + Sync>);

impl std::fmt::Debug for TurnFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnFn")
    }
}

#[derive(Clone, Debug)]
enum ErrorBody {
    Raw(String),
    Message(String),
}

#[derive(Clone, Copy, Debug)]
enum Truncate {
    BeforeEnd,
    AfterEvents(usize),
}

impl Turn {
    fn new(kind: Kind) -> Turn {
        Turn {
            kind,
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            usage: None,
            truncate: None,
        }
    }

    /// A turn chosen when the request arrives, from its JSON body: for
    /// answers that depend on what the client sent (ids it was given).
    pub fn from_request(pick: impl Fn(&Value) -> Turn + Send + Sync + 'static) -> Turn {
        Turn::new(Kind::FromRequest(TurnFn(std::sync::Arc::new(pick))))
    }

    /// The model answers `text` and stops.
    pub fn text(text: impl Into<String>) -> Turn {
        Turn::new(Kind::Reply {
            text: Some(text.into()),
            calls: Vec::new(),
        })
    }

    /// The model calls tools: `(name, arguments as a JSON string)`, in order.
    /// Add text before the calls with [`Turn::with_text`].
    pub fn tool_calls<I, N, A>(calls: I) -> Turn
    where
        I: IntoIterator<Item = (N, A)>,
        N: Into<String>,
        A: Into<String>,
    {
        Turn::new(Kind::Reply {
            text: None,
            calls: calls
                .into_iter()
                .map(|(n, a)| (n.into(), a.into()))
                .collect(),
        })
    }

    /// An HTTP error with exactly this body (sent as `application/json`).
    pub fn error(status: u16, body: impl Into<String>) -> Turn {
        Turn::new(Kind::Error {
            status,
            body: ErrorBody::Raw(body.into()),
            retry_after: None,
            location: None,
        })
    }

    /// A `307 Temporary Redirect` to `location` (a client must not follow
    /// it with the key).
    pub fn redirect(location: impl Into<String>) -> Turn {
        Turn::new(Kind::Error {
            status: 307,
            body: ErrorBody::Raw(String::new()),
            retry_after: None,
            location: Some(location.into()),
        })
    }

    /// An HTTP error whose body is the protocol's error object carrying
    /// `message` (`{"error":{"message",…}}` for OpenAI,
    /// `{"type":"error","error":{"type","message"}}` for Anthropic).
    pub fn api_error(status: u16, message: impl Into<String>) -> Turn {
        Turn::new(Kind::Error {
            status,
            body: ErrorBody::Message(message.into()),
            retry_after: None,
            location: None,
        })
    }

    /// A 200 whose body is `bytes`, not the protocol (content type as the
    /// request's mode expects: JSON or event stream).
    pub fn garbage(bytes: impl Into<Vec<u8>>) -> Turn {
        Turn::new(Kind::Garbage(bytes.into()))
    }

    /// A text answer that stops before its end: a stream has every content
    /// event but not the final ones (no `finish_reason` chunk and no
    /// `[DONE]`; no `message_delta` and no `message_stop`); a JSON answer is
    /// cut in half and the connection closed. See [`Turn::truncate_after`].
    pub fn truncated_stream(text: impl Into<String>) -> Turn {
        Turn::text(text).truncated()
    }

    /// This turn stops before its end, as in [`Turn::truncated_stream`].
    pub fn truncated(mut self) -> Turn {
        self.truncate = Some(Truncate::BeforeEnd);
        self
    }

    /// A stream stops after `events` server-sent events (the body then ends
    /// normally); a JSON answer is cut in half as with [`Turn::truncated`].
    pub fn truncate_after(mut self, events: usize) -> Turn {
        self.truncate = Some(Truncate::AfterEvents(events));
        self
    }

    /// Text sent before the tool calls of a [`Turn::tool_calls`] turn.
    pub fn with_text(mut self, text: impl Into<String>) -> Turn {
        if let Kind::Reply { text: t, .. } = &mut self.kind {
            *t = Some(text.into());
        }
        self
    }

    /// Adds a `retry-after` header (seconds, or an HTTP date) to an error.
    pub fn retry_after(mut self, value: impl Into<String>) -> Turn {
        if let Kind::Error { retry_after, .. } = &mut self.kind {
            *retry_after = Some(value.into());
        }
        self
    }

    /// Waits this long before answering (before the status line).
    pub fn delay(mut self, delay: Duration) -> Turn {
        self.delay = delay;
        self
    }

    /// Waits this long between two events of a stream.
    pub fn chunk_delay(mut self, delay: Duration) -> Turn {
        self.chunk_delay = delay;
        self
    }

    /// The usage reported: input (prompt) and output (completion) tokens.
    pub fn usage(mut self, input: u64, output: u64) -> Turn {
        self.usage = Some((input, output));
        self
    }
}

/// The turns a server answers with.
#[derive(Clone, Debug)]
pub struct Script {
    routing: Routing,
}

#[derive(Clone, Debug)]
enum Routing {
    Ordered(Queue),
    PerModel(HashMap<String, Queue>),
}

#[derive(Clone, Debug, Default)]
struct Queue {
    turns: VecDeque<Turn>,
    next_call: usize,
}

impl Queue {
    fn new(turns: impl IntoIterator<Item = Turn>) -> Queue {
        Queue {
            turns: turns.into_iter().collect(),
            next_call: 0,
        }
    }
}

impl Script {
    /// One script: request n (any model, any protocol) gets turn n.
    pub fn new(turns: impl IntoIterator<Item = Turn>) -> Script {
        Script {
            routing: Routing::Ordered(Queue::new(turns)),
        }
    }

    /// A script per model name, chosen by the request body's `model` field.
    pub fn per_model<I, M, T>(scripts: I) -> Script
    where
        I: IntoIterator<Item = (M, T)>,
        M: Into<String>,
        T: IntoIterator<Item = Turn>,
    {
        Script {
            routing: Routing::PerModel(
                scripts
                    .into_iter()
                    .map(|(m, t)| (m.into(), Queue::new(t)))
                    .collect(),
            ),
        }
    }
}

/// Which wire protocol a request used, by its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `…/chat/completions`
    OpenAi,
    /// `…/messages`
    Anthropic,
    /// Any other path (answered 404).
    Other,
}

/// What became of a request's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still being answered.
    Answering,
    /// Written in full (as scripted, truncation included).
    Done,
    /// The client closed the connection before the answer was written.
    ClientClosed,
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The path with any query string, e.g. `/v1/chat/completions`.
    pub path: String,
    /// Every header in order, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Value::Null` when it was not JSON).
    pub body: Value,
    pub protocol: Protocol,
    pub outcome: Outcome,
}

impl Received {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's `model` field.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// Whether the body asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// The names of the tools the request offered the model, sorted
    /// (either protocol's shape).
    pub fn tool_names(&self) -> Vec<String> {
        let tools = self.body["tools"].as_array().cloned().unwrap_or_default();
        let mut names: Vec<String> = tools
            .iter()
            .map(|tool| {
                let name = tool["function"]["name"].as_str().or(tool["name"].as_str());
                name.unwrap_or_default().to_string()
            })
            .collect();
        names.sort();
        names
    }

    /// The text of each message with `role`, in order (OpenAI's shape:
    /// `system`, `user`, `assistant`, `tool`).
    pub fn contents(&self, role: &str) -> Vec<String> {
        let messages = self.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        messages
            .iter()
            .filter(|message| message["role"] == role)
            .map(|message| match &message["content"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    /// Every tool result the conversation carried back to the model, in
    /// order (OpenAI's `tool` messages).
    pub fn tool_results(&self) -> Vec<String> {
        self.contents("tool")
    }
}

struct State {
    script: Mutex<Routing>,
    requests: Mutex<Vec<Received>>,
    changed: Notify,
}

impl State {
    fn set_outcome(&self, index: usize, outcome: Outcome) {
        self.requests.lock().unwrap()[index].outcome = outcome;
        self.changed.notify_waiters();
    }
}

/// A running scripted model server; it stops when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ModelServer {
    /// Binds 127.0.0.1 on a free port and serves `script` on a tokio task.
    pub async fn start(script: Script) -> ModelServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            script: Mutex::new(script.routing),
            requests: Mutex::new(Vec::new()),
            changed: Notify::new(),
        });
        let served = state.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) ends every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            let _ = stream.set_nodelay(true);
                            connections.spawn(serve(served.clone(), stream));
                        }
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        ModelServer { addr, state, task }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`; clients post to
    /// `{base}/chat/completions`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Anthropic base URL, `http://127.0.0.1:PORT`; clients post to
    /// `{base}/v1/messages`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    /// How many answers the client cut short by closing the connection.
    pub fn aborted(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.outcome == Outcome::ClientClosed)
            .count()
    }

    /// Turns not yet used (over all models with routing).
    pub fn remaining(&self) -> usize {
        match &*self.state.script.lock().unwrap() {
            Routing::Ordered(q) => q.turns.len(),
            Routing::PerModel(m) => m.values().map(|q| q.turns.len()).sum(),
        }
    }

    /// Waits until at least `n` requests have arrived and returns them all;
    /// panics after `timeout`.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(timeout, |r| r.len() >= n, &format!("{n} requests"))
            .await
    }

    /// Waits until at least `n` answers were cut short by the client;
    /// panics after `timeout`.
    pub async fn wait_for_aborted(&self, n: usize, timeout: Duration) -> Vec<Received> {
        self.wait_until(
            timeout,
            |r| {
                r.iter()
                    .filter(|r| r.outcome == Outcome::ClientClosed)
                    .count()
                    >= n
            },
            &format!("{n} answers closed by the client"),
        )
        .await
    }

    async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
        what: &str,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let seen = self.requests();
            if done(&seen) {
                return seen;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "model server: waited {timeout:?} for {what}; received: {:#?}",
                    self.requests()
                );
            }
        }
    }
}

/// One connection: requests are read and answered in turn (keep-alive).
struct Conn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: Vec<u8>,
}

struct ClientClosed;

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn serve(state: Arc<State>, stream: TcpStream) {
    let (rd, wr) = stream.into_split();
    let mut conn = Conn {
        rd,
        wr,
        buf: Vec::new(),
    };
    while let Some(req) = conn.read_request().await {
        let close = req
            .headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        match answer(&state, &mut conn, req).await {
            Ok(true) if !close => {}
            _ => break,
        }
    }
    let _ = conn.wr.shutdown().await;
}

impl Conn {
    async fn fill(&mut self) -> bool {
        Conn::fill_ref(&mut self.rd, &mut self.buf).await
    }

    async fn read_request(&mut self) -> Option<Request> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let method = first.next()?.to_string();
        let path = first.next()?.to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            self.wr
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .ok()?;
        }
        let body = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                if let Some((body, used)) = dechunk(&self.buf) {
                    self.buf.drain(..used);
                    break body;
                }
                if !self.fill().await {
                    return None;
                }
            }
        } else {
            let len: usize = get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while self.buf.len() < len {
                if !self.fill().await {
                    return None;
                }
            }
            self.buf.drain(..len).collect()
        };
        Some(Request {
            method,
            path,
            headers,
            body,
        })
    }

    /// Sleeps `d`, watching for the client closing the connection.
    async fn pause(&mut self, d: Duration) -> Result<(), ClientClosed> {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                more = Conn::fill_ref(&mut self.rd, &mut self.buf) => {
                    if !more {
                        return Err(ClientClosed);
                    }
                }
            }
        }
        Ok(())
    }

    async fn fill_ref(rd: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> bool {
        let mut tmp = [0u8; 8192];
        match rd.read(&mut tmp).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ClientClosed> {
        self.wr.write_all(bytes).await.map_err(|_| ClientClosed)?;
        self.wr.flush().await.map_err(|_| ClientClosed)
    }

    async fn write_head(
        &mut self,
        status: u16,
        headers: &[(&str, String)],
    ) -> Result<(), ClientClosed> {
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.write(head.as_bytes()).await
    }

    /// A complete response with a Content-Length body.
    async fn respond(
        &mut self,
        status: u16,
        content_type: &str,
        extra: Vec<(&str, String)>,
        body: &[u8],
    ) -> Result<(), ClientClosed> {
        let mut headers = vec![
            ("content-type", content_type.to_string()),
            ("content-length", body.len().to_string()),
        ];
        headers.extend(extra);
        self.write_head(status, &headers).await?;
        self.write(body).await
    }

    async fn write_chunk(&mut self, data: &[u8]) -> Result<(), ClientClosed> {
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        self.write(&chunk).await
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a complete chunked body at the start of `buf`: (body, bytes used).
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&buf[at..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&buf[at..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers end with an empty line.
            let end = find(&buf[at..], b"\r\n")?;
            if end == 0 {
                return Some((body, at + 2));
            }
            let end = find(&buf[at..], b"\r\n\r\n")?;
            return Some((body, at + end + 4));
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Status",
    }
}

fn error_json(protocol: Protocol, status: u16, message: &str) -> String {
    match protocol {
        Protocol::Anthropic => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        _ => {
            let kind = match status {
                400 | 404 => "invalid_request_error",
                401 => "authentication_error",
                429 => "rate_limit_exceeded",
                _ => "server_error",
            };
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
    }
    .to_string()
}

/// Answers one request; Ok(true) when the connection may serve another.
async fn answer(state: &State, conn: &mut Conn, req: Request) -> Result<bool, ClientClosed> {
    let protocol = if req
        .path
        .split('?')
        .next()
        .unwrap()
        .ends_with("/chat/completions")
    {
        Protocol::OpenAi
    } else if req.path.split('?').next().unwrap().ends_with("/messages") {
        Protocol::Anthropic
    } else {
        Protocol::Other
    };
    let parsed: Option<Value> = serde_json::from_slice(&req.body).ok();
    let index = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(Received {
            method: req.method.clone(),
            path: req.path.clone(),
            headers: req.headers.clone(),
            body: parsed.clone().unwrap_or(Value::Null),
            protocol,
            outcome: Outcome::Answering,
        });
        requests.len() - 1
    };
    state.changed.notify_waiters();
    let json_type = "application/json";

    let result = async {
        if protocol == Protocol::Other || req.method != "POST" {
            let msg = format!(
                "model server: no route for {} {} (POST …/chat/completions or …/messages)",
                req.method, req.path
            );
            conn.respond(
                404,
                json_type,
                vec![],
                error_json(protocol, 404, &msg).as_bytes(),
            )
            .await?;
            return Ok(true);
        }
        let Some(body) = parsed else {
            let msg = "model server: the request body is not JSON";
            conn.respond(
                400,
                json_type,
                vec![],
                error_json(protocol, 400, msg).as_bytes(),
            )
            .await?;
            return Ok(true);
        };
        let model = body.get("model").and_then(Value::as_str).unwrap_or("");
        let taken = {
            let mut script = state.script.lock().unwrap();
            match &mut *script {
                Routing::Ordered(q) => take(q, index, &body),
                Routing::PerModel(m) => match m.get_mut(model) {
                    Some(q) => take(q, index, &body),
                    None => Err(format!(
                        "model server: no script for model {model:?} (request {})",
                        index + 1
                    )),
                },
            }
        };
        let (turn, first_call) = match taken {
            Ok(t) => t,
            Err(msg) => {
                conn.respond(
                    500,
                    json_type,
                    vec![],
                    error_json(protocol, 500, &msg).as_bytes(),
                )
                .await?;
                return Ok(true);
            }
        };
        conn.pause(turn.delay).await?;
        let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
        play(
            conn,
            protocol,
            &body,
            req.body.len(),
            index,
            turn,
            first_call,
            stream,
        )
        .await
    }
    .await;
    state.set_outcome(
        index,
        if result.is_ok() {
            Outcome::Done
        } else {
            Outcome::ClientClosed
        },
    );
    result
}

/// The next turn of `q` and the number of its first tool call.
fn take(q: &mut Queue, index: usize, body: &Value) -> Result<(Turn, usize), String> {
    let mut turn = q.turns.pop_front().ok_or_else(|| {
        format!(
            "model server: script exhausted (request {} has no turn left)",
            index + 1
        )
    })?;
    while let Kind::FromRequest(pick) = &turn.kind {
        turn = (pick.0)(body);
    }
    let first = q.next_call + 1;
    if let Kind::Reply { calls, .. } = &turn.kind {
        q.next_call += calls.len();
    }
    Ok((turn, first))
}

/// Text pieces as streamed: a word with its following whitespace.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_space = false;
    for c in text.chars() {
        if !c.is_whitespace() && in_space {
            out.push(std::mem::take(&mut cur));
            in_space = false;
        }
        if c.is_whitespace() {
            in_space = true;
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Argument pieces as streamed: at most 8 characters each.
fn pieces(args: &str) -> Vec<String> {
    let chars: Vec<char> = args.chars().collect();
    chars.chunks(8).map(|c| c.iter().collect()).collect()
}

#[allow(clippy::too_many_arguments)]
async fn play(
    conn: &mut Conn,
    protocol: Protocol,
    body: &Value,
    body_len: usize,
    index: usize,
    turn: Turn,
    first_call: usize,
    stream: bool,
) -> Result<bool, ClientClosed> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let event_type = "text/event-stream";
    let json_type = "application/json";
    let content_type = if stream { event_type } else { json_type };
    let (text, calls) = match &turn.kind {
        Kind::Error {
            status,
            body,
            retry_after,
            location,
        } => {
            let body = match body {
                ErrorBody::Raw(b) => b.clone(),
                ErrorBody::Message(m) => error_json(protocol, *status, m),
            };
            let extra = (retry_after.iter().map(|v| ("retry-after", v.clone())))
                .chain(location.iter().map(|v| ("location", v.clone())))
                .collect();
            conn.respond(*status, json_type, extra, body.as_bytes())
                .await?;
            return Ok(true);
        }
        Kind::Garbage(bytes) => {
            conn.respond(200, content_type, vec![], bytes).await?;
            return Ok(true);
        }
        Kind::Reply { text, calls } => (text.clone(), calls.clone()),
        Kind::FromRequest(_) => unreachable!("resolved when the turn was taken"),
    };
    let out_chars = text.as_deref().map_or(0, str::len)
        + calls.iter().map(|(n, a)| n.len() + a.len()).sum::<usize>();
    let (input, output) = turn.usage.unwrap_or((
        body_len.div_ceil(4).max(1) as u64,
        out_chars.div_ceil(4).max(1) as u64,
    ));
    let ids: Vec<String> = (0..calls.len())
        .map(|i| match protocol {
            Protocol::Anthropic => format!("toolu_{}", first_call + i),
            _ => format!("call_{}", first_call + i),
        })
        .collect();
    let n = index + 1;

    if !stream {
        let json = match protocol {
            Protocol::Anthropic => {
                let mut content = Vec::new();
                if let Some(t) = &text {
                    content.push(json!({"type": "text", "text": t}));
                }
                for ((name, args), id) in calls.iter().zip(&ids) {
                    let input = serde_json::from_str::<Value>(args)
                        .unwrap_or_else(|_| Value::String(args.clone()));
                    content
                        .push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                }
                json!({
                    "id": format!("msg_{n}"),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": if calls.is_empty() { "end_turn" } else { "tool_use" },
                    "stop_sequence": null,
                    "usage": {"input_tokens": input, "output_tokens": output},
                })
            }
            _ => {
                let mut message = json!({"role": "assistant", "content": text, "refusal": null});
                if !calls.is_empty() {
                    message["tool_calls"] = calls
                        .iter()
                        .zip(&ids)
                        .map(|((name, args), id)| {
                            json!({"id": id, "type": "function",
                                   "function": {"name": name, "arguments": args}})
                        })
                        .collect();
                }
                json!({
                    "id": format!("chatcmpl-{n}"),
                    "object": "chat.completion",
                    "created": 1_700_000_000 + n,
                    "model": model,
                    "choices": [{
                        "index": 0,
                        "message": message,
                        "logprobs": null,
                        "finish_reason": if calls.is_empty() { "stop" } else { "tool_calls" },
                    }],
                    "usage": {"prompt_tokens": input, "completion_tokens": output,
                              "total_tokens": input + output},
                })
            }
        };
        let bytes = json.to_string().into_bytes();
        if turn.truncate.is_some() {
            let headers = [
                ("content-type", json_type.to_string()),
                ("content-length", bytes.len().to_string()),
            ];
            conn.write_head(200, &headers).await?;
            conn.write(&bytes[..bytes.len() / 2]).await?;
            return Ok(false);
        }
        conn.respond(200, json_type, vec![], &bytes).await?;
        return Ok(true);
    }

    // Events as (anthropic event name or "" for OpenAI, data); `body_end`
    // is the number of events before the final ones.
    let mut events: Vec<(&str, String)> = Vec::new();
    let body_end;
    match protocol {
        Protocol::Anthropic => {
            let ev = |v: Value| v.to_string();
            events.push((
                "message_start",
                ev(json!({"type": "message_start", "message": {
                    "id": format!("msg_{n}"), "type": "message", "role": "assistant",
                    "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": input, "output_tokens": 1}}})),
            ));
            let mut block = 0;
            if let Some(t) = &text {
                events.push((
                    "content_block_start",
                    ev(json!({"type": "content_block_start", "index": block,
                              "content_block": {"type": "text", "text": ""}})),
                ));
                events.push(("ping", ev(json!({"type": "ping"}))));
                for w in words(t) {
                    events.push((
                        "content_block_delta",
                        ev(json!({"type": "content_block_delta", "index": block,
                                  "delta": {"type": "text_delta", "text": w}})),
                    ));
                }
                events.push((
                    "content_block_stop",
                    ev(json!({"type": "content_block_stop", "index": block})),
                ));
                block += 1;
            }
            for ((name, args), id) in calls.iter().zip(&ids) {
                events.push((
                    "content_block_start",
                    ev(json!({"type": "content_block_start", "index": block,
                              "content_block": {"type": "tool_use", "id": id, "name": name,
                                                "input": {}}})),
                ));
                for p in pieces(args) {
                    events.push((
                        "content_block_delta",
                        ev(json!({"type": "content_block_delta", "index": block,
                                  "delta": {"type": "input_json_delta", "partial_json": p}})),
                    ));
                }
                events.push((
                    "content_block_stop",
                    ev(json!({"type": "content_block_stop", "index": block})),
                ));
                block += 1;
            }
            body_end = events.len();
            events.push((
                "message_delta",
                ev(json!({"type": "message_delta",
                          "delta": {"stop_reason": if calls.is_empty() { "end_turn" } else { "tool_use" },
                                    "stop_sequence": null},
                          "usage": {"output_tokens": output}})),
            ));
            events.push(("message_stop", ev(json!({"type": "message_stop"}))));
        }
        _ => {
            let include_usage = body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true);
            let chunk = |choices: Value| {
                let mut c = json!({
                    "id": format!("chatcmpl-{n}"),
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000 + n,
                    "model": model,
                    "choices": choices,
                });
                if include_usage {
                    c["usage"] = Value::Null;
                }
                c
            };
            let delta = |d: Value, finish: Value| {
                chunk(json!([{"index": 0, "delta": d, "logprobs": null, "finish_reason": finish}]))
                    .to_string()
            };
            events.push((
                "",
                delta(
                    json!({"role": "assistant", "content": "", "refusal": null}),
                    Value::Null,
                ),
            ));
            if let Some(t) = &text {
                for w in words(t) {
                    events.push(("", delta(json!({"content": w}), Value::Null)));
                }
            }
            for (i, ((name, args), id)) in calls.iter().zip(&ids).enumerate() {
                events.push((
                    "",
                    delta(
                        json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                                               "function": {"name": name, "arguments": ""}}]}),
                        Value::Null,
                    ),
                ));
                for p in pieces(args) {
                    events.push((
                        "",
                        delta(
                            json!({"tool_calls": [{"index": i, "function": {"arguments": p}}]}),
                            Value::Null,
                        ),
                    ));
                }
            }
            body_end = events.len();
            let finish = if calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            };
            events.push(("", delta(json!({}), json!(finish))));
            if include_usage {
                let mut last = chunk(json!([]));
                last["usage"] = json!({"prompt_tokens": input, "completion_tokens": output,
                                       "total_tokens": input + output});
                events.push(("", last.to_string()));
            }
            events.push(("", "[DONE]".to_string()));
        }
    }
    let keep = match turn.truncate {
        None => events.len(),
        Some(Truncate::BeforeEnd) => body_end,
        Some(Truncate::AfterEvents(k)) => k.min(events.len()),
    };
    conn.write_head(
        200,
        &[
            ("content-type", event_type.to_string()),
            ("cache-control", "no-cache".to_string()),
            ("transfer-encoding", "chunked".to_string()),
        ],
    )
    .await?;
    for (i, (name, data)) in events.iter().take(keep).enumerate() {
        if i > 0 {
            conn.pause(turn.chunk_delay).await?;
        }
        let text = if name.is_empty() {
            format!("data: {data}\n\n")
        } else {
            format!("event: {name}\ndata: {data}\n\n")
        };
        conn.write_chunk(text.as_bytes()).await?;
    }
    conn.write(b"0\r\n\r\n").await?;
    Ok(true)
}

//! The stdio transport of `bgagents mcp`: one JSON-RPC message per line.
//!
//! It stands in front of rmcp so that every malformed message gets the
//! JSON-RPC error reply it is owed — `-32700` for what is not JSON, `-32600`
//! (with the request's id whenever it can be read) for what is not a
//! request, `-32602` for a known method with unusable params — and so that
//! each one is logged to stderr. Valid messages go on to rmcp unchanged.
//!
//! A line longer than [`MAX_LINE_BYTES`] is discarded as it arrives (never
//! held whole), answered with `-32600` carrying the request's id when the
//! id can be read from the line's first or last 64 KiB, and the server
//! keeps serving: one oversized message should not cost a client its
//! running tasks.

use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequest, CancelledNotification, ClientNotification, ClientRequest, CompleteRequest,
    ErrorData, GetPromptRequest, InitializeRequest, InitializedNotification, JsonRpcMessage,
    ListPromptsRequest, ListResourceTemplatesRequest, ListResourcesRequest, ListToolsRequest,
    PingRequest, ProgressNotification, ReadResourceRequest, RootsListChangedNotification,
    SetLevelRequest, SubscribeRequest, UnsubscribeRequest,
};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value, json};
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest message accepted, newline excluded (rmcp's own stdio limit).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// How much of an oversized line's start and end is kept to find its id.
const EDGE_BYTES: usize = 64 << 10;

type Output = Arc<Mutex<Option<Pin<Box<dyn AsyncWrite + Send>>>>>;

/// Newline-delimited JSON-RPC over a reader and a writer, checked line by
/// line. Reading runs in a task of its own, so [`Transport::receive`] is
/// safe to cancel.
pub struct LineTransport {
    incoming: mpsc::Receiver<RxJsonRpcMessage<RoleServer>>,
    output: Output,
    reader: JoinHandle<()>,
}

impl LineTransport {
    /// Serves messages read from `input`; `client_gone` is cancelled when
    /// `input` ends, the moment the client disconnects.
    pub fn new(
        input: impl AsyncRead + Send + Unpin + 'static,
        output: impl AsyncWrite + Send + 'static,
        client_gone: CancellationToken,
    ) -> LineTransport {
        let output: Output = Arc::new(Mutex::new(Some(Box::pin(output))));
        let (sender, incoming) = mpsc::channel(32);
        let reader = tokio::spawn(read_messages(
            LineReader::new(input),
            output.clone(),
            sender,
            client_gone,
        ));
        LineTransport {
            incoming,
            output,
            reader,
        }
    }
}

impl Transport<RoleServer> for LineTransport {
    type Error = io::Error;

    fn send(
        &mut self,
        message: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), io::Error>> + Send + 'static {
        let output = self.output.clone();
        async move {
            let line = serde_json::to_vec(&message).map_err(io::Error::other)?;
            write_line(&output, line).await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        self.incoming.recv().await
    }

    async fn close(&mut self) -> Result<(), io::Error> {
        self.reader.abort();
        let output = self.output.lock().await.take();
        if let Some(mut output) = output {
            output.shutdown().await?;
        }
        Ok(())
    }
}

async fn write_line(output: &Output, mut line: Vec<u8>) -> io::Result<()> {
    line.push(b'\n');
    let mut output = output.lock().await;
    let Some(output) = output.as_mut() else {
        return Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "the MCP output is closed",
        ));
    };
    output.write_all(&line).await?;
    output.flush().await
}

/// Reads lines until the input ends, passing valid messages to rmcp and
/// answering (and logging) the rest.
async fn read_messages<R: AsyncRead + Unpin>(
    mut lines: LineReader<R>,
    output: Output,
    sender: mpsc::Sender<RxJsonRpcMessage<RoleServer>>,
    client_gone: CancellationToken,
) {
    let mut number: u64 = 0;
    loop {
        let line = match lines.next().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(error) => {
                eprintln!("bgagents mcp: cannot read the client's input ({error}); closing");
                break;
            }
        };
        number += 1;
        let verdict = match line {
            Line::Whole(bytes) => check(&bytes),
            Line::Oversized { length, head, tail } => oversized(length, &head, &tail),
        };
        match verdict {
            Verdict::Deliver(message) => {
                if sender.send(*message).await.is_err() {
                    break;
                }
            }
            Verdict::Blank => {}
            Verdict::Answer { id, error } => {
                eprintln!(
                    "bgagents mcp: protocol error in input line {number}: {}; answered {} (id {id})",
                    error.message, error.code.0
                );
                let reply = json!({"jsonrpc": "2.0", "id": id, "error": error});
                if write_line(&output, reply.to_string().into_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Verdict::Drop(why) => eprintln!(
                "bgagents mcp: protocol error in input line {number}: {why}; ignored (it has no \
                 id to answer)"
            ),
        }
    }
    client_gone.cancel();
}

/// What to do with one line.
enum Verdict {
    Deliver(Box<RxJsonRpcMessage<RoleServer>>),
    Blank,
    /// Reply with `error`; `id` is JSON null when it cannot be read.
    Answer {
        id: Value,
        error: ErrorData,
    },
    /// Log only: a notification or response cannot be answered.
    Drop(String),
}

fn invalid_request(id: Value, problem: impl fmt::Display) -> Verdict {
    Verdict::Answer {
        id,
        error: ErrorData::invalid_request(format!("Invalid Request: {problem}"), None),
    }
}

fn check(line: &[u8]) -> Verdict {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Verdict::Blank;
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(error) => {
            return Verdict::Answer {
                id: Value::Null,
                error: ErrorData::parse_error(format!("Parse error: {error}"), None),
            };
        }
    };
    let object = match &value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return invalid_request(
                Value::Null,
                "batches are not supported; send one message per line",
            );
        }
        _ => return invalid_request(Value::Null, "a message must be a JSON object"),
    };
    let method = object.get("method");
    let is_request = method.is_some() && object.contains_key("id");
    // What can be echoed back: a string or a number, as JSON-RPC allows.
    let id = match object.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        Some(_) if is_request => {
            return invalid_request(Value::Null, "id must be a string or a number");
        }
        _ => Value::Null,
    };
    let refuse = |problem: String| {
        if is_request {
            invalid_request(id.clone(), problem)
        } else {
            Verdict::Drop(problem)
        }
    };
    if object.get("jsonrpc") != Some(&json!("2.0")) {
        return refuse("jsonrpc must be \"2.0\"".to_string());
    }
    if method.is_some_and(|method| !method.is_string()) {
        return refuse("method must be a string".to_string());
    }
    let bad_params = |method: &str, problem: String| {
        let problem = format!("Invalid params for {method}: {problem}");
        if is_request {
            Verdict::Answer {
                id: id.clone(),
                error: ErrorData::invalid_params(problem, None),
            }
        } else {
            Verdict::Drop(problem)
        }
    };
    let method = method.and_then(Value::as_str).map(str::to_string);
    let message = match serde_json::from_value::<RxJsonRpcMessage<RoleServer>>(value) {
        Ok(message) => message,
        Err(error) => {
            return match method.as_deref() {
                Some(method) if let Some(Err(problem)) = params_problem(method, line) => {
                    bad_params(method, problem)
                }
                _ => refuse(error.to_string()),
            };
        }
    };
    // rmcp reads a known method whose params do not fit as a custom one.
    let custom = match &message {
        JsonRpcMessage::Request(request) => match &request.request {
            ClientRequest::CustomRequest(custom) => Some(custom.method.as_str()),
            _ => None,
        },
        JsonRpcMessage::Notification(notification) => match &notification.notification {
            ClientNotification::CustomNotification(custom) => Some(custom.method.as_str()),
            _ => None,
        },
        _ => None,
    };
    if let Some(method) = custom
        && let Some(params) = params_problem(method, line)
    {
        return match (is_request, is_notification(method), params) {
            (true, true, _) => refuse(format!("{method} is a notification but has an id")),
            (false, false, _) => refuse(format!("{method} is a request but has no id")),
            (_, _, Err(problem)) => bad_params(method, problem),
            (_, _, Ok(())) => bad_params(method, "they do not fit the method".to_string()),
        };
    }
    Verdict::Deliver(Box::new(message))
}

/// Whether `line` reads as a `method` message, for the methods rmcp knows,
/// and why not; `None` for other methods.
fn params_problem(method: &str, line: &[u8]) -> Option<Result<(), String>> {
    fn problem<T: DeserializeOwned>(line: &[u8]) -> Option<Result<(), String>> {
        Some(
            serde_json::from_slice::<T>(line)
                .map(drop)
                .map_err(|error| error.to_string()),
        )
    }
    match method {
        "initialize" => problem::<InitializeRequest>(line),
        "ping" => problem::<PingRequest>(line),
        "tools/list" => problem::<ListToolsRequest>(line),
        "tools/call" => problem::<CallToolRequest>(line),
        "logging/setLevel" => problem::<SetLevelRequest>(line),
        "completion/complete" => problem::<CompleteRequest>(line),
        "prompts/list" => problem::<ListPromptsRequest>(line),
        "prompts/get" => problem::<GetPromptRequest>(line),
        "resources/list" => problem::<ListResourcesRequest>(line),
        "resources/templates/list" => problem::<ListResourceTemplatesRequest>(line),
        "resources/read" => problem::<ReadResourceRequest>(line),
        "resources/subscribe" => problem::<SubscribeRequest>(line),
        "resources/unsubscribe" => problem::<UnsubscribeRequest>(line),
        "notifications/cancelled" => problem::<CancelledNotification>(line),
        "notifications/progress" => problem::<ProgressNotification>(line),
        "notifications/initialized" => problem::<InitializedNotification>(line),
        "notifications/roots/list_changed" => problem::<RootsListChangedNotification>(line),
        _ => None,
    }
}

fn is_notification(method: &str) -> bool {
    method.starts_with("notifications/")
}

fn oversized(length: usize, head: &[u8], tail: &[u8]) -> Verdict {
    let id = id_from_head(head)
        .or_else(|| id_from_tail(tail))
        .unwrap_or(Value::Null);
    let mib = length as f64 / (1 << 20) as f64;
    invalid_request(
        id,
        format!(
            "message of {mib:.1} MiB is over the {} MiB limit for one message; send less at once",
            MAX_LINE_BYTES >> 20
        ),
    )
}

/// The top-level `id` of a JSON object cut short, when it comes before the
/// cut (as clients that write `jsonrpc`, `id`, `method`, `params` in that
/// order send it).
fn id_from_head(head: &[u8]) -> Option<Value> {
    struct FindId<'a>(&'a mut Option<Value>);

    impl<'de> Visitor<'de> for FindId<'_> {
        type Value = ();

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key != "id" {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                let id: Value = map.next_value()?;
                // A number cut by the end of `head` would read as another
                // number: take it only once something follows it.
                if id.is_string() || map.next_key::<IgnoredAny>().is_ok() {
                    *self.0 = Some(id);
                }
                return Ok(());
            }
            Ok(())
        }
    }

    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(head);
    let _ = serde::Deserializer::deserialize_map(&mut deserializer, FindId(&mut found));
    found.filter(|id| id.is_string() || id.is_number())
}

/// The top-level `id` of a JSON object from its last bytes, when it comes
/// after the bulk of the message (as clients that add `jsonrpc` and `id`
/// last send it). A suffix that starts at `"id"` and reads as the rest of
/// an object up to the final `}` can only be a run of top-level members.
fn id_from_tail(tail: &[u8]) -> Option<Value> {
    let tail = tail.trim_ascii_end();
    let starts = tail
        .windows(4)
        .enumerate()
        .filter(|(_, window)| window == b"\"id\"")
        .map(|(start, _)| start);
    let mut candidates: Vec<usize> = starts.collect();
    candidates.reverse();
    candidates.truncate(16);
    candidates.into_iter().find_map(|start| {
        let mut object = Vec::with_capacity(tail.len() - start + 1);
        object.push(b'{');
        object.extend_from_slice(&tail[start..]);
        let members: Map<String, Value> = serde_json::from_slice(&object).ok()?;
        members
            .get("id")
            .filter(|id| id.is_string() || id.is_number())
            .cloned()
    })
}

enum Line {
    Whole(Vec<u8>),
    /// Over [`MAX_LINE_BYTES`]: only its first and last bytes are kept.
    Oversized {
        length: usize,
        head: Vec<u8>,
        tail: Vec<u8>,
    },
}

/// Splits input into lines without ever holding more than
/// [`MAX_LINE_BYTES`] of one.
struct LineReader<R> {
    input: BufReader<R>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(input: R) -> Self {
        LineReader {
            input: BufReader::with_capacity(EDGE_BYTES, input),
        }
    }

    /// The next line without its `\n` (and `\r`); `None` at the end.
    async fn next(&mut self) -> io::Result<Option<Line>> {
        let mut line = Vec::new();
        let mut cut: Option<Line> = None;
        loop {
            let available = self.input.fill_buf().await?;
            let newline = available.iter().position(|byte| *byte == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            match &mut cut {
                Some(Line::Oversized { length, tail, .. }) => {
                    *length += chunk.len();
                    keep_tail(tail, chunk);
                }
                _ if line.len() + chunk.len() <= MAX_LINE_BYTES => line.extend_from_slice(chunk),
                _ => {
                    let length = line.len() + chunk.len();
                    let mut tail = line[line.len().saturating_sub(EDGE_BYTES)..].to_vec();
                    keep_tail(&mut tail, chunk);
                    let mut head = std::mem::take(&mut line);
                    head.truncate(EDGE_BYTES);
                    let more = (EDGE_BYTES - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..more]);
                    cut = Some(Line::Oversized { length, head, tail });
                }
            }
            let at_end = available.is_empty();
            let consumed = newline.map_or(available.len(), |at| at + 1);
            self.input.consume(consumed);
            if newline.is_none() && !at_end {
                continue;
            }
            // A last line without a newline still counts.
            return Ok(match cut {
                Some(cut) => Some(cut),
                None if at_end && line.is_empty() => None,
                None => {
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    Some(Line::Whole(line))
                }
            });
        }
    }
}

/// Appends `chunk` to `tail`, keeping at most the last [`EDGE_BYTES`]
/// (trimmed in batches so that each byte is moved a bounded number of times).
fn keep_tail(tail: &mut Vec<u8>, chunk: &[u8]) {
    let chunk = &chunk[chunk.len().saturating_sub(EDGE_BYTES)..];
    tail.extend_from_slice(chunk);
    if tail.len() > 2 * EDGE_BYTES {
        tail.drain(..tail.len() - EDGE_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_read_from_either_end_of_a_cut_message() {
        assert_eq!(
            id_from_head(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"x":"aaa"#),
            Some(json!(7))
        );
        assert_eq!(
            id_from_head(br#"{"jsonrpc":"2.0","id":"a-1","params":{"#),
            Some(json!("a-1"))
        );
        // Cut inside the number: it could be 12, 123, ...
        assert_eq!(id_from_head(br#"{"jsonrpc":"2.0","id":12"#), None);
        assert_eq!(id_from_head(br#"{"params":{"id":3,"x":"aaaa"#), None);
        assert_eq!(
            id_from_tail(br#"aaaa"}},"jsonrpc":"2.0","id":42}"#),
            Some(json!(42))
        );
        // An "id" inside the params is not the message's.
        assert_eq!(id_from_tail(br#"aaa","id":5}}}"#), None);
        assert_eq!(id_from_tail(br#"aaa\"id\":5}"}}"#), None);
    }
}

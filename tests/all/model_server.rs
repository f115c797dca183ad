//! The scripted model server (the test kit's stand-in for a provider),
//! driven over HTTP on 127.0.0.1 by a plain HTTP/1.1 client written on a
//! TcpStream.

use bgagents_testkit::model_server::{ModelServer, Outcome, Protocol, Script, Turn};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    /// Server-sent events as (event name, data).
    fn events(&self) -> Vec<(String, String)> {
        self.text()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut name = String::new();
                let mut data = String::new();
                for line in e.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = v.to_string();
                    }
                }
                (name, data)
            })
            .collect()
    }
}

fn request(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("POST {path} HTTP/1.1\r\nhost: localhost\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    req
}

/// Parses one response from `raw` (the whole connection's bytes); returns it
/// and whether the body was complete.
fn parse(raw: &[u8]) -> (Response, bool) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked");
    if chunked {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let Some(nl) = rest[at..].windows(2).position(|w| w == b"\r\n") else {
                break (
                    Response {
                        status,
                        headers,
                        body,
                    },
                    false,
                );
            };
            let size = usize::from_str_radix(std::str::from_utf8(&rest[at..at + nl]).unwrap(), 16)
                .unwrap();
            at += nl + 2;
            if size == 0 {
                break (
                    Response {
                        status,
                        headers,
                        body,
                    },
                    true,
                );
            }
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
    } else {
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        let complete = rest.len() >= len;
        let body = rest[..len.min(rest.len())].to_vec();
        (
            Response {
                status,
                headers,
                body,
            },
            complete,
        )
    }
}

/// Posts `body` on a new connection (closed after the answer).
async fn post_raw(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Response, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut all = headers.to_vec();
    all.push(("connection", "close"));
    s.write_all(&request(path, &all, body)).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    parse(&raw)
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Response {
    let (r, complete) = post_raw(
        addr,
        path,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert!(
        complete,
        "incomplete response: {}",
        String::from_utf8_lossy(&r.body)
    );
    r
}

const OPENAI: &str = "/v1/chat/completions";
const ANTHROPIC: &str = "/v1/messages";

fn openai(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

fn anthropic(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 100,
           "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn openai_json_answer_and_recording() {
    let server = ModelServer::start(Script::new([Turn::text("Hello there.")])).await;
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    assert!(server.base_url().ends_with("/v1"));
    let (r, complete) = post_raw(
        server.addr(),
        OPENAI,
        &[
            ("authorization", "Bearer sk-test"),
            ("content-type", "application/json"),
        ],
        openai("gpt-x", false).to_string().as_bytes(),
    )
    .await;
    assert!(complete);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-x");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello there.");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(u["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );

    let seen = server.wait_for_requests(1, WAIT).await;
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, OPENAI);
    assert_eq!(req.protocol, Protocol::OpenAi);
    assert_eq!(req.header("Authorization"), Some("Bearer sk-test"));
    assert_eq!(req.body, openai("gpt-x", false));
    assert_eq!(req.model(), Some("gpt-x"));
    assert!(!req.is_stream());
    assert_eq!(req.outcome, Outcome::Done);
    assert_eq!(server.remaining(), 0);
}

#[tokio::test]
async fn openai_stream_with_tool_calls_and_usage() {
    let server = ModelServer::start(Script::new([Turn::tool_calls([
        ("read_file", r#"{"path":"a/very/long/name.txt"}"#),
        ("think", r#"{"thought":"x"}"#),
    ])
    .with_text("Let me look.")
    .usage(7, 3)]))
    .await;
    let mut body = openai("m", true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(server.addr(), OPENAI, body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = r.events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(name, d)| {
            assert_eq!(name, "");
            serde_json::from_str(d).unwrap()
        })
        .collect();
    let mut text = String::new();
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        if let Some(t) = choice["delta"]["content"].as_str() {
            text.push_str(t);
        }
        for tc in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if let Some(id) = tc["id"].as_str() {
                assert_eq!(i, calls.len());
                assert_eq!(tc["type"], "function");
                calls.push((
                    id.into(),
                    tc["function"]["name"].as_str().unwrap().into(),
                    String::new(),
                ));
            }
            calls[i]
                .2
                .push_str(tc["function"]["arguments"].as_str().unwrap());
        }
        if !choice["finish_reason"].is_null() {
            finish = Some(choice["finish_reason"].clone());
        }
    }
    assert_eq!(text, "Let me look.");
    assert_eq!(
        calls,
        vec![
            (
                "call_1".into(),
                "read_file".into(),
                r#"{"path":"a/very/long/name.txt"}"#.into()
            ),
            ("call_2".into(), "think".into(), r#"{"thought":"x"}"#.into()),
        ]
    );
    assert_eq!(finish, Some(json!("tool_calls")));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10})
    );
    // Without include_usage there is no usage chunk.
    let server = ModelServer::start(Script::new([Turn::text("a b")])).await;
    let r = post(server.addr(), OPENAI, openai("m", true)).await;
    assert!(!r.text().contains("usage"));
    assert!(r.text().ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn anthropic_json_and_stream() {
    let server = ModelServer::start(Script::new([
        Turn::tool_calls([("read_file", r#"{"path":"a.txt"}"#)]).with_text("Looking."),
        Turn::tool_calls([("shell", r#"{"cmd":"ls -la /tmp"}"#)]),
        Turn::text("All done here.").usage(11, 4),
    ]))
    .await;
    assert_eq!(
        server.anthropic_base_url(),
        format!("http://{}", server.addr())
    );
    let addr = server.addr();

    let v = post(addr, ANTHROPIC, anthropic("claude-x", false))
        .await
        .json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Looking."},
               {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {"path": "a.txt"}}])
    );
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);

    let r = post(addr, ANTHROPIC, anthropic("claude-x", true)).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = r.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "message_start");
    assert_eq!(names[1], "content_block_start");
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for ((name, _), d) in events.iter().zip(&data) {
        assert_eq!(d["type"], name.as_str());
    }
    assert_eq!(
        data[1]["content_block"],
        json!({"type": "tool_use", "id": "toolu_2", "name": "shell", "input": {}})
    );
    let args: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(args, r#"{"cmd":"ls -la /tmp"}"#);
    assert_eq!(data[data.len() - 2]["delta"]["stop_reason"], "tool_use");

    let r = post(addr, ANTHROPIC, anthropic("claude-x", true)).await;
    let data: Vec<Value> = r
        .events()
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 11);
    assert_eq!(
        data[1]["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| d["delta"]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "All done here.");
    let delta = &data[data.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 4);
    assert_eq!(server.requests()[2].protocol, Protocol::Anthropic);
}

#[tokio::test]
async fn errors_garbage_and_exhaustion() {
    let server = ModelServer::start(Script::new([
        Turn::api_error(429, "slow down").retry_after("2"),
        Turn::api_error(529, "busy"),
        Turn::error(500, r#"{"custom":true}"#),
        Turn::garbage("<html>not json</html>"),
        Turn::garbage("data: {broken\n\n"),
    ]))
    .await;
    let addr = server.addr();
    let r = post(addr, OPENAI, openai("m", true)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.json()["error"]["message"], "slow down");
    let r = post(addr, ANTHROPIC, anthropic("m", false)).await;
    assert_eq!(r.status, 529);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})
    );
    let r = post(addr, OPENAI, openai("m", false)).await;
    assert_eq!((r.status, r.text().as_str()), (500, r#"{"custom":true}"#));
    assert_eq!(r.header("retry-after"), None);
    let r = post(addr, OPENAI, openai("m", false)).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "<html>not json</html>")
    );
    let r = post(addr, ANTHROPIC, anthropic("m", true)).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!((r.status, r.text().as_str()), (200, "data: {broken\n\n"));
    for (path, body) in [
        (OPENAI, openai("m", false)),
        (ANTHROPIC, anthropic("m", true)),
    ] {
        let r = post(addr, path, body).await;
        assert_eq!(r.status, 500);
        assert!(r.text().contains("script exhausted"), "{}", r.text());
    }
    // A path of neither protocol and a body that is not JSON take no turn.
    let server = ModelServer::start(Script::new([Turn::text("kept")])).await;
    let r = post(server.addr(), "/v1/embeddings", json!({})).await;
    assert_eq!(r.status, 404);
    let (r, _) = post_raw(server.addr(), OPENAI, &[], b"{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(server.remaining(), 1);
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.requests()[0].protocol, Protocol::Other);
}

#[tokio::test]
async fn truncation() {
    let server = ModelServer::start(Script::new([
        Turn::truncated_stream("one two three"),
        Turn::truncated_stream("one two three"),
        Turn::text("one two three").truncate_after(2),
        Turn::truncated_stream("a json answer cut short"),
    ]))
    .await;
    let addr = server.addr();
    let mut body = openai("m", true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(addr, OPENAI, body).await;
    let events = r.events();
    assert_eq!(events.len(), 4, "{events:?}"); // role + 3 words
    assert!(!r.text().contains("[DONE]"));
    assert!(!r.text().contains("\"finish_reason\":\"stop\""));

    let r = post(addr, ANTHROPIC, anthropic("m", true)).await;
    let names: Vec<String> = r.events().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.last().unwrap(), "content_block_stop");
    assert!(
        !names
            .iter()
            .any(|n| n == "message_delta" || n == "message_stop")
    );

    let r = post(addr, ANTHROPIC, anthropic("m", true)).await;
    let names: Vec<String> = r.events().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["message_start", "content_block_start"]);

    let (r, complete) =
        post_raw(addr, OPENAI, &[], openai("m", false).to_string().as_bytes()).await;
    assert_eq!(r.status, 200);
    assert!(!complete);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    let seen = server.requests();
    assert!(seen.iter().all(|r| r.outcome == Outcome::Done));
}

#[tokio::test]
async fn per_model_routing() {
    let server = ModelServer::start(Script::per_model([
        (
            "alpha",
            vec![Turn::tool_calls([("a", "{}")]), Turn::text("alpha done")],
        ),
        (
            "beta",
            vec![Turn::tool_calls([("b", "{}")]), Turn::text("beta done")],
        ),
    ]))
    .await;
    let addr = server.addr();
    let id = |v: Value| v["choices"][0]["message"]["tool_calls"][0]["id"].clone();
    assert_eq!(
        id(post(addr, OPENAI, openai("beta", false)).await.json()),
        "call_1"
    );
    let v = post(addr, ANTHROPIC, anthropic("alpha", false))
        .await
        .json();
    assert_eq!(v["content"][0]["id"], "toolu_1");
    assert_eq!(v["content"][0]["name"], "a");
    let v = post(addr, OPENAI, openai("alpha", false)).await.json();
    assert_eq!(v["choices"][0]["message"]["content"], "alpha done");
    assert_eq!(server.remaining(), 1);
    let r = post(addr, OPENAI, openai("gamma", false)).await;
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("no script for model \\\"gamma\\\""),
        "{}",
        r.text()
    );
    let r = post(addr, OPENAI, openai("alpha", false)).await;
    assert!(r.text().contains("script exhausted"));
    let v = post(addr, OPENAI, openai("beta", false)).await.json();
    assert_eq!(v["choices"][0]["message"]["content"], "beta done");
    let models: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.model().unwrap().to_string())
        .collect();
    assert_eq!(models, ["beta", "alpha", "alpha", "gamma", "alpha", "beta"]);
}

#[tokio::test]
async fn client_closing_mid_stream_or_during_delay_is_recorded() {
    let words = "w ".repeat(50);
    let server = ModelServer::start(Script::new([
        Turn::text(words).chunk_delay(Duration::from_millis(20)),
        Turn::text("late").delay(Duration::from_secs(30)),
        Turn::text("after"),
    ]))
    .await;
    let addr = server.addr();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = openai("m", true).to_string();
    s.write_all(&request(OPENAI, &[], body.as_bytes()))
        .await
        .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\"w \"") {
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let seen = server.wait_for_aborted(1, WAIT).await;
    assert_eq!(seen[0].outcome, Outcome::ClientClosed);

    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = anthropic("m", false).to_string();
    s.write_all(&request(ANTHROPIC, &[], body.as_bytes()))
        .await
        .unwrap();
    server.wait_for_requests(2, WAIT).await;
    drop(s);
    server.wait_for_aborted(2, WAIT).await;
    assert_eq!(server.aborted(), 2);

    let r = post(addr, OPENAI, openai("m", false)).await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "after");
}

#[tokio::test]
async fn keep_alive_and_chunked_request_bodies() {
    let server = ModelServer::start(Script::new([Turn::text("first"), Turn::text("second")])).await;
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let body = openai("m", false).to_string();
    s.write_all(&request(OPENAI, &[], body.as_bytes()))
        .await
        .unwrap();
    // The second request's body is sent in chunked encoding.
    let (a, b) = body.split_at(10);
    let chunked = format!(
        "POST {OPENAI} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    s.write_all(chunked.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.contains("\"content\":\"first\""));
    assert!(text.contains("\"content\":\"second\""));
    assert_eq!(server.requests()[1].body, openai("m", false));
}

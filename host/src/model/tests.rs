//! Request bodies and answers, bytes in → completion out, for both
//! protocols; truncated and garbage answers; the key kept out of sight.

use super::*;
use serde_json::json;

fn binding(api: ModelApi) -> ModelBinding {
    ModelBinding {
        reference: "m".into(),
        provider: "p".into(),
        model: "the-model".into(),
        api,
        base_url: "http://127.0.0.1:9/v1".into(),
        key_var: None,
        max_tokens: None,
        temperature: None,
        top_p: None,
        parallel_tool_calls: None,
    }
}

fn tool() -> ToolDefinition {
    ToolDefinition {
        name: "lookup".into(),
        description: "Looks things up".into(),
        parameters: r#"{"type":"object","properties":{"q":{"type":"string"}}}"#.into(),
    }
}

fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    }
}

fn conversation() -> Vec<Message> {
    vec![
        Message::system("Be brief."),
        Message::user("Find x."),
        Message::assistant(
            "",
            vec![
                call("c1", "lookup", r#"{"q":"x"}"#),
                call("c2", "lookup", r#"{"q":"y"}"#),
            ],
        ),
        Message::tool("c1", "x is 1"),
        Message::tool("c2", "y is 2"),
        Message::user("Thanks; and z?"),
    ]
}

/// Decodes `body` cut into pieces of `piece` bytes, collecting the text
/// deltas.
fn decode(api: ModelApi, body: &str, piece: usize) -> (Result<Completion, String>, String) {
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(piece.max(1)).collect();
    let mut streamed = String::new();
    let result = decode_body(api, &chunks, true, &mut |text: &str| {
        streamed.push_str(text)
    });
    (result, streamed)
}

fn sse(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .map(|event| format!("data: {event}\n\n"))
        .collect()
}

fn anthropic_sse(events: &[serde_json::Value]) -> String {
    events
        .iter()
        .map(|event| {
            format!(
                "event: {}\ndata: {event}\n\n",
                event["type"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn openai_request_has_messages_tools_and_usage_option() {
    let mut binding = binding(ModelApi::OpenAiChat);
    binding.max_tokens = Some(100);
    binding.temperature = Some(0.5);
    binding.parallel_tool_calls = Some(false);
    let body = openai::request(&binding, &conversation(), &[tool()]);
    assert_eq!(body["model"], "the-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["max_tokens"], 100);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["parallel_tool_calls"], false);
    assert!(body.get("top_p").is_none());
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {"name": "lookup", "description": "Looks things up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}])
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 6);
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(messages[2]["content"], serde_json::Value::Null);
    assert_eq!(
        messages[2]["tool_calls"][1],
        json!({"id": "c2", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"y\"}"}})
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "c1", "content": "x is 1"})
    );
    let plain = openai::request(&binding, &[Message::user("hi")], &[]);
    assert!(plain.get("tools").is_none() && plain.get("parallel_tool_calls").is_none());
}

#[test]
fn anthropic_request_moves_system_and_tool_results_into_blocks() {
    let mut binding = binding(ModelApi::AnthropicMessages);
    binding.parallel_tool_calls = Some(true);
    let body = anthropic::request(&binding, &conversation(), &[tool()]);
    assert_eq!(body["system"], "Be brief.");
    assert_eq!(body["max_tokens"], anthropic::DEFAULT_MAX_TOKENS);
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["tools"][0],
        json!({"name": "lookup", "description": "Looks things up",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}})
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": false})
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Find x."}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "c1", "name": "lookup", "input": {"q": "x"}},
                {"type": "tool_use", "id": "c2", "name": "lookup", "input": {"q": "y"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "x is 1"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "y is 2"},
                {"type": "text", "text": "Thanks; and z?"}]}
        ])
    );
}

fn openai_tool_stream() -> String {
    let mut events = vec![
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me "}}]}),
    ];
    events.push(json!({"choices": [{"index": 0, "delta": {"content": "look."}}]}));
    events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "look", "arguments": ""}}]}}]}));
    events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\""}}]}}]}));
    events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"name": "up", "arguments": "{\"q\":"}}]}}]}));
    events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": "\"a\"}"}}]}}]}));
    events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 1, "function": {"arguments": ":\"b\"}"}}]}}]}));
    events.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}));
    events.push(json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7}}));
    let mut body = sse(&events);
    body.push_str("data: [DONE]\n\n");
    body
}

#[test]
fn openai_stream_assembles_text_tool_calls_usage_and_reason() {
    let body = openai_tool_stream();
    for piece in [1, 3, 17, body.len()] {
        let (result, streamed) = decode(ModelApi::OpenAiChat, &body, piece);
        let completion = result.unwrap();
        assert_eq!(streamed, "Let me look.");
        assert_eq!(completion.content, "Let me look.");
        assert_eq!(
            completion.tool_calls,
            [
                call("call_a", "lookup", r#"{"q":"a"}"#),
                call("call_b", "lookup", r#"{"q":"b"}"#)
            ]
        );
        assert_eq!(completion.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            completion.usage,
            Usage {
                input_tokens: 12,
                output_tokens: 7
            }
        );
    }
}

fn anthropic_tool_stream() -> String {
    anthropic_sse(&[
        json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 20, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " é."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"q\": "}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"z\"}"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}}),
        json!({"type": "message_stop"}),
    ])
}

#[test]
fn anthropic_stream_assembles_text_tool_use_blocks_usage_and_reason() {
    let body = anthropic_tool_stream();
    for piece in [1, 5, 64, body.len()] {
        let (result, streamed) = decode(ModelApi::AnthropicMessages, &body, piece);
        let completion = result.unwrap();
        assert_eq!(streamed, "Checking é.");
        assert_eq!(completion.content, "Checking é.");
        assert_eq!(
            completion.tool_calls,
            [
                call("toolu_1", "lookup", r#"{"q": "z"}"#),
                call("toolu_2", "now", "{}")
            ]
        );
        assert_eq!(completion.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            completion.usage,
            Usage {
                input_tokens: 20,
                output_tokens: 30
            }
        );
    }
}

#[test]
fn truncated_streams_are_provider_errors_naming_what_is_missing() {
    let openai = openai_tool_stream();
    let cut = openai.find("data: [DONE]").unwrap();
    let (result, _) = decode(ModelApi::OpenAiChat, &openai[..cut], 10);
    let error = result.unwrap_err();
    assert!(error.starts_with("test/model: "), "{error}");
    assert!(error.contains("ended before `data: [DONE]`"), "{error}");
    let anthropic = anthropic_tool_stream();
    let cut = anthropic.find("event: message_stop").unwrap();
    let (result, _) = decode(ModelApi::AnthropicMessages, &anthropic[..cut], 10);
    assert!(result.unwrap_err().contains("ended before message_stop"));
    // Cut in the middle of an event's JSON.
    let (result, _) = decode(ModelApi::OpenAiChat, &openai[..40], 7);
    assert!(result.unwrap_err().contains("not JSON"));
    for api in [ModelApi::OpenAiChat, ModelApi::AnthropicMessages] {
        let (result, _) = decode(api, "", 1);
        assert!(result.is_err());
    }
}

#[test]
fn garbage_is_an_error_never_a_panic() {
    let cases: &[&[u8]] = &[
        b"<html>502 Bad Gateway</html>",
        b"data: {not json}\n\n",
        b"data: [1,2,3]\n\n",
        b"data: {\"choices\": 5}\n\n",
        b"data: {\"choices\": [{\"delta\": {\"tool_calls\": {}}}]}\n\n",
        b"data: \xff\xfe\n\n",
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":4,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"x\"}}\n\n",
        b"data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        b"data: {\"error\": {\"message\": \"boom\"}}\n\n",
        b"data: [DONE]\n\ndata: {}\n\n",
    ];
    for api in [ModelApi::OpenAiChat, ModelApi::AnthropicMessages] {
        for case in cases {
            let mut sink = |_: &str| {};
            let streamed = decode_body(api, &[case], true, &mut sink);
            let whole = decode_body(api, &[case], false, &mut sink);
            assert!(
                streamed.is_err(),
                "{api:?} {:?}",
                String::from_utf8_lossy(case)
            );
            assert!(
                whole.is_err(),
                "{api:?} {:?}",
                String::from_utf8_lossy(case)
            );
        }
    }
    let mut sink = |_: &str| {};
    let error = decode_body(ModelApi::AnthropicMessages, &[cases[7]], true, &mut sink).unwrap_err();
    assert!(error.contains("(overloaded_error): Overloaded"), "{error}");
    let error = decode_body(ModelApi::OpenAiChat, &[cases[0]], false, &mut sink).unwrap_err();
    assert!(
        error.contains("neither an event stream nor JSON"),
        "{error}"
    );
}

#[test]
fn answers_over_the_cap_are_refused() {
    let big = "x".repeat(1 << 20);
    let mut body = String::new();
    for _ in 0..9 {
        body.push_str(&sse(&[
            json!({"choices": [{"index": 0, "delta": {"content": big}}]}),
        ]));
    }
    let (result, _) = decode(ModelApi::OpenAiChat, &body, 1 << 20);
    assert!(result.unwrap_err().contains("larger than 8 MiB"));
}

#[test]
fn whole_json_answers_are_read_too() {
    let openai = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi",
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}});
    let mut streamed = String::new();
    let completion = decode_body(
        ModelApi::OpenAiChat,
        &[openai.to_string().as_bytes()],
        false,
        &mut |text: &str| streamed.push_str(text),
    )
    .unwrap();
    assert_eq!(streamed, "hi");
    assert_eq!(completion.tool_calls, [call("c", "f", "{}")]);
    assert_eq!(completion.usage.output_tokens, 4);
    let anthropic = json!({"content": [{"type": "text", "text": "ok"},
        {"type": "tool_use", "id": "t", "name": "g", "input": {"a": 1}}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 5, "output_tokens": 6}});
    let completion = decode_body(
        ModelApi::AnthropicMessages,
        &[anthropic.to_string().as_bytes()],
        false,
        &mut |_: &str| {},
    )
    .unwrap();
    assert_eq!(completion.content, "ok");
    assert_eq!(completion.tool_calls, [call("t", "g", r#"{"a":1}"#)]);
    assert_eq!(completion.finish_reason, FinishReason::Stop);
}

#[test]
fn the_key_never_shows_in_debug_or_scrubbed_text() {
    let canary = "sk-canary-7f3a9c";
    let secret = Secret(canary.into());
    assert!(!format!("{secret:?}").contains(canary));
    assert_eq!(
        secret.scrub(&format!("bad key {canary} given")),
        "bad key [redacted] given"
    );
    let mut binding = binding(ModelApi::OpenAiChat);
    binding.key_var = Some("BGAGENTS_UNIT_CANARY_KEY".into());
    let client = ModelClient::with_key(&binding, Some(Secret(canary.into()))).unwrap();
    assert_eq!(client.name(), "p/the-model");
    assert!(!format!("{client:?}").contains(canary));
    binding.key_var = Some("BGAGENTS_UNIT_UNSET_KEY".into());
    let error = ModelClient::new(&binding).unwrap_err();
    assert!(
        error.contains("BGAGENTS_UNIT_UNSET_KEY is not set; `export BGAGENTS_UNIT_UNSET_KEY=…`"),
        "{error}"
    );
}

#[test]
fn retry_after_reads_seconds_and_ignores_the_rest() {
    let mut headers = reqwest::header::HeaderMap::new();
    assert_eq!(retry_after(&headers), None);
    headers.insert("retry-after", "2".parse().unwrap());
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
    headers.insert(
        "retry-after",
        "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
    );
    assert_eq!(retry_after(&headers), None);
}

/// A scripted HTTP/1.1 server on 127.0.0.1: answers the n-th request with
/// the n-th response (the last one repeats; `None` holds the connection
/// open without answering) and keeps every request's text.
struct Server {
    url: String,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(responses: Vec<Option<String>>) -> Server {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for (index, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                head.push_str(&String::from_utf8_lossy(&body));
                seen.lock().unwrap().push(head);
                let response = responses[index.min(responses.len() - 1)].clone();
                match response {
                    Some(response) => {
                        let _ = stream.write_all(response.as_bytes());
                    }
                    None => {
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_secs(30));
                            drop(stream);
                        });
                    }
                }
            }
        });
        Server { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn respond(status: &str, headers: &str, body: &str) -> Option<String> {
    Some(format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
        body.len()
    ))
}

fn client(server: &Server, api: ModelApi, key: Option<&str>) -> ModelClient {
    let mut binding = binding(api);
    binding.base_url = server.url.clone();
    binding.key_var = key.map(|_| "TEST_KEY".to_string());
    ModelClient::with_key(&binding, key.map(|key| Secret(key.into()))).unwrap()
}

fn soon(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

#[tokio::test]
async fn openai_over_http_streams_sends_the_bearer_key_and_retries_a_429() {
    let canary = "sk-canary-http-91b2";
    let server = Server::start(vec![
        respond(
            "429 Too Many Requests",
            "retry-after: 0\r\n",
            "{\"error\":{\"message\":\"slow down\"}}",
        ),
        respond(
            "200 OK",
            "content-type: text/event-stream\r\n",
            &openai_tool_stream(),
        ),
    ]);
    let client = client(&server, ModelApi::OpenAiChat, Some(canary));
    let mut streamed = String::new();
    let completion = client
        .complete(&conversation(), &[tool()], soon(20), &mut |text: &str| {
            streamed.push_str(text)
        })
        .await
        .unwrap();
    assert_eq!(streamed, "Let me look.");
    assert_eq!(completion.tool_calls.len(), 2);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one retry");
    assert!(
        requests[1].starts_with("POST /chat/completions HTTP/1.1\r\n"),
        "{}",
        requests[1]
    );
    assert!(
        requests[1]
            .to_ascii_lowercase()
            .contains(&format!("authorization: bearer {canary}")),
        "{}",
        requests[1]
    );
    assert!(requests[1].contains("\"stream_options\":{\"include_usage\":true}"));
}

#[tokio::test]
async fn anthropic_over_http_sends_its_headers_and_reads_a_whole_json_answer() {
    let canary = "sk-ant-canary-77";
    let answer = json!({"content": [{"type": "text", "text": "done"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 2}});
    let server = Server::start(vec![respond(
        "200 OK",
        "content-type: application/json\r\n",
        &answer.to_string(),
    )]);
    let client = client(&server, ModelApi::AnthropicMessages, Some(canary));
    let completion = client
        .complete(&conversation(), &[], soon(20), &mut |_: &str| {})
        .await
        .unwrap();
    assert_eq!(completion.content, "done");
    assert_eq!(completion.finish_reason, FinishReason::Stop);
    let request = server.requests()[0].to_ascii_lowercase();
    assert!(
        request.starts_with("post /v1/messages http/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains(&format!("x-api-key: {canary}")),
        "{request}"
    );
    assert!(
        request.contains("anthropic-version: 2023-06-01"),
        "{request}"
    );
    assert!(!request.contains("authorization"), "{request}");
}

#[tokio::test]
async fn errors_name_the_status_and_never_echo_the_key() {
    let canary = "sk-canary-echo-3c";
    let server = Server::start(vec![respond(
        "401 Unauthorized",
        "content-type: application/json\r\n",
        &format!("{{\"error\":{{\"message\":\"Incorrect API key provided: {canary}\"}}}}"),
    )]);
    let client = client(&server, ModelApi::OpenAiChat, Some(canary));
    let error = client
        .complete(&[Message::user("hi")], &[], soon(20), &mut |_: &str| {})
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, ModelError::Provider(_)), "{error:?}");
    assert!(
        !text.contains(canary) && !format!("{error:?}").contains(canary),
        "{text}"
    );
    assert!(
        text.starts_with("p/the-model: the provider answered 401 Unauthorized: Incorrect API key provided: [redacted] — the key was refused; check TEST_KEY"),
        "{text}"
    );
    let server = Server::start(vec![respond(
        "400 Bad Request",
        "",
        "{\"error\":{\"message\":\"bad tools\"}}",
    )]);
    let error = client_for(&server)
        .complete(&[Message::user("hi")], &[], soon(20), &mut |_: &str| {})
        .await
        .unwrap_err();
    assert!(matches!(error, ModelError::InvalidRequest(_)), "{error:?}");
    assert_eq!(server.requests().len(), 1, "a 400 is not retried");
}

fn client_for(server: &Server) -> ModelClient {
    client(server, ModelApi::OpenAiChat, None)
}

#[tokio::test]
async fn the_deadline_ends_a_call_that_hangs_or_keeps_being_refused() {
    let server = Server::start(vec![None]);
    let started = Instant::now();
    let error = client_for(&server)
        .complete(
            &[Message::user("hi")],
            &[],
            Instant::now() + Duration::from_millis(300),
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(error.to_string().contains("deadline"), "{error}");
    let server = Server::start(vec![respond(
        "429 Too Many Requests",
        "retry-after: 1\r\n",
        "",
    )]);
    let error = client_for(&server)
        .complete(
            &[Message::user("hi")],
            &[],
            Instant::now() + Duration::from_millis(2500),
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ModelError::RateLimited(_)), "{error:?}");
    assert!(error.to_string().contains("gave up after"), "{error}");
    let tries = server.requests().len();
    assert!((2..=4).contains(&tries), "{tries} attempts");
    // A refused connection is retried until the deadline, then named.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut binding = binding(ModelApi::OpenAiChat);
    binding.base_url = url;
    let error = ModelClient::with_key(&binding, None)
        .unwrap()
        .complete(
            &[Message::user("hi")],
            &[],
            Instant::now() + Duration::from_millis(800),
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("cannot reach 127.0.0.1:"),
        "{error}"
    );
}

#[tokio::test]
async fn a_truncated_stream_over_http_is_a_provider_error() {
    let body = openai_tool_stream();
    let cut = &body[..body.find("data: [DONE]").unwrap()];
    let server = Server::start(vec![respond(
        "200 OK",
        "content-type: text/event-stream\r\n",
        cut,
    )]);
    let error = client_for(&server)
        .complete(&[Message::user("hi")], &[], soon(20), &mut |_: &str| {})
        .await
        .unwrap_err();
    assert!(matches!(error, ModelError::Provider(_)));
    assert!(
        error.to_string().contains("ended before `data: [DONE]`"),
        "{error}"
    );
}

#[tokio::test]
async fn dropping_the_call_closes_the_connection_at_once() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut seen = Vec::new();
        let mut buffer = [0; 4096];
        while !String::from_utf8_lossy(&seen).contains("\"stream\":true") {
            let read = stream.read(&mut buffer).unwrap();
            seen.extend_from_slice(&buffer[..read]);
        }
        let event = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"}}]}\n\n";
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
            event.len()
        );
        let _ = stream.flush();
        // Blocks until the client goes away.
        let gone = matches!(stream.read(&mut buffer), Ok(0) | Err(_));
        let _ = closed_tx.send(gone);
    });
    let mut binding = binding(ModelApi::OpenAiChat);
    binding.base_url = url;
    let client = ModelClient::with_key(&binding, None).unwrap();
    let (text_tx, text_rx) = std::sync::mpsc::channel();
    let call = async {
        client
            .complete(&[Message::user("hi")], &[], soon(60), &mut |text: &str| {
                let _ = text_tx.send(text.to_string());
            })
            .await
    };
    let stopped = tokio::time::timeout(Duration::from_millis(700), call).await;
    assert!(
        stopped.is_err(),
        "the stream never ends, so the call is cut"
    );
    assert_eq!(text_rx.try_recv().unwrap(), "partial");
    // Waited for without blocking the runtime, which closes the socket.
    let closed =
        tokio::task::spawn_blocking(move || closed_rx.recv_timeout(Duration::from_secs(5)))
            .await
            .unwrap()
            .unwrap();
    assert!(closed, "the server saw the connection close");
}

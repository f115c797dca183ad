//! The host's model clients against the scripted model server over real
//! HTTP on 127.0.0.1, in both protocols: streamed text and tool calls, the
//! key in the header the server saw (and nowhere else), retries after 429,
//! the deadline, a stop mid-answer, and answers that are cut or garbage.

use bgagents::{
    FinishReason, Message, ModelApi, ModelBinding, ModelClient, ModelError, ToolDefinition,
};
use bgagents_testkit::model_server::{ModelServer, Script, Turn};
use std::sync::Once;
use std::time::Duration;
use tokio::time::Instant;

const KEY_VAR: &str = "BGAGENTS_TEST_MODEL_CLIENT_KEY";
const CANARY: &str = "sk-canary-e2e-0c4f81";

fn set_key() {
    static SET: Once = Once::new();
    // SAFETY: set once, before any client of this module reads it; the
    // variable is used by these tests only.
    SET.call_once(|| unsafe { std::env::set_var(KEY_VAR, CANARY) });
}

fn client(server: &ModelServer, api: ModelApi) -> ModelClient {
    set_key();
    let base_url = match api {
        ModelApi::OpenAiChat => server.base_url(),
        ModelApi::AnthropicMessages => server.anthropic_base_url(),
    };
    ModelClient::new(&ModelBinding {
        reference: "scripted".into(),
        provider: "local".into(),
        model: "scripted-1".into(),
        api,
        base_url,
        key_var: Some(KEY_VAR.into()),
        max_tokens: Some(500),
        temperature: None,
        top_p: None,
        parallel_tool_calls: None,
    })
    .unwrap()
}

fn tools() -> Vec<ToolDefinition> {
    vec![ToolDefinition {
        name: "lookup".into(),
        description: "Looks a word up".into(),
        parameters: r#"{"type":"object","properties":{"word":{"type":"string"}}}"#.into(),
    }]
}

fn within(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

const APIS: [ModelApi; 2] = [ModelApi::OpenAiChat, ModelApi::AnthropicMessages];

#[tokio::test]
async fn both_protocols_stream_text_and_tool_calls_with_the_key_in_the_header() {
    for api in APIS {
        let server = ModelServer::start(Script::new([
            Turn::tool_calls([
                (
                    "lookup",
                    r#"{"word":"sandbox, which is long enough to split"}"#,
                ),
                ("lookup", r#"{"word":"b"}"#),
            ])
            .with_text("Let me look both up.")
            .usage(40, 12),
            Turn::text("Both are words."),
        ]))
        .await;
        let client = client(&server, api);
        assert_eq!(client.name(), "local/scripted-1");
        let mut messages = vec![
            Message::system("Be brief."),
            Message::user("Look up a and b."),
        ];
        let mut streamed = Vec::new();
        let first = client
            .complete(&messages, &tools(), within(20), &mut |text: &str| {
                streamed.push(text.to_string())
            })
            .await
            .unwrap();
        assert!(
            streamed.len() > 1,
            "{api:?}: text arrives in deltas: {streamed:?}"
        );
        assert_eq!(streamed.concat(), "Let me look both up.");
        assert_eq!(first.content, "Let me look both up.");
        assert_eq!(first.finish_reason, FinishReason::ToolCalls, "{api:?}");
        assert_eq!(first.usage.input_tokens, 40);
        assert_eq!(first.usage.output_tokens, 12);
        let calls = &first.tool_calls;
        assert_eq!(calls.len(), 2, "{api:?}");
        assert_eq!(calls[0].name, "lookup");
        assert_eq!(
            calls[0].arguments,
            r#"{"word":"sandbox, which is long enough to split"}"#
        );
        assert_eq!(calls[1].arguments, r#"{"word":"b"}"#);
        assert_ne!(calls[0].id, calls[1].id);
        messages.push(Message::assistant(&first.content, first.tool_calls.clone()));
        messages.push(Message::tool(&calls[0].id, "a: the first letter"));
        messages.push(Message::tool(&calls[1].id, "b: the second letter"));
        let second = client
            .complete(&messages, &tools(), within(20), &mut |_: &str| {})
            .await
            .unwrap();
        assert_eq!(second.content, "Both are words.");
        assert_eq!(second.finish_reason, FinishReason::Stop);
        assert!(second.tool_calls.is_empty());

        let seen = server.requests();
        assert_eq!(seen.len(), 2);
        for request in &seen {
            assert!(request.is_stream());
            assert_eq!(request.model(), Some("scripted-1"));
            match api {
                ModelApi::OpenAiChat => {
                    assert_eq!(request.path, "/v1/chat/completions");
                    let bearer = format!("Bearer {CANARY}");
                    assert_eq!(request.header("authorization"), Some(bearer.as_str()));
                    assert_eq!(request.header("x-api-key"), None);
                }
                ModelApi::AnthropicMessages => {
                    assert_eq!(request.path, "/v1/messages");
                    assert_eq!(request.header("x-api-key"), Some(CANARY));
                    assert!(request.header("anthropic-version").is_some());
                    assert_eq!(request.header("authorization"), None);
                    assert_eq!(request.body["system"], "Be brief.");
                }
            }
        }
        // The tool results went back in the protocol's shape.
        let body = seen[1].body.to_string();
        match api {
            ModelApi::OpenAiChat => assert!(body.contains("\"role\":\"tool\""), "{body}"),
            ModelApi::AnthropicMessages => assert!(body.contains("\"tool_result\""), "{body}"),
        }
    }
}

#[tokio::test]
async fn a_429_is_retried_after_the_wait_the_server_asks_for() {
    for api in APIS {
        let server = ModelServer::start(Script::new([
            Turn::api_error(429, "rate limited, slow down").retry_after("1"),
            Turn::api_error(503, "overloaded"),
            Turn::text("made it"),
        ]))
        .await;
        let started = Instant::now();
        let completion = client(&server, api)
            .complete(&[Message::user("hi")], &[], within(30), &mut |_: &str| {})
            .await
            .unwrap();
        assert_eq!(completion.content, "made it");
        assert_eq!(server.requests().len(), 3, "{api:?}");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "retry-after honoured: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn the_deadline_fails_a_slow_or_still_limited_call() {
    let server = ModelServer::start(Script::new([
        Turn::text("too late").delay(Duration::from_secs(10))
    ]))
    .await;
    let started = Instant::now();
    let error = client(&server, ModelApi::OpenAiChat)
        .complete(
            &[Message::user("hi")],
            &[],
            Instant::now() + Duration::from_millis(400),
            &mut |_: &str| {},
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(error, ModelError::Provider(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("before the model call's deadline"),
        "{error}"
    );
    let server = ModelServer::start(Script::new([
        Turn::api_error(429, "slow down").retry_after("5"),
        Turn::text("never reached"),
    ]))
    .await;
    let error = client(&server, ModelApi::AnthropicMessages)
        .complete(&[Message::user("hi")], &[], within(2), &mut |_: &str| {})
        .await
        .unwrap_err();
    assert!(matches!(error, ModelError::RateLimited(_)), "{error:?}");
    assert!(error.to_string().contains("slow down"), "{error}");
    assert_eq!(
        server.requests().len(),
        1,
        "the next try would pass the deadline"
    );
}

#[tokio::test]
async fn stopping_a_call_mid_answer_closes_the_connection() {
    let server = ModelServer::start(Script::new([Turn::text(
        "one two three four five six seven eight nine ten",
    )
    .chunk_delay(Duration::from_millis(300))]))
    .await;
    let client = client(&server, ModelApi::OpenAiChat);
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let messages = [Message::user("count")];
    let mut on_text = |text: &str| {
        let _ = sender.send(text.to_string());
    };
    let call = client.complete(&messages, &[], within(60), &mut on_text);
    let cut = tokio::time::timeout(Duration::from_millis(800), call).await;
    assert!(cut.is_err());
    assert!(
        received.try_recv().is_ok(),
        "some text arrived before the stop"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.aborted() == 0 {
        assert!(Instant::now() < deadline, "the server never saw the close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cut_and_garbage_answers_are_provider_errors_and_the_key_stays_hidden() {
    for api in APIS {
        let server = ModelServer::start(Script::new([
            Turn::truncated_stream("half an answer"),
            Turn::garbage(b"\x00\xffnot an answer at all".to_vec()),
            Turn::api_error(401, format!("invalid key {CANARY}")),
            Turn::api_error(400, "messages: malformed"),
        ]))
        .await;
        let client = client(&server, api);
        let mut errors = Vec::new();
        for _ in 0..4 {
            errors.push(
                client
                    .complete(&[Message::user("hi")], &[], within(20), &mut |_: &str| {})
                    .await
                    .unwrap_err(),
            );
        }
        for error in &errors {
            let text = format!("{error} {error:?}");
            assert!(!text.contains(CANARY), "{text}");
            assert!(text.contains("local/scripted-1"), "{text}");
        }
        assert!(
            matches!(errors[0], ModelError::Provider(_)),
            "{:?}",
            errors[0]
        );
        assert!(
            errors[0].to_string().contains("truncated")
                || errors[0].to_string().contains("ended before"),
            "{}",
            errors[0]
        );
        assert!(
            matches!(errors[1], ModelError::Provider(_)),
            "{:?}",
            errors[1]
        );
        assert!(
            matches!(errors[2], ModelError::Provider(_)),
            "{:?}",
            errors[2]
        );
        assert!(errors[2].to_string().contains("401"), "{}", errors[2]);
        assert!(
            errors[2].to_string().contains("[redacted]"),
            "{}",
            errors[2]
        );
        assert!(errors[2].to_string().contains(KEY_VAR), "{}", errors[2]);
        assert!(
            matches!(errors[3], ModelError::InvalidRequest(_)),
            "{:?}",
            errors[3]
        );
        assert!(
            errors[3].to_string().contains("messages: malformed"),
            "{}",
            errors[3]
        );
        assert_eq!(server.requests().len(), 4, "{api:?}: nothing was retried");
    }
}

#[test]
fn a_missing_key_variable_is_named_not_guessed() {
    let error = ModelClient::new(&ModelBinding {
        reference: "openai/gpt-4o".into(),
        provider: "openai".into(),
        model: "gpt-4o".into(),
        api: ModelApi::OpenAiChat,
        base_url: "https://api.openai.com/v1".into(),
        key_var: Some("BGAGENTS_TEST_UNSET_MODEL_KEY".into()),
        max_tokens: None,
        temperature: None,
        top_p: None,
        parallel_tool_calls: None,
    })
    .unwrap_err();
    assert_eq!(
        error,
        "model openai/gpt-4o: the API key variable BGAGENTS_TEST_UNSET_MODEL_KEY is not set; \
         `export BGAGENTS_TEST_UNSET_MODEL_KEY=…` before running bgagents"
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_the_key_goes_nowhere_else() {
    let elsewhere = ModelServer::start(Script::new([Turn::text("followed")])).await;
    for api in APIS {
        let target = match api {
            ModelApi::OpenAiChat => format!("{}/chat/completions", elsewhere.base_url()),
            ModelApi::AnthropicMessages => {
                format!("{}/v1/messages", elsewhere.anthropic_base_url())
            }
        };
        let server = ModelServer::start(Script::new([Turn::redirect(target)])).await;
        let answer = client(&server, api)
            .complete(&[Message::user("hi")], &[], within(30), &mut |_| {})
            .await;
        let error = answer.expect_err("a redirect is an error, not an answer");
        assert!(!error.to_string().contains(CANARY), "{error}");
        assert_eq!(server.requests().len(), 1);
    }
    assert!(elsewhere.requests().is_empty(), "the redirect was followed");
}

//! HTTP confined to `grants.http`, end to end: the `http-get` component's
//! `wasi:http` requests, and the `fetch` tool as the bundled LLM agent calls
//! it for the scripted model. Small HTTP servers on 127.0.0.1 stand in for
//! the web: one granted origin answers, and the others — another port of
//! the same host, the same port under another name, the other scheme —
//! must never see a request.

use bgagents::TaskStatus;
use bgagents_testkit::model_server::{ModelServer, Script, Turn};
use bgagents_testkit::{HANG, run_to_end, toolset};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP server on 127.0.0.1 that answers every request with one fixed
/// response (or never answers), counting the requests it reads.
struct Origin {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Origin {
    async fn start(response: Option<Vec<u8>>) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (response, counted) = (response.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    match response {
                        Some(response) => {
                            let _ = stream.write_all(&response).await;
                        }
                        // Holds the connection open without a word.
                        None => tokio::time::sleep(HANG).await,
                    }
                });
            }
        });
        Origin { port, hits }
    }

    /// Answers `200 OK` with `body` as `content_type`.
    async fn ok(content_type: &str, body: &str) -> Origin {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n",
            body.len()
        );
        Origin::start(Some([head.as_bytes(), body.as_bytes()].concat())).await
    }

    /// Answers `302 Found` pointing at `location`.
    async fn redirect(location: &str) -> Origin {
        let response = format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\
             connection: close\r\n\r\n"
        );
        Origin::start(Some(response.into_bytes())).await
    }

    /// `http://127.0.0.1:PORT`, as `grants.http` lists it.
    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

const GREETING: &str = "hello from the granted origin";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_reaches_its_granted_origin_over_wasi_http() {
    let granted = Origin::ok("text/plain", GREETING).await;
    let toolset = toolset(&format!(
        "agents:\n  getter:\n    component: http_get.wasm\n    grants:\n      \
         http: [\"{}\"]\n",
        granted.origin()
    ));

    let view = run_to_end(&toolset, "getter", &granted.url("/greeting")).await;

    assert_eq!(view.info.status, TaskStatus::Completed, "{view:?}");
    assert_eq!(
        view.result.as_deref(),
        Some(format!("status 200\n{GREETING}").as_str())
    );
    assert_eq!(granted.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_components_request_elsewhere_is_denied_inside_the_guest() {
    let granted = Origin::ok("text/plain", GREETING).await;
    let other_port = Origin::ok("text/plain", "another service on the same host").await;
    let toolset = toolset(&format!(
        "agents:\n  getter:\n    component: http_get.wasm\n    grants:\n      \
         http: [\"{}\"]\n  ungranted:\n    component: http_get.wasm\n",
        granted.origin()
    ));
    let cases = [
        // Another port of the granted host.
        ("getter", other_port.url("/"), other_port.origin()),
        // The granted server under another host name.
        (
            "getter",
            format!("http://localhost:{}/", granted.port),
            format!("http://localhost:{}", granted.port),
        ),
        // The granted host and port over the other scheme.
        (
            "getter",
            format!("https://127.0.0.1:{}/", granted.port),
            format!("https://127.0.0.1:{}", granted.port),
        ),
        // An agent with no `grants.http` at all.
        ("ungranted", granted.url("/"), granted.origin()),
    ];
    for (agent, url, origin) in cases {
        let view = run_to_end(&toolset, agent, &url).await;

        assert_eq!(view.info.status, TaskStatus::Failed, "{url}: {view:?}");
        let error = view.error.unwrap_or_default();
        assert!(
            error.starts_with(&format!("GET {url}: ")) && error.contains("HttpRequestDenied"),
            "{url}: {error}"
        );
        let output = &view.output.text;
        assert!(
            output.contains(&format!("[http: request to {origin} refused"))
                && output.contains(&format!("agents.{agent}.grants.http")),
            "{url}: {output}"
        );
    }
    assert_eq!(granted.hits(), 0, "a refused request reached the server");
    assert_eq!(other_port.hits(), 0, "a refused request reached the server");
}

fn fetch(urls: &[String]) -> Turn {
    let args = json!({"urls": urls, "format": "text"});
    Turn::tool_calls([("fetch", args.to_string())])
}

/// A team of one LLM agent `reader` with the fetch toolset (`timeout:` 2 s)
/// and `grants` lines, its model served by `server`.
fn fetch_team(server: &ModelServer, grants: &str) -> String {
    format!(
        "agents:\n  reader:\n    model: reader-model\n    instruction: Fetch what you are \
         asked to.\n    toolsets:\n      - type: fetch\n        timeout: 2\n{grants}\
         models:\n  reader-model:\n    provider: ollama\n    model: reader-model\n    \
         base_url: {}\n",
        server.base_url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetch_tool_reaches_granted_origins_only_and_caps_what_it_reads() {
    let granted = Origin::ok("text/plain", GREETING).await;
    let other_port = Origin::ok("text/plain", "not for the agent").await;
    let bounce = Origin::redirect(&other_port.url("/elsewhere")).await;
    let big = Origin::ok("text/plain", &"x".repeat(1536 << 10)).await;
    let silent = Origin::start(None).await;
    let server = ModelServer::start(Script::new([
        fetch(&[granted.url("/greeting")]),
        fetch(&[other_port.url("/")]),
        fetch(&[bounce.url("/")]),
        fetch(&[big.url("/")]),
        fetch(&[silent.url("/")]),
        Turn::text("done"),
    ]))
    .await;
    let origins: Vec<String> = [&granted, &bounce, &big, &silent]
        .iter()
        .map(|origin| format!("\"{}\"", origin.origin()))
        .collect();
    let toolset = toolset(&fetch_team(
        &server,
        &format!("    grants:\n      http: [{}]\n", origins.join(", ")),
    ));

    let view = tokio::time::timeout(HANG, run_to_end(&toolset, "reader", "Fetch the pages."))
        .await
        .expect("the agent hung");

    assert_eq!(view.info.status, TaskStatus::Completed, "{view:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 6, "{view:?}");
    let result = |turn: usize| requests[turn].tool_results().pop().unwrap_or_default();

    let fetched = result(1);
    assert!(
        fetched.starts_with(&format!(
            "Successfully fetched {}",
            granted.url("/greeting")
        )) && fetched.ends_with(GREETING),
        "{fetched}"
    );

    let refused = result(2);
    assert!(
        refused.starts_with(&format!("Error fetching {}: refused", other_port.url("/")))
            && refused.contains(&other_port.origin())
            && refused.contains("agents.reader.grants.http"),
        "{refused}"
    );

    let redirected = result(3);
    assert!(
        redirected.contains(&format!("refused: redirected to {}", other_port.origin())),
        "{redirected}"
    );
    assert_eq!(other_port.hits(), 0, "a refused fetch reached the server");
    assert_eq!(bounce.hits(), 1);

    let cut = result(4);
    assert!(
        cut.contains("[cut: the body is larger than 1 MiB"),
        "{}",
        &cut[cut.len() - 200..]
    );
    assert!(
        !cut.contains(&"x".repeat((1 << 20) + 1)),
        "more than the cap was returned"
    );
    assert!(
        cut.contains(&"x".repeat(1 << 20)),
        "the first MiB is missing"
    );

    let timed_out = result(5);
    assert!(
        timed_out.starts_with(&format!(
            "Error fetching {}: timed out after 2 s",
            silent.url("/")
        )),
        "{timed_out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetch_tool_without_grants_says_how_to_grant_origins() {
    let origin = Origin::ok("text/plain", GREETING).await;
    let server =
        ModelServer::start(Script::new([fetch(&[origin.url("/")]), Turn::text("done")])).await;
    let toolset = toolset(&fetch_team(&server, ""));

    let view = run_to_end(&toolset, "reader", "Fetch the page.").await;

    assert_eq!(view.info.status, TaskStatus::Completed, "{view:?}");
    let requests = server.requests();
    let error = requests[1].tool_results().pop().unwrap_or_default();
    assert!(
        error.contains("this agent may fetch from no origin")
            && error.contains("agents.reader.grants.http"),
        "{error}"
    );
    assert_eq!(origin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_page_is_converted_within_the_fetch_timeout() {
    // Nearly the 1 MiB body cap of thousands of scripts, styles and links:
    // markup a quadratic conversion would take minutes over, while the
    // toolset's `timeout:` is 2 s.
    let block = "<script>var a = 1;</script><STYLE>p{}</sTyLe><a href=\"/p\">t</a> & ";
    let page = format!("<html><body>{}", block.repeat((1000 << 10) / block.len()));
    let hostile = Origin::ok("text/html", &page).await;
    let args = json!({"urls": [hostile.url("/")], "format": "markdown"});
    let server = ModelServer::start(Script::new([
        Turn::tool_calls([("fetch", args.to_string())]),
        Turn::text("done"),
    ]))
    .await;
    let toolset = toolset(&fetch_team(
        &server,
        &format!("    grants:\n      http: [\"{}\"]\n", hostile.origin()),
    ));

    let view = tokio::time::timeout(HANG, run_to_end(&toolset, "reader", "Fetch the page."))
        .await
        .expect("the agent hung");

    assert_eq!(view.info.status, TaskStatus::Completed, "{view:?}");
    let requests = server.requests();
    let fetched = requests[1].tool_results().pop().unwrap_or_default();
    assert!(
        fetched.starts_with(&format!("Successfully fetched {}", hostile.url("/"))),
        "{}",
        &fetched[..fetched.len().min(300)]
    );
    assert_eq!(
        fetched.matches("[t](/p)").count(),
        (1000 << 10) / block.len()
    );
    assert!(!fetched.contains("var a"));
}

//! `bgagents serve --http`: MCP over Streamable HTTP on 127.0.0.1, driven by
//! rmcp's HTTP client — every tool, per-session listing, a task reached by
//! id from another session, and the bearer token (none, wrong, right); a
//! non-loopback address refused without a token. The MCP tasks extension
//! (tasks polled and cancelled, `notifications/tasks` of a session's own
//! tasks) and `run_agent` (a task to such clients, the result to others,
//! the task stopped when the request is cancelled or the client leaves).
//! The JSON API under `/api` through reqwest: the token on every path (the
//! dashboard page served without it), agents, starting, listing, viewing,
//! reading output from an offset with a wait, stopping, refused requests,
//! and the server-sent event stream, which ends when the daemon stops.

use super::serve::{DAEMON_TOOLS, Daemon};
use crate::text;
use bgagents_testkit::{HANG, Scratch};
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, ClientConfig, Implementation, TaskStatusNotificationParams,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const TEAM: &str = r#"
agents:
  helper:
    component: '{plugins}/probe.wasm'
"#;

/// A team whose root may start `helper` only (for `mcp --http`, which acts
/// as root).
const AGENT_TEAM: &str = r#"
agents:
  root:
    component: '{plugins}/probe.wasm'
    sub_agents: [helper]
    toolsets: [{type: background_agents}]
  helper:
    component: '{plugins}/probe.wasm'
  other:
    component: '{plugins}/probe.wasm'
"#;

/// The `http://…/mcp` URL the daemon printed.
fn mcp_url(daemon: &Daemon) -> String {
    let log = daemon.log();
    let line = (log.lines())
        .find(|line| line.contains("serving MCP over HTTP at "))
        .unwrap_or_else(|| panic!("no HTTP line in:\n{log}"));
    line.rsplit(' ').next().unwrap().to_string()
}

/// reqwest (through rmcp too) needs rustls's crypto provider chosen.
fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A daemon of [`TEAM`] serving HTTP on 127.0.0.1, its URL and the token it
/// made.
fn http_daemon(scratch: &Scratch) -> (Daemon, String, String) {
    http_daemon_of(scratch, TEAM)
}

/// [`http_daemon`] of team `yaml`.
fn http_daemon_of(scratch: &Scratch, yaml: &str) -> (Daemon, String, String) {
    crypto();
    let team = scratch.team(yaml);
    let daemon = Daemon::start_with(
        &team,
        Some(&scratch.dir.join("state")),
        &scratch.dir,
        &["--http", "127.0.0.1:0"],
    );
    let url = mcp_url(&daemon);
    let token = made_token(&daemon);
    (daemon, url, token)
}

/// The token the daemon made in its state directory.
fn made_token(daemon: &Daemon) -> String {
    let path = daemon.state.join("http-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

async fn client(
    url: &str,
    token: Option<&str>,
    name: &str,
) -> Result<RunningService<RoleClient, ClientConfig>, String> {
    crypto();
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    ClientConfig::new(Default::default(), Implementation::new(name, "1"))
        .serve(transport)
        .await
        .map_err(|error| error.to_string())
}

async fn call(
    client: &RunningService<RoleClient, ClientConfig>,
    tool: &str,
    args: Value,
) -> (bool, String) {
    let Value::Object(args) = args else {
        unreachable!()
    };
    let result = tokio::time::timeout(
        HANG,
        client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args)),
    )
    .await
    .expect("the call hung")
    .unwrap_or_else(|error| panic!("{tool}: {error}"));
    let text = (result.content.iter())
        .filter_map(|content| content.as_text().map(|text| text.text.clone()))
        .collect();
    (result.is_error != Some(true), text)
}

/// Starts `helper` on `task` through `client`'s `run_background_agent`;
/// the task id.
async fn start_helper(client: &RunningService<RoleClient, ClientConfig>, task: &str) -> String {
    let (ok, answer) = call(
        client,
        "run_background_agent",
        json!({"agent": "helper", "task": task}),
    )
    .await;
    assert!(ok, "{answer}");
    task_id(&answer)
}

fn task_id(answer: &str) -> String {
    let line = answer.lines().next().unwrap();
    line.rsplit_once("ID: ").unwrap().1.trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_client_runs_lists_views_and_waits_and_each_session_sees_its_own() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let state = scratch.dir.join("state");
    let daemon = Daemon::start_with(
        &team,
        Some(&state),
        &scratch.dir,
        &["--http", "127.0.0.1:0"],
    );
    let url = mcp_url(&daemon);
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{url}"
    );

    let token = made_token(&daemon);
    // Even on loopback, a client without the token is refused.
    assert!(client(&url, None, "anonymous").await.is_err());
    let first = client(&url, Some(&token), "first").await.unwrap();
    let tools: Vec<String> = (first.list_all_tools().await.unwrap().into_iter())
        .map(|tool| tool.name.to_string())
        .collect();
    for tool in DAEMON_TOOLS {
        assert!(tools.iter().any(|name| name == tool), "{tool} in {tools:?}");
    }
    let id = start_helper(&first, "echo over http").await;
    let (ok, report) = call(&first, "wait_background_agents", json!({"task_ids": [id]})).await;
    assert!(ok, "{report}");
    assert!(report.contains("over http"), "{report}");
    let (_, listed) = call(&first, "list_background_agents", json!({})).await;
    assert!(listed.contains(&id), "{listed}");

    // Another client has its own session: it lists nothing, and reaches
    // the task by its id.
    let second = client(&url, Some(&token), "second").await.unwrap();
    let (_, listed) = call(&second, "list_background_agents", json!({})).await;
    assert!(!listed.contains(&id), "{listed}");
    let (ok, view) = call(&second, "view_background_agent", json!({"task_id": id})).await;
    assert!(ok && view.contains("over http"), "{view}");
    // A spinning task stopped from the other session.
    let spinner = start_helper(&first, "spin").await;
    let (ok, stopped) = call(
        &second,
        "stop_background_agent",
        json!({"task_id": spinner}),
    )
    .await;
    assert!(ok, "{stopped}");

    // The operator's view labels the HTTP sessions.
    let ps = daemon.ok(&["ps", "--all", "--json"]);
    let ps: Value = serde_json::from_str(&ps).unwrap();
    let sessions: Vec<&str> = (ps.as_array().unwrap().iter())
        .map(|task| task["session"].as_str().unwrap())
        .collect();
    assert!(
        sessions
            .iter()
            .all(|session| session.starts_with("http#") && session.ends_with(" (first)")),
        "{ps}"
    );
    first.cancel().await.unwrap();
    second.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_is_required_when_given_and_checked() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let token = "b7c1d2e3f4a5968778695a4b3c2d1e0f";
    let token_file = scratch.write("token", format!("{token}\n"));
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let daemon = Daemon::start_with(
        &team,
        Some(&scratch.dir.join("state")),
        &scratch.dir,
        &[
            "--http",
            "127.0.0.1:0",
            "--auth-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let url = mcp_url(&daemon);
    // Raw requests: no token, a wrong one.
    crypto();
    let http = reqwest::Client::new();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    for authorization in [None, Some("Bearer not-the-token-at-all-0000"), Some(token)] {
        let mut request = http
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    // rmcp's client: refused without the token, served with it.
    assert!(client(&url, None, "anonymous").await.is_err());
    // The scheme's name in any case.
    let lower = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("bearer {token}"))
        .json(&initialize)
        .send()
        .await
        .unwrap();
    assert!(lower.status().is_success(), "{}", lower.status());
    let served = client(&url, Some(token), "holder").await.unwrap();
    start_helper(&served, "echo allowed").await;
    served.cancel().await.unwrap();
    assert!(!daemon.log().contains(token), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_others_can_read_or_too_short_is_refused_and_any_address_serves_with_one() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let state = scratch.dir.join("state");
    let serve = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .args([
                "serve",
                team.to_str().unwrap(),
                "--state",
                state.to_str().unwrap(),
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    // Readable by others, or too short: refused before anything is made,
    // the token never shown.
    let refusals = [
        ("readable", "0123456789abcdef0123", 0o644, "chmod 600"),
        ("short", "Zq7Xw9", 0o600, "at least 16 characters"),
    ];
    for (name, token, mode, expected) in refusals {
        let file = scratch.write(name, format!("{token}\n"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let output = serve(&[
            "--http",
            "127.0.0.1:0",
            "--auth-token-file",
            file.to_str().unwrap(),
        ]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            !stderr.contains(token),
            "the token is never shown: {stderr}"
        );
        assert!(!state.join("bgagents.sock").exists(), "nothing left behind");
    }
    // Any address, with a token: served, with a warning.
    let token = "f00dfeedf00dfeedf00dfeedf00dfeed";
    let file = scratch.write("token", format!("{token}\n"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let daemon = Daemon::start_with(
        &team,
        Some(&state),
        &scratch.dir,
        &[
            "--http",
            "0.0.0.0:0",
            "--auth-token-file",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        daemon.log().contains("reachable from other machines"),
        "{}",
        daemon.log()
    );
    let port = mcp_url(&daemon).rsplit(':').next().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let served = client(&url, Some(token), "remote").await.unwrap();
    served.cancel().await.unwrap();
}

/// One JSON-RPC message POSTed on `session` (none: `initialize`); the
/// response's `Mcp-Session-Id` and its JSON-RPC answer (from JSON or SSE).
async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    session: Option<&str>,
    message: Value,
) -> (Option<String>, Option<Value>) {
    let mut request = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .bearer_auth(token)
        .json(&message);
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    let response = request.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let session =
        (response.headers().get("mcp-session-id")).map(|value| value.to_str().unwrap().to_string());
    let body = response.text().await.unwrap();
    let answer = (body.lines())
        .filter_map(|line| line.strip_prefix("data:"))
        .chain(std::iter::once(body.as_str()))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|message| message.get("id").is_some());
    (session, answer)
}

/// A raw MCP client on one connection (`http`) and one token.
struct Raw<'a> {
    http: reqwest::Client,
    url: &'a str,
    token: &'a str,
}

impl Raw<'_> {
    /// `initialize` and `notifications/initialized` as client `name`; the
    /// session id.
    async fn open_session(&self, name: &str) -> String {
        let (session, _) = post(
            &self.http,
            self.url,
            self.token,
            None,
            json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": name, "version": "1"}}}),
        )
        .await;
        let session = session.expect("a session id");
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        post(
            &self.http,
            self.url,
            self.token,
            Some(&session),
            initialized,
        )
        .await;
        session
    }

    /// Calls `tool` in `session`; the answer as JSON text.
    async fn call(&self, session: &str, tool: &str, arguments: Value) -> String {
        let request = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}});
        let (_, answer) = post(&self.http, self.url, self.token, Some(session), request).await;
        answer.expect("an answer").to_string()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_reconnects_with_its_session_keeps_seeing_its_tasks() {
    let scratch = Scratch::new();
    let (_daemon, url, token) = http_daemon(&scratch);
    let raw = |http| Raw {
        http,
        url: &url,
        token: &token,
    };
    let first = raw(reqwest::Client::new());
    let session = first.open_session("reconnecting").await;
    let answer = first
        .call(
            &session,
            "run_background_agent",
            json!({"agent": "helper", "task": "echo kept"}),
        )
        .await;
    let id = answer.split("agent_task_").nth(1).unwrap()[..36].to_string();
    drop(first);
    // A new connection, the same session: its task is listed.
    let second = raw(reqwest::Client::new());
    let listed = second
        .call(&session, "list_background_agents", json!({}))
        .await;
    assert!(listed.contains(&id), "{listed}");
    // Another session does not list it.
    let other = second.open_session("other").await;
    let listed = second
        .call(&other, "list_background_agents", json!({}))
        .await;
    assert!(!listed.contains(&id), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_over_http_acts_as_the_agent_scopes_each_session_and_ends_on_sigterm() {
    let scratch = Scratch::new();
    let team = scratch.team(AGENT_TEAM);
    let token = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    let mut server = McpHttp::start(&scratch, &team, token).await;
    let url = server.url.clone();
    let first = client(&url, Some(token), "first").await.unwrap();
    // It acts as root: helper may be started, other may not.
    let (ok, refused) = call(
        &first,
        "run_background_agent",
        json!({"agent": "other", "task": "echo no"}),
    )
    .await;
    assert!(!ok && refused.contains("helper"), "{refused}");
    let id = start_helper(&first, "spin").await;
    // Another session does not reach it, even by id, nor list it: the
    // operator's view of every session is not offered to an agent.
    let second = client(&url, Some(token), "second").await.unwrap();
    let (ok, view) = call(&second, "view_background_agent", json!({"task_id": id})).await;
    assert!(!ok && view.contains("not found"), "{view}");
    let tools: Vec<String> = (second.list_all_tools().await.unwrap().into_iter())
        .map(|tool| tool.name.to_string())
        .collect();
    assert!(
        !tools
            .iter()
            .any(|tool| tool == "list_all_background_agents"),
        "{tools:?}"
    );
    assert!(
        tools
            .iter()
            .any(|tool| tool == "read_background_agent_output"),
        "{tools:?}"
    );
    let (ok, refused) = call(&second, "list_all_background_agents", json!({})).await;
    assert!(!ok && !refused.contains(&id), "{refused}");
    // SIGTERM stops the task and ends the server.
    let status = server.terminate().await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_with_the_tasks_extension_gets_mcp_tasks_polls_and_cancels_them() {
    use rmcp::model::{
        CallToolResponse, CancelTaskParams, ClientCapabilities, GetTaskParams, TaskStatus,
    };
    let scratch = Scratch::new();
    let (daemon, url, token) = http_daemon(&scratch);
    let config = StreamableHttpClientTransportConfig::with_uri(url.as_str()).auth_header(token);
    let capabilities = ClientCapabilities::builder().enable_tasks().build();
    let client = ClientConfig::new(capabilities, Implementation::new("tasks", "1"))
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap();
    let run = |task: &str| {
        let Value::Object(args) = json!({"agent": "helper", "task": task}) else {
            unreachable!()
        };
        CallToolRequestParams::new("run_background_agent").with_arguments(args)
    };
    // A task that completes: polled until done, with its result.
    let CallToolResponse::Task(created) =
        client.call_tool_once(run("echo as a task")).await.unwrap()
    else {
        panic!("no MCP task for a client that declared the extension")
    };
    let id = created.task.task_id.clone();
    assert!(id.starts_with("agent_task_"), "{id}");
    let started = std::time::Instant::now();
    let done = loop {
        let got = client
            .get_task(GetTaskParams::new(id.clone()))
            .await
            .unwrap();
        if got.task.status().is_terminal() {
            break got;
        }
        assert!(started.elapsed() < HANG, "never finished");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(done.task.status(), TaskStatus::Completed);
    // Created when it was accepted, the same in every report.
    assert_eq!(done.task.task.created_at, created.task.created_at);
    assert!(
        created.task.created_at.ends_with('Z'),
        "{}",
        created.task.created_at
    );
    let wire = serde_json::to_string(&done).unwrap();
    assert!(wire.contains("as a task"), "{wire}");
    // The same id is a bgagents task id.
    let view = daemon.ok(&["view", &id]);
    assert!(view.contains("as a task"), "{view}");
    // A spinning task, cancelled: stopped.
    let CallToolResponse::Task(spinning) = client.call_tool_once(run("spin")).await.unwrap() else {
        panic!("no MCP task")
    };
    let spinner = spinning.task.task_id.clone();
    client
        .cancel_task(CancelTaskParams::new(spinner.clone()))
        .await
        .unwrap();
    let got = client
        .get_task(GetTaskParams::new(spinner.clone()))
        .await
        .unwrap();
    assert_eq!(got.task.status(), TaskStatus::Cancelled);
    assert!(daemon.ok(&["view", &spinner]).contains("stopped"));
    // An unknown id is an error naming it.
    let unknown = client.get_task(GetTaskParams::new("agent_task_nope")).await;
    assert!(
        format!("{unknown:?}").contains("agent_task_nope"),
        "{unknown:?}"
    );
    client.cancel().await.unwrap();
}

/// The JSON API of a daemon: its base URL (`http://…` without `/mcp`) and
/// the token, over one connection.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// The names `GET /api/agents` lists.
    async fn agent_names(&self) -> Vec<String> {
        let (status, agents) = self.get("/api/agents").await;
        assert_eq!(status, 200, "{agents}");
        (agents["agents"].as_array().unwrap().iter())
            .map(|agent| agent["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn new(url: &str, token: &str) -> Api {
        crypto();
        Api {
            http: reqwest::Client::new(),
            base: url.strip_suffix("/mcp").unwrap().to_string(),
            token: token.to_string(),
        }
    }

    /// `method` on `path` with `authorization` (none: no header) and
    /// `body`; the status and the body read as JSON.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = tokio::time::timeout(HANG, request.send())
            .await
            .expect("the request hung")
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("{path}: not JSON ({error}): {text}"));
        (status, body)
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let bearer = self.bearer();
        self.send(reqwest::Method::GET, path, Some(&bearer), None)
            .await
    }

    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let bearer = self.bearer();
        self.send(
            reqwest::Method::POST,
            path,
            Some(&bearer),
            Some(body.to_string()),
        )
        .await
    }

    /// Starts `task` on helper; the task's id.
    async fn start(&self, task: &str) -> String {
        let body = serde_json::to_string(&json!({"agent": "helper", "task": task})).unwrap();
        let (status, record) = self.post("/api/tasks", &body).await;
        assert_eq!(status, 201, "{record}");
        record["task_id"].as_str().unwrap().to_string()
    }
}

/// `bgagents ps --all --json`, polled until task `id` has `status`; its
/// record.
async fn ps_until(daemon: &Daemon, id: &str, status: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let ps: Value = serde_json::from_str(&daemon.ok(&["ps", "--all", "--json"])).unwrap();
        let task = (ps.as_array().unwrap().iter()).find(|task| task["task_id"] == id);
        if let Some(task) = task
            && task["status"] == status
        {
            return task.clone();
        }
        assert!(started.elapsed() < HANG, "{id} never {status}: {ps}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_api_needs_the_token_and_the_dashboard_page_does_not() {
    let scratch = Scratch::new();
    let (_daemon, url, token) = http_daemon(&scratch);
    let api = Api::new(&url, &token);
    let id = api.start("echo secret task text").await;
    let paths = [
        ("GET", "/api/agents".to_string()),
        ("GET", "/api/tasks".to_string()),
        ("POST", "/api/tasks".to_string()),
        ("GET", format!("/api/tasks/{id}")),
        ("GET", format!("/api/tasks/{id}/output?offset=0")),
        ("POST", format!("/api/tasks/{id}/stop")),
        ("GET", "/api/events".to_string()),
        ("GET", "/api/nowhere".to_string()),
    ];
    let wrong = format!("Bearer {}x", token);
    for (method, path) in &paths {
        for authorization in [None, Some(wrong.as_str()), Some(token.as_str())] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut request = api.http.request(method, format!("{}{path}", api.base));
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let body = json!({"agent": "helper", "task": "echo refused"}).to_string();
            let response = request.body(body).send().await.unwrap();
            assert_eq!(response.status(), 401, "{path} with {authorization:?}");
            let text = response.text().await.unwrap();
            assert!(!text.contains("secret"), "{text}");
        }
    }
    // Nothing was started by the refused requests.
    let (_, listed) = api.get("/api/tasks").await;
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 1, "{listed}");

    // The page: served without the token, under a content security
    // policy, and with no task data in it.
    let page = api.http.get(format!("{}/", api.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let content_type = page.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<html") || html.contains("<!DOCTYPE"),
        "{html}"
    );
    assert!(!html.contains(&id) && !html.contains("secret"), "{html}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_api_lists_agents_starts_lists_and_views_tasks_and_refuses_bad_requests() {
    let scratch = Scratch::new();
    let (daemon, url, token) = http_daemon(&scratch);
    let api = Api::new(&url, &token);
    assert_eq!(api.agent_names().await, ["helper"]);

    // Started: 201 with the task's id and status.
    let body = json!({"agent": "helper", "task": "echo from the api"}).to_string();
    let (status, started) = api.post("/api/tasks", &body).await;
    assert_eq!(status, 201, "{started}");
    let id = started["task_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("agent_task_"), "{started}");
    let status = started["status"].as_str().unwrap();
    assert!(
        ["queued", "running", "completed"].contains(&status),
        "{started}"
    );
    assert_eq!(started["agent"], "helper", "{started}");

    // Bad bodies: 400, saying what is wrong.
    for (body, problem) in [
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        (
            r#"{"agent": "helper", "task": "echo x", "colour": "red"}"#,
            "colour",
        ),
        (r#"{"agent": "nobody", "task": "echo x"}"#, "nobody"),
    ] {
        let (status, answer) = api.post("/api/tasks", body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(problem), "{body}: {error}");
    }

    // Listed with its session; viewed in full once done.
    let (status, listed) = api.get("/api/tasks").await;
    assert_eq!(status, 200, "{listed}");
    let tasks = listed["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "only the started task: {listed}");
    assert_eq!(tasks[0]["task_id"], id.as_str(), "{listed}");
    assert_eq!(tasks[0]["session"], "http", "{listed}");
    let started = std::time::Instant::now();
    let view = loop {
        let (status, view) = api.get(&format!("/api/tasks/{id}")).await;
        assert_eq!(status, 200, "{view}");
        if view["done"] == true {
            break view;
        }
        assert!(started.elapsed() < HANG, "never done: {view}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["task"], "echo from the api", "{view}");
    assert_eq!(view["result"], "from the api", "{view}");

    // Unknown ids and paths: 404.
    let unknown = "agent_task_00000000-0000-0000-0000-000000000000";
    for path in [
        format!("/api/tasks/{unknown}"),
        format!("/api/tasks/{unknown}/output"),
        "/api/elsewhere".to_string(),
    ] {
        let (status, answer) = api.get(&path).await;
        assert_eq!(status, 404, "{path}: {answer}");
        assert!(answer["error"].is_string(), "{path}: {answer}");
    }
    let (status, answer) = api.post(&format!("/api/tasks/{unknown}/stop"), "").await;
    assert_eq!(status, 404, "{answer}");

    // The operator sees it, in the session HTTP requests share.
    let task = ps_until(&daemon, &id, "completed").await;
    assert_eq!(task["session"], "http", "{task}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_api_reads_output_from_an_offset_waiting_for_more_and_stops_tasks() {
    let scratch = Scratch::new();
    let (daemon, url, token) = http_daemon(&scratch);
    let api = Api::new(&url, &token);
    let id = api
        .start("print 3 hello && sleep 1500 && print 1 more && sleep 1500")
        .await;
    let read = |offset: u64, wait: u64| {
        let path = format!("/api/tasks/{id}/output?offset={offset}&wait={wait}");
        let api = &api;
        async move {
            let (status, read) = api.get(&path).await;
            assert_eq!(status, 200, "{path}: {read}");
            (
                read["output"].as_str().unwrap().to_string(),
                read["next_offset"].as_u64().unwrap(),
                read,
            )
        }
    };
    // The first lines, however many reads they come in.
    let (mut output, mut offset) = (String::new(), 0);
    while output.len() < "hello\n".len() * 3 {
        let (more, next, record) = read(offset, 5).await;
        assert!(!more.is_empty(), "a waiting read came back empty: {record}");
        assert_eq!(next, offset + more.len() as u64, "{record}");
        (output, offset) = (output + &more, next);
    }
    assert_eq!(output, "hello\n".repeat(3));
    // Nothing more yet: without a wait, an empty read at once.
    let (more, next, record) = read(offset, 0).await;
    assert_eq!((more.as_str(), next), ("", offset), "{record}");
    assert_eq!(record["status"], "running", "{record}");
    // With a wait: the next output once written.
    let (more, next, record) = read(offset, 5).await;
    assert_eq!(more, "more\n", "{record}");
    assert_eq!(next, offset + 5);
    // Then the end of the task: no more output, and its result.
    let (more, last, record) = read(next, 5).await;
    assert_eq!((more.as_str(), last), ("", next), "{record}");
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["result"], "slept 1500 ms", "{record}");
    // From the start again: everything.
    let (all, _, _) = read(0, 0).await;
    assert_eq!(all, "hello\n".repeat(3) + "more\n");

    // Bad parameters: 400.
    for query in ["wait=999", "offset=x", "wait=-1", "colour=red"] {
        let (status, answer) = api.get(&format!("/api/tasks/{id}/output?{query}")).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert!(answer["error"].is_string(), "{query}: {answer}");
    }

    // A spinning task stopped, then stopped again: refused, not running.
    let spinner = api.start("spin").await;
    ps_until(&daemon, &spinner, "running").await;
    let stop = format!("/api/tasks/{spinner}/stop");
    let (status, stopped) = api.post(&stop, "").await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert_eq!(stopped["task_id"], spinner.as_str(), "{stopped}");
    let (status, again) = api.post(&stop, "").await;
    assert_eq!(status, 409, "{again}");
    assert!(again["error"].is_string(), "{again}");
    let task = ps_until(&daemon, &spinner, "stopped").await;
    assert_eq!(task["session"], "http", "{task}");
}

/// Server-sent events read from a streaming response, block by block.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// The next event's name and data (comments and keep-alives skipped);
    /// `None` once the stream has ended.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    (block.lines())
                        .find_map(|line| line.strip_prefix(name))
                        .map(|value| value.trim_start().to_string())
                };
                match (field("event:"), field("data:")) {
                    (Some(event), Some(data)) => {
                        let data = serde_json::from_str(&data)
                            .unwrap_or_else(|error| panic!("{error}: {block}"));
                        return Some((event, data));
                    }
                    _ => continue,
                }
            }
            let chunk = tokio::time::timeout(HANG, self.response.chunk())
                .await
                .expect("the event stream hung");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_tells_a_tasks_events_and_ends_when_the_daemon_stops() {
    let scratch = Scratch::new();
    let (daemon, url, token) = http_daemon(&scratch);
    let api = Api::new(&url, &token);
    // Output events are sent when asked for.
    let events_url = format!("{}/api/events?output=1", api.base);
    let refused = api.http.get(&events_url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let response = api
        .http
        .get(&events_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    // Without `output=1`, only status events.
    let plain = (api.http.get(format!("{}/api/events", api.base)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut plain = Events {
        response: plain,
        buffer: String::new(),
    };

    let id = api.start("print 1 streamed && echo done").await;
    let mut seen = Vec::new();
    let finished = loop {
        let (event, data) = events.next().await.expect("the stream ended early");
        assert_eq!(data["event"], event.as_str(), "{data}");
        if data["task_id"] != id.as_str() {
            continue;
        }
        assert_eq!(data["agent"], "helper", "{data}");
        assert_eq!(data["depth"], 1, "{data}");
        if event == "output" {
            assert_eq!(data["output"], "streamed\n", "{data}");
        }
        seen.push(event.clone());
        if event == "finished" {
            break data;
        }
    };
    assert_eq!(seen, ["queued", "started", "output", "finished"]);
    assert_eq!(finished["status"], "completed", "{finished}");
    let mut statuses = Vec::new();
    while statuses.last().map(String::as_str) != Some("finished") {
        let (event, data) = plain.next().await.expect("the stream ended early");
        if data["task_id"] == id.as_str() {
            statuses.push(event);
        }
    }
    assert_eq!(statuses, ["queued", "started", "finished"]);
    // Told once on disk: the task is finished for every reader.
    let (_, view) = api.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(view["status"], "completed", "{view}");

    // SIGTERM with the stream open and a task running: the stream tells
    // the shutdown's stop of it, then ends, and the daemon exits.
    let spinner = api.start("spin").await;
    loop {
        let (event, data) = events.next().await.expect("the stream ended early");
        if data["task_id"] == spinner.as_str() && event == "started" {
            break;
        }
    }
    let stopping = tokio::task::spawn_blocking(move || daemon.terminate());
    let mut told_stop = false;
    while let Some((event, data)) = events.next().await {
        if data["task_id"] == spinner.as_str() && event == "finished" {
            assert_eq!(data["status"], "stopped", "{data}");
            told_stop = true;
        }
    }
    assert!(told_stop, "the stream ended without the shutdown's stop");
    let status = stopping.await.unwrap();
    assert!(status.success(), "{status}");
}

/// A client with the tasks extension that passes on the
/// `notifications/tasks` it receives.
struct TaskWatcher {
    config: ClientConfig,
    statuses: tokio::sync::mpsc::UnboundedSender<TaskStatusNotificationParams>,
}

impl rmcp::ClientHandler for TaskWatcher {
    fn get_info(&self) -> ClientConfig {
        self.config.clone()
    }

    async fn on_task_status(
        &self,
        params: TaskStatusNotificationParams,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        let _ = self.statuses.send(params);
    }
}

/// The next `notifications/tasks` about task `id` whose status is final;
/// the ids of every task told about on the way are added to `told`.
async fn final_status(
    statuses: &mut tokio::sync::mpsc::UnboundedReceiver<TaskStatusNotificationParams>,
    id: &str,
    told: &mut Vec<String>,
) -> TaskStatusNotificationParams {
    loop {
        let status = tokio::time::timeout(HANG, statuses.recv())
            .await
            .unwrap_or_else(|_| panic!("no final notifications/tasks for {id}"))
            .expect("the client ended");
        told.push(status.task.task.task_id.clone());
        if status.task.task.task_id == id && status.status().is_terminal() {
            return status;
        }
    }
}

fn run_args(tool: &str, agent: &str, task: &str) -> CallToolRequestParams {
    let Value::Object(args) = json!({"agent": agent, "task": task}) else {
        unreachable!()
    };
    CallToolRequestParams::new(tool.to_string()).with_arguments(args)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_with_the_tasks_extension_is_notified_of_its_tasks_statuses() {
    use rmcp::model::{CallToolResponse, CancelTaskParams, ClientCapabilities, TaskStatus};
    let scratch = Scratch::new();
    let (daemon, url, token) = http_daemon_of(
        &scratch,
        r#"
agents:
  root:
    component: '{plugins}/probe.wasm'
    sub_agents: [helper]
    toolsets: [{type: background_agents}]
  helper:
    component: '{plugins}/probe.wasm'
"#,
    );
    let config =
        StreamableHttpClientTransportConfig::with_uri(url.as_str()).auth_header(token.clone());
    let (sender, mut statuses) = tokio::sync::mpsc::unbounded_channel();
    let watcher = TaskWatcher {
        config: ClientConfig::new(
            ClientCapabilities::builder().enable_tasks().build(),
            Implementation::new("watcher", "1"),
        ),
        statuses: sender,
    };
    let client = watcher
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap();
    // run_agent, to a client with the extension: a task at once. Its
    // sub-task is not the client's MCP task: not told.
    let CallToolResponse::Task(created) = client
        .call_tool_once(run_args(
            "run_agent",
            "root",
            "dispatch helper echo notified result",
        ))
        .await
        .unwrap()
    else {
        panic!("run_agent gave no MCP task to a client with the extension")
    };
    let id = created.task.task_id.clone();
    let mut told = Vec::new();
    let done = final_status(&mut statuses, &id, &mut told).await;
    assert_eq!(done.status(), TaskStatus::Completed);
    let wire = serde_json::to_string(&done).unwrap();
    assert!(wire.contains("notified result"), "{wire}");
    // Told once on disk: the operator sees it completed, and its child.
    let view = daemon.ok(&["view", &id]);
    assert!(view.contains("completed"), "{view}");
    let ps: Value = serde_json::from_str(&daemon.ok(&["ps", "--all", "--json"])).unwrap();
    assert!(
        (ps.as_array().unwrap().iter()).any(|task| task["parent"] == id.as_str()),
        "{ps}"
    );

    // A spinning task cancelled: a cancelled status.
    let CallToolResponse::Task(spinning) = client
        .call_tool_once(run_args("run_background_agent", "helper", "spin"))
        .await
        .unwrap()
    else {
        panic!("no MCP task")
    };
    let spinner = spinning.task.task_id.clone();
    ps_until(&daemon, &spinner, "running").await;
    // A task of another session, finished meanwhile: not told to this
    // client.
    let elsewhere = Api::new(&url, &token).start("echo elsewhere").await;
    ps_until(&daemon, &elsewhere, "completed").await;
    client
        .cancel_task(CancelTaskParams::new(spinner.clone()))
        .await
        .unwrap();
    let cancelled = final_status(&mut statuses, &spinner, &mut told).await;
    assert_eq!(cancelled.status(), TaskStatus::Cancelled);
    assert!(
        told.iter().all(|told| *told == id || *told == spinner),
        "{told:?}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn run_agent_answers_a_plain_client_with_the_result_and_stops_the_task_when_cancelled() {
    let scratch = Scratch::new();
    let (daemon, url, token) = http_daemon(&scratch);
    let plain = client(&url, Some(&token), "plain").await.unwrap();
    let (ok, answer) = call(
        &plain,
        "run_agent",
        json!({"agent": "helper", "task": "echo hi from the sub-agent"}),
    )
    .await;
    assert!(ok, "{answer}");
    assert!(answer.contains("hi from the sub-agent"), "{answer}");
    let (ok, answer) = call(
        &plain,
        "run_agent",
        json!({"agent": "helper", "task": "fail boom"}),
    )
    .await;
    assert!(!ok, "{answer}");
    assert!(answer.contains("boom"), "{answer}");
    let (ok, answer) = call(
        &plain,
        "run_agent",
        json!({"agent": "nobody", "task": "echo x"}),
    )
    .await;
    assert!(!ok && answer.contains("nobody"), "{answer}");

    // The request cancelled (its future dropped: rmcp sends
    // notifications/cancelled): the task is stopped.
    let spinning = |plain: &RunningService<RoleClient, ClientConfig>| {
        let plain = plain.peer().clone();
        async move {
            plain
                .call_tool(run_args("run_agent", "helper", "spin"))
                .await
        }
    };
    let running = |daemon: &Daemon| {
        let ps: Value = serde_json::from_str(&daemon.ok(&["ps", "--all", "--json"])).unwrap();
        (ps.as_array().unwrap().iter())
            .find(|task| task["status"] == "running")
            .map(|task| task["task_id"].as_str().unwrap().to_string())
    };
    let mut call = Box::pin(spinning(&plain));
    let started = std::time::Instant::now();
    let spinner = loop {
        tokio::select! {
            answer = &mut call => panic!("run_agent of a spinning task answered: {answer:?}"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
        if let Some(id) = running(&daemon) {
            break id;
        }
        assert!(started.elapsed() < HANG, "the spinning task never ran");
    };
    drop(call);
    ps_until(&daemon, &spinner, "stopped").await;

    // The client gone: its run_agent's task is stopped too (once rmcp has
    // given the request's handler its few seconds to answer).
    let call = tokio::spawn(spinning(&plain));
    let started = std::time::Instant::now();
    let spinner = loop {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if let Some(id) = running(&daemon) {
            break id;
        }
        assert!(started.elapsed() < HANG, "the spinning task never ran");
    };
    plain.cancel().await.unwrap();
    ps_until(&daemon, &spinner, "stopped").await;
    let _ = call.await;
}

/// A `bgagents mcp TEAM --http` server, killed when dropped.
struct McpHttp {
    child: std::process::Child,
    url: String,
}

impl McpHttp {
    /// Serves `team` over HTTP with `token`, once it listens.
    async fn start(scratch: &Scratch, team: &std::path::Path, token: &str) -> McpHttp {
        crypto();
        let token_file = scratch.write("mcp-token", format!("{token}\n"));
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let log = scratch.dir.join("mcp-http.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .args(["mcp", team.to_str().unwrap(), "--http", "127.0.0.1:0"])
            .args(["--auth-token-file", token_file.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) =
                (text.lines()).find(|line| line.contains("serving MCP over HTTP at "))
            {
                let url = line.rsplit(' ').next().unwrap().to_string();
                return McpHttp { child, url };
            }
            assert!(child.try_wait().unwrap().is_none(), "exited:\n{text}");
            assert!(started.elapsed() < HANG, "never listened:\n{text}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl McpHttp {
    /// Sends SIGTERM and waits for the server to exit.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < HANG, "ignored SIGTERM");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for McpHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_api_of_mcp_http_acts_as_the_agent_and_sees_only_its_own_tasks() {
    let scratch = Scratch::new();
    let team = scratch.team(AGENT_TEAM);
    let token = "5f4e3d2c1b0a99887766554433221100";
    let server = McpHttp::start(&scratch, &team, token).await;
    let api = Api::new(&server.url, token);
    // Root's sub-agents only.
    assert_eq!(api.agent_names().await, ["helper"]);
    let body = json!({"agent": "other", "task": "echo no"}).to_string();
    let (status, refused) = api.post("/api/tasks", &body).await;
    assert_eq!(status, 400, "{refused}");

    let response = (api.http.get(format!("{}/api/events?output=1", api.base)))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    // A task of an MCP session: not the API's to see.
    let mcp = client(&server.url, Some(token), "mcp").await.unwrap();
    let hidden = start_helper(&mcp, "echo hidden").await;
    // Finished, as the session's list tells.
    let started = std::time::Instant::now();
    loop {
        let (_, listed) = call(&mcp, "list_background_agents", json!({})).await;
        if listed.contains(&hidden) && listed.contains("completed") {
            break;
        }
        assert!(started.elapsed() < HANG, "never finished: {listed}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, answer) = api.get(&format!("/api/tasks/{hidden}")).await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = api.post(&format!("/api/tasks/{hidden}/stop"), "").await;
    assert_eq!(status, 404, "{answer}");

    // The API's own task: listed, and its events streamed; the MCP
    // session's, which came first, were not.
    let shown = api.start("echo shown").await;
    loop {
        let (event, data) = events.next().await.expect("the stream ended early");
        assert_ne!(data["task_id"], hidden.as_str(), "{event}: {data}");
        if data["task_id"] == shown.as_str() && event == "finished" {
            break;
        }
    }
    let (_, listed) = api.get("/api/tasks").await;
    let ids: Vec<&str> = (listed["tasks"].as_array().unwrap().iter())
        .map(|task| task["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [shown.as_str()], "{listed}");
    mcp.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_http_client_views_waits_polls_and_stops_its_own_tasks_by_id() {
    use rmcp::model::{CallToolResponse, ClientCapabilities, GetTaskParams};
    let scratch = Scratch::new();
    let team = scratch.team(
        r#"
agents:
  root:
    component: '{plugins}/probe.wasm'
    sub_agents: [helper]
    toolsets: [{type: background_agents}]
  helper:
    component: '{plugins}/probe.wasm'
"#,
    );
    let token = "00112233445566778899aabbccddeeff";
    let server = McpHttp::start(&scratch, &team, token).await;
    let plain = client(&server.url, Some(token), "plain").await.unwrap();
    let id = start_helper(&plain, "echo mine").await;
    let (ok, report) = call(&plain, "wait_background_agents", json!({"task_ids": [id]})).await;
    assert!(ok && report.contains("mine"), "{report}");
    let (ok, view) = call(&plain, "view_background_agent", json!({"task_id": id})).await;
    assert!(ok && view.contains("mine"), "{view}");
    let spinner = start_helper(&plain, "spin").await;
    let (ok, stopped) = call(&plain, "stop_background_agent", json!({"task_id": spinner})).await;
    assert!(ok, "{stopped}");
    plain.cancel().await.unwrap();

    // A client with the tasks extension polls its MCP task.
    let config =
        StreamableHttpClientTransportConfig::with_uri(server.url.as_str()).auth_header(token);
    let capabilities = ClientCapabilities::builder().enable_tasks().build();
    let tasks = ClientConfig::new(capabilities, Implementation::new("tasks", "1"))
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap();
    let CallToolResponse::Task(created) = tasks
        .call_tool_once(run_args("run_agent", "helper", "echo polled"))
        .await
        .unwrap()
    else {
        panic!("no MCP task")
    };
    let got = tasks
        .get_task(GetTaskParams::new(created.task.task_id.clone()))
        .await;
    assert!(got.is_ok(), "{got:?}");
    tasks.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn event_streams_and_waiting_reads_open_at_once_are_capped_and_a_closed_one_frees_its_place()
{
    const CAP: usize = 64;
    let scratch = Scratch::new();
    let (_daemon, url, token) = http_daemon(&scratch);
    let api = Api::new(&url, &token);
    let open = || {
        (api.http.get(format!("{}/api/events", api.base)))
            .bearer_auth(&token)
            .send()
    };
    let mut streams = Vec::new();
    for _ in 0..CAP {
        let response = open().await.unwrap();
        assert_eq!(response.status(), 200);
        streams.push(response);
    }
    let refused = open().await.unwrap();
    assert_eq!(refused.status(), 429);
    let text = refused.text().await.unwrap();
    assert!(
        text.contains("64 event streams and waiting output reads are open already"),
        "{text}"
    );
    // A read that does not wait is never refused; one that waits is.
    let id = api.start("spin").await;
    let (status, _) = api.get(&format!("/api/tasks/{id}/output?offset=0")).await;
    assert_eq!(status, 200);
    let (status, body) = api
        .get(&format!("/api/tasks/{id}/output?offset=0&wait=1"))
        .await;
    assert_eq!(status, 429, "{body}");
    // A closed stream frees its place (once the daemon sees it closed).
    drop(streams.pop());
    let since = std::time::Instant::now();
    loop {
        let (status, body) = api
            .get(&format!("/api/tasks/{id}/output?offset=0&wait=1"))
            .await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(
            since.elapsed() < HANG,
            "a closed stream's place was never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

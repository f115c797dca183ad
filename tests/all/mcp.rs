//! `bgagents mcp` driven over stdio by a real MCP client (rmcp): handshake
//! and instructions, tool names and schemas, every operation and error path,
//! notifications and the logging level, scoping, cancellation, and stopping
//! everything when the client leaves. A raw line client checks the
//! protocol errors a well-behaved client never provokes.

#![allow(deprecated)] // logging notifications

use bgagents_testkit::{HANG, Scratch};
use rmcp::model::{
    CallToolRequestParams, LoggingLevel, LoggingMessageNotificationParam,
    ProgressNotificationParam, SetLevelRequestParams,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

const TEAM: &str = r#"
agents:
  root:
    description: The MCP client's identity
    sub_agents: [worker, helper]
    toolsets: [{type: background_agents}]
  worker:
    description: Runs probe commands and may start helpers
    component: '{plugins}/probe.wasm'
    sub_agents: [helper]
    toolsets: [{type: background_agents}]
  helper:
    component: '{plugins}/probe.wasm'
    limits: {fuel: 1_000_000_000_000_000}
  outsider:
    component: '{plugins}/probe.wasm'
"#;

#[derive(Clone, Default)]
struct Recorder {
    logs: Arc<Mutex<Vec<Value>>>,
    levels: Arc<Mutex<Vec<(LoggingLevel, Value)>>>,
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Recorder {
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.levels
            .lock()
            .unwrap()
            .push((params.level, params.data.clone()));
        self.logs.lock().unwrap().push(params.data);
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

struct Server {
    client: RunningService<RoleClient, Recorder>,
    recorder: Recorder,
    _scratch: Scratch,
}

async fn start(agent: &str) -> Server {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bgagents")).configure(|c| {
        c.arg("mcp").arg(&team).args(["--agent", agent]);
    });
    let recorder = Recorder::default();
    let client = recorder
        .clone()
        .serve(TokioChildProcess::new(command).unwrap())
        .await
        .expect("MCP handshake");
    Server {
        client,
        recorder,
        _scratch: scratch,
    }
}

impl Server {
    /// Calls `tool`; returns (is_error, text).
    async fn call(&self, tool: &str, arguments: Value) -> (bool, String) {
        let arguments = arguments.as_object().unwrap().clone();
        let result = tokio::time::timeout(
            HANG,
            self.client
                .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(arguments)),
        )
        .await
        .expect("tool call hung")
        .expect("tool calls answer with a result, never a protocol error");
        let text = result
            .content
            .iter()
            .filter_map(|content| content.as_text().map(|text| text.text.clone()))
            .collect();
        (result.is_error == Some(true), text)
    }

    async fn ok(&self, tool: &str, arguments: Value) -> String {
        let (is_error, text) = self.call(tool, arguments).await;
        assert!(!is_error, "{tool} failed: {text}");
        text
    }

    async fn error(&self, tool: &str, arguments: Value) -> String {
        let (is_error, text) = self.call(tool, arguments).await;
        assert!(is_error, "{tool} should have failed: {text}");
        text
    }

    async fn run(&self, agent: &str, task: &str) -> String {
        let text = self
            .ok(
                "run_background_agent",
                json!({"agent": agent, "task": task}),
            )
            .await;
        let id = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("Background agent task started with ID: "))
            .unwrap_or_else(|| panic!("unexpected run text: {text}"));
        assert_eq!(
            text,
            format!("Background agent task started with ID: {id}\nAgent: {agent}\nTask: {task}")
        );
        id.to_string()
    }

    async fn view(&self, id: &str) -> String {
        self.ok("view_background_agent", json!({"task_id": id}))
            .await
    }

    async fn wait_for(&self, what: &str, id: &str, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let text = self.view(id).await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                started.elapsed() < HANG,
                "timed out waiting for {what}:\n{text}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_lists_dispatchable_agents_and_the_six_tools() {
    let server = start("root").await;
    let info = server.client.peer_info().expect("server info");
    let instructions = info.instructions.clone().unwrap();
    assert!(
        instructions.contains("You act as agent \"root\""),
        "{instructions}"
    );
    assert!(
        instructions.contains("- worker: Runs probe commands and may start helpers\n- helper\n"),
        "{instructions}"
    );
    assert!(!instructions.contains("outsider"), "{instructions}");

    let tools = server.client.list_all_tools().await.unwrap();
    let names: Vec<String> = tools.iter().map(|tool| tool.name.to_string()).collect();
    assert_eq!(
        names,
        [
            "run_background_agent",
            "list_background_agents",
            "view_background_agent",
            "stop_background_agent",
            "wait_background_agents",
            "run_agent"
        ]
    );
    let schema = |index: usize| Value::Object((*tools[index].input_schema).clone());
    let read_only = |index: usize| {
        tools[index]
            .annotations
            .as_ref()
            .and_then(|a| a.read_only_hint)
    };
    assert_eq!(schema(0)["required"], json!(["agent", "task"]));
    assert_eq!(schema(0)["additionalProperties"], json!(false));
    assert_eq!(
        schema(0)["properties"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["agent", "expected_output", "task"]
    );
    assert_eq!(
        schema(1),
        json!({"type": "object", "properties": {}, "additionalProperties": false})
    );
    assert_eq!(schema(2)["required"], json!(["task_id"]));
    assert_eq!(schema(3)["required"], json!(["task_id"]));
    assert_eq!(schema(4)["required"], json!(["task_ids"]));
    assert_eq!(schema(4)["properties"]["task_ids"]["maxItems"], json!(100));
    assert_eq!(schema(4)["properties"]["timeout"]["maximum"], json!(3600));
    for index in [2, 3, 4] {
        assert_eq!(schema(index)["additionalProperties"], json!(false));
    }
    // run_agent takes run_background_agent's arguments.
    assert_eq!(schema(5), schema(0));
    assert_eq!(
        (0..6).map(read_only).collect::<Vec<_>>(),
        [
            Some(false),
            Some(true),
            Some(true),
            Some(false),
            Some(true),
            Some(false)
        ]
    );
    for tool in &tools {
        assert!(
            tool.description.as_ref().is_some_and(|d| d.len() > 60),
            "{}",
            tool.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_view_list_wait_and_stop_through_mcp() {
    let server = start("root").await;
    assert_eq!(
        server.ok("list_background_agents", json!({})).await,
        "No background agent tasks found.\n"
    );

    let slow = server.run("worker", "print 1 working && sleep 60000").await;
    let running = server
        .wait_for("live output", &slow, "[still running...]")
        .await;
    assert!(
        running.contains("Status:  running") && running.contains("--- Output ---\nworking\n"),
        "{running}"
    );

    let quick = server.run("helper", "echo all done").await;
    let waited = server
        .ok(
            "wait_background_agents",
            json!({"task_ids": [quick], "timeout": 30}),
        )
        .await;
    // docker-agent's key order, not serde's alphabetical one.
    assert_eq!(
        waited,
        format!(
            r#"{{"all_done":true,"tasks":[{{"task_id":"{quick}","status":"completed","done":true,"output":"all done"}}]}}"#
        )
    );
    let done = server.view(&quick).await;
    assert!(done.ends_with("--- Output ---\nall done"), "{done}");

    let listed = server.ok("list_background_agents", json!({})).await;
    assert!(
        listed.starts_with("Background Agent Tasks:\n\n"),
        "{listed}"
    );
    assert!(
        listed.find(&slow).unwrap() < listed.find(&quick).unwrap(),
        "oldest first"
    );

    let spinner = server.run("helper", "spin").await;
    server
        .wait_for("the spinner", &spinner, "Status:  running")
        .await;
    assert_eq!(
        server
            .ok("stop_background_agent", json!({"task_id": spinner}))
            .await,
        format!("Background agent task {spinner} stopped.")
    );
    assert!(server.view(&spinner).await.ends_with("<task was stopped>"));
    let timed_out = server
        .ok(
            "wait_background_agents",
            json!({"task_ids": [slow], "timeout": 1}),
        )
        .await;
    assert!(
        timed_out.starts_with(&format!(
            r#"{{"all_done":false,"timed_out":true,"tasks":[{{"task_id":"{slow}","status":"running","done":false,"output":"working\n"#
        )),
        "{timed_out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_tool_error_with_the_documented_text() {
    let server = start("root").await;
    let cases = [
        (
            "run_background_agent",
            json!({"agent": "", "task": "x"}),
            "agent name must not be empty",
        ),
        (
            "run_background_agent",
            json!({"agent": "helper", "task": " "}),
            "task must not be empty",
        ),
        (
            "run_background_agent",
            json!({"agent": "outsider", "task": "x"}),
            "agent \"outsider\" is not in the sub-agents list. Available: worker, helper",
        ),
        (
            "run_background_agent",
            json!({"agent": 5, "task": "x"}),
            "agent must be a string",
        ),
        (
            "run_background_agent",
            json!({"agent": "helper", "task": "x", "priority": 1}),
            "unknown argument \"priority\"; expected: agent, task, expected_output",
        ),
        (
            "list_background_agents",
            json!({"status": "running"}),
            "unknown argument \"status\"; this tool takes no arguments",
        ),
        (
            "view_background_agent",
            json!({"task_id": "agent_task_x", "verbose": true}),
            "unknown argument \"verbose\"; expected: task_id",
        ),
        (
            "stop_background_agent",
            json!({"task_id": "agent_task_x", "force": true}),
            "unknown argument \"force\"; expected: task_id",
        ),
        (
            "wait_background_agents",
            json!({"task_ids": ["a"], "timeout_secs": 1}),
            "unknown argument \"timeout_secs\"; expected: task_ids, timeout",
        ),
        (
            "view_background_agent",
            json!({"task_id": "agent_task_x"}),
            "task not found: agent_task_x",
        ),
        (
            "stop_background_agent",
            json!({"task_id": "agent_task_x"}),
            "task not found: agent_task_x",
        ),
        (
            "wait_background_agents",
            json!({"task_ids": []}),
            "task_ids must contain 1 to 100 distinct task IDs",
        ),
        (
            "wait_background_agents",
            json!({"task_ids": ["a", "a"]}),
            "duplicate task ID: a",
        ),
        (
            "wait_background_agents",
            json!({"task_ids": ["a"], "timeout": 3601}),
            "timeout must be between 0 and 3600 seconds",
        ),
        (
            "wait_background_agents",
            json!({"task_ids": ["a"], "timeout": -1}),
            "timeout must be between 0 and 3600 seconds",
        ),
        (
            "wait_background_agents",
            json!({"task_ids": "a"}),
            "task_ids must be an array of task ID strings",
        ),
        ("teleport", json!({}), "unknown tool \"teleport\""),
    ];
    for (tool, arguments, expected) in cases {
        let text = server.error(tool, arguments.clone()).await;
        assert!(text.starts_with(expected), "{tool} {arguments}: {text}");
    }
    let done = server.run("helper", "echo x").await;
    server
        .wait_for("completion", &done, "Status:  completed")
        .await;
    assert_eq!(
        server
            .error("stop_background_agent", json!({"task_id": done}))
            .await,
        format!("task {done} is not running (status: completed)")
    );
    // The server is still healthy after all of that.
    assert!(
        server
            .ok("list_background_agents", json!({}))
            .await
            .contains(&done)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sees_its_tree_and_sub_agents_only_their_own() {
    let server = start("root").await;
    let parent = server.run("worker", "spawn helper sleep 60000").await;
    let done = server
        .wait_for("the worker", &parent, "Status:  completed")
        .await;
    let grandchild = done.rsplit('\n').next().unwrap().to_string();
    assert!(grandchild.starts_with("agent_task_"), "{done}");
    // The client sees the grandchild its worker started...
    assert!(server.view(&grandchild).await.contains("Agent:   helper"));
    // ...but another worker cannot touch it.
    let sibling = server.run("worker", &format!("stop {grandchild}")).await;
    let failed = server
        .wait_for("the sibling", &sibling, "Status:  failed")
        .await;
    assert!(
        failed.ends_with(&format!("Error: task not found: {grandchild}")),
        "{failed}"
    );
    server
        .ok("stop_background_agent", json!({"task_id": grandchild}))
        .await;

    // A client acting as an agent without the toolset is refused at start.
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(["mcp", team.to_str().unwrap(), "--agent", "outsider"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("does not have the background_agents toolset")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_activity_is_pushed_as_notifications_and_wait_reports_progress() {
    let server = start("root").await;
    let first = server
        .run("helper", "print 1 hello from a task && sleep 1500")
        .await;
    let second = server.run("helper", "echo second").await;
    server
        .ok(
            "wait_background_agents",
            json!({"task_ids": [first, second], "timeout": 60}),
        )
        .await;
    let started = Instant::now();
    loop {
        let logs = server.recorder.logs.lock().unwrap().clone();
        let seen = |event: &str, id: &str| {
            logs.iter()
                .any(|data| data["event"] == event && data["task_id"] == id)
        };
        if seen("output", &first) && seen("finished", &first) && seen("finished", &second) {
            let output = logs
                .iter()
                .find(|data| data["event"] == "output" && data["task_id"] == first.as_str())
                .unwrap();
            assert_eq!(output["output"], "hello from a task\n");
            assert_eq!(output["agent"], "helper");
            break;
        }
        assert!(started.elapsed() < HANG, "notifications missing: {logs:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The slow task finishes during the wait; the quick one may already have.
    // The client handles notifications on its own schedule: wait for it.
    let started = Instant::now();
    let progress = loop {
        let progress = server.recorder.progress.lock().unwrap().clone();
        if progress.last().is_some_and(|last| last.progress == 2.0) {
            break progress;
        }
        assert!(started.elapsed() < HANG, "progress missing: {progress:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let last = progress.last().unwrap();
    assert_eq!(
        (last.progress, last.total),
        (2.0, Some(2.0)),
        "{progress:?}"
    );
    assert!(
        last.message.as_deref().unwrap().ends_with(" completed"),
        "{progress:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_client_goes_away_every_task_stops_and_the_server_exits() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("mcp")
        .arg(&team)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stdin) = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    let recorder = Recorder::default();
    let client = recorder.clone().serve((stdout, stdin)).await.unwrap();
    let server = Server {
        client,
        recorder,
        _scratch: Scratch::new(),
    };
    let spinner = server.run("helper", "spin").await;
    let blocked = server.run("worker", "spawn-then-wait helper spin").await;
    server
        .wait_for("the spinner", &spinner, "Status:  running")
        .await;
    server
        .wait_for("the worker", &blocked, "Status:  running")
        .await;

    let started = Instant::now();
    server.client.cancel().await.unwrap();
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("the server kept running after its client left")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < HANG);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_notifications_follow_the_level_the_client_sets() {
    let server = start("root").await;
    let events_of = |id: &str| -> Vec<(LoggingLevel, String)> {
        server
            .recorder
            .levels
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, data)| data["task_id"] == id)
            .map(|(level, data)| (*level, data["event"].as_str().unwrap().to_string()))
            .collect()
    };
    let wait_until_finished = async |id: &str| {
        server
            .ok(
                "wait_background_agents",
                json!({"task_ids": [id], "timeout": 60}),
            )
            .await;
        let started = Instant::now();
        while !events_of(id).iter().any(|(_, event)| event == "finished") {
            assert!(
                started.elapsed() < HANG,
                "no finished event: {:?}",
                events_of(id)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Anything sent before the finish has been handled by now too.
        server.ok("list_background_agents", json!({})).await;
        events_of(id)
    };

    server
        .client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Notice))
        .await
        .expect("logging/setLevel is implemented");
    let quiet = server.run("helper", "print 3 chatter").await;
    assert_eq!(
        wait_until_finished(&quiet).await,
        [(LoggingLevel::Notice, "finished".to_string())],
        "only notice and above once the level is notice"
    );

    server
        .client
        .set_level(SetLevelRequestParams::new(LoggingLevel::Debug))
        .await
        .unwrap();
    let chatty = server.run("helper", "print 1 chatter").await;
    let events = wait_until_finished(&chatty).await;
    for expected in [
        (LoggingLevel::Debug, "queued"),
        (LoggingLevel::Info, "started"),
        (LoggingLevel::Info, "output"),
        (LoggingLevel::Notice, "finished"),
    ] {
        assert!(
            events.contains(&(expected.0, expected.1.to_string())),
            "{expected:?} missing at level debug: {events:?}"
        );
    }
}

/// A client speaking raw lines, for what rmcp's client never sends.
struct RawClient {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Notifications seen while waiting for replies.
    notifications: Vec<Value>,
    _scratch: Scratch,
}

impl RawClient {
    /// Starts `bgagents mcp` and completes the handshake.
    async fn start() -> RawClient {
        let scratch = Scratch::new();
        let team = scratch.team(TEAM);
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .arg("mcp")
            .arg(&team)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut client = RawClient {
            stdin: child.stdin.take(),
            child,
            stdout,
            notifications: Vec::new(),
            _scratch: scratch,
        };
        let initialized = client
            .request(json!({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "1"}
                }
            }))
            .await;
        assert_eq!(initialized["result"]["serverInfo"]["name"], "bgagents");
        client
            .send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        client
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(line.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// The next message that answers a request (has an `id`).
    async fn reply(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(HANG, self.stdout.next_line())
                .await
                .expect("no reply: the server hangs")
                .unwrap()
                .expect("the server closed its output");
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|error| panic!("the server wrote non-JSON ({error}): {line}"));
            if message.get("id").is_some() {
                return message;
            }
            self.notifications.push(message);
        }
    }

    async fn request(&mut self, message: Value) -> Value {
        self.send(&message.to_string()).await;
        self.reply().await
    }

    /// Starts agent `agent` on `task` and returns the task id.
    async fn run(&mut self, id: u64, agent: &str, task: &str) -> String {
        let reply = self
            .request(json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "run_background_agent", "arguments": {"agent": agent, "task": task}}
            }))
            .await;
        let text = reply["result"]["content"][0]["text"].as_str().unwrap();
        let first = text.lines().next().unwrap();
        first
            .strip_prefix("Background agent task started with ID: ")
            .unwrap_or_else(|| panic!("{reply}"))
            .to_string()
    }

    /// Closes the server's input (the client leaves) and returns how it
    /// exited, what it logged, and how long it took.
    async fn leave(mut self) -> (ExitStatus, String, Duration) {
        drop(self.stdin.take());
        let started = Instant::now();
        let status = tokio::time::timeout(HANG, self.child.wait())
            .await
            .expect("the server kept running after its client left")
            .unwrap();
        let took = started.elapsed();
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        (status, stderr, took)
    }
}

fn error_of(reply: &Value) -> (Value, i64, String) {
    let error = &reply["error"];
    assert!(error.is_object(), "expected an error reply: {reply}");
    (
        reply["id"].clone(),
        error["code"].as_i64().unwrap(),
        error["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_error_gets_a_reply_and_a_log_line() {
    let mut client = RawClient::start().await;
    let pad = "a".repeat(17 << 20);
    let cases: Vec<(String, Value, i64, &str)> = vec![
        ("{not json".into(), Value::Null, -32700, "Parse error"),
        (
            "[]".into(),
            Value::Null,
            -32600,
            "batches are not supported",
        ),
        ("42".into(), Value::Null, -32600, "must be a JSON object"),
        (
            r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#.into(),
            Value::Null,
            -32600,
            "id must be a string or a number",
        ),
        (
            r#"{"jsonrpc":"2.0","id":2,"method":7}"#.into(),
            json!(2),
            -32600,
            "method must be a string",
        ),
        (
            r#"{"jsonrpc":"1.0","id":"three","method":"ping"}"#.into(),
            json!("three"),
            -32600,
            "jsonrpc must be \"2.0\"",
        ),
        (
            r#"{"jsonrpc":"2.0","id":"r","method":"ping","result":{}}"#.into(),
            json!("r"),
            -32600,
            "Invalid Request",
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"list_background_agents","arguments":"x"}}"#.into(),
            json!(4),
            -32602,
            "Invalid params for tools/call",
        ),
        (
            r#"{"jsonrpc":"2.0","id":5,"method":"logging/setLevel","params":{"level":"loud"}}"#.into(),
            json!(5),
            -32602,
            "Invalid params for logging/setLevel",
        ),
        // Over 16 MiB, with the id first (as the Python SDK writes it) ...
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{{"name":"list_background_agents","arguments":{{"pad":"{pad}"}}}}}}"#
            ),
            json!(6),
            -32600,
            "MiB is over the 16 MiB limit",
        ),
        // ... and last (as the TypeScript SDK writes it).
        (
            format!(
                r#"{{"method":"tools/call","params":{{"name":"x","arguments":{{"pad":"{pad}"}}}},"jsonrpc":"2.0","id":"seven"}}"#
            ),
            json!("seven"),
            -32600,
            "MiB is over the 16 MiB limit",
        ),
    ];
    let count = cases.len();
    for (line, id, code, message) in cases {
        client.send(&line).await;
        let reply = client.reply().await;
        let shown = &line[..line.len().min(80)];
        assert_eq!(reply["jsonrpc"], "2.0", "{shown}: {reply}");
        let got = error_of(&reply);
        assert_eq!((&got.0, got.1), (&id, code), "{shown}: {reply}");
        assert!(got.2.contains(message), "{shown}: {reply}");
    }
    // A notification cannot be answered, only logged.
    client
        .send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":"soon"}"#)
        .await;
    client
        .send(r#"{"jsonrpc":"2.0","method":"tools/list"}"#)
        .await;

    // The server still serves.
    let pong = client
        .request(json!({"jsonrpc": "2.0", "id": 8, "method": "ping"}))
        .await;
    assert_eq!(pong, json!({"jsonrpc": "2.0", "id": 8, "result": {}}));
    let listed = client
        .request(json!({
            "jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": "list_background_agents", "arguments": {}}
        }))
        .await;
    assert_eq!(
        listed["result"]["content"][0]["text"],
        "No background agent tasks found.\n"
    );

    let (status, stderr, _) = client.leave().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    let logged: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("protocol error in input line"))
        .collect();
    assert_eq!(logged.len(), count + 2, "{stderr}");
    assert!(
        logged[0].contains("input line 3: Parse error")
            && logged[0].ends_with("answered -32700 (id null)"),
        "{stderr}"
    );
    assert!(
        logged[count].contains("Invalid params for notifications/cancelled")
            && logged[count].ends_with("ignored (it has no id to answer)"),
        "{stderr}"
    );
    assert!(
        logged[count + 1].contains("tools/list is a request but has no id"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_ends_at_once_and_the_server_keeps_serving() {
    let mut client = RawClient::start().await;
    let spinner = client.run(1, "helper", "spin").await;
    client
        .send(
            &json!({
                "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {
                    "name": "wait_background_agents",
                    "arguments": {"task_ids": [spinner], "timeout": 600},
                    "_meta": {"progressToken": "cancelled-wait"}
                }
            })
            .to_string(),
        )
        .await;
    client
        .send(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2,"reason":"changed my mind"}}"#)
        .await;
    let pong = client
        .request(json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}))
        .await;
    assert_eq!(pong["id"], 3, "a cancelled request gets no reply: {pong}");

    // Had the wait gone on, the spinner's end would be reported as its progress.
    let stopped = client
        .request(json!({
            "jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "stop_background_agent", "arguments": {"task_id": spinner}}
        }))
        .await;
    assert_eq!(stopped["id"], 4, "{stopped}");
    let quick = client.run(5, "helper", "echo done").await;
    let waited = client
        .request(json!({
            "jsonrpc": "2.0", "id": 6, "method": "tools/call",
            "params": {
                "name": "wait_background_agents",
                "arguments": {"task_ids": [quick], "timeout": 60},
                "_meta": {"progressToken": "live-wait"}
            }
        }))
        .await;
    assert_eq!(waited["id"], 6, "{waited}");
    assert!(
        waited["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with(r#"{"all_done":true"#),
        "{waited}"
    );
    let progress_of = |token: &str| {
        client
            .notifications
            .iter()
            .filter(|message| {
                message["method"] == "notifications/progress"
                    && message["params"]["progressToken"] == token
            })
            .count()
    };
    assert_eq!(
        progress_of("cancelled-wait"),
        0,
        "{:#?}",
        client.notifications
    );

    let (status, stderr, _) = client.leave().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_during_a_long_wait_stops_everything_at_once() {
    let mut client = RawClient::start().await;
    let spinner = client.run(1, "helper", "spin").await;
    let blocked = client.run(2, "worker", "spawn-then-wait helper spin").await;
    client
        .send(
            &json!({
                "jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {
                    "name": "wait_background_agents",
                    "arguments": {"task_ids": [spinner, blocked], "timeout": 3600}
                }
            })
            .to_string(),
        )
        .await;
    // Requests are dispatched in order: the wait is under way once this answers.
    let pong = client
        .request(json!({"jsonrpc": "2.0", "id": 4, "method": "ping"}))
        .await;
    assert_eq!(pong["id"], 4);

    let (status, stderr, took) = client.leave().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    // rmcp gives requests still running 5 s to finish once input ends; the
    // wait must end with the client instead, and exiting means every guest
    // has stopped.
    assert!(
        took < Duration::from_secs(4),
        "the server took {took:?} to stop its tasks and exit"
    );
}

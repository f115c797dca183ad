//! `bgagents mcp` driven over stdio by a real MCP client (rmcp): handshake
//! and instructions, tool names and schemas, every operation and error path,
//! notifications, scoping, and stopping everything when the client leaves.

#![allow(deprecated)] // logging notifications

use bgagents_testkit::{HANG, Scratch};
use rmcp::model::{
    CallToolRequestParams, LoggingMessageNotificationParam, ProgressNotificationParam,
};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for Recorder {
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
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
async fn initialize_lists_dispatchable_agents_and_the_five_tools() {
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
            "wait_background_agents"
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
    assert_eq!(schema(1), json!({"type": "object", "properties": {}}));
    assert_eq!(schema(2)["required"], json!(["task_id"]));
    assert_eq!(schema(3)["required"], json!(["task_id"]));
    assert_eq!(schema(4)["required"], json!(["task_ids"]));
    assert_eq!(schema(4)["properties"]["task_ids"]["maxItems"], json!(100));
    assert_eq!(schema(4)["properties"]["timeout"]["maximum"], json!(3600));
    for index in [2, 3, 4] {
        assert_eq!(schema(index)["additionalProperties"], json!(false));
    }
    assert_eq!(
        (0..5).map(read_only).collect::<Vec<_>>(),
        [Some(false), Some(true), Some(true), Some(false), Some(true)]
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
    let report: Value = serde_json::from_str(&waited).unwrap();
    assert_eq!(
        report,
        json!({"all_done": true, "tasks": [{"task_id": quick, "status": "completed", "done": true, "output": "all done"}]})
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
    let report: Value = serde_json::from_str(&timed_out).unwrap();
    assert_eq!(report["timed_out"], json!(true));
    assert_eq!(report["tasks"][0]["status"], json!("running"));
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

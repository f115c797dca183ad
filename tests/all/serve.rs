//! `bgagents serve` and its clients through the real binary: a daemon per
//! state directory (its socket 0600, a second daemon refused naming the
//! first's pid, a stale socket cleaned up, a read-only directory refused),
//! and `start`, `ps`, `logs -f`, `view`, `stop` and `wait` as separate
//! processes, tasks outliving them; another user's clients are refused.
//!
//! The read-only and other-user tests need bubblewrap and util-linux's
//! setpriv, run as root; where those cannot work they say why and pass.

use crate::text;
use bgagents_testkit::{HANG, Scratch};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const TEAM: &str = r#"
agents:
  root:
    component: '{plugins}/probe.wasm'
    sub_agents: [helper]
    toolsets: [{type: background_agents}]
  helper:
    component: '{plugins}/probe.wasm'
"#;

/// The tools a client of the daemon is offered.
pub(crate) const DAEMON_TOOLS: [&str; 8] = [
    "run_background_agent",
    "list_background_agents",
    "view_background_agent",
    "stop_background_agent",
    "wait_background_agents",
    "list_all_background_agents",
    "read_background_agent_output",
    "run_agent",
];

/// A running `bgagents serve`, stopped (SIGKILL) when dropped.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) state: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Serves `team` with state directory `state` (or the default one under
    /// `xdg`), once its socket is there.
    pub(crate) fn start(team: &Path, state: Option<&Path>, xdg: &Path) -> Daemon {
        Daemon::start_with(team, state, xdg, &[])
    }

    /// [`Daemon::start`] with more arguments to `serve`.
    pub(crate) fn start_with(
        team: &Path,
        state: Option<&Path>,
        xdg: &Path,
        extra: &[&str],
    ) -> Daemon {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let log = xdg.join(format!(
            "serve-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(xdg).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_bgagents"));
        command.arg("serve").arg(team).env("XDG_STATE_HOME", xdg);
        if let Some(state) = state {
            command.arg("--state").arg(state);
        }
        command.args(extra);
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child,
            state: PathBuf::new(),
            log,
        };
        let started = Instant::now();
        loop {
            let log = daemon.log();
            if let Some(line) =
                (log.lines()).find(|line| line.contains(" on ") && line.contains(" (pid "))
            {
                let socket = line
                    .split(" on ")
                    .nth(1)
                    .unwrap()
                    .split(" (pid")
                    .next()
                    .unwrap();
                daemon.state = Path::new(socket).parent().unwrap().to_path_buf();
                return daemon;
            }
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("bgagents serve exited ({status}):\n{log}");
            }
            assert!(
                started.elapsed() < HANG,
                "the daemon never listened:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An MCP client named `name` on this daemon's socket.
    pub(crate) async fn mcp_client(
        &self,
        name: &str,
    ) -> rmcp::service::RunningService<rmcp::RoleClient, rmcp::model::ClientConfig> {
        use rmcp::ServiceExt;
        use rmcp::model::{ClientConfig, Implementation};
        let stream = tokio::net::UnixStream::connect(self.state.join("bgagents.sock"))
            .await
            .unwrap();
        ClientConfig::new(Default::default(), Implementation::new(name, "1"))
            .serve(stream.into_split())
            .await
            .expect("MCP handshake over the socket")
    }

    /// Runs client command `args` against this daemon (`--state`).
    fn client(&self, args: &[&str]) -> Output {
        let (command, rest) = args.split_first().unwrap();
        let state = self.state.to_str().unwrap();
        bgagents(&[&[*command, "--state", state], rest].concat())
    }

    /// Runs `args`, which must succeed; its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let output = self.client(args);
        assert!(
            output.status.success(),
            "bgagents {args:?} failed ({}):\n{}",
            output.status,
            text(&output.stderr)
        );
        text(&output.stdout)
    }

    /// Sends SIGTERM and waits for the daemon to exit.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < HANG,
                "the daemon ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bgagents(args: &[&str]) -> Output {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(args)
        .output()
        .unwrap();
    assert!(started.elapsed() < HANG, "bgagents {args:?} took too long");
    output
}

#[test]
fn tasks_started_from_the_command_line_run_in_the_daemon_and_are_followed_stopped_and_awaited() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let state = scratch.dir.join("state");
    let daemon = Daemon::start(&team, Some(&state), &scratch.dir.join("xdg"));
    assert_eq!(daemon.state, state);

    // Only its owner may reach the daemon.
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state.join("bgagents.sock")), 0o600);
    assert_eq!(mode(&state), 0o700);

    let id = daemon.ok(&[
        "start",
        "helper",
        "print 3 hello && sleep 1500 && echo done",
    ]);
    let id = id.trim();
    assert!(id.starts_with("agent_task_"), "{id}");
    // The start's process has ended; the task runs on.
    let ps = daemon.ok(&["ps"]);
    assert!(ps.contains(id) && ps.contains("helper"), "{ps}");
    let json: serde_json::Value =
        serde_json::from_str(&daemon.ok(&["ps", "--all", "--json"])).unwrap();
    let listed = json
        .as_array()
        .unwrap()
        .iter()
        .find(|task| task["task_id"] == id)
        .unwrap();
    assert_eq!(listed["session"], "cli");

    // Followed live to the end: every line once, then exit 0.
    let followed = daemon.ok(&["logs", id, "-f"]);
    assert_eq!(followed, "hello\nhello\nhello\n");
    assert_eq!(daemon.ok(&["logs", id]), followed);
    let view = daemon.ok(&["view", id]);
    assert!(
        view.contains("Status:  completed") && view.contains("done"),
        "{view}"
    );
    let waited = daemon.ok(&["wait", id]);
    assert!(
        waited.contains(&format!("{id} completed")) && waited.contains("done"),
        "{waited}"
    );

    // A task that never ends: a bounded wait gives up, stop ends it.
    let spinner = daemon.ok(&["start", "helper", "spin"]);
    let spinner = spinner.trim();
    let timed_out = daemon.client(&["wait", spinner, "--timeout", "1"]);
    assert_eq!(
        timed_out.status.code(),
        Some(1),
        "{}",
        text(&timed_out.stderr)
    );
    assert!(
        text(&timed_out.stderr).contains("timed out"),
        "{}",
        text(&timed_out.stderr)
    );
    assert!(daemon.ok(&["stop", spinner]).contains("stopped"));
    let again = daemon.client(&["stop", spinner]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("already ended (stopped)"),
        "{}",
        text(&again.stderr)
    );
    let both = daemon.client(&["wait", id, spinner]);
    assert_eq!(
        both.status.code(),
        Some(1),
        "a stopped task is not a success"
    );
    assert!(
        text(&both.stdout).contains(&format!("{spinner} stopped")),
        "{}",
        text(&both.stdout)
    );
    let failed = daemon.ok(&["start", "helper", "fail broken on purpose"]);
    let follow = daemon.client(&["logs", "-f", failed.trim()]);
    assert_eq!(follow.status.code(), Some(1));
    assert!(
        text(&follow.stderr).contains("broken on purpose"),
        "{}",
        text(&follow.stderr)
    );

    // Unknown ids and agents are bad input.
    for args in [
        &["view", "agent_task_nope"][..],
        &["logs", "nope"],
        &["start", "nobody", "x"],
    ] {
        let output = daemon.client(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(text(&output.stderr).starts_with("error: "));
    }

    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(
        !state.join("bgagents.sock").exists(),
        "the socket is removed on exit"
    );
}

#[test]
fn sigterm_stops_running_tasks_and_a_client_is_then_told_how_to_start_the_daemon() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let xdg = scratch.dir.join("xdg");
    // The default state directory, found by the clients from the team.
    let daemon = Daemon::start(&team, None, &xdg);
    assert!(
        daemon.state.starts_with(xdg.join("bgagents")),
        "{}",
        daemon.state.display()
    );
    let id = daemon.ok(&["start", "helper", "spin"]);
    let team_arg = team.to_str().unwrap();
    let by_team = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(["ps", "--team", team_arg])
        .env("XDG_STATE_HOME", &xdg)
        .output()
        .unwrap();
    assert!(
        text(&by_team.stdout).contains(id.trim()),
        "{}",
        text(&by_team.stderr)
    );
    // With neither --team nor --state: the only daemon running.
    let only = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("ps")
        .env("XDG_STATE_HOME", &xdg)
        .output()
        .unwrap();
    assert!(
        text(&only.stdout).contains(id.trim()),
        "{}",
        text(&only.stderr)
    );
    let log = daemon.log.clone();
    let status = daemon.terminate();
    assert!(status.success());
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("SIGTERM: stopping every task"), "{log}");

    let output = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(["ps", "--team", team_arg])
        .env("XDG_STATE_HOME", &xdg)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("no bgagents daemon is running"), "{stderr}");
    assert!(
        stderr.contains(&format!("bgagents serve {team_arg}")),
        "{stderr}"
    );
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused_naming_the_first() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let state = scratch.dir.join("state");
    let daemon = Daemon::start(&team, Some(&state), &scratch.dir);
    let second = bgagents(&[
        "serve",
        team.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(second.status.code(), Some(2));
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains(&format!("process {}", daemon.child.id())),
        "{stderr}"
    );
    // The first one still serves.
    assert!(daemon.ok(&["ps"]).is_empty());
}

#[test]
fn a_stale_socket_from_a_dead_daemon_is_removed() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let state = scratch.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    // Bound, then nobody listens: what a killed daemon leaves.
    drop(std::os::unix::net::UnixListener::bind(state.join("bgagents.sock")).unwrap());
    let client = bgagents(&["ps", "--state", state.to_str().unwrap()]);
    assert_eq!(client.status.code(), Some(2));
    assert!(
        text(&client.stderr).contains("start it with"),
        "{}",
        text(&client.stderr)
    );
    let daemon = Daemon::start(&team, Some(&state), &scratch.dir);
    assert!(
        daemon.log().contains("removed the stale socket"),
        "{}",
        daemon.log()
    );
    let id = daemon.ok(&["start", "helper", "echo fresh"]);
    assert!(daemon.ok(&["wait", id.trim()]).contains("fresh"));
}

#[test]
fn a_file_in_the_sockets_place_is_never_removed() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let state = scratch.dir.join("state");
    let file = scratch.write("state/bgagents.sock", "not a socket");
    let output = bgagents(&[
        "serve",
        team.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("is not a socket"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(std::fs::read_to_string(file).unwrap(), "not a socket");
}

/// The text of tool `name`'s answer over `client`; panics on a tool error.
pub(crate) async fn call_tool(
    client: &rmcp::service::RunningService<rmcp::RoleClient, rmcp::model::ClientConfig>,
    name: &str,
    arguments: serde_json::Value,
) -> rmcp::model::CallToolResult {
    let serde_json::Value::Object(arguments) = arguments else {
        unreachable!()
    };
    let request =
        rmcp::model::CallToolRequestParams::new(name.to_string()).with_arguments(arguments);
    let result = tokio::time::timeout(HANG, client.call_tool(request))
        .await
        .expect("tool call hung")
        .expect("tool calls answer with a result");
    assert_ne!(result.is_error, Some(true), "{name} failed: {result:?}");
    result
}

pub(crate) fn text_of(result: &rmcp::model::CallToolResult) -> String {
    (result.content.iter())
        .filter_map(|content| content.as_text().map(|text| text.text.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_client_on_the_socket_lists_its_own_tasks_reaches_any_by_id_and_its_tasks_outlive_it()
 {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let daemon = Daemon::start(&team, Some(&scratch.dir.join("state")), &scratch.dir);
    let first = daemon.mcp_client("first-client").await;
    let second = daemon.mcp_client("second-client").await;
    let instructions = (first.peer_info().unwrap().instructions.clone()).unwrap();
    assert!(
        instructions.contains("You are the operator") && instructions.contains("- helper"),
        "{instructions}"
    );
    let tools: Vec<String> = (first.list_all_tools().await.unwrap().into_iter())
        .map(|tool| tool.name.to_string())
        .collect();
    for tool in DAEMON_TOOLS {
        assert!(
            tools.iter().any(|name| name == tool),
            "{tool} missing: {tools:?}"
        );
    }

    let started = call_tool(
        &first,
        "run_background_agent",
        serde_json::json!({"agent": "helper", "task": "print 2 hi && sleep 1000 && echo ok"}),
    )
    .await;
    let started = text_of(&started);
    let id = started
        .lines()
        .next()
        .unwrap()
        .rsplit_once("ID: ")
        .unwrap()
        .1
        .to_string();
    // Listing is per session; an id reaches the task from anywhere.
    let listed =
        text_of(&call_tool(&second, "list_background_agents", serde_json::json!({})).await);
    assert!(!listed.contains(&id), "{listed}");
    let viewed = call_tool(
        &second,
        "view_background_agent",
        serde_json::json!({"task_id": id}),
    )
    .await;
    assert!(text_of(&viewed).contains("Agent:   helper"));

    // Output read from offsets adds up to the whole, once.
    let mut offset = 0;
    let mut output = String::new();
    loop {
        let read = call_tool(
            &second,
            "read_background_agent_output",
            serde_json::json!({"task_id": id, "offset": offset, "wait": 30}),
        )
        .await;
        let read = read.structured_content.unwrap();
        output.push_str(read["output"].as_str().unwrap());
        offset = read["next_offset"].as_u64().unwrap();
        if output.len() >= 6 || read["done"] == true {
            break;
        }
    }
    assert_eq!(output, "hi\nhi\n");

    // The client that started it leaves; the task runs on to the end.
    first.cancel().await.unwrap();
    let waited = call_tool(
        &second,
        "wait_background_agents",
        serde_json::json!({"task_ids": [id], "timeout": 60}),
    )
    .await;
    assert!(
        text_of(&waited).contains(r#""status":"completed""#),
        "{}",
        text_of(&waited)
    );
    let all: serde_json::Value =
        serde_json::from_str(&daemon.ok(&["ps", "--all", "--json"])).unwrap();
    let task = all
        .as_array()
        .unwrap()
        .iter()
        .find(|task| task["task_id"] == id.as_str());
    assert_eq!(task.unwrap()["session"], "mcp#1 (first-client)");
    assert!(
        !daemon.ok(&["ps"]).contains(&id),
        "ps alone lists the command line's tasks"
    );
    // The command line reaches it by id too.
    assert!(daemon.ok(&["view", &id]).contains("ok"));
}

#[test]
fn after_kill_9_a_restarted_daemon_lists_finished_tasks_unchanged_and_running_ones_interrupted() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let state = scratch.dir.join("state");
    let mut daemon = Daemon::start(&team, Some(&state), &scratch.dir);
    let done = daemon.ok(&["start", "helper", "print 1 partial && echo kept"]);
    let done = done.trim().to_string();
    assert!(daemon.ok(&["wait", &done]).contains("kept"));
    let spinning = daemon.ok(&["start", "helper", "spin"]);
    let spinning = spinning.trim().to_string();
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    drop(daemon);

    let daemon = Daemon::start(&team, Some(&state), &scratch.dir);
    assert!(
        daemon.log().contains("removed the stale socket"),
        "{}",
        daemon.log()
    );
    let json: serde_json::Value = serde_json::from_str(&daemon.ok(&["ps", "--json"])).unwrap();
    let status = |id: &str| {
        let task = json
            .as_array()
            .unwrap()
            .iter()
            .find(|task| task["task_id"] == id);
        task.unwrap_or_else(|| panic!("{id} lost: {json}"))["status"].clone()
    };
    assert_eq!(status(&done), "completed");
    assert_eq!(status(&spinning), "interrupted");
    let view = daemon.ok(&["view", &done]);
    assert!(view.contains("kept"), "{view}");
    let waited = daemon.client(&["wait", &done, &spinning]);
    assert_eq!(
        waited.status.code(),
        Some(1),
        "an interrupted task is not a success"
    );
    assert!(text(&waited.stdout).contains(&format!("{spinning} interrupted")));
}

/// Waits for `child` to exit (killing it past the hang bound) and collects
/// its output.
fn finish(mut child: Child, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > HANG {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("{what} never ended:\n{}", text(&output.stderr));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs `bgagents args` with directory `dir` mounted read-only (the rest
/// of the filesystem as it is), through bubblewrap; `None`, saying why,
/// where bubblewrap is missing or cannot make a mount namespace here.
fn with_read_only(dir: &Path, args: &[&str]) -> Option<Output> {
    let bwrap = |command: &[&str]| {
        let mut bwrap = Command::new("bwrap");
        bwrap
            .args(["--die-with-parent", "--dev-bind", "/", "/", "--ro-bind"])
            .arg(dir)
            .arg(dir)
            .arg("--")
            .args(command);
        bwrap
    };
    let probe = dir.join(".write-probe");
    let touch = ["touch", probe.to_str().unwrap()];
    match bwrap(&touch).stderr(Stdio::piped()).output() {
        Err(error) => {
            eprintln!("skipped: cannot run bwrap (bubblewrap): {error}");
            return None;
        }
        Ok(output) if output.status.success() => {
            panic!("bwrap ran, yet {} was writable inside it", dir.display())
        }
        Ok(output) if !text(&output.stderr).contains("Read-only file system") => {
            eprintln!(
                "skipped: bwrap cannot mount {} read-only here: {}",
                dir.display(),
                text(&output.stderr)
            );
            return None;
        }
        Ok(_) => {}
    }
    let child = bwrap(&[env!("CARGO_BIN_EXE_bgagents")])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Some(finish(child, &format!("bgagents {args:?} (read-only)")))
}

/// Every file in `dir` with its contents.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_state_directory_on_a_read_only_filesystem_is_refused_naming_it_and_the_fix() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let team = team.to_str().unwrap();
    let refused = |output: &Output, dir: &Path| {
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "the state directory {} is on a read-only filesystem",
                dir.display()
            )),
            "{stderr}"
        );
        assert!(
            stderr.contains("give a writable one with --state DIR"),
            "{stderr}"
        );
    };

    // An empty directory, and one to be made inside a read-only one.
    let empty = scratch.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fn serve<'a>(team: &'a str, dir: &'a Path) -> [&'a str; 4] {
        ["serve", team, "--state", dir.to_str().unwrap()]
    }
    let Some(output) = with_read_only(&empty, &serve(team, &empty)) else {
        return;
    };
    refused(&output, &empty);
    assert!(contents(&empty).is_empty(), "{:?}", contents(&empty));
    let inside = empty.join("state");
    let output = with_read_only(&empty, &serve(team, &inside)).unwrap();
    refused(&output, &inside);
    assert!(
        text(&output.stderr).contains("cannot create the state directory"),
        "{}",
        text(&output.stderr)
    );

    // The task store of an earlier daemon: the daemon refuses to serve it
    // (it could record nothing) and leaves every file as it was.
    let state = scratch.dir.join("state");
    let daemon = Daemon::start(Path::new(team), Some(&state), &scratch.dir);
    let id = daemon.ok(&["start", "helper", "echo kept"]);
    let id = id.trim().to_string();
    assert!(daemon.ok(&["wait", &id]).contains("kept"));
    assert!(daemon.terminate().success());
    let before = contents(&state);
    let output = with_read_only(&state, &serve(team, &state)).unwrap();
    refused(&output, &state);
    assert_eq!(contents(&state), before, "the store was changed");
    // Writable again, the store serves its tasks.
    let daemon = Daemon::start(Path::new(team), Some(&state), &scratch.dir);
    assert!(daemon.ok(&["view", &id]).contains("kept"));
}

/// `bgagents args` run as user nobody (uid and gid 65534, no groups),
/// through setpriv; `None`, saying why, where this process cannot switch
/// users (setpriv missing, or not running as root).
fn as_nobody(args: &[&str]) -> Option<Output> {
    let setpriv = || {
        let mut command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        command
    };
    match setpriv().arg("true").stderr(Stdio::piped()).output() {
        Err(error) => {
            eprintln!("skipped: cannot run setpriv (util-linux): {error}");
            return None;
        }
        Ok(output) if !output.status.success() => {
            eprintln!(
                "skipped: setpriv cannot switch to another user here (not root?): {}",
                text(&output.stderr)
            );
            return None;
        }
        Ok(_) => {}
    }
    let child = setpriv()
        .arg(env!("CARGO_BIN_EXE_bgagents"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Some(finish(child, &format!("bgagents {args:?} as nobody")))
}

#[test]
fn a_client_of_another_user_is_refused_and_the_daemon_serves_on() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let state = scratch.dir.join("state");
    let daemon = Daemon::start(&team, Some(&state), &scratch.dir);
    let id = daemon.ok(&["start", "helper", "spin"]);
    let id = id.trim();
    let socket = state.join("bgagents.sock");
    let state_arg = state.to_str().unwrap();

    // The state directory's mode keeps another user out.
    let Some(output) = as_nobody(&["ps", "--state", state_arg]) else {
        return;
    };
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "permission denied on the daemon's socket {}: it belongs to another user (uid 0)",
            socket.display()
        )),
        "{stderr}"
    );
    assert!(text(&output.stdout).is_empty());
    let stop = as_nobody(&["stop", "--state", state_arg, id]).unwrap();
    assert_eq!(stop.status.code(), Some(2), "{}", text(&stop.stderr));
    assert!(daemon.ok(&["ps"]).contains(id));
    assert!(daemon.ok(&["view", id]).contains("Status:  running"));

    // Opened up by hand, the daemon itself still hangs up on another
    // user's client, and says so in its log.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [&["ps"][..], &["stop", id]] {
        let (command, rest) = args.split_first().unwrap();
        let output = as_nobody(&[&[*command, "--state", state_arg], rest].concat()).unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the daemon at {} refused this client: it belongs to another user (uid 0)",
                socket.display()
            )),
            "{stderr}"
        );
    }
    assert!(
        daemon.log().contains("refused a client of another user"),
        "{}",
        daemon.log()
    );
    assert!(daemon.ok(&["view", id]).contains("Status:  running"));
    let json: serde_json::Value =
        serde_json::from_str(&daemon.ok(&["ps", "--all", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
}

/// Whether process `pid` catches SIGINT (has a handler installed).
fn catches_sigint(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let caught = status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok());
    caught.is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
}

#[test]
fn ctrl_c_ends_logs_f_and_wait_and_the_task_keeps_running_in_the_daemon() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let daemon = Daemon::start(&team, Some(&scratch.dir.join("state")), &scratch.dir);
    let id = daemon.ok(&["start", "helper", "print 1 first && spin"]);
    let id = id.trim();
    let state = daemon.state.to_str().unwrap();
    for args in [&["logs", id, "-f"][..], &["wait", id]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .args(&args[..1])
            .args(["--state", state])
            .args(&args[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Following: the output so far is shown, so it is connected.
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        if args[0] == "logs" {
            let (sender, line) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut first = String::new();
                std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
                let _ = sender.send((first, stdout));
            });
            let (first, rest) = line
                .recv_timeout(HANG)
                .expect("logs -f never showed the output so far");
            assert_eq!(first, "first\n");
            stdout = rest;
        }
        let started = Instant::now();
        while !catches_sigint(child.id()) {
            assert!(started.elapsed() < HANG, "{args:?} never handled SIGINT");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let output = finish(child, &format!("bgagents {args:?} after SIGINT"));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(130), "{args:?}: {stderr}");
        assert!(
            stderr.contains("interrupted; the daemon keeps running its tasks"),
            "{args:?}: {stderr}"
        );
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        assert_eq!(rest, "", "{args:?}");
        assert!(
            daemon.ok(&["view", id]).contains("Status:  running"),
            "{args:?} ended the task"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&daemon.ok(&["ps", "--json"])).unwrap();
    assert_eq!(json[0]["task_id"], id);
    assert_eq!(json[0]["status"], "running");
}

#[tokio::test(flavor = "multi_thread")]
async fn ps_all_lists_every_sessions_tasks_in_start_order_and_wait_takes_any_of_them() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let daemon = Daemon::start(&team, Some(&scratch.dir.join("state")), &scratch.dir);
    let other = daemon.mcp_client("other").await;
    // The command line and another client start tasks in turn.
    let mut started = Vec::new();
    for turn in 0..6 {
        let task = format!("echo {turn}");
        let id = if turn % 2 == 0 {
            let state = daemon.state.clone();
            let started = tokio::task::spawn_blocking(move || {
                let output =
                    bgagents(&["start", "--state", state.to_str().unwrap(), "helper", &task]);
                assert!(output.status.success(), "{}", text(&output.stderr));
                text(&output.stdout)
            });
            started.await.unwrap().trim().to_string()
        } else {
            let arguments = serde_json::json!({"agent": "helper", "task": task});
            let answer = text_of(&call_tool(&other, "run_background_agent", arguments).await);
            let first = answer.lines().next().unwrap();
            first.rsplit_once("ID: ").unwrap().1.trim().to_string()
        };
        started.push(id);
    }
    let state = daemon.state.clone();
    let ps = tokio::task::spawn_blocking(move || {
        let output = bgagents(&["ps", "--state", state.to_str().unwrap(), "--all", "--json"]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
    });
    let ps: serde_json::Value = serde_json::from_str(&ps.await.unwrap()).unwrap();
    let listed: Vec<&str> = (ps.as_array().unwrap().iter())
        .map(|task| task["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, started, "oldest first, whichever session: {ps}");
    let sessions: Vec<&str> = (ps.as_array().unwrap().iter())
        .map(|task| task["session"].as_str().unwrap())
        .collect();
    assert_eq!(sessions[..2], ["cli", "mcp#1 (other)"], "{ps}");
    // One wait over tasks of both sessions: a task id is enough.
    let state = daemon.state.clone();
    let ids = started.clone();
    let waited = tokio::task::spawn_blocking(move || {
        let mut args = vec!["wait", "--state", state.to_str().unwrap()];
        args.extend(ids.iter().map(String::as_str));
        bgagents(&args)
    });
    let waited = waited.await.unwrap();
    let report = text(&waited.stdout);
    assert!(waited.status.success(), "{report}{}", text(&waited.stderr));
    for (turn, id) in started.iter().enumerate() {
        // Each task's own line, its status and its output under it.
        let entry = format!("{id} completed\n  {turn}");
        assert!(report.contains(&entry), "{entry:?} in {report}");
    }
    assert!(!report.contains("not_found"), "{report}");
    other.cancel().await.unwrap();
}

#[test]
fn a_grant_that_reaches_the_state_directory_is_refused() {
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.dir.join("work/state")).unwrap();
    let team = scratch.team(
        "agents:\n  helper:\n    component: '{plugins}/probe.wasm'\n    grants:\n      files: [{host: ./work, guest: /work, mode: read-write}]\n",
    );
    for state in ["work/state", "work"] {
        let state = scratch.dir.join(state);
        let output = bgagents(&[
            "serve",
            team.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("agents.helper.grants.files"), "{stderr}");
        assert!(stderr.contains("the state directory"), "{stderr}");
        assert!(stderr.contains("--state"), "{stderr}");
        assert!(!state.join("bgagents.sock").exists(), "no daemon served");
    }
    // The same team serves with its state elsewhere.
    let state = scratch.dir.join("elsewhere");
    let daemon = Daemon::start(&team, Some(&state), &scratch.dir);
    let output = bgagents(&["ps", "--state", daemon.state.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
}

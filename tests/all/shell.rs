//! The `shell` toolset end to end: the bundled LLM agent, scripted by the
//! model server, runs commands in the host's bubblewrap sandbox, and the
//! tool results it sends back to the model show each hostile command
//! failing harmlessly — reading /etc/shadow, writing a read-only grant,
//! reaching the network without `grants.network.shell`, a fork bomb, a
//! 10 GB write, 2 GiB of memory — while granted work gets done, and a
//! command's own `bwrap: …` message is its own failure, not the sandbox's. Background jobs are listed,
//! viewed, stopped, and killed when their task is stopped.
//!
//! Skipped (saying why) where `bgagents check` reports that bubblewrap
//! cannot run.

use bgagents_testkit::model_server::{ModelServer, Script, Turn};
use bgagents_testkit::{HANG, Scratch, holds_within, host_has_process};
use serde_json::{Value, json};
use std::path::Path;

/// A team of one LLM agent `root` with the shell toolset and `grants`
/// (YAML under `grants:`), its model served at `model_url`.
fn team(scratch: &Scratch, model_url: &str, grants: &str) -> std::path::PathBuf {
    scratch.write(
        "team.yaml",
        format!(
            "agents:\n  root:\n    model: m\n    instruction: Use the shell.\n    toolsets:\n      - type: shell\n    grants:\n{grants}\n\
             models:\n  m:\n    provider: ollama\n    model: m\n    base_url: {model_url}\n"
        ),
    )
}

/// What `bgagents check` says about the team's shell, or `None` (printed)
/// when bubblewrap cannot sandbox commands on this machine.
fn checked(team: &Path) -> Option<String> {
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("check")
        .arg(team)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    match said.contains("commands run in bubblewrap") {
        true => Some(said),
        false => {
            eprintln!("skipped: bubblewrap cannot sandbox commands here:\n{said}");
            None
        }
    }
}

/// A model URL for `bgagents check`, which calls no model.
const UNUSED_MODEL: &str = "http://127.0.0.1:9/v1";

fn shell(args: Value) -> (&'static str, String) {
    ("shell", args.to_string())
}

/// Whether the process is gone within [`HANG`].
async fn gone(cmdline: &[&str]) -> bool {
    holds_within(HANG, || !host_has_process(cmdline)).await
}

/// Whether the process is there within [`HANG`] (a job's shell may not
/// have forked it yet).
async fn appears(cmdline: &[&str]) -> bool {
    holds_within(HANG, || host_has_process(cmdline)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_commands_fail_harmlessly_and_the_agent_sees_why() {
    let scratch = Scratch::new();
    let work = scratch
        .write("work/.keep", "")
        .parent()
        .unwrap()
        .to_path_buf();
    let docs = scratch
        .write("docs/readme", "hello\n")
        .parent()
        .unwrap()
        .to_path_buf();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut calls = vec![
        shell(json!({"cmd": "echo made > out.txt && cat /docs/readme"})),
        shell(json!({"cmd": "echo x > /docs/new"})),
        shell(json!({"cmd": "cat /etc/shadow"})),
        shell(json!({"cmd": format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected")})),
        shell(json!({"cmd": "head -c 10G /dev/zero > big; ls -l big", "cwd": "/work"})),
        shell(json!({"cmd": "sleep 1021 & sleep 1022", "timeout": 2})),
        shell(json!({"cmd": "echo 'bwrap: x' >&2; exit 1"})),
    ];
    let fork_bomb =
        shell(json!({"cmd": "bomb() { bomb | bomb & }; bomb; sleep 1023", "timeout": 5}));
    let grants = format!(
        "      files:\n        - {{host: {}, guest: /work, mode: read-write}}\n        - {{host: {}, guest: /docs}}",
        work.display(),
        docs.display()
    );
    let Some(check) = checked(&team(&scratch, UNUSED_MODEL, &grants)) else {
        return;
    };
    // Without a pids cgroup a fork bomb would be bounded only by time: not
    // something to run on a shared machine.
    let processes_capped = !check.contains("no pids cgroup");
    if processes_capped {
        calls.push(fork_bomb);
    } else {
        eprintln!("fork bomb skipped: no pids cgroup on this machine\n{check}");
    }
    // Likewise 2 GiB of memory: `tail` keeps a line until its end.
    let memory_capped = !check.contains("no memory cgroup");
    if memory_capped {
        calls.push(shell(json!({"cmd": "head -c 2G /dev/zero | tail"})));
    } else {
        eprintln!("memory hog skipped: no memory cgroup on this machine\n{check}");
    }
    calls.push(shell(json!({"cmd": "echo still fine"})));
    let server =
        ModelServer::start(Script::new([Turn::tool_calls(calls), Turn::text("done")])).await;
    let team = team(&scratch, &server.base_url(), &grants);
    let toolset = bgagents_testkit::toolset(&std::fs::read_to_string(&team).unwrap());

    let view = bgagents_testkit::run_to_end(&toolset, "root", "go").await;

    assert_eq!(view.result.as_deref(), Some("done"), "{view:?}");
    let seen = server.requests();
    let results = seen[1].tool_results();
    assert_eq!(
        results.len(),
        8 + usize::from(processes_capped) + usize::from(memory_capped),
        "{results:#?}"
    );
    // Granted work is done: the host sees the file.
    assert_eq!(results[0], "hello");
    assert_eq!(
        std::fs::read_to_string(work.join("out.txt")).unwrap(),
        "made\n"
    );
    // A read-only grant refuses writes.
    assert!(
        results[1].contains("Read-only file system"),
        "{}",
        results[1]
    );
    assert!(!docs.join("new").exists());
    // The host's /etc is not there.
    assert!(
        results[2].contains("/etc/shadow: No such file or directory"),
        "{}",
        results[2]
    );
    // No network: the host's listener is unreachable.
    assert!(results[3].contains("Connection refused"), "{}", results[3]);
    assert!(!results[3].contains("connected"));
    assert!(
        listener
            .accept()
            .is_err_and(|error| error.kind() == std::io::ErrorKind::WouldBlock)
    );
    // A 10 GB write stops at the file-size cap (256 MiB by default).
    assert!(
        results[4].contains("size limit of 268435456 bytes"),
        "{}",
        results[4]
    );
    assert_eq!(
        std::fs::metadata(work.join("big")).unwrap().len(),
        256 << 20
    );
    // The timeout kills the command and what it started.
    assert!(
        results[5].starts_with("Command timed out after 2s"),
        "{}",
        results[5]
    );
    assert!(gone(&["sleep", "1021"]).await && gone(&["sleep", "1022"]).await);
    // A command that prints like bubblewrap failed by itself.
    assert_eq!(
        results[6],
        "Error executing command: exit status 1\nOutput: bwrap: x"
    );
    let mut next = 7;
    if processes_capped {
        assert!(
            results[next].starts_with("Command timed out after 5s"),
            "{}",
            results[next]
        );
        assert!(
            results[next].contains("limit of 256 processes"),
            "{}",
            results[next]
        );
        assert!(gone(&["sleep", "1023"]).await);
        next += 1;
    }
    // Memory stops at the cap (1 GiB by default).
    if memory_capped {
        assert!(
            results[next].contains("stopped at the memory limit of 1 GiB"),
            "{}",
            results[next]
        );
    }
    // And the host carries on.
    assert_eq!(results.last().unwrap(), "still fine");
}

#[tokio::test(flavor = "multi_thread")]
async fn background_jobs_are_listed_viewed_stopped_and_killed_when_the_task_stops() {
    let scratch = Scratch::new();
    let grants = "      env: [LANG]";
    if checked(&team(&scratch, UNUSED_MODEL, grants)).is_none() {
        return;
    }
    let job = |cmd: &str| ("run_background_job", json!({"cmd": cmd}).to_string());
    let by_id = |tool: &'static str| (tool, json!({"job_id": "job_2"}).to_string());
    let server = ModelServer::start(Script::new([
        Turn::tool_calls([
            job("sleep 1031 & sleep 1032"),
            job("echo ready; sleep 1033"),
        ]),
        Turn::tool_calls([("list_background_jobs", "{}".to_string())]),
        Turn::tool_calls([
            by_id("stop_background_job"),
            by_id("view_background_job"),
            by_id("stop_background_job"),
        ]),
        // The task waits on the model while the test stops it.
        Turn::text("never sent").delay(HANG * 2),
    ]))
    .await;
    let team = team(&scratch, &server.base_url(), grants);
    let toolset = bgagents_testkit::toolset(&std::fs::read_to_string(&team).unwrap());
    let session = toolset.open_session(None).unwrap();
    let id = bgagents_testkit::start(&toolset, session.caller(), "root", "go");

    let seen = server.wait_for_requests(4, HANG).await;
    let started = seen[1].tool_results();
    assert!(
        started[0].starts_with("Background job started with ID: job_1"),
        "{started:?}"
    );
    assert!(
        started[1].starts_with("Background job started with ID: job_2"),
        "{started:?}"
    );
    let listed = seen[2].tool_results().pop().unwrap();
    assert!(
        listed.contains("ID: job_1\n  Command: sleep 1031 & sleep 1032\n  Status: running"),
        "{listed}"
    );
    assert!(
        listed.contains("ID: job_2\n  Command: echo ready; sleep 1033\n  Status: running"),
        "{listed}"
    );
    let handled = seen[3].tool_results();
    let handled = &handled[handled.len() - 3..];
    assert!(handled[0].starts_with("Job job_2 stopped"), "{handled:?}");
    assert!(handled[1].contains("Status: stopped"), "{handled:?}");
    assert!(
        handled[1].contains("Exit: killed by stop_background_job"),
        "{handled:?}"
    );
    assert!(
        handled[2].contains("job job_2 is not running (status: stopped)"),
        "{handled:?}"
    );
    assert!(
        gone(&["sleep", "1033"]).await,
        "a stopped job's process survived"
    );
    // job_1 runs, inside the sandbox, until its task is stopped.
    assert!(appears(&["sleep", "1031"]).await && appears(&["sleep", "1032"]).await);

    toolset
        .stop_background_agent(session.caller(), &id)
        .await
        .unwrap();

    assert!(
        gone(&["sleep", "1031"]).await,
        "a job outlived its stopped task"
    );
    assert!(
        gone(&["sleep", "1032"]).await,
        "a job's child outlived its stopped task"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_network_grant_gives_commands_the_hosts_network() {
    let scratch = Scratch::new();
    let grants = "      network: {shell: true}";
    if checked(&team(&scratch, UNUSED_MODEL, grants)).is_none() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
    let server = ModelServer::start(Script::new([
        Turn::tool_calls([shell(json!({"cmd": connect}))]),
        Turn::text("done"),
    ]))
    .await;
    let team = team(&scratch, &server.base_url(), grants);
    let toolset = bgagents_testkit::toolset(&std::fs::read_to_string(&team).unwrap());

    let view = bgagents_testkit::run_to_end(&toolset, "root", "go").await;

    assert_eq!(view.result.as_deref(), Some("done"), "{view:?}");
    assert_eq!(server.requests()[1].tool_results(), ["connected"]);
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_ok(),
        "the command's connection never arrived"
    );
}

#[test]
fn a_bubblewrap_that_cannot_sandbox_stops_check_and_run_and_nothing_runs_unconfined() {
    let scratch = Scratch::new();
    // A `bwrap` that answers --version but, like one in a container that
    // forbids user namespaces, cannot create a sandbox.
    let fake = scratch.write(
        "bin/bwrap",
        "#!/bin/sh\ncase \"$1\" in\n  --version) echo 'bubblewrap 0.0.1' ;;\n  --help) ;;\n  \
         *) echo 'bwrap: No permissions to create a new namespace' >&2; exit 1 ;;\nesac\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        scratch.dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let team = team(&scratch, UNUSED_MODEL, "      files: []");
    for command in ["check", "run"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
            .arg(command)
            .arg(&team)
            .args((command == "run").then_some("echo hi"))
            .env("PATH", &path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains(
                "agents.root.toolsets: shell: bubblewrap 0.0.1 cannot create a sandbox here"
            ) && stderr.contains("No permissions to create a new namespace")
                && stderr.contains("shell commands never run outside one"),
            "{command}: {stderr}"
        );
    }
}

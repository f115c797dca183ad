//! Every integration test, in one binary: wasmtime is linked once instead of
//! once per file. Each module drives the library or the real `bgagents`
//! binary with components that `tests/support` builds from `plugins/`.
//!
//! Run one area with a filter: `cargo test --test all mcp::`. Ignored tests:
//! `cargo test --test all -- --ignored polyglot::` (needs the guests that
//! `bash plugins/polyglot/build.sh` builds),
//! `cargo test --test all -- --ignored dashboard::` (needs Chromium) and
//! `BGAGENTS_SOAK_TASKS=300 cargo test --test all -- --ignored sandbox::soak`.

mod agent_tools;
mod browser;
mod cli;
mod cluster;
mod cluster_team;
mod config;
mod dashboard;
mod egress;
mod engine;
mod examples;
mod fuzz;
mod harness;
mod http_grants;
mod limits;
mod llm;
mod mcp;
mod mcp_servers;
mod model_client;
mod model_config;
mod model_server;
mod plugins;
mod polyglot;
mod sandbox;
mod serve;
mod serve_http;
mod shell;
mod store;
mod toolset;
mod warm;

use bgagents_testkit::HANG;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the `bgagents` binary with `args` in `dir` and collects its output.
fn bgagents_in(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Output bytes as text (invalid UTF-8 shown as U+FFFD).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How a `bgagents run` ended after Ctrl-C.
struct Interrupted {
    status: ExitStatus,
    /// stderr up to the sub-agent's start.
    before: String,
    /// stderr after the interrupt.
    after: String,
    /// From the interrupt to the process's exit.
    took: Duration,
}

/// Runs `bgagents run TEAM TASK...`, waits until stderr shows a sub-agent
/// `] started`, lets it run for `settle`, then sends SIGINT and collects
/// the end. A watchdog kills the process if it outlives the interrupt by far,
/// so a regression fails on time instead of hanging the suite.
fn interrupt_run(team: &Path, task: &[&str], settle: Duration) -> Interrupted {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("run")
        .arg(team)
        .args(task)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let watchdog_pid = pid.clone();
    std::thread::spawn(move || {
        std::thread::sleep(HANG * 2);
        let _ = Command::new("kill").args(["-KILL", &watchdog_pid]).status();
    });
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut before = String::new();
    let started = Instant::now();
    while !before.contains("] started") {
        assert!(
            started.elapsed() < HANG,
            "the sub-agent never started:\n{before}"
        );
        let mut line = String::new();
        assert_ne!(
            stderr.read_line(&mut line).unwrap(),
            0,
            "stderr closed:\n{before}"
        );
        before.push_str(&line);
    }
    std::thread::sleep(settle);
    let interrupted_at = Instant::now();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success());
    let mut after = String::new();
    stderr.read_to_string(&mut after).unwrap();
    let status = child.wait().unwrap();
    Interrupted {
        status,
        before,
        after,
        took: interrupted_at.elapsed(),
    }
}

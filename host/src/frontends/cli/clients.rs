//! The daemon's command-line clients — `start`, `ps`, `logs`, `view`,
//! `stop`, `wait` — each a thin MCP client over the socket of a running
//! `bgagents serve`. They join the daemon's command-line session, so `ps`
//! lists what `bgagents start` started and what earlier daemons left in the
//! task store (`ps --all`: every client's tasks too); a task id reaches any
//! task on the daemon.
//!
//! Exit codes follow `run`: 0 done (a task: completed), 1 a task failed,
//! was stopped or interrupted (or a wait timed out), 2 bad usage — an
//! unknown agent or task id, no daemon running — and 130 on Ctrl-C (the
//! tasks keep running in the daemon).

use super::sanitise::{Keep, indented, printable, shown_path};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, HOST};
use crate::frontends::serve::connection::{CLI_CLIENT, LIST_ALL, READ_OUTPUT};
use crate::frontends::serve::sessions::{CLI_LABEL, RESTORED_LABEL};
use crate::frontends::serve::state;
use crate::toolset::WAIT_MAX_TIMEOUT_SECS;
use crate::toolset::tools::background::{RUN, STOP, VIEW, WAIT};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientConfig, Implementation, ProtocolVersion,
};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::io::{ErrorKind, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Which daemon a client talks to: `--state DIR`, or `--team TEAM.yaml`
/// (its default state directory); with neither, the one daemon running
/// under the default state root.
pub struct Target {
    pub state: Option<PathBuf>,
    pub team: Option<PathBuf>,
}

/// How long `logs -f` waits per request for more output.
const FOLLOW_WAIT_SECS: u64 = 30;

fn error(text: &str) -> ExitCode {
    eprintln!("error: {}", indented(&printable(text, Keep::Lines), "  "));
    ExitCode::from(EXIT_BAD_INPUT)
}

struct Daemon {
    client: RunningService<RoleClient, ClientConfig>,
}

/// Connects to the target's daemon, or says how to start one.
async fn connect(target: &Target) -> Result<Daemon, ExitCode> {
    let dir = resolve(target).map_err(|text| error(&text))?;
    let socket = state::socket(&dir);
    let stream = match tokio::net::UnixStream::connect(&socket).await {
        Ok(stream) => stream,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            return Err(error(&not_running(target, &dir)));
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            let whose = match another_user(&socket) {
                Some(uid) => format!(
                    "it belongs to another user (uid {uid}), and a daemon serves only the user \
                     who started it; run this command as that user, or serve the team as \
                     yourself (`bgagents serve TEAM.yaml`)"
                ),
                None => format!("{e}; check who owns {} and its mode", dir.display()),
            };
            return Err(error(&format!(
                "permission denied on the daemon's socket {}: {whose}",
                socket.display()
            )));
        }
        Err(e) => {
            return Err(error(&format!(
                "cannot connect to the daemon at {}: {e}",
                socket.display()
            )));
        }
    };
    let config = ClientConfig::new(
        Default::default(),
        Implementation::new(CLI_CLIENT, env!("CARGO_PKG_VERSION")),
    )
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    let client = config.serve(stream.into_split()).await.map_err(|e| {
        // The daemon hangs up on clients of another user that its
        // socket's mode did not keep out.
        error(&match another_user(&socket) {
            Some(uid) => format!(
                "the daemon at {} refused this client: it belongs to another user (uid {uid}) \
                 and serves only that user's clients",
                socket.display()
            ),
            None => format!(
                "the daemon at {} did not answer the MCP handshake: {e}",
                socket.display()
            ),
        })
    })?;
    Ok(Daemon { client })
}

/// The user owning `socket` (or, where it cannot be seen, its directory)
/// when that is not this process's user.
fn another_user(socket: &Path) -> Option<u32> {
    let metadata = match std::fs::metadata(socket) {
        Ok(metadata) => metadata,
        Err(_) => std::fs::metadata(socket.parent()?).ok()?,
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    (metadata.uid() != uid).then_some(metadata.uid())
}

/// The state directory the target names.
fn resolve(target: &Target) -> Result<PathBuf, String> {
    if let Some(dir) = &target.state {
        return Ok(dir.clone());
    }
    if let Some(team) = &target.team {
        return state::default_dir(team);
    }
    // Neither: the one daemon that runs under the default root.
    let root = state::state_root()?;
    let running: Vec<PathBuf> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|dir| std::os::unix::net::UnixStream::connect(state::socket(dir)).is_ok())
        .collect();
    match running.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(
            "no bgagents daemon is running; start one with `bgagents serve TEAM.yaml`".to_string(),
        ),
        several => {
            let mut text = String::from(
                "several bgagents daemons are running; say which with --team TEAM.yaml or \
                 --state DIR:",
            );
            for dir in several {
                let team = state::holder(dir).team;
                let team = team.map_or("?".to_string(), |team| team.display().to_string());
                text.push_str(&format!("\n  {team} (--state {})", dir.display()));
            }
            Err(text)
        }
    }
}

/// No daemon listens in `dir`: the command that starts one.
fn not_running(target: &Target, dir: &Path) -> String {
    let team = (target.team.clone())
        .or_else(|| state::holder(dir).team)
        .map_or("TEAM.yaml".to_string(), |team| shown_path(&team));
    let command = match &target.state {
        Some(dir) => format!("bgagents serve {team} --state {}", shown_path(dir)),
        None => format!("bgagents serve {team}"),
    };
    format!(
        "no bgagents daemon is running for {team} (state directory {}); start it with:\n{command}",
        dir.display()
    )
}

impl Daemon {
    /// Calls `tool`; a protocol failure is reported and ends the command.
    async fn call(&self, tool: &str, arguments: Value) -> Result<CallToolResult, ExitCode> {
        let Value::Object(arguments) = arguments else {
            unreachable!("tool arguments are objects")
        };
        let request = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        self.client.call_tool(request).await.map_err(|e| {
            eprintln!("error: the daemon failed to answer {tool}: {e}");
            ExitCode::from(EXIT_FAILED)
        })
    }

    /// Calls `tool`; a tool error is reported (exit 2: bad input).
    async fn call_ok(&self, tool: &str, arguments: Value) -> Result<CallToolResult, ExitCode> {
        let result = self.call(tool, arguments).await?;
        if result.is_error == Some(true) {
            return Err(error(&text_of(&result)));
        }
        Ok(result)
    }

    async fn close(self) {
        let _ = self.client.cancel().await;
    }
}

fn text_of(result: &CallToolResult) -> String {
    (result.content.iter())
        .filter_map(|content| content.as_text().map(|text| text.text.as_str()))
        .collect()
}

/// Guest text for stdout: as is into a pipe, made inert on a terminal.
fn print_guest_text(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let shown = match stdout.is_terminal() {
        true => printable(text, Keep::Lines),
        false => text.into(),
    };
    let _ = stdout.write_all(shown.as_bytes());
    let _ = stdout.flush();
}

/// Ends a command on Ctrl-C: the daemon keeps the tasks running.
async fn or_interrupted<T>(work: impl Future<Output = Result<T, ExitCode>>) -> Result<T, ExitCode> {
    tokio::select! {
        outcome = work => outcome,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("{HOST} interrupted; the daemon keeps running its tasks");
            Err(ExitCode::from(EXIT_INTERRUPTED))
        }
    }
}

fn code(outcome: Result<ExitCode, ExitCode>) -> ExitCode {
    outcome.unwrap_or_else(|code| code)
}

/// `start AGENT TASK`: prints the new task's id.
pub async fn start(target: &Target, agent: &str, task: &str, expected: Option<&str>) -> ExitCode {
    code(
        async {
            let daemon = connect(target).await?;
            let mut arguments = json!({"agent": agent, "task": task});
            if let Some(expected) = expected {
                arguments["expected_output"] = json!(expected);
            }
            let result = daemon.call_ok(RUN, arguments).await?;
            daemon.close().await;
            let text = text_of(&result);
            let id = (text.lines().next())
                .and_then(|line| line.rsplit_once("ID: "))
                .map(|(_, id)| id.trim().to_string());
            match id {
                Some(id) => {
                    println!("{id}");
                    Ok(ExitCode::SUCCESS)
                }
                None => Err(error(&format!(
                    "the daemon's answer has no task id: {text}"
                ))),
            }
        }
        .await,
    )
}

/// `ps`: the command line's tasks (`--all`: every session's), as a table
/// or JSON.
pub async fn ps(target: &Target, all: bool, as_json: bool) -> ExitCode {
    code(
        async {
            let daemon = connect(target).await?;
            let result = daemon.call_ok(LIST_ALL, json!({})).await?;
            daemon.close().await;
            let tasks: Vec<Value> = (result.structured_content.as_ref())
                .and_then(|content| content.get("tasks"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|task| {
                    let session = task.get("session").and_then(Value::as_str);
                    all || session
                        .is_some_and(|session| [CLI_LABEL, RESTORED_LABEL].contains(&session))
                })
                .cloned()
                .collect();
            if as_json {
                println!("{}", serde_json::to_string_pretty(&tasks).expect("JSON"));
                return Ok(ExitCode::SUCCESS);
            }
            if tasks.is_empty() {
                eprintln!(
                    "{HOST} no tasks{}",
                    if all {
                        ""
                    } else {
                        " started from the command line (ps --all shows every client's)"
                    }
                );
                return Ok(ExitCode::SUCCESS);
            }
            let field = |task: &Value, name: &str| {
                let text = task.get(name).and_then(Value::as_str).unwrap_or("");
                printable(text, Keep::OneLine).into_owned()
            };
            let mut rows = vec![vec![
                "ID".to_string(),
                "AGENT".to_string(),
                "STATUS".to_string(),
                "RUNTIME".to_string(),
            ]];
            if all {
                rows[0].push("SESSION".to_string());
            }
            for task in &tasks {
                let runtime = task.get("runtime_secs").and_then(Value::as_f64);
                let runtime = Duration::from_secs_f64(runtime.unwrap_or(0.0).max(0.0));
                let mut row = vec![
                    field(task, "task_id"),
                    field(task, "agent"),
                    field(task, "status"),
                    crate::toolset::render::runtime(runtime),
                ];
                if all {
                    row.push(field(task, "session"));
                }
                rows.push(row);
            }
            let widths: Vec<usize> = (0..rows[0].len())
                .map(|column| {
                    rows.iter()
                        .map(|row| row[column].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let mut text = String::new();
            for row in &rows {
                let cells: Vec<String> = (row.iter().zip(&widths))
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect();
                text.push_str(cells.join("  ").trim_end());
                text.push('\n');
            }
            let _ = std::io::stdout().write_all(text.as_bytes());
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

/// `view ID`: the task as `view_background_agent` shows it.
pub async fn view(target: &Target, id: &str) -> ExitCode {
    code(
        async {
            let daemon = connect(target).await?;
            let result = daemon.call_ok(VIEW, json!({"task_id": id})).await?;
            daemon.close().await;
            print_guest_text(&format!("{}\n", text_of(&result)));
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

/// `stop ID`: stops a queued or running task (exit 1 if it had already
/// finished).
pub async fn stop(target: &Target, id: &str) -> ExitCode {
    code(
        async {
            let daemon = connect(target).await?;
            let probe = daemon.call_ok(READ_OUTPUT, json!({"task_id": id})).await?;
            let probe = probe.structured_content.unwrap_or_default();
            if probe["done"] == json!(true) {
                daemon.close().await;
                eprintln!(
                    "error: task {} has already ended ({}); nothing to stop",
                    printable(id, Keep::OneLine),
                    probe["status"].as_str().unwrap_or("final")
                );
                return Ok(ExitCode::from(EXIT_FAILED));
            }
            let result = daemon.call(STOP, json!({"task_id": id})).await?;
            daemon.close().await;
            let text = text_of(&result);
            if result.is_error == Some(true) {
                eprintln!("error: {}", indented(&printable(&text, Keep::Lines), "  "));
                return Ok(ExitCode::from(EXIT_FAILED));
            }
            println!("{}", printable(&text, Keep::Lines));
            Ok(ExitCode::SUCCESS)
        }
        .await,
    )
}

/// `logs ID [-f]`: the output so far; with `follow`, then live until the
/// task ends (exiting as `run` does for its status).
pub async fn logs(target: &Target, id: &str, follow: bool) -> ExitCode {
    code(
        or_interrupted(async {
            let daemon = connect(target).await?;
            let mut offset: u64 = 0;
            loop {
                let wait = if follow { FOLLOW_WAIT_SECS } else { 0 };
                let arguments = json!({"task_id": id, "offset": offset, "wait": wait});
                let result = daemon.call_ok(READ_OUTPUT, arguments).await?;
                let read = result.structured_content.unwrap_or_default();
                if let Some(output) = read["output"].as_str()
                    && !output.is_empty()
                {
                    print_guest_text(output);
                }
                offset = read["next_offset"].as_u64().unwrap_or(offset);
                if !follow {
                    break;
                }
                if read["done"] == json!(true) {
                    daemon.close().await;
                    return Ok(ended(&read));
                }
            }
            daemon.close().await;
            Ok(ExitCode::SUCCESS)
        })
        .await,
    )
}

/// The exit code for a task that ended as `read` says, telling why on
/// stderr unless it completed.
fn ended(read: &Value) -> ExitCode {
    let status = read["status"].as_str().unwrap_or("");
    if status == "completed" {
        return ExitCode::SUCCESS;
    }
    let agent = printable(read["agent"].as_str().unwrap_or("task"), Keep::OneLine).into_owned();
    match read["error"].as_str() {
        // An interrupted task's reason starts with its status already.
        Some(reason) => {
            let reason = reason
                .strip_prefix(&format!("{status}: "))
                .unwrap_or(reason);
            eprintln!("error: {agent} {status}: {}", indented(reason, "  "))
        }
        None => eprintln!("error: {agent} {status}"),
    }
    ExitCode::from(EXIT_FAILED)
}

/// `wait ID... [--timeout S]`: waits until every task has ended (or the
/// timeout passes) and prints each one's status and output.
pub async fn wait(target: &Target, ids: &[String], timeout: Option<u64>) -> ExitCode {
    code(
        or_interrupted(async {
            let daemon = connect(target).await?;
            let deadline = timeout.map(|secs| Instant::now() + Duration::from_secs(secs));
            let report = loop {
                let left = deadline.map_or(WAIT_MAX_TIMEOUT_SECS, |deadline| {
                    deadline.saturating_duration_since(Instant::now()).as_secs()
                });
                // 0 would mean the tool's default.
                let this_call = left.clamp(1, WAIT_MAX_TIMEOUT_SECS);
                let arguments = json!({"task_ids": ids, "timeout": this_call});
                let result = daemon.call_ok(WAIT, arguments).await?;
                let answer = text_of(&result);
                let Ok(report) = serde_json::from_str::<Value>(&answer) else {
                    return Err(error(&format!(
                        "the daemon's answer to wait is not a report: {answer}"
                    )));
                };
                let out_of_time = deadline.is_some_and(|deadline| Instant::now() >= deadline);
                if report["all_done"] == json!(true) || out_of_time || timeout == Some(0) {
                    break report;
                }
            };
            daemon.close().await;
            Ok(show_wait(&report, timeout))
        })
        .await,
    )
}

fn show_wait(report: &Value, timeout: Option<u64>) -> ExitCode {
    let mut worst = ExitCode::SUCCESS;
    let mut text = String::new();
    let mut running = Vec::new();
    for task in report["tasks"].as_array().into_iter().flatten() {
        let id = printable(task["task_id"].as_str().unwrap_or("?"), Keep::OneLine).into_owned();
        let status = task["status"].as_str().unwrap_or("?");
        text.push_str(&format!("{id} {status}\n"));
        for key in ["output", "error"] {
            if let Some(body) = task[key].as_str() {
                text.push_str(&format!("  {}\n", indented(body, "  ")));
            }
        }
        if task["truncated"] == json!(true) {
            text.push_str(&format!("  [cut; `bgagents view {id}` shows it all]\n"));
        }
        match status {
            "completed" => {}
            "not_found" => worst = ExitCode::from(EXIT_BAD_INPUT),
            _ if task["done"] == json!(true) => {
                if worst == ExitCode::SUCCESS {
                    worst = ExitCode::from(EXIT_FAILED);
                }
            }
            _ => running.push(id),
        }
    }
    print_guest_text(&text);
    if !running.is_empty() {
        eprintln!(
            "error: timed out after {} s; still running: {}",
            timeout.unwrap_or(0),
            running.join(" ")
        );
        if worst == ExitCode::SUCCESS {
            worst = ExitCode::from(EXIT_FAILED);
        }
    }
    worst
}

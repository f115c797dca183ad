//! `bgagents run`: start one agent, show what happens while it runs, print
//! its result, and stop whatever it left running.

use super::printer::{Printer, SYNC_INTERVAL};
use super::sanitise::{Keep, indented, printable};
use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED};
use crate::tasks::{Caller, TaskEvent, TaskStatus};
use crate::toolset::{Toolset, WAIT_MAX_TIMEOUT_SECS};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinSet;

pub struct Options {
    pub agent: Option<String>,
    pub task: String,
    pub expected_output: Option<String>,
    pub quiet: bool,
}

pub async fn run(path: &Path, options: Options) -> ExitCode {
    let toolset = match super::load(path, !options.quiet) {
        Ok(toolset) => toolset,
        Err(code) => return code,
    };
    // A lone component's only agent is the default.
    let agent = options
        .agent
        .unwrap_or_else(|| match toolset.team().agents.keys().next() {
            Some(only) if toolset.team().agents.len() == 1 => only.clone(),
            _ => "root".to_string(),
        });
    let session = toolset
        .open_session(None)
        .expect("the operator session needs no agent");
    let caller = session.caller();
    let mut events = toolset.events().subscribe();
    let info = match toolset.run_background_agent(
        caller,
        &agent,
        &options.task,
        options.expected_output.as_deref(),
    ) {
        Ok(info) => info,
        Err(error) => {
            let error = printable(&error.to_string(), Keep::Lines).into_owned();
            eprintln!("error: {}", indented(&error, "  "));
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let root = info.id.to_string();
    let mut printer = Printer::new(&toolset, caller, options.quiet);
    let waited = [root.clone()];
    let finished = toolset.wait_background_agents(caller, &waited, WAIT_MAX_TIMEOUT_SECS);
    tokio::pin!(finished);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Stopped tasks whose guests have yet to exit, by id.
    let mut exits: JoinSet<String> = JoinSet::new();
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let was_interrupted = loop {
        let ended = tokio::select! {
            _ = &mut interrupted => {
                printer.notice("interrupted: stopping every task…");
                Some(true)
            }
            event = events.recv() => {
                match event {
                    Ok(event) => printer.show(&event),
                    Err(RecvError::Lagged(_)) => printer.lagged(),
                    // The toolset holds the sender.
                    Err(RecvError::Closed) => {}
                }
                if events.is_empty() {
                    printer.idle();
                }
                None
            }
            Some(Ok(id)) = exits.join_next(), if !exits.is_empty() => {
                // Everything the task wrote was sent before it exited.
                drain(&mut events, &mut printer);
                printer.exited(&id);
                printer.idle();
                None
            }
            _ = tick.tick() => {
                printer.tick();
                printer.idle();
                None
            }
            // The root task may outlive the wait's timeout; then wait again.
            report = &mut finished => match report {
                Ok(report) if report.all_done => Some(false),
                _ => {
                    finished.set(toolset.wait_background_agents(
                        caller,
                        &waited,
                        WAIT_MAX_TIMEOUT_SECS,
                    ));
                    None
                }
            },
        };
        if let Some(interrupted) = ended {
            break interrupted;
        }
        for id in printer.take_awaiting_exit() {
            exits.spawn(exited(toolset.clone(), caller.clone(), id));
        }
    };
    let left_running: Vec<String> = toolset
        .list_background_agents(caller)
        .into_iter()
        .filter(|task| !task.status.is_final() && task.id.as_str() != root)
        .map(|task| task.id.to_string())
        .collect();
    let view = toolset.view_background_agent(caller, &root);
    // Stop whatever is still running, then show everything that happened.
    session.close().await;
    drain(&mut events, &mut printer);
    let tasks = toolset.list_background_agents(caller);
    printer.finish_all(&tasks);
    let stopped = tasks
        .iter()
        .filter(|task| {
            task.status == TaskStatus::Stopped && left_running.contains(&task.id.to_string())
        })
        .count();
    if stopped > 0 && !was_interrupted {
        printer.host_line(&format!(
            "stopped {stopped} task(s) that {} left running",
            printable(&agent, Keep::OneLine)
        ));
    }
    printer.flush();
    if was_interrupted {
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    match view {
        Ok(view) if view.info.status == TaskStatus::Completed => {
            let result = view.result.unwrap_or_default();
            let mut stdout = std::io::stdout().lock();
            // Piped, the result is passed on as is; on a terminal, a guest's
            // escape sequences are not let loose.
            let result = if stdout.is_terminal() {
                printable(&result, Keep::Lines)
            } else {
                result.into()
            };
            let _ = writeln!(stdout, "{result}");
            ExitCode::SUCCESS
        }
        Ok(view) => {
            let reason = view.error.unwrap_or_else(|| "stopped".to_string());
            eprintln!(
                "error: {} {}: {}",
                printable(&view.info.agent, Keep::OneLine),
                view.info.status,
                indented(&reason, "  ")
            );
            ExitCode::from(EXIT_FAILED)
        }
        Err(error) => {
            eprintln!("error: {}", indented(&error.to_string(), "  "));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Shows every event already sent.
fn drain(events: &mut Receiver<TaskEvent>, printer: &mut Printer) {
    loop {
        match events.try_recv() {
            Ok(event) => printer.show(&event),
            Err(TryRecvError::Lagged(_)) => printer.lagged(),
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
}

/// Resolves (to `id`) once task `id`'s guest has exited.
async fn exited(toolset: Toolset, caller: Caller, id: String) -> String {
    let ids = [id];
    while let Ok(report) = toolset
        .wait_background_agents(&caller, &ids, WAIT_MAX_TIMEOUT_SECS)
        .await
        && !report.all_done
    {}
    let [id] = ids;
    id
}

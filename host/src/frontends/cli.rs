//! The `bgagents` command line: `run` an agent of a team in the foreground
//! and `check` a team before running it. It only adapts: tasks are started,
//! watched and stopped through the toolset like any other front-end.

use crate::config::Team;
use crate::tasks::{EventKind, SessionId, TaskEvent, TaskStatus};
use crate::toolset::Toolset;
use clap::{Parser, Subcommand};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::sync::broadcast::error::RecvError;

/// Exit codes, documented in `--help`.
const EXIT_FAILED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser)]
#[command(
    name = "bgagents",
    version,
    about = "Run sub-agents as sandboxed WebAssembly components, in the background.",
    long_about = "Run sub-agents as sandboxed WebAssembly components, in the background.\n\n\
        A team file (YAML) names agents, the component each one runs, which sub-agents it may \
        dispatch, and its limits. Every task runs in its own sandbox with no file, network or \
        environment access, under a fuel budget, a memory limit and a timeout.\n\n\
        Start with:  bgagents check examples/team.yaml\n\
        then:        bgagents run examples/team.yaml \"your task\"\n\
        or serve it to an MCP client:  bgagents mcp examples/team.yaml\n\
        Write a plugin:  bgagents new my-agent  (see docs/plugins.md)",
    after_help = "Exit codes: 0 completed · 1 the agent failed or was stopped · \
        2 bad team file, component or usage · 130 interrupted (Ctrl-C)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one agent of a team in the foreground and print its result.
    ///
    /// The agent's live output, and what its sub-agents do, go to stderr as
    /// they happen; its final result goes to stdout. Ctrl-C stops every task.
    Run {
        /// The team file — or a component (.wasm) to run alone, with default
        /// limits and no grants.
        team: PathBuf,
        /// The agent to run [default: root, or the component's own name].
        #[arg(long, short)]
        agent: Option<String>,
        /// What the caller expects back, passed to the agent.
        #[arg(long)]
        expected_output: Option<String>,
        /// Show only the result: no live output or sub-agent activity.
        #[arg(long, short)]
        quiet: bool,
        /// The task, as one or more words.
        #[arg(required = true, num_args = 1..)]
        task: Vec<String>,
    },
    /// Load a team, compile every component, and report every problem found.
    Check {
        /// The team file.
        team: PathBuf,
    },
    /// Write the WIT package plugins build against.
    Wit {
        /// The directory to write `bgagents.wit` into.
        #[arg(long, default_value = "wit")]
        out: PathBuf,
    },
    /// Create a plugin project (Rust, Python or JavaScript) that builds and runs right away.
    New {
        /// The plugin's name (lowercase letters, digits, - and _).
        name: String,
        /// Where to create it [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugin's language.
        #[arg(long, value_enum, default_value_t)]
        lang: super::scaffold::Lang,
    },
    /// Serve the background-agents toolset over MCP on stdin/stdout.
    ///
    /// The client acts as agent NAME: it may start NAME's sub_agents and sees
    /// only the tasks it started. When the client disconnects, every task is
    /// stopped and the server exits.
    Mcp {
        /// The team file.
        team: PathBuf,
        /// The agent the client acts as (it needs the background_agents toolset).
        #[arg(long, short, default_value = "root")]
        agent: String,
    },
}

/// Entry point of the `bgagents` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run {
                team,
                agent,
                expected_output,
                quiet,
                task,
            } => run(team, agent, &task.join(" "), expected_output, quiet).await,
            Command::Check { team } => check(team),
            Command::Wit { out } => report(super::scaffold::write_wit(&out).map(|file| vec![file])),
            Command::New { name, dir, lang } => {
                let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
                let created = super::scaffold::new_plugin(&name, &dir, lang);
                if created.is_ok() {
                    println!(
                        "created plugin {name} in {}; next:\n{}",
                        dir.display(),
                        lang.next_steps(&dir)
                    );
                }
                report(created)
            }
            Command::Mcp { team, agent } => mcp(team, &agent).await,
        }
    })
}

/// Appends one formatted line to a `String`.
macro_rules! push_line {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// Prints the files written, or the error.
fn report(written: Result<Vec<PathBuf>, String>) -> ExitCode {
    match written {
        Ok(files) => {
            for file in files {
                println!("wrote {}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// Loads the team (or a lone component) and compiles its components,
/// printing every problem.
fn load(path: &PathBuf) -> Result<Toolset, ExitCode> {
    let team = if path.extension().is_some_and(|ext| ext == "wasm") {
        Team::single_component(path)
    } else {
        Team::load(path).map_err(|error| {
            eprintln!("{error}");
            ExitCode::from(EXIT_BAD_INPUT)
        })?
    };
    let source = team.source.clone();
    Toolset::load(team).map_err(|error| {
        for problem in &error.problems {
            eprintln!("{}: {problem}", source.display());
        }
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

async fn mcp(path: PathBuf, agent: &str) -> ExitCode {
    let toolset = match load(&path) {
        Ok(toolset) => toolset,
        Err(code) => return code,
    };
    match super::mcp::serve(toolset, agent).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

fn check(path: PathBuf) -> ExitCode {
    let toolset = match load(&path) {
        Ok(toolset) => toolset,
        Err(code) => return code,
    };
    // Written in one go so that a closed pipe (`check | head`) is not a panic.
    let mut out = String::new();
    let team = toolset.team();
    push_line!(
        out,
        "{}: OK — {} agent(s), every component compiled",
        path.display(),
        team.agents.len()
    );
    let limits = &team.limits;
    push_line!(
        out,
        "host limits: {} running at once (more are queued), {} retained, {} output per task, depth {}",
        limits.max_running,
        limits.max_retained,
        crate::config::units::format_size(limits.max_output),
        limits.max_depth
    );
    let report = toolset.load_report();
    push_line!(out, "instances:   {}", report.allocator);
    match &report.cache_dir {
        Some(dir) => push_line!(out, "cache:       {}", dir.display()),
        None => push_line!(out, "cache:       off"),
    }
    for component in &report.components {
        push_line!(
            out,
            "component:   {} — {} in {:.1} ms",
            component.path.display(),
            component.cache,
            component.took.as_secs_f64() * 1000.0
        );
    }
    for agent in team.agents.values() {
        out.push_str(&format!("\n{}\n", agent.name));
        if !agent.description.is_empty() {
            push_line!(out, "  description: {}", agent.description);
        }
        match &agent.component {
            Some(component) => push_line!(out, "  component:   {}", component.display()),
            None => push_line!(
                out,
                "  component:   none (usable only as a front-end's identity)"
            ),
        }
        let toolsets = if agent.background_agents {
            "background_agents"
        } else {
            "none"
        };
        push_line!(out, "  toolsets:    {toolsets}");
        if !agent.sub_agents.is_empty() {
            push_line!(out, "  sub_agents:  {}", agent.sub_agents.join(", "));
            if !agent.background_agents {
                push_line!(
                    out,
                    "  warning:     has sub_agents but not the background_agents toolset, so it cannot dispatch them"
                );
            }
        }
        if agent.grants.is_empty() {
            push_line!(
                out,
                "  grants:      none — no files, no environment, no network; stdin empty"
            );
        } else {
            for (index, grant) in agent.grants.describe().iter().enumerate() {
                let label = if index == 0 { "grants:" } else { "" };
                push_line!(out, "  {label:<12} {grant}");
            }
            push_line!(out, "  {:<12} everything else denied; stdin empty", "");
        }
        push_line!(
            out,
            "  limits:      {}",
            Team::describe_limits(&agent.limits)
        );
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    ExitCode::SUCCESS
}

async fn run(
    path: PathBuf,
    agent: Option<String>,
    task: &str,
    expected_output: Option<String>,
    quiet: bool,
) -> ExitCode {
    let toolset = match load(&path) {
        Ok(toolset) => toolset,
        Err(code) => return code,
    };
    // A lone component's only agent is the default.
    let agent = agent.unwrap_or_else(|| match toolset.team().agents.keys().next() {
        Some(only) if toolset.team().agents.len() == 1 => only.clone(),
        _ => "root".to_string(),
    });
    let agent = agent.as_str();
    let session = toolset
        .open_session(None)
        .expect("the operator session needs no agent");
    let mut events = toolset.events().subscribe();
    let info = match toolset.run_background_agent(
        session.caller(),
        agent,
        task,
        expected_output.as_deref(),
    ) {
        Ok(info) => info,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let mut printer = Printer::new(session.caller().session(), quiet);
    let waited = [info.id.to_string()];
    let finished = toolset.wait_background_agents(
        session.caller(),
        &waited,
        crate::toolset::WAIT_MAX_TIMEOUT_SECS,
    );
    tokio::pin!(finished);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let was_interrupted = loop {
        tokio::select! {
            _ = &mut interrupted => {
                eprintln!("\ninterrupted: stopping every task…");
                break true;
            }
            event = events.recv() => match event {
                Ok(event) => printer.show(&event),
                Err(RecvError::Lagged(missed)) => printer.missed(missed),
                Err(RecvError::Closed) => {}
            },
            // The root task may outlive the wait's timeout; then wait again.
            report = &mut finished => match report {
                Ok(report) if report.all_done => break false,
                _ => finished.set(toolset.wait_background_agents(
                    session.caller(),
                    &waited,
                    crate::toolset::WAIT_MAX_TIMEOUT_SECS,
                )),
            },
        }
    };
    let view = toolset.view_background_agent(session.caller(), info.id.as_str());
    // Stop whatever is still running, then show everything that happened.
    session.close().await;
    while let Ok(event) = events.try_recv() {
        printer.show(&event);
    }
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
                printable(&result)
            } else {
                result.into()
            };
            let _ = writeln!(stdout, "{result}");
            ExitCode::SUCCESS
        }
        Ok(view) => {
            let reason = view.error.unwrap_or_else(|| "stopped".to_string());
            let reason = printable(&reason);
            eprintln!("error: {} {}: {reason}", view.info.agent, view.info.status);
            ExitCode::from(EXIT_FAILED)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Writes a session's task events to stderr: the root task's output as is,
/// sub-agents' output and lifecycle one prefixed line at a time.
struct Printer {
    session: SessionId,
    quiet: bool,
    /// Unfinished last lines of sub-agents' output, by task.
    partial: HashMap<String, String>,
}

impl Printer {
    fn new(session: SessionId, quiet: bool) -> Printer {
        Printer {
            session,
            quiet,
            partial: HashMap::new(),
        }
    }

    fn show(&mut self, event: &TaskEvent) {
        if self.quiet || event.session != self.session {
            return;
        }
        let tag = format!(
            "{}[{} {}]",
            "  ".repeat(event.depth.saturating_sub(2)),
            event.agent,
            short_id(event.id.as_str())
        );
        let mut stderr = std::io::stderr().lock();
        match &event.kind {
            EventKind::Output(text) if event.depth == 1 => {
                let _ = stderr.write_all(printable(text).as_bytes());
            }
            EventKind::Output(text) => {
                let pending = self.partial.entry(event.id.to_string()).or_default();
                pending.push_str(&printable(text));
                while let Some(end) = pending.find('\n') {
                    let _ = writeln!(stderr, "{tag} {}", &pending[..end]);
                    pending.drain(..=end);
                }
            }
            _ if event.depth == 1 => {}
            EventKind::Queued => {
                let _ = writeln!(stderr, "{tag} queued");
            }
            EventKind::Started => {
                let _ = writeln!(stderr, "{tag} started");
            }
            EventKind::Finished(status) => {
                if let Some(rest) = self.partial.remove(event.id.as_str())
                    && !rest.is_empty()
                {
                    let _ = writeln!(stderr, "{tag} {rest}");
                }
                let _ = writeln!(stderr, "{tag} {status}");
            }
        }
    }

    fn missed(&self, count: u64) {
        if !self.quiet {
            eprintln!("[bgagents] {count} output events skipped (the terminal fell behind)");
        }
    }
}

/// Guest text made safe for a terminal: control characters other than
/// newline and tab (escape sequences above all) become `�`.
fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    text.chars()
        .map(|c| if unsafe_char(c) { '\u{FFFD}' } else { c })
        .collect::<String>()
        .into()
}

/// The first block of a task's UUID, enough to tell tasks apart on screen.
fn short_id(id: &str) -> &str {
    let uuid = id.strip_prefix("agent_task_").unwrap_or(id);
    uuid.split('-').next().unwrap_or(uuid)
}

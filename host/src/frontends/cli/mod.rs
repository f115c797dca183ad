//! The `bgagents` command line: `run` an agent of a team in the foreground,
//! `check` a team before running it, the helpers (`wit`, `new`, `mcp`), and
//! `serve` a team as a daemon with its clients (`start`, `ps`, `logs`,
//! `view`, `stop`, `wait`).
//! It only adapts: tasks are started, watched and stopped through the
//! toolset like any other front-end.
//!
//! What `run` prints follows one rule, so a guest cannot pass for the host:
//! once guests run, every line the host writes to stderr starts at column 0
//! with `bgagents:` or `error:`, and no guest-written line ever does (sub-agents' lines start
//! with their `[agent id]` tag; a line of the top-level agent that would
//! look like a host or sub-agent line gets its tag too). All team-file and
//! guest text goes through [`sanitise::printable`].

mod check;
mod clients;
mod logging;
mod printer;
mod progress;
mod relay;
mod run;
mod sanitise;
mod serve;
mod worker;

use crate::config::Team;
use crate::toolset::Toolset;
use clap::{Args, Parser, Subcommand};
use sanitise::{Keep, indented, printable, shown_path};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit codes, documented in `--help`.
const EXIT_FAILED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

/// What starts every status line the host writes to stderr (besides the
/// final `error:` line).
const HOST: &str = "bgagents:";

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
        or keep it running:  bgagents serve examples/team.yaml, then bgagents start AGENT TASK\n\
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
    /// Lines the host writes start with `bgagents:` (or `error:`); sub-agents'
    /// output lines start with `[agent id]`.
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
    /// Load a team (or one component), compile every component, and report
    /// every problem found.
    Check {
        /// The team file — or a component (.wasm) to check alone.
        team: PathBuf,
    },
    /// Compile every component of a team (or one component) into the
    /// compiled-component cache, so the first run starts at once (for
    /// container images and CI).
    Compile {
        /// The team file — or a component (.wasm).
        team: PathBuf,
    },
    /// Write the WIT package plugins build against.
    Wit {
        /// The directory to write `bgagents.wit` into, or `-` for stdout.
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
        /// The team file (a lone component has no sub-agents to serve).
        team: PathBuf,
        /// The agent the client acts as (it needs the background_agents toolset).
        #[arg(long, short, default_value = "root")]
        agent: String,
        /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio, until
        /// SIGINT or SIGTERM; each MCP session sees the tasks it started.
        /// Needs --auth-token-file.
        #[arg(long, value_name = "ADDR", value_parser = listen_address)]
        http: Option<std::net::SocketAddr>,
        /// A file holding the bearer token every HTTP request must carry.
        #[arg(long, value_name = "FILE", requires = "http")]
        auth_token_file: Option<PathBuf>,
    },
    /// Run a team as a daemon in the foreground: tasks outlive the terminal
    /// that started them.
    ///
    /// Listens on STATE/bgagents.sock (mode 0600) for MCP clients and for
    /// `bgagents start`, `ps`, `logs`, `view`, `stop` and `wait`. One daemon
    /// per state directory. SIGINT or SIGTERM stops every task and exits 0.
    ///
    /// Every client is the operator (the socket admits only its owner) and
    /// may start any agent; a task keeps running when its client leaves.
    /// Each MCP connection lists the tasks it started, the command line
    /// those it started (`ps --all`: every task); a task id reaches its task
    /// from any connection.
    Serve {
        /// The team file (or a component, served alone).
        team: PathBuf,
        /// The state directory [default: $XDG_STATE_HOME/bgagents/HASH, or
        /// ~/.local/state/bgagents/HASH, HASH naming the team file's path].
        #[arg(long)]
        state: Option<PathBuf>,
        /// Also serve MCP over Streamable HTTP at http://ADDR/mcp (for
        /// example 127.0.0.1:8765), a JSON API under /api and a dashboard
        /// at /. Every request must carry a bearer token:
        /// --auth-token-file's, or one made in STATE/http-token.
        #[arg(long, value_name = "ADDR", value_parser = listen_address)]
        http: Option<std::net::SocketAddr>,
        /// A file holding the bearer token every HTTP request must carry
        /// (`Authorization: Bearer TOKEN`).
        #[arg(long, value_name = "FILE", requires = "http")]
        auth_token_file: Option<PathBuf>,
        /// Run tasks on workers (`bgagents worker`) through NATS JetStream
        /// at URL (nats://HOST:PORT) instead of in this process.
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
        #[command(flatten)]
        nats_options: worker::NatsArgs,
    },
    /// Run tasks of a coordinator (`serve --nats`) taken from NATS
    /// JetStream, each in its sandbox, until SIGINT or SIGTERM.
    ///
    /// Without TEAM it serves the team the coordinator shipped through
    /// NATS; the components come by hash either way.
    Worker {
        /// A team file of its own [default: the coordinator's, from NATS].
        team: Option<PathBuf>,
        /// The NATS server (nats://HOST:PORT, or tls://HOST:PORT).
        #[arg(long, value_name = "URL")]
        nats: String,
        /// Tasks run at once [default: the number of CPUs].
        #[arg(long)]
        slots: Option<usize>,
        /// Take only these agents' tasks (comma-separated) [default: every agent].
        #[arg(long, value_name = "A,B")]
        agents: Option<String>,
        /// The worker's name in heartbeats and task records [default: HOST-PID].
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        nats_options: worker::NatsArgs,
    },
    /// Start an agent on a task in the running daemon and print the task id.
    Start {
        #[command(flatten)]
        daemon: Daemon,
        /// What the caller expects back, passed to the agent.
        #[arg(long)]
        expected_output: Option<String>,
        /// The agent to run.
        agent: String,
        /// The task, as one or more words.
        #[arg(required = true, num_args = 1..)]
        task: Vec<String>,
    },
    /// List the daemon's tasks started from the command line, and those
    /// kept from earlier daemons (`--all`: every client's too).
    Ps {
        #[command(flatten)]
        daemon: Daemon,
        /// Every task on the daemon, with the session that started it.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a task's output so far (`-f`: then follow it live until the
    /// task ends).
    Logs {
        #[command(flatten)]
        daemon: Daemon,
        /// Keep printing output as it comes, until the task ends.
        #[arg(long, short)]
        follow: bool,
        /// The task id.
        id: String,
    },
    /// Show a task: status, runtime, and its output, result or error.
    View {
        #[command(flatten)]
        daemon: Daemon,
        /// The task id.
        id: String,
    },
    /// Stop a queued or running task and every task it started.
    Stop {
        #[command(flatten)]
        daemon: Daemon,
        /// The task id.
        id: String,
    },
    /// Wait until tasks end, then print each one's status and output.
    Wait {
        #[command(flatten)]
        daemon: Daemon,
        /// Give up after this many seconds (exit 1) [default: no limit].
        #[arg(long)]
        timeout: Option<u64>,
        /// The task ids.
        #[arg(required = true, num_args = 1..)]
        ids: Vec<String>,
    },
    /// The sandbox side of the network egress gate (hidden; see
    /// `relay.rs`): relays 127.0.0.1 connections to the gate's socket while
    /// COMMAND runs.
    #[command(name = "__egress-relay", hide = true)]
    EgressRelay {
        /// The gate's Unix socket.
        #[arg(long)]
        socket: PathBuf,
        /// Where to listen for the command's proxy connections.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The command and its arguments, after `--`.
        #[arg(required = true, num_args = 1.., last = true)]
        command: Vec<std::ffi::OsString>,
    },
}

/// Which running daemon a client command talks to.
#[derive(Args)]
struct Daemon {
    /// The daemon's state directory.
    #[arg(long, conflicts_with = "team")]
    state: Option<PathBuf>,
    /// The daemon's team file (its default state directory) [default: the
    /// only daemon running].
    #[arg(long)]
    team: Option<PathBuf>,
}

impl Daemon {
    fn target(self) -> clients::Target {
        clients::Target {
            state: self.state,
            team: self.team,
        }
    }
}

/// Entry point of the `bgagents` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::EgressRelay {
            socket,
            listen,
            command,
        } => return relay::main(socket, listen, command),
        command => command,
    };
    crate::sandbox::egress::relay_is_current_exe();
    logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match command {
            Command::Run {
                team,
                agent,
                expected_output,
                quiet,
                task,
            } => {
                let options = run::Options {
                    agent,
                    task: task.join(" "),
                    expected_output,
                    quiet,
                };
                run::run(&team, options).await
            }
            Command::Check { team } => check::check(&team),
            Command::Compile { team } => check::compile(&team),
            Command::Wit { out } => wit(&out),
            Command::New { name, dir, lang } => {
                let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
                let created = super::scaffold::new_plugin(&name, &dir, lang);
                if created.is_ok() {
                    let shown = shown_path(&dir);
                    println!(
                        "created plugin {name} in {shown}; next:\n{}",
                        lang.next_steps(Path::new(&shown))
                    );
                }
                report(created)
            }
            Command::Mcp {
                team,
                agent,
                http,
                auth_token_file,
            } => mcp(&team, &agent, http, auth_token_file.as_deref()).await,
            Command::Serve {
                team,
                state,
                http,
                auth_token_file,
                nats,
                nats_options,
            } => {
                let nats = nats.map(|url| nats_options.options(url));
                serve::serve_team(&team, state, http, auth_token_file.as_deref(), nats).await
            }
            Command::Worker {
                team,
                nats,
                slots,
                agents,
                name,
                nats_options,
            } => {
                let options = nats_options.options(nats);
                worker::worker(team.as_deref(), options, slots, agents, name).await
            }
            Command::Start {
                daemon,
                expected_output,
                agent,
                task,
            } => {
                let task = task.join(" ");
                let target = daemon.target();
                clients::start(&target, &agent, &task, expected_output.as_deref()).await
            }
            Command::Ps { daemon, all, json } => clients::ps(&daemon.target(), all, json).await,
            Command::Logs { daemon, follow, id } => {
                clients::logs(&daemon.target(), &id, follow).await
            }
            Command::View { daemon, id } => clients::view(&daemon.target(), &id).await,
            Command::Stop { daemon, id } => clients::stop(&daemon.target(), &id).await,
            Command::Wait {
                daemon,
                timeout,
                ids,
            } => clients::wait(&daemon.target(), &ids, timeout).await,
            // Run before the runtime starts, above.
            Command::EgressRelay { .. } => ExitCode::FAILURE,
        }
    })
}

/// `wit --out DIR` writes the file; `wit --out -` prints the package.
fn wit(out: &Path) -> ExitCode {
    if out == Path::new("-") {
        let _ = std::io::stdout().write_all(crate::wit::WIT.as_bytes());
        return ExitCode::SUCCESS;
    }
    report(super::scaffold::write_wit(out).map(|file| vec![file]))
}

/// Prints the files written, or the error.
fn report(written: Result<Vec<PathBuf>, String>) -> ExitCode {
    match written {
        Ok(files) => {
            for file in files {
                println!("wrote {}", shown_path(&file));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {}", printable(&error, Keep::Lines));
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// Loads the team (or a lone component) and compiles its components,
/// printing every problem. `notices`: say on stderr when a component has to
/// be compiled, which can take a while.
fn load(path: &Path, notices: bool) -> Result<Toolset, ExitCode> {
    load_into(path, notices, None, false)
}

/// Like [`load`]; with `store`, the toolset keeps its tasks there (and
/// lists those it holds from earlier runs). `in_cluster`: its tasks run on
/// a cluster's workers (`serve --nats`).
fn load_into(
    path: &Path,
    notices: bool,
    store: Option<crate::store::Store>,
    in_cluster: bool,
) -> Result<Toolset, ExitCode> {
    let team = if path.extension().is_some_and(|ext| ext == "wasm") {
        Team::single_component(path)
    } else {
        Team::load(path).map_err(|error| {
            print_problems(&error.source, &error.problems, error.more);
            ExitCode::from(EXIT_BAD_INPUT)
        })?
    };
    let source = team.source.clone();
    let mut warnings = team.warnings.clone();
    if !in_cluster {
        warnings.extend(retry_off_here(&team));
    }
    if !warnings.is_empty() {
        let shown = shown_path(&source);
        let mut text = String::new();
        for warning in &warnings {
            text.push_str(&format!("{shown}: warning: {}\n", indented(warning, "  ")));
        }
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    let progress = progress::CompileNotices::new(notices);
    let loaded = match store {
        Some(store) => Toolset::load_with_store(team, store, |event| progress.show(event)),
        None => Toolset::load_with_progress(team, |event| progress.show(event)),
    };
    drop(progress);
    loaded.map_err(|error| {
        print_problems(&source, &error.problems, 0);
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

/// Agents with `retry: true`, which only a cluster's coordinator acts on
/// (a task runs again when its worker dies): said, so nobody counts on
/// it where it does nothing.
pub(crate) fn retry_off_here(team: &Team) -> Option<String> {
    let retrying: Vec<&str> = (team.agents.values())
        .filter(|spec| spec.retry)
        .map(|spec| spec.name.as_str())
        .collect();
    (!retrying.is_empty()).then(|| {
        format!(
            "`retry: true` ({}) takes effect only when the team runs on workers \
             (`bgagents serve TEAM --nats URL`); here a task that cannot finish ends \
             `failed` or `interrupted`",
            retrying.join(", ")
        )
    })
}

/// One `file: problem` line per problem; a problem's further lines are
/// indented. `more`: problems found beyond those listed.
fn print_problems(source: &Path, problems: &[String], more: usize) {
    let source = shown_path(source);
    let mut text = String::new();
    for problem in problems {
        text.push_str(&format!("{source}: {}\n", indented(problem, "  ")));
    }
    if more > 0 {
        text.push_str(&format!(
            "{source}: … and {more} more problem(s) not listed; fix these and run check again\n"
        ));
    }
    let _ = std::io::stderr().write_all(text.as_bytes());
}

async fn mcp(
    path: &Path,
    agent: &str,
    http: Option<std::net::SocketAddr>,
    token_file: Option<&Path>,
) -> ExitCode {
    if path.extension().is_some_and(|ext| ext == "wasm") {
        eprintln!(
            "error: `bgagents mcp` serves a team, not a lone component: write a team file \
             whose agent `{agent}` has the background_agents toolset and lists {} in its \
             sub_agents (`bgagents new` creates one)",
            shown_path(path)
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let toolset = match load(path, true) {
        Ok(toolset) => toolset,
        Err(code) => return code,
    };
    let served = match http {
        None => super::mcp::serve(toolset, agent).await,
        Some(addr) => {
            // No state directory to keep a token in: the user gives one.
            let Some(token_file) = token_file else {
                eprintln!(
                    "error: `bgagents mcp --http` needs --auth-token-file FILE: every request \
                     must carry a token, since other users and agents with network access \
                     reach even 127.0.0.1 (make one: (umask 077; openssl rand -hex 32 > FILE))"
                );
                return ExitCode::from(EXIT_BAD_INPUT);
            };
            match serve::http_listener(addr, token_file, false).await {
                Ok(listener) => super::mcp::serve_http(toolset, agent, listener).await,
                Err(error) => Err(error),
            }
        }
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", printable(&error.to_string(), Keep::Lines));
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// `--http`'s address: `IP:PORT`, or `NAME:PORT` for a name that resolves
/// here (`localhost:8765`), its first address taken.
fn listen_address(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let usage = "give HOST:PORT, for example 127.0.0.1:8765 (port 0: any free port)";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} has no port; {usage}"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{text:?} is not an address; {usage}"));
    }
    (text.to_socket_addrs())
        .map_err(|error| format!("cannot resolve {host:?}: {error}; {usage}"))?
        .next()
        .ok_or_else(|| format!("{host:?} resolves to no address; {usage}"))
}

//! Harness agents: a task of an agent with `harness:` runs a coding CLI —
//! Claude Code, Codex or OpenCode — non-interactively as a process on the
//! host, confined by the agent's grants like a shell command is.
//!
//! - **Prompt**: the agent's instruction, then the delegated task and the
//!   output it expects, in the words the bundled LLM agent uses
//!   ([`prompt`]), on the CLI's stdin (`codex exec -`; `opencode run`
//!   appends its stdin), never on a command line, which `ps` shows.
//! - **Events**: the CLI's NDJSON stream ([`events`]) becomes the task's
//!   live output — text as it is written, reasoning marked `[thinking]`,
//!   a `[tool: NAME]` line per tool call — its final message the task's
//!   result, its error (or a failing exit, with the end of its stderr) the
//!   task's error; the tokens it reports are the task's model use, held to
//!   `limits.tokens` as they are reported (Claude Code per message, OpenCode
//!   per step, Codex per turn).
//! - **Confinement**: the process runs in the shell toolset's bubblewrap
//!   sandbox ([`crate::sandbox::process`]): new namespaces (its own PID
//!   namespace), a read-only system, private `/tmp` with `HOME` in it, the
//!   granted directories as granted, the CLI's own files read-only
//!   ([`program`]), an environment of only a few basics, the granted
//!   variables and `harness.env`, and caps on processes, memory and file
//!   size through cgroups. The network is decided in one place,
//!   [`network`]: the hosts the agent is granted, through the egress gate
//!   (`crate::sandbox::egress`), or none. `grants.unconfined: true` runs
//!   the CLI without bubblewrap (still in cgroups of its own where the
//!   host has them), loudly.
//! - **Ending**: a stop, the task's timeout, or the host exiting kills the
//!   whole process tree at once (its process group, the PID namespace, the
//!   cgroups; `--die-with-parent`). A CLI still running [`END_GRACE`] after
//!   its result is killed, and the task keeps the result. An unconfined
//!   CLI's children outlive a host killed with SIGKILL (only the CLI has
//!   `PR_SET_PDEATHSIG`).
//! - **Check**: [`describe`], [`describe_limits`] and [`program_warnings`]
//!   (in `describe.rs`) say what `bgagents check` shows.

mod command;
mod describe;
pub mod events;
pub mod program;

pub use command::prompt;
use command::{confined_env, host_dir, unconfined_env};
pub use describe::{describe, describe_limits, program_warnings};

use crate::config::{AgentSpec, Grants, HarnessSpec};
use crate::sandbox::process::{self, Network, ProgramSandbox, Running, Sandbox};
use crate::tasks::{ModelUse, Outcome, Task};
use events::{Event, Parser};
use program::Program;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

/// Bytes of a CLI's stderr kept (its end) for the error of a failed run.
const STDERR_TAIL: usize = 4 << 10;
/// Longest line of a CLI's stream read; a longer one is cut.
const MAX_LINE: usize = 16 << 20;
/// How long a CLI may take to exit after its end event (its result)
/// before it and everything it started are killed and the task completes
/// with the result.
const END_GRACE: Duration = Duration::from_secs(5);
/// Processes (threads included) a harness run may have at once.
const MAX_PROCESSES: u32 = 1024;
/// Largest file a harness run may write.
const MAX_FILE_SIZE: u64 = 1 << 30;
/// `PATH` in the sandbox, after the CLI's own directories.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The network a harness agent's CLI gets: the one place it is decided.
/// An agent granted hosts (`grants.http`, `grants.network.connect`)
/// reaches those only, through the egress gate (a proxy on the host; the
/// CLI gets `HTTPS_PROXY`); any other agent has no network at all.
/// `grants.network.shell` is the shell toolset's and does not apply.
pub fn network(grants: &Grants) -> Network {
    match grants.http.is_empty() && grants.connect.is_empty() {
        true => Network::None,
        false => Network::Gated,
    }
}

/// A harness agent ready to run tasks: its CLI located, its sandbox set.
pub struct HarnessAgent {
    name: String,
    spec: HarnessSpec,
    instruction: String,
    timeout: Duration,
    result_cap: u64,
    tokens: u64,
    program: Program,
    /// `None` when the agent is granted `unconfined`.
    sandbox: Option<Sandbox>,
    /// The unconfined process's environment and working directory.
    unconfined: Option<(Vec<(String, String)>, std::path::PathBuf)>,
}

impl HarnessAgent {
    /// Locates `agent`'s CLI and prepares its sandbox; the error names the
    /// binary and how to install it, or why the CLI cannot be confined.
    pub fn load(agent: &AgentSpec, harness: &HarnessSpec) -> Result<HarnessAgent, String> {
        let program = program::locate(harness.kind, &harness.command)?;
        let grants = &agent.grants;
        let (sandbox, unconfined) = match grants.unconfined {
            false => {
                process::bubblewrap().map_err(|why| {
                    format!(
                        "{why} (a harness agent's CLI runs in the same sandbox as shell \
                         commands; grants.unconfined: true runs it without one)"
                    )
                })?;
                let sandbox = Sandbox::for_program(ProgramSandbox {
                    grants,
                    program_dirs: program.binds.clone(),
                    env: confined_env(harness, grants, &program),
                    network: network(grants),
                    max_file_size: MAX_FILE_SIZE,
                    max_processes: MAX_PROCESSES,
                    max_memory: harness.memory,
                });
                (Some(sandbox), None)
            }
            true => {
                let cwd = host_dir(grants, &harness.working_dir).ok_or_else(|| {
                    format!(
                        "an unconfined harness starts in a granted directory, and `{}` is not \
                         one; grant it in grants.files",
                        harness.working_dir
                    )
                })?;
                (None, Some((unconfined_env(harness, grants), cwd)))
            }
        };
        Ok(HarnessAgent {
            name: agent.name.clone(),
            spec: harness.clone(),
            instruction: agent.instruction.clone(),
            timeout: agent.limits.timeout,
            result_cap: agent.limits.result,
            tokens: agent.limits.tokens,
            program,
            sandbox,
            unconfined,
        })
    }

    /// Runs `task` to its end: its result or error. Dropping the future
    /// (a stop) kills the CLI and everything it started.
    pub async fn run(&self, task: &Task) -> Outcome {
        let prompt = prompt(
            &self.instruction,
            &task.task,
            task.expected_output.as_deref(),
        );
        let (argv, stdin) = self.command_line(&prompt);
        let mut running = match self.start(&argv).await {
            Ok(running) => running,
            Err(why) => return Outcome::Failed(why),
        };
        tracing::debug!(
            harness = self.spec.kind.name(),
            program = %self.program.exe.display(),
            "harness started"
        );
        let input = running.child.stdin.take();
        // Written beside the reading, so a CLI that reads its prompt late
        // (or never) cannot stall the run.
        let feeding = tokio::spawn(async move {
            if let Some(mut input) = input {
                let _ = input.write_all(stdin.as_bytes()).await;
                let _ = input.shutdown().await;
            }
        });
        let stdout = running.child.stdout.take();
        let outcome = tokio::time::timeout(self.timeout, self.follow(task, &mut running, stdout))
            .await
            .unwrap_or_else(|_| {
                Outcome::Failed(format!(
                    "timed out after {}; the harness and every process it started were killed",
                    crate::config::units::format_duration(self.timeout)
                ))
            });
        feeding.abort();
        running.kill();
        let _ = running.child.wait().await;
        match outcome {
            Outcome::Completed(result) => Outcome::Completed(cap(result, self.result_cap)),
            Outcome::Failed(error) => Outcome::Failed(cap(error, self.result_cap)),
            other => other,
        }
    }

    /// Starts the CLI: in its sandbox, or (granted `unconfined`) without.
    async fn start(&self, argv: &[OsString]) -> Result<Running, String> {
        match (&self.sandbox, &self.unconfined) {
            (Some(sandbox), _) => {
                let bwrap = tokio::task::spawn_blocking(process::bubblewrap)
                    .await
                    .map_err(|error| format!("checking for bubblewrap failed: {error}"))??;
                sandbox.spawn_program(bwrap, argv, &self.spec.working_dir, STDERR_TAIL)
            }
            (None, Some((env, cwd))) => {
                tracing::warn!(
                    agent = %self.name,
                    program = %self.program.exe.display(),
                    "harness agent runs UNCONFINED (grants.unconfined: true): no bubblewrap, \
                     the host's whole file system and network"
                );
                // Its own cgroups where the host has them, so that a
                // process that left its group (setsid) is killed too.
                // The first call probes bubblewrap and cgroups (blocking).
                let memory = self.spec.memory;
                let cgroups = tokio::task::spawn_blocking(move || {
                    process::unconfined_cgroups(MAX_PROCESSES, memory)
                })
                .await
                .map_err(|error| format!("setting up the harness's cgroups failed: {error}"))??;
                let procs = (cgroups.as_ref())
                    .map(process::cgroup::CommandCgroups::procs_files)
                    .unwrap_or_default();
                let mut command = std::process::Command::new(&argv[0]);
                command
                    .args(&argv[1..])
                    .env_clear()
                    .envs(env.iter().map(|(name, value)| (name, value)))
                    .current_dir(cwd)
                    .process_group(0);
                // SAFETY: between fork and exec only async-signal-safe
                // calls (prctl, open, write, close) on data prepared before.
                unsafe {
                    command.pre_exec(move || {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        process::join_cgroups(&procs)
                    });
                }
                let caps = (MAX_PROCESSES, self.spec.memory);
                Running::unconfined(command, STDERR_TAIL, cgroups, caps)
                    .map_err(|error| format!("cannot start {}: {error}", argv[0].display()))
            }
            (None, None) => Err("the harness has no sandbox".to_string()),
        }
    }

    /// Reads the CLI's stream to its end (or the run's), showing it in the
    /// task's output, then waits for the CLI to exit.
    async fn follow(
        &self,
        task: &Task,
        running: &mut Running,
        stdout: Option<impl AsyncRead + Unpin>,
    ) -> Outcome {
        let name = self.spec.kind.name();
        let text_cap = usize::try_from(self.result_cap).unwrap_or(usize::MAX);
        let mut parser = Parser::with_text_cap(self.spec.kind, text_cap);
        let mut shown = Shown::default();
        let mut end: Option<Result<String, String>> = None;
        let mut ended_at: Option<tokio::time::Instant> = None;
        if let Some(stdout) = stdout {
            let mut lines = BufReader::new(stdout);
            loop {
                // After its end event the CLI has [`END_GRACE`] to finish
                // writing and exit.
                let read = match ended_at {
                    Some(at) => {
                        match tokio::time::timeout_at(at + END_GRACE, read_line(&mut lines)).await {
                            Ok(read) => read,
                            Err(_) => break,
                        }
                    }
                    None => read_line(&mut lines).await,
                };
                let line = match read {
                    Ok(Some(line)) => line,
                    Ok(None) => break,
                    Err(error) => {
                        tracing::debug!(%error, "reading the harness's output");
                        break;
                    }
                };
                for event in parser.line(&line) {
                    match event {
                        Event::Usage {
                            input,
                            output,
                            calls,
                        } => {
                            let total = record(task, input, output, calls);
                            if total.tokens() > self.tokens {
                                return Outcome::Failed(format!(
                                    "this task used {} of its {} tokens; raise agents.{}.limits.tokens",
                                    total.tokens(),
                                    self.tokens,
                                    self.name
                                ));
                            }
                        }
                        Event::End(result) => {
                            end.get_or_insert(result);
                            ended_at.get_or_insert_with(tokio::time::Instant::now);
                        }
                        other => shown.show(task, other),
                    }
                }
            }
        }
        if let Some(at) = ended_at
            && tokio::time::timeout_at(at + END_GRACE, running.child.wait())
                .await
                .is_err()
        {
            tracing::info!(
                harness = name,
                "the harness did not exit within {}s of its result; killed",
                END_GRACE.as_secs()
            );
            running.kill();
        }
        let status = match running.child.wait().await {
            Ok(status) => status,
            Err(error) => return Outcome::Failed(format!("lost track of {name}: {error}")),
        };
        running.output.finish(Duration::from_secs(2)).await;
        let stderr = running.output.text();
        if let Some(problem) = running.sandbox_failure(status, &stderr) {
            return Outcome::Failed(format!(
                "the sandbox could not start {name}: {problem}; check the agent's grants and \
                 harness.working_dir with `bgagents check`"
            ));
        }
        let notes = running.limit_notes(Some(status), &stderr);
        match end {
            Some(Ok(result)) => {
                // What it ran into (hosts refused, say), for whoever
                // watches; the result is the CLI's own.
                for note in &notes {
                    task.output.append_line(&format!("[{note}]"));
                }
                if !status.success() {
                    tracing::info!(status = %status, "the harness exited failing after its result");
                }
                Outcome::Completed(result)
            }
            Some(Err(error)) => Outcome::Failed(with_stderr(error, &stderr, &notes)),
            None if !status.success() => Outcome::Failed(with_stderr(
                format!("{name} {}", exit_text(status)),
                &stderr,
                &notes,
            )),
            None => match parser.ended_without_end(name) {
                Ok(result) => Outcome::Completed(result),
                Err(error) => Outcome::Failed(with_stderr(error, &stderr, &notes)),
            },
        }
    }
}

/// How the live output is laid out: text as it comes, `[thinking] …` and
/// `[tool: NAME]` on lines of their own.
struct Shown {
    thinking: bool,
    /// Whether what was shown so far ends a line (or nothing was shown).
    ended_line: bool,
}

impl Default for Shown {
    fn default() -> Self {
        Shown {
            thinking: false,
            ended_line: true,
        }
    }
}

impl Shown {
    fn show(&mut self, task: &Task, event: Event) {
        let output = &task.output;
        let write = |shown: &mut Shown, text: &str| {
            if !text.is_empty() {
                output.append(text.as_bytes());
                shown.ended_line = text.ends_with('\n');
            }
        };
        match event {
            Event::Text(text) => {
                if std::mem::take(&mut self.thinking) && !self.ended_line {
                    write(self, "\n");
                }
                write(self, &text);
            }
            Event::Reasoning(text) => {
                if !self.thinking {
                    if !self.ended_line {
                        write(self, "\n");
                    }
                    write(self, "[thinking] ");
                    self.thinking = true;
                }
                write(self, &text);
            }
            Event::Tool(name) => {
                self.thinking = false;
                output.append_line(&format!("[tool: {name}]"));
                self.ended_line = true;
            }
            Event::Raw(line) => {
                self.thinking = false;
                output.append_line(&line);
                self.ended_line = true;
            }
            Event::Usage { .. } | Event::End(_) => {}
        }
    }
}

/// Reads one line (without its newline), at most [`MAX_LINE`] bytes of it;
/// `None` at the end of the stream.
async fn read_line(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut cut = 0usize;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            if line.is_empty() && cut == 0 {
                return Ok(None);
            }
            break;
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => (at, true),
            None => (chunk.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..take.min(room)]);
        cut += take.saturating_sub(room);
        reader.consume(take + usize::from(done));
        if done {
            break;
        }
    }
    let mut text = String::from_utf8_lossy(&line).into_owned();
    if cut > 0 {
        text.push_str(&format!(" [line cut: {cut} more bytes]"));
    }
    Ok(Some(text))
}

/// Adds to `task`'s model use; the new total.
fn record(task: &Task, input: u64, output: u64, calls: u32) -> ModelUse {
    let mut used = task.model.lock().unwrap();
    let total = used.get_or_insert_with(ModelUse::default);
    total.calls = total.calls.saturating_add(calls);
    total.input_tokens = total.input_tokens.saturating_add(input);
    total.output_tokens = total.output_tokens.saturating_add(output);
    *total
}

fn exit_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended: {status}"),
    }
}

/// `error`, then the limits the run ran into and the end of its stderr.
fn with_stderr(mut error: String, stderr: &str, notes: &[String]) -> String {
    for note in notes {
        error.push_str(&format!("\n[{note}]"));
    }
    let stderr = stderr.trim();
    if !stderr.is_empty() {
        error.push_str("\nstderr (its end):\n");
        error.push_str(stderr);
    }
    error
}

/// Cuts a result or error to `limit` bytes, saying so.
fn cap(mut text: String, limit: u64) -> String {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if text.len() <= limit {
        return text;
    }
    let total = text.len();
    text.truncate(text.floor_char_boundary(limit));
    text.push_str(&format!(
        "\n[truncated: {total} bytes, limits.result keeps {limit}]"
    ));
    text
}

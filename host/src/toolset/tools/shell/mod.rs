//! The `shell` toolset: `shell`, `run_background_job`,
//! `list_background_jobs`, `view_background_job` and
//! `stop_background_job`, under docker-agent's names and parameters.
//!
//! Commands run on the host, each in a bubblewrap sandbox of its own (see
//! [`crate::sandbox::process`], shared with harness agents): only the agent's granted directories are visible, at their
//! guest paths and read-only unless granted read-write; the host's whole
//! network with `grants.network.shell`, else only the hosts `grants.http`
//! and `grants.network.connect` name, through the egress gate and its
//! proxy variables (`sandbox::egress`), else none; a clean environment with only the granted
//! variables; and limits from the toolset's settings — a timeout, an output
//! cap, a cap on processes (a `pids` cgroup), on memory (a `memory` cgroup,
//! which also bounds the RAM-backed `/tmp` and `/dev/shm`; else
//! `RLIMIT_AS` per process) and on file size (`RLIMIT_FSIZE`, which binds
//! root too). When a command ends, times out or its task stops, every
//! process it started is killed. Without a working bubblewrap nothing runs:
//! there is no unconfined fallback.

mod jobs;
#[cfg(test)]
mod tests;

use super::ToolSpec;
use super::args::Args;
use crate::config::{Grants, ShellSettings};
#[cfg(test)]
use crate::sandbox::process::size_text;
use crate::sandbox::process::{self as sandbox, Sandbox};
use jobs::Jobs;
use serde_json::{Value, json};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

pub const SHELL: &str = "shell";
pub const RUN_BACKGROUND_JOB: &str = "run_background_job";
pub const LIST_BACKGROUND_JOBS: &str = "list_background_jobs";
pub const VIEW_BACKGROUND_JOB: &str = "view_background_job";
pub const STOP_BACKGROUND_JOB: &str = "stop_background_job";

/// What every command's sandbox is, for the tool descriptions.
const CONFINEMENT: &str = "It runs with bash in a sandbox on the host: only the directories \
    granted to this agent are visible, at their sandbox paths (read-only unless granted \
    read-write), with the system's programs read-only and a private, size-limited /tmp; there \
    is no network unless the agent is granted it; the environment holds only granted variables. \
    Processes, memory (including files in /tmp), file sizes and output are limited, and every \
    process the command starts is killed when it ends.";

/// The toolset's tools, under docker-agent's names and schemas.
pub fn specs() -> Vec<ToolSpec> {
    let cwd = json!({"type": "string", "description": "The working directory, a path inside the sandbox (default: the first granted directory, else /tmp); relative paths start there."});
    let job_id = json!({"type": "string", "description": "The job's ID, as run_background_job gave it (job_N)."});
    vec![
        ToolSpec {
            name: SHELL.into(),
            description: format!(
                "Run a shell command and return its output (stdout and stderr together) and, if it \
                 fails, its exit status. Each call is a fresh shell: nothing carries over between \
                 calls. {CONFINEMENT}"
            ),
            parameters: json!({
                "type": "object",
                "properties": {
                    "cmd": {"type": "string", "description": "The shell command to run."},
                    "cwd": cwd,
                    "timeout": {"type": "integer", "minimum": 1, "description": "Seconds before the command is killed (default and maximum: the toolset's timeout)."}
                },
                "required": ["cmd"],
                "additionalProperties": false
            }),
            read_only: false,
        },
        ToolSpec {
            name: RUN_BACKGROUND_JOB.into(),
            description: format!(
                "Start a shell command in the background and return its job ID at once, for \
                 servers, watchers and other long-running work. It runs until it exits or is \
                 stopped, and is killed when this task ends. {CONFINEMENT}"
            ),
            parameters: json!({
                "type": "object",
                "properties": {
                    "cmd": {"type": "string", "description": "The shell command to run in the background."},
                    "cwd": cwd
                },
                "required": ["cmd"],
                "additionalProperties": false
            }),
            read_only: false,
        },
        ToolSpec {
            name: LIST_BACKGROUND_JOBS.into(),
            description: "List this task's background jobs with their status and runtime.".into(),
            parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            read_only: true,
        },
        ToolSpec {
            name: VIEW_BACKGROUND_JOB.into(),
            description: "Show a background job's status and its output so far.".into(),
            parameters: json!({
                "type": "object",
                "properties": {"job_id": job_id.clone()},
                "required": ["job_id"],
                "additionalProperties": false
            }),
            read_only: true,
        },
        ToolSpec {
            name: STOP_BACKGROUND_JOB.into(),
            description:
                "Stop a running background job: it and every process it started are killed.".into(),
            parameters: json!({
                "type": "object",
                "properties": {"job_id": job_id},
                "required": ["job_id"],
                "additionalProperties": false
            }),
            read_only: false,
        },
    ]
}

/// Whether commands can be confined on this host: `Ok` with a line for
/// `bgagents check` (and a `warning:` line per weakened limit), or why not
/// and how to fix it. Checked once per process.
pub fn probe() -> Result<String, String> {
    sandbox::bubblewrap().map(sandbox::describe)
}

/// One task's shell: its background jobs, all killed when it is dropped.
pub struct Shell {
    settings: ShellSettings,
    sandbox: Sandbox,
    jobs: Jobs,
}

impl Shell {
    pub fn new(settings: &ShellSettings, grants: &Grants) -> Shell {
        Shell {
            settings: settings.clone(),
            sandbox: Sandbox::new(settings, grants),
            jobs: Jobs::default(),
        }
    }

    /// Runs tool `name`; `None` if it is not one of this toolset's.
    pub async fn call(&mut self, name: &str, args: &Args) -> Option<Result<String, String>> {
        let answer = match name {
            SHELL => self.run(args).await,
            RUN_BACKGROUND_JOB => self.start_job(args).await,
            LIST_BACKGROUND_JOBS => args.only(&[]).map(|()| self.jobs.list()),
            VIEW_BACKGROUND_JOB => match job_id(args) {
                Ok(id) => self.jobs.view(&id),
                Err(why) => Err(why),
            },
            STOP_BACKGROUND_JOB => match job_id(args) {
                Ok(id) => self.jobs.stop(&id).await,
                Err(why) => Err(why),
            },
            _ => return None,
        };
        Some(answer)
    }

    /// `shell`: runs a command to its end or its timeout.
    async fn run(&mut self, args: &Args) -> Result<String, String> {
        args.only(&["cmd", "cwd", "timeout"])?;
        let cmd = command(args)?;
        let timeout = self.timeout(args.raw("timeout"))?;
        let bwrap = confinement().await?;
        let cwd = self.sandbox.cwd(args.string("cwd")?.as_deref());
        tracing::debug!(%cwd, ?timeout, "shell command");
        let mut running = (self.sandbox).spawn(bwrap, &cmd, &cwd, self.settings.max_output)?;
        let status = match tokio::time::timeout(timeout, running.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            Ok(Err(error)) => return Err(format!("lost track of the command: {error}")),
            Err(_) => {
                running.kill();
                let _ = running.child.wait().await;
                None
            }
        };
        running.output.finish(Duration::from_secs(5)).await;
        let output = running.output.text();
        if let Some(problem) = status.and_then(|status| running.sandbox_failure(status, &output)) {
            return Err(self.start_failed(&problem));
        }
        let notes = running.limit_notes(status, &output);
        drop(running);

        let mut text = match status {
            None => format!(
                "Command timed out after {} and was killed, with every process it started\nOutput: {}",
                runtime_text(timeout),
                or_none(&output)
            ),
            Some(status) if status.success() => or_none(&output).to_string(),
            Some(status) => format!(
                "Error executing command: {}\nOutput: {}",
                exit_text(status),
                or_none(&output)
            ),
        };
        for note in notes {
            text.push_str(&format!("\n[{note}]"));
        }
        Ok(text)
    }

    /// Why bubblewrap refused to start a command, with what to do.
    fn start_failed(&self, problem: &str) -> String {
        let hint = match problem.contains("chdir") {
            true => format!(
                "cwd must be an existing directory in the sandbox: in a granted directory ({}) or /tmp",
                self.sandbox.visible()
            ),
            false => "the agent's granted directories may have changed on the host; check the team file with `bgagents check`".to_string(),
        };
        format!("the sandbox could not start: {problem}; {hint}")
    }

    /// `run_background_job`.
    async fn start_job(&mut self, args: &Args) -> Result<String, String> {
        args.only(&["cmd", "cwd"])?;
        let cmd = command(args)?;
        let bwrap = confinement().await?;
        let cwd = self.sandbox.cwd(args.string("cwd")?.as_deref());
        (self.jobs).start(&self.sandbox, bwrap, &cmd, &cwd, self.settings.max_output)
    }

    /// The `timeout` argument: at most the toolset's, which is the default.
    fn timeout(&self, given: Option<&Value>) -> Result<Duration, String> {
        let most = self.settings.timeout;
        let bad = || {
            format!(
                "timeout must be a whole number of seconds from 1 to {} (the toolset's limit)",
                most.as_secs().max(1)
            )
        };
        match given {
            None | Some(Value::Null) => Ok(most),
            Some(Value::Number(number)) => {
                let seconds = number
                    .as_u64()
                    .filter(|&seconds| seconds >= 1)
                    .ok_or_else(bad)?;
                let asked = Duration::from_secs(seconds);
                if asked > most.max(Duration::from_secs(1)) {
                    return Err(bad());
                }
                Ok(asked.min(most))
            }
            Some(_) => Err(bad()),
        }
    }
}

/// The host's bubblewrap, probed off the async threads the first time (it
/// runs a sandbox); the error, when it cannot confine, is the tool's answer:
/// nothing ever runs unconfined.
async fn confinement() -> Result<&'static sandbox::Bubblewrap, String> {
    match tokio::task::spawn_blocking(sandbox::bubblewrap).await {
        Ok(probed) => probed,
        Err(error) => Err(format!("checking for bubblewrap failed: {error}")),
    }
}

/// The `cmd` argument, which must not be blank.
fn command(args: &Args) -> Result<String, String> {
    match args.string("cmd")? {
        Some(cmd) if !cmd.trim().is_empty() => Ok(cmd),
        _ => Err("cmd is empty: give the shell command to run".to_string()),
    }
}

fn job_id(args: &Args) -> Result<String, String> {
    args.only(&["job_id"])?;
    args.string("job_id")?
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| "job_id is missing: give the ID run_background_job returned".to_string())
}

fn or_none(output: &str) -> &str {
    match output.trim().is_empty() {
        true => "<no output>",
        false => output.trim_end(),
    }
}

/// `exit status 2`, or `signal: killed`, as docker-agent reports it.
fn exit_text(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(libc::SIGKILL)) => "signal: killed".to_string(),
        (None, Some(signal)) => format!("signal: {signal}"),
        (None, None) => status.to_string(),
    }
}

/// `3s`, or `1.5s` below ten seconds.
fn runtime_text(runtime: Duration) -> String {
    match runtime < Duration::from_secs(10) && runtime.subsec_millis() != 0 {
        true => format!("{:.1}s", runtime.as_secs_f64()),
        false => format!("{}s", runtime.as_secs()),
    }
}

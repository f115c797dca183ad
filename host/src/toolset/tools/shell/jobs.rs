//! Background jobs: sandboxed commands that run while the agent goes on,
//! one task's at most [`MAX_RUNNING`] at a time, each with its output
//! buffered under the same cap as a command's and the same limits, which
//! its status notes once it ran into them. Every job is killed when the
//! task's shell is dropped (the task ended or was stopped).

use super::{exit_text, runtime_text};
use crate::sandbox::process::output::Output;
use crate::sandbox::process::{Bubblewrap, Running, Sandbox};
use std::process::ExitStatus;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Jobs one task may have running at once.
pub(super) const MAX_RUNNING: usize = 16;
/// Jobs remembered (finished ones are forgotten oldest first past this).
const MAX_KEPT: usize = 64;
/// How long stopping a job waits to see it gone.
const STOP_WAIT: Duration = Duration::from_secs(10);

pub(super) struct Jobs {
    jobs: Vec<Job>,
    started: u64,
    /// Cancelled when the task's shell goes: every job's monitor kills it.
    all: CancellationToken,
}

struct Job {
    id: String,
    cmd: String,
    cwd: String,
    started: Instant,
    stop: CancellationToken,
    /// Set by the job's monitor once its sandbox is gone.
    ended: watch::Receiver<Option<Ended>>,
    output: Output,
}

#[derive(Debug, Clone)]
struct Ended {
    at: Instant,
    how: How,
    /// The limits it ran into (see [`Running::limit_notes`]).
    notes: Vec<String>,
}

#[derive(Debug, Clone)]
enum How {
    Exited(ExitStatus),
    Stopped,
    Lost(String),
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            jobs: Vec::new(),
            started: 0,
            all: CancellationToken::new(),
        }
    }
}

impl Drop for Jobs {
    fn drop(&mut self) {
        let running = self.jobs.iter().filter(|job| job.is_running()).count();
        if running > 0 {
            tracing::info!(running, "stopping the task's background shell jobs");
        }
        self.all.cancel();
    }
}

impl Jobs {
    /// Starts `cmd` in the background; the answer gives its id.
    pub(super) fn start(
        &mut self,
        sandbox: &Sandbox,
        bwrap: &Bubblewrap,
        cmd: &str,
        cwd: &str,
        max_output: usize,
    ) -> Result<String, String> {
        if self.jobs.iter().filter(|job| job.is_running()).count() >= MAX_RUNNING {
            return Err(format!(
                "{MAX_RUNNING} background jobs are already running, the most a task may have; \
                 stop one with stop_background_job first"
            ));
        }
        while self.jobs.len() >= MAX_KEPT {
            let Some(oldest) = self.jobs.iter().position(|job| !job.is_running()) else {
                break;
            };
            self.jobs.remove(oldest);
        }
        let running = sandbox.spawn(bwrap, cmd, cwd, max_output)?;
        self.started += 1;
        let id = format!("job_{}", self.started);
        let output = running.output.clone();
        let stop = self.all.child_token();
        let (report, ended) = watch::channel(None);
        tokio::spawn(monitor(id.clone(), running, stop.clone(), report));
        tracing::info!(job = %id, cwd, "background shell job started");
        self.jobs.push(Job {
            id: id.clone(),
            cmd: cmd.to_string(),
            cwd: cwd.to_string(),
            started: Instant::now(),
            stop,
            ended,
            output,
        });
        Ok(format!(
            "Background job started with ID: {id}\nCommand: {cmd}\nWorking directory: {cwd}\n\
             It runs in the sandbox until it exits or is stopped; view_background_job shows its output."
        ))
    }

    pub(super) fn list(&self) -> String {
        if self.jobs.is_empty() {
            return "Background jobs:\n\nNo background jobs found.\n".to_string();
        }
        let mut text = String::from("Background jobs:\n\n");
        for job in &self.jobs {
            text.push_str(&format!(
                "ID: {}\n  Command: {}\n  Status: {}\n  Runtime: {}\n",
                job.id,
                job.cmd,
                job.status(),
                runtime_text(job.runtime())
            ));
            if let Some(exit) = job.exit() {
                text.push_str(&format!("  Exit: {exit}\n"));
            }
            for note in job.notes() {
                text.push_str(&format!("  Note: {note}\n"));
            }
            text.push('\n');
        }
        text
    }

    pub(super) fn view(&self, id: &str) -> Result<String, String> {
        let job = self.find(id)?;
        let mut text = format!(
            "Job ID: {}\nCommand: {}\nWorking directory: {}\nStatus: {}\nRuntime: {}\n",
            job.id,
            job.cmd,
            job.cwd,
            job.status(),
            runtime_text(job.runtime())
        );
        if let Some(exit) = job.exit() {
            text.push_str(&format!("Exit: {exit}\n"));
        }
        for note in job.notes() {
            text.push_str(&format!("Note: {note}\n"));
        }
        text.push_str("\n--- Output ---\n");
        let output = job.output.text();
        match output.is_empty() {
            true => text.push_str("<no output>\n"),
            false => text.push_str(&output),
        }
        Ok(text)
    }

    /// Kills the job and everything it started, and waits to see it gone.
    pub(super) async fn stop(&self, id: &str) -> Result<String, String> {
        let job = self.find(id)?;
        if !job.is_running() {
            return Err(format!(
                "job {id} is not running (status: {}); nothing to stop",
                job.status()
            ));
        }
        job.stop.cancel();
        let mut ended = job.ended.clone();
        match tokio::time::timeout(STOP_WAIT, ended.wait_for(Option::is_some)).await {
            Ok(_) => Ok(format!(
                "Job {id} stopped: it and every process it started were killed"
            )),
            Err(_) => Err(format!(
                "job {id} was told to stop but had not ended after {}s; \
                 check again with list_background_jobs",
                STOP_WAIT.as_secs()
            )),
        }
    }

    fn find(&self, id: &str) -> Result<&Job, String> {
        let id = id.trim();
        self.jobs.iter().find(|job| job.id == id).ok_or_else(|| {
            let known: Vec<&str> = self.jobs.iter().map(|job| job.id.as_str()).collect();
            match known.is_empty() {
                true => format!("no background job {id:?}: this task has started none"),
                false => format!(
                    "no background job {id:?}; the jobs are {}",
                    known.join(", ")
                ),
            }
        })
    }
}

impl Job {
    fn is_running(&self) -> bool {
        self.ended.borrow().is_none()
    }

    fn status(&self) -> &'static str {
        match &*self.ended.borrow() {
            None => "running",
            Some(Ended {
                how: How::Exited(status),
                ..
            }) if status.success() => "completed",
            Some(Ended {
                how: How::Stopped, ..
            }) => "stopped",
            Some(_) => "failed",
        }
    }

    fn runtime(&self) -> Duration {
        match &*self.ended.borrow() {
            Some(ended) => ended.at.saturating_duration_since(self.started),
            None => self.started.elapsed(),
        }
    }

    /// How it ended, once it has.
    fn exit(&self) -> Option<String> {
        match &self.ended.borrow().as_ref()?.how {
            How::Exited(status) => Some(exit_text(*status)),
            How::Stopped => Some("killed by stop_background_job".to_string()),
            How::Lost(why) => Some(why.clone()),
        }
    }

    fn notes(&self) -> Vec<String> {
        (self.ended.borrow().as_ref()).map_or_else(Vec::new, |ended| ended.notes.clone())
    }
}

/// Waits for the job to end by itself or be stopped (stop_background_job,
/// or the task's shell dropped), then reports how it ended.
async fn monitor(
    id: String,
    mut running: Running,
    stop: CancellationToken,
    report: watch::Sender<Option<Ended>>,
) {
    let how = tokio::select! {
        status = running.child.wait() => match status {
            Ok(status) => How::Exited(status),
            Err(error) => How::Lost(format!("lost track of the job: {error}")),
        },
        () = stop.cancelled() => {
            running.kill();
            let _ = running.child.wait().await;
            How::Stopped
        }
    };
    let at = Instant::now();
    running.output.finish(Duration::from_secs(5)).await;
    let output = running.output.text();
    let status = match how {
        How::Exited(status) => Some(status),
        _ => None,
    };
    let failure = status.and_then(|status| running.sandbox_failure(status, &output));
    let ended = match failure {
        Some(problem) => Ended {
            at,
            how: How::Lost(format!("the sandbox could not start: {problem}")),
            notes: Vec::new(),
        },
        None => Ended {
            at,
            notes: running.limit_notes(status, &output),
            how,
        },
    };
    tracing::info!(job = %id, how = ?ended.how, "background shell job ended");
    drop(running);
    let _ = report.send(Some(ended));
}

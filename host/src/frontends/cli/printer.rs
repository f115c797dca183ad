//! Writes a run's task events to stderr: the top-level agent's output as it
//! comes, sub-agents' output one `[agent id]`-tagged line at a time, and
//! their lifecycle as `bgagents:` status lines.
//!
//! Nothing is skipped: when the printer falls behind the event stream (a
//! guest flooding its output), the tasks it may have missed output of are
//! filled in from their output buffers instead. A task's final status line
//! comes after all of its output: a stopped task's line waits until its
//! guest has exited (the run loop says when, through [`Printer::exited`]).

use super::HOST;
use super::sanitise::{Keep, printable};
use crate::config::units::format_size;
use crate::tasks::{Caller, EventKind, SessionId, TaskEvent, TaskInfo, TaskStatus};
use crate::toolset::Toolset;
use std::collections::HashMap;
use std::io::{BufWriter, Stderr, Write};
use std::time::{Duration, Instant};

/// How often a task whose output is read from its buffer is read again.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// Starts of lines that only the host writes. A top-level agent's line that
/// starts like one of these (or like a sub-agent's `[agent id]` line) is
/// shown with the agent's own tag.
const HOST_PREFIXES: [&str; 2] = [HOST, "error:"];

pub struct Printer {
    toolset: Toolset,
    caller: Caller,
    session: SessionId,
    quiet: bool,
    out: BufWriter<Stderr>,
    tasks: HashMap<String, Shown>,
    /// Part of a top-level agent's line is on screen, without its newline.
    root_line_open: bool,
    /// Stopped tasks whose guests may still be writing; the run loop waits
    /// for each to exit and then calls [`Printer::exited`].
    awaiting_exit: Vec<String>,
}

/// What the printer knows of one task.
struct Shown {
    /// `[agent id]`, printable.
    tag: String,
    /// Sub-agents of sub-agents are indented.
    indent: String,
    depth: usize,
    /// Bytes of output text taken so far (shown, or held in `partial`).
    taken: usize,
    /// Output after the last newline, not shown yet (printable).
    partial: String,
    /// Every output event of the task has reached the printer. Once it is
    /// false, the task's output is read from its buffer.
    complete: bool,
    /// Read from the buffer since new output was announced.
    synced: Option<Instant>,
    behind: bool,
    /// The agent's `limits.output`.
    cap: u64,
    cap_said: bool,
    phase: Phase,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Live,
    /// Stopped; its final line waits for its guest to exit.
    Exiting,
    /// Its final line is out: nothing more of it is shown.
    Done,
}

impl Printer {
    pub fn new(toolset: &Toolset, caller: &Caller, quiet: bool) -> Printer {
        Printer {
            toolset: toolset.clone(),
            caller: caller.clone(),
            session: caller.session(),
            quiet,
            out: BufWriter::with_capacity(64 << 10, std::io::stderr()),
            tasks: HashMap::new(),
            root_line_open: false,
            awaiting_exit: Vec::new(),
        }
    }

    pub fn show(&mut self, event: &TaskEvent) {
        if self.quiet || event.session != self.session {
            return;
        }
        let id = event.id.as_str();
        if !self.tasks.contains_key(id) {
            // Seen from its first event, or else something of it was missed.
            let complete = matches!(event.kind, EventKind::Queued);
            let shown = self.new_shown(id, &event.agent, event.depth, complete);
            self.tasks.insert(id.to_string(), shown);
        }
        let task = &self.tasks[id];
        if task.phase == Phase::Done {
            return;
        }
        let depth = task.depth;
        match &event.kind {
            EventKind::Output(text) if task.complete => self.output(id, text),
            EventKind::Output(_) => self.sync(id, false),
            _ if depth == 1 && !matches!(event.kind, EventKind::Finished(_)) => {}
            EventKind::Queued => self.status_line(id, "queued"),
            EventKind::Started => self.status_line(id, "started"),
            EventKind::Finished(TaskStatus::Stopped) => {
                if let Some(task) = self.tasks.get_mut(id)
                    && task.phase == Phase::Live
                {
                    task.phase = Phase::Exiting;
                    self.awaiting_exit.push(id.to_string());
                }
            }
            EventKind::Finished(status) => self.finish(id, *status),
        }
    }

    /// The printer missed events: every task still going may have lost
    /// output, so from now on theirs is read from their buffers.
    pub fn lagged(&mut self) {
        for task in self.tasks.values_mut() {
            if task.phase != Phase::Done {
                task.complete = false;
                task.behind = true;
            }
        }
    }

    /// Stopped tasks to wait for, since the last call.
    pub fn take_awaiting_exit(&mut self) -> Vec<String> {
        std::mem::take(&mut self.awaiting_exit)
    }

    /// The stopped task `id` has exited, and every event it sent has been
    /// shown: its final line.
    pub fn exited(&mut self, id: &str) {
        if self
            .tasks
            .get(id)
            .is_some_and(|task| task.phase == Phase::Exiting)
        {
            self.finish(id, TaskStatus::Stopped);
        }
    }

    /// Called every [`SYNC_INTERVAL`]: reads the buffers of tasks with
    /// output not yet shown.
    pub fn tick(&mut self) {
        let behind: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, task)| task.behind && task.phase != Phase::Done)
            .map(|(id, _)| id.clone())
            .collect();
        for id in behind {
            self.sync(&id, true);
        }
    }

    /// No event is waiting: show a top-level agent's unfinished line (so a
    /// prompt-like line appears at once) and flush.
    pub fn idle(&mut self) {
        let roots: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, task)| task.depth == 1 && !task.partial.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in roots {
            let task = self.tasks.get_mut(&id).unwrap();
            if !self.root_line_open && undecided(&task.partial) {
                continue;
            }
            let text = std::mem::take(&mut task.partial);
            let tag = task.tag.clone();
            self.root_text(&tag, &text);
            self.root_line_open = true;
        }
        let _ = self.out.flush();
    }

    /// After the run: every task is over and every event shown. Gives each
    /// task the printer has not finished (its events were missed) its
    /// output and final line, from what `tasks` (the session's) says.
    pub fn finish_all(&mut self, tasks: &[TaskInfo]) {
        if self.quiet {
            return;
        }
        for id in self.take_awaiting_exit() {
            self.exited(&id);
        }
        let depth_of = |info: &TaskInfo| {
            let mut depth = 1;
            let mut parent = info.parent.as_ref();
            while let Some(id) = parent {
                depth += 1;
                parent = tasks
                    .iter()
                    .find(|task| &task.id == id)
                    .and_then(|task| task.parent.as_ref());
            }
            depth
        };
        for info in tasks {
            let id = info.id.as_str();
            if !self.tasks.contains_key(id) {
                let shown = self.new_shown(id, &info.agent, depth_of(info), false);
                self.tasks.insert(id.to_string(), shown);
            }
            if self.tasks[id].phase != Phase::Done && info.status.is_final() {
                self.finish(id, info.status);
            }
        }
        let _ = self.out.flush();
    }

    /// A status line of the host's own (suppressed by `--quiet`).
    pub fn host_line(&mut self, text: &str) {
        if !self.quiet {
            self.close_root_line();
            let _ = writeln!(self.out, "{HOST} {text}");
        }
    }

    /// Like [`Printer::host_line`], even with `--quiet`.
    pub fn notice(&mut self, text: &str) {
        self.close_root_line();
        let _ = writeln!(self.out, "{HOST} {text}");
        let _ = self.out.flush();
    }

    pub fn flush(&mut self) {
        self.close_root_line();
        let _ = self.out.flush();
    }

    fn new_shown(&self, id: &str, agent: &str, depth: usize, complete: bool) -> Shown {
        Shown {
            tag: format!("[{} {}]", printable(agent, Keep::OneLine), short_id(id)),
            indent: "  ".repeat(depth.saturating_sub(2)),
            depth,
            taken: 0,
            partial: String::new(),
            complete,
            synced: None,
            behind: !complete,
            cap: self
                .toolset
                .team()
                .agent(agent)
                .map_or(u64::MAX, |spec| spec.limits.output),
            cap_said: false,
            phase: Phase::Live,
        }
    }

    /// New output of task `id`.
    fn output(&mut self, id: &str, text: &str) {
        let task = self.tasks.get_mut(id).unwrap();
        task.taken += text.len();
        task.partial.push_str(&printable(text, Keep::Lines));
        self.complete_lines(id);
        let task = &self.tasks[id];
        if task.taken as u64 >= task.cap {
            self.cut(id);
        }
    }

    /// Reads task `id`'s buffer and shows what it has not shown yet; unless
    /// `now`, at most once per [`SYNC_INTERVAL`] (later, [`Printer::tick`]).
    fn sync(&mut self, id: &str, now: bool) {
        let task = self.tasks.get_mut(id).unwrap();
        if !now && task.synced.is_some_and(|at| at.elapsed() < SYNC_INTERVAL) {
            task.behind = true;
            return;
        }
        task.synced = Some(Instant::now());
        task.behind = false;
        let Ok(view) = self.toolset.view_background_agent(&self.caller, id) else {
            return;
        };
        let text = view.output.text;
        let start = text.ceil_char_boundary(task.taken);
        task.taken = text.len();
        task.partial
            .push_str(&printable(&text[start..], Keep::Lines));
        self.complete_lines(id);
        if view.output.truncated {
            self.cut(id);
        }
    }

    /// Shows the complete lines held for task `id`.
    fn complete_lines(&mut self, id: &str) {
        let task = self.tasks.get_mut(id).unwrap();
        let Some(last) = task.partial.rfind('\n') else {
            return;
        };
        let rest = task.partial.split_off(last + 1);
        let lines = std::mem::replace(&mut task.partial, rest);
        for line in lines.lines() {
            self.guest_line(id, line);
        }
    }

    /// Says (once) that task `id`'s output reached its cap, after ending
    /// the line the cap cut.
    fn cut(&mut self, id: &str) {
        let task = self.tasks.get_mut(id).unwrap();
        if task.cap_said {
            return;
        }
        task.cap_said = true;
        let rest = std::mem::take(&mut task.partial);
        let text = format!(
            "output reached its cap of {} (limits.output in the team file); the rest is dropped",
            format_size(task.cap)
        );
        if !rest.is_empty() {
            self.guest_line(id, &rest);
        }
        self.status_line(id, &text);
    }

    /// The final line of task `id`, after the last of its output.
    fn finish(&mut self, id: &str, status: TaskStatus) {
        if !self.tasks[id].complete {
            self.sync(id, true);
        }
        let task = self.tasks.get_mut(id).unwrap();
        task.phase = Phase::Done;
        let rest = std::mem::take(&mut task.partial);
        let depth = task.depth;
        if !rest.is_empty() {
            self.guest_line(id, &rest);
        }
        if depth == 1 {
            self.close_root_line();
        } else {
            self.status_line(id, status.as_str());
        }
    }

    /// One complete line of task `id`'s output (printable already).
    fn guest_line(&mut self, id: &str, line: &str) {
        let task = &self.tasks[id];
        if task.depth > 1 {
            let (indent, tag) = (task.indent.clone(), task.tag.clone());
            self.close_root_line();
            let _ = writeln!(self.out, "{indent}{tag} {line}");
            return;
        }
        let tag = task.tag.clone();
        self.root_text(&tag, line);
        let _ = self.out.write_all(b"\n");
        self.root_line_open = false;
    }

    /// Text of a top-level agent: as it is, unless it starts a line that
    /// could pass for the host's or a sub-agent's; then with its tag.
    fn root_text(&mut self, tag: &str, text: &str) {
        if !self.root_line_open && imitates_host(text) {
            let _ = write!(self.out, "{tag} ");
        }
        let _ = self.out.write_all(text.as_bytes());
    }

    /// `bgagents: [agent id] what` for task `id`.
    fn status_line(&mut self, id: &str, what: &str) {
        let task = &self.tasks[id];
        let text = format!("{}{} {what}", task.indent, task.tag);
        self.host_line(&text);
    }

    /// Ends a top-level agent's unfinished line, so the next line starts at
    /// column 0.
    fn close_root_line(&mut self) {
        if self.root_line_open {
            let _ = self.out.write_all(b"\n");
            self.root_line_open = false;
        }
    }
}

/// A line that starts like one only the host writes, or like a sub-agent's.
fn imitates_host(line: &str) -> bool {
    let start = line.trim_start();
    start.starts_with('[') || HOST_PREFIXES.iter().any(|host| start.starts_with(host))
}

/// The start of a line too short to tell whether it [`imitates_host`].
fn undecided(start: &str) -> bool {
    let start = start.trim_start();
    start.is_empty()
        || HOST_PREFIXES
            .iter()
            .any(|host| host.len() > start.len() && host.starts_with(start))
}

/// The first block of a task's UUID, enough to tell tasks apart on screen.
fn short_id(id: &str) -> &str {
    let uuid = id.strip_prefix("agent_task_").unwrap_or(id);
    uuid.split('-').next().unwrap_or(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_look_like_the_hosts_are_told_apart() {
        for line in ["bgagents: done", "  error: x", "[helper 1234] completed"] {
            assert!(imitates_host(line), "{line}");
        }
        for line in ["hello", "errors: 0", "bgagents"] {
            assert!(!imitates_host(line), "{line}");
        }
        assert!(undecided("  bgag") && undecided("") && undecided("e"));
        assert!(!undecided("hello") && !undecided("bgagents:"));
    }
}

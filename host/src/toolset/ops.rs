//! The five toolset operations. Each takes the [`Caller`] it runs for and
//! enforces permission, scoping and limits here, once, for every front-end.

use super::errors::ToolError;
use super::{Toolset, runner};
use crate::sandbox::OutputBuffer;
use crate::store::Store;
use crate::tasks::{
    Caller, EventKind, NewTask, Registry, SessionId, Task, TaskEvent, TaskId, TaskInfo, TaskStatus,
    TaskView, WaitEntry, WaitReport,
};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Largest task text accepted by `run`.
pub const MAX_TASK_BYTES: usize = 1 << 20;
/// Largest expected-output text accepted by `run`.
pub const MAX_EXPECTED_OUTPUT_BYTES: usize = 64 << 10;
/// `wait` limits, as docker-agent has them.
pub const WAIT_MAX_IDS: usize = 100;
pub const WAIT_DEFAULT_TIMEOUT_SECS: u64 = 300;
pub const WAIT_MAX_TIMEOUT_SECS: u64 = 3600;
/// Each wait entry's output or error is cut to this many bytes.
pub const WAIT_OUTPUT_CAP: usize = 4096;

/// Largest output event; with the event backlog this bounds the memory
/// listeners that fall behind can hold (4096 × 16 KiB = 64 MiB).
const OUTPUT_EVENT_BYTES: usize = 16 << 10;

/// How a caller asked for a task: through the background-agents toolset
/// (which its agent must be granted), or by `transfer_task`, which every
/// agent with `sub_agents` has, as in docker-agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    BackgroundAgents,
    Transfer,
}

/// The text a wait entry carries for an id the caller cannot see.
const WAIT_NOT_FOUND: &str = "Task not found; it may have been pruned.";

impl Toolset {
    /// Starts `agent` on `task` in the background and returns the accepted
    /// task (status `queued`: it runs as soon as a slot under the running cap
    /// is free, which is at once unless the host is at its cap).
    pub fn run_background_agent(
        &self,
        caller: &Caller,
        agent: &str,
        task: &str,
        expected_output: Option<&str>,
    ) -> Result<TaskInfo, ToolError> {
        self.start(caller, agent, task, expected_output, Via::BackgroundAgents)
    }

    /// [`Toolset::run_background_agent`] under the id `id` (a cluster's
    /// worker runs each task under the id the cluster gave it).
    pub(crate) fn run_background_agent_as(
        &self,
        caller: &Caller,
        id: TaskId,
        agent: &str,
        task: &str,
        expected_output: Option<&str>,
    ) -> Result<TaskInfo, ToolError> {
        let via = Via::BackgroundAgents;
        // An earlier attempt of it that ended here is replaced.
        self.start_as(caller, id, agent, task, expected_output, via, Admit::Rerun)
    }

    /// Follows again a task an earlier process of this host started and
    /// left running elsewhere (a cluster's coordinator restarted): the
    /// record the store restored (interrupted) is replaced by a live one
    /// under the same id, among the restored tasks, which the remote
    /// executor follows to its end.
    pub(crate) fn readopt(
        &self,
        id: TaskId,
        agent: &str,
        task: &str,
        expected_output: Option<&str>,
        ancestors: Vec<TaskId>,
        mut lineage: Vec<String>,
    ) -> Result<TaskInfo, ToolError> {
        lineage.pop();
        let token = self.shutdown_token().child_token();
        let caller = Caller::operator(crate::tasks::SessionId::RESTORED, token)
            .on_behalf_of(ancestors, lineage);
        let via = Via::BackgroundAgents;
        // The restored record is replaced under the registry's lock once
        // every check passed: on an error it stays.
        let admit = Admit::Follow {
            replace_ended: true,
        };
        self.start_as(&caller, id, agent, task, expected_output, via, admit)
    }

    /// Lists, as a child of its parent here, a task that a guest of that
    /// parent started elsewhere (a cluster's worker): the remote executor
    /// follows it to its end, and stops it with its parent. Its agent is
    /// checked and counted against the parent's limits as any child's.
    pub(crate) fn mirror(
        &self,
        id: TaskId,
        parent_id: &str,
        agent: &str,
        task: &str,
        expected_output: Option<&str>,
    ) -> Result<TaskInfo, ToolError> {
        let (parent, listed) = {
            let registry = self.registry();
            (
                registry.get(parent_id).cloned(),
                registry.get(id.as_str()).is_some(),
            )
        };
        // Most of a listed child's records come by again: refused before a
        // task is made for it (the admission's own check still stands).
        if listed {
            return Err(ToolError::DuplicateId { id: id.to_string() });
        }
        let parent = parent.ok_or_else(|| ToolError::NotFound {
            id: parent_id.to_string(),
        })?;
        let caller = Caller::for_task(&parent);
        self.start_as(
            &caller,
            id,
            agent,
            task,
            expected_output,
            Via::Transfer,
            Admit::Follow {
                replace_ended: false,
            },
        )
    }

    /// Starts a task the way [`Toolset::run_background_agent`] does, for a
    /// caller that reached it through `via`.
    pub(super) fn start(
        &self,
        caller: &Caller,
        agent: &str,
        task: &str,
        expected_output: Option<&str>,
        via: Via,
    ) -> Result<TaskInfo, ToolError> {
        self.start_as(
            caller,
            TaskId::generate(),
            agent,
            task,
            expected_output,
            via,
            Admit::New,
        )
    }

    /// Starts task `id` as `admit` says; refused when the registry has a
    /// task of that id, unless `admit` replaces an ended one and that one
    /// has ended.
    #[allow(clippy::too_many_arguments)]
    fn start_as(
        &self,
        caller: &Caller,
        id: TaskId,
        agent: &str,
        task: &str,
        expected_output: Option<&str>,
        via: Via,
        admit: Admit,
    ) -> Result<TaskInfo, ToolError> {
        let replace_ended = matches!(
            admit,
            Admit::Rerun
                | Admit::Follow {
                    replace_ended: true
                }
        );
        let agent = agent.trim();
        if agent.is_empty() {
            return Err(ToolError::EmptyAgent);
        }
        if task.trim().is_empty() {
            return Err(ToolError::EmptyTask);
        }
        if task.len() > MAX_TASK_BYTES {
            return Err(ToolError::TooLong {
                what: "task",
                limit: MAX_TASK_BYTES,
            });
        }
        let expected_output = expected_output.filter(|text| !text.trim().is_empty());
        if expected_output.is_some_and(|text| text.len() > MAX_EXPECTED_OUTPUT_BYTES) {
            return Err(ToolError::TooLong {
                what: "expected_output",
                limit: MAX_EXPECTED_OUTPUT_BYTES,
            });
        }
        self.check_may_dispatch(caller, agent, via)?;
        let target = self
            .0
            .agents
            .get(agent)
            .cloned()
            .ok_or_else(|| ToolError::NoComponent {
                agent: agent.to_string(),
            })?;
        let mut lineage = caller.lineage.clone();
        lineage.push(agent.to_string());
        if caller.lineage.iter().any(|name| name == agent) {
            return Err(ToolError::Cycle { chain: lineage });
        }
        let depth = caller.ancestors_for_children.len() + 1;
        if depth > self.team().limits.max_depth {
            return Err(ToolError::DepthExceeded {
                chain: lineage,
                limit: self.team().limits.max_depth,
            });
        }
        if caller.spawn_token.is_cancelled() {
            return Err(match caller.task {
                Some(_) => ToolError::CallerEnded,
                None if self.shutdown_token().is_cancelled() => ToolError::ShuttingDown,
                None => ToolError::SessionClosed,
            });
        }

        let output = OutputBuffer::new(
            target.spec.limits.output,
            Some(self.output_listener(&id, agent, caller, depth)),
        );
        let mut record = Task::new(
            id,
            NewTask {
                agent: agent.to_string(),
                task: task.to_string(),
                expected_output: expected_output.map(str::to_string),
                session: caller.session,
                ancestors: caller.ancestors_for_children.clone(),
                lineage,
                cancel: caller.spawn_token.child_token(),
            },
            output,
        );
        // A task followed again keeps when it was first accepted.
        if replace_ended && let Some(earlier) = self.registry().get(record.id.as_str()) {
            record.created = earlier.created;
        }
        let record = Arc::new(record);
        if let Some(reason) = self.store().and_then(Store::failing) {
            return Err(ToolError::StoreFailing { reason });
        }
        {
            let mut registry = self.registry();
            if let Some(existing) = registry.get(record.id.as_str())
                && !(replace_ended && existing.exited.is_open())
            {
                return Err(ToolError::DuplicateId {
                    id: record.id.to_string(),
                });
            }
            let parent = self.check_spawn_limits(caller, &registry)?;
            if replace_ended {
                registry.forget(record.id.as_str());
            }
            registry
                .admit(record.clone())
                .map_err(|_| ToolError::RetainedFull {
                    limit: self.team().limits.max_retained,
                })?;
            if let Some(parent) = parent {
                parent.spawned.fetch_add(1, Ordering::Relaxed);
            }
            // Under the registry lock: before anyone can stop the task.
            self.emit(&record, EventKind::Queued);
        }
        let accepted = record.info();
        // Claimed here, in call order, so queued tasks start first-come
        // first-served. A task followed here runs elsewhere, under the
        // limits of where it runs: it takes no slot here (so a stop of it
        // reaches it at once, never waiting for one).
        let claim = match admit {
            Admit::Follow { .. } => super::slots::Claim::unmetered(),
            Admit::New | Admit::Rerun => self.slots().claim(),
        };
        runner::spawn(self.clone(), record, target, claim);
        Ok(accepted)
    }

    /// The caller's tasks, oldest first.
    pub fn list_background_agents(&self, caller: &Caller) -> Vec<TaskInfo> {
        self.0
            .registry
            .lock()
            .unwrap()
            .iter()
            .filter(|task| caller.can_see(task))
            .map(|task| task.info())
            .collect()
    }

    /// Every retained task with the session that started it, oldest first
    /// (tasks restored from a store first).
    pub fn list_every_session(&self) -> Vec<(TaskInfo, SessionId)> {
        let registry = self.0.registry.lock().unwrap();
        registry
            .iter()
            .map(|task| (task.info(), task.session))
            .collect()
    }

    /// One of the caller's tasks in full.
    pub fn view_background_agent(
        &self,
        caller: &Caller,
        task_id: &str,
    ) -> Result<TaskView, ToolError> {
        Ok(self.visible_task(caller, task_id)?.view())
    }

    /// The status of one of the caller's tasks (cheaper than a view).
    pub fn task_status(&self, caller: &Caller, task_id: &str) -> Result<TaskStatus, ToolError> {
        Ok(self.visible_task(caller, task_id)?.status())
    }

    /// Stops a queued or running task and its descendants; returns once none
    /// of their guests runs. Their status is `stopped` from the moment this
    /// is called, whatever the guests were about to return.
    pub async fn stop_background_agent(
        &self,
        caller: &Caller,
        task_id: &str,
    ) -> Result<TaskInfo, ToolError> {
        let task = self.visible_task(caller, task_id)?;
        // Decided under the task's lock: a task that just completed is
        // reported as such, never as stopped.
        if !runner::stop(self, &task) {
            return Err(ToolError::NotRunning {
                id: task.id.to_string(),
                status: task.status(),
            });
        }
        let id = task.id.clone();
        self.stop_and_wait(|candidate| candidate.ancestors.contains(&id))
            .await;
        task.exited.opened().await;
        Ok(task.info())
    }

    /// Waits until every named task is final or `timeout_secs` pass (0 means
    /// the default). Never stops the tasks.
    pub async fn wait_background_agents(
        &self,
        caller: &Caller,
        task_ids: &[String],
        timeout_secs: u64,
    ) -> Result<WaitReport, ToolError> {
        if task_ids.is_empty() || task_ids.len() > WAIT_MAX_IDS {
            return Err(ToolError::WaitIdCount);
        }
        if timeout_secs > WAIT_MAX_TIMEOUT_SECS {
            return Err(ToolError::WaitTimeout);
        }
        let mut seen = HashSet::new();
        if let Some(duplicate) = task_ids.iter().find(|id| !seen.insert(id.as_str())) {
            return Err(ToolError::DuplicateId {
                id: duplicate.clone(),
            });
        }
        let timeout = Duration::from_secs(match timeout_secs {
            0 => WAIT_DEFAULT_TIMEOUT_SECS,
            given => given,
        });
        let tasks: Vec<Option<Arc<Task>>> = task_ids
            .iter()
            .map(|id| self.visible_task(caller, id).ok())
            .collect();
        let all_finished = async {
            for task in tasks.iter().flatten() {
                task.exited.opened().await;
            }
        };
        let timed_out = tokio::time::timeout(timeout, all_finished).await.is_err();
        let entries: Vec<WaitEntry> = task_ids
            .iter()
            .zip(&tasks)
            .map(|(id, task)| wait_entry(id, task.as_deref()))
            .collect();
        Ok(WaitReport {
            all_done: entries.iter().all(WaitEntry::is_done),
            timed_out,
            tasks: entries,
        })
    }

    /// For a guest caller: refuses a start beyond its agent's spawn limits,
    /// and returns the caller's record to count the start against.
    fn check_spawn_limits(
        &self,
        caller: &Caller,
        registry: &Registry,
    ) -> Result<Option<Arc<Task>>, ToolError> {
        let (Some(id), Some(agent)) = (&caller.task, &caller.agent) else {
            return Ok(None);
        };
        // A running task is never pruned, so a live caller is always found.
        let Some(parent) = registry.get(id.as_str()).cloned() else {
            return Err(ToolError::CallerEnded);
        };
        let limits = &self
            .0
            .team
            .agent(agent)
            .expect("callers act as agents")
            .limits;
        if parent.spawned.load(Ordering::Relaxed) >= limits.spawns {
            return Err(ToolError::SpawnLimit {
                agent: agent.clone(),
                limit: limits.spawns,
            });
        }
        let live_children = registry
            .iter()
            .filter(|task| task.parent() == Some(id) && !task.exited.is_open())
            .count();
        if live_children >= limits.concurrent_spawns {
            return Err(ToolError::ConcurrentSpawnLimit {
                agent: agent.clone(),
                limit: limits.concurrent_spawns,
            });
        }
        Ok(Some(parent))
    }

    fn check_may_dispatch(&self, caller: &Caller, agent: &str, via: Via) -> Result<(), ToolError> {
        let team = &self.team();
        let Some(caller_agent) = &caller.agent else {
            // The operator may start any agent the team defines.
            return match team.agent(agent) {
                Some(_) => Ok(()),
                None => Err(ToolError::UnknownAgent {
                    agent: agent.to_string(),
                    available: team
                        .agents
                        .values()
                        .filter(|spec| {
                            spec.component.is_some()
                                || spec.model.is_some()
                                || spec.harness.is_some()
                        })
                        .map(|spec| spec.name.clone())
                        .collect(),
                }),
            };
        };
        let spec = team
            .agent(caller_agent)
            .expect("callers act as agents of the team");
        if via == Via::BackgroundAgents && !spec.background_agents {
            return Err(ToolError::NoToolset {
                caller: caller_agent.clone(),
            });
        }
        if !spec.sub_agents.iter().any(|name| name == agent) {
            return Err(ToolError::NotASubAgent {
                agent: agent.to_string(),
                available: spec.sub_agents.clone(),
            });
        }
        Ok(())
    }

    /// The task `id` if the caller may see it; "not found" otherwise, so a
    /// caller cannot even learn that another's task exists.
    pub(super) fn visible_task(&self, caller: &Caller, id: &str) -> Result<Arc<Task>, ToolError> {
        self.0
            .registry
            .lock()
            .unwrap()
            .get(id.trim())
            .filter(|task| caller.can_see(task))
            .cloned()
            .ok_or_else(|| ToolError::NotFound { id: id.to_string() })
    }

    pub(super) fn emit(&self, task: &Task, kind: EventKind) {
        self.events().send(TaskEvent {
            id: task.id.clone(),
            agent: task.agent.as_str().into(),
            session: task.session,
            depth: task.ancestors.len() + 1,
            kind,
        });
    }

    fn output_listener(
        &self,
        id: &TaskId,
        agent: &str,
        caller: &Caller,
        depth: usize,
    ) -> crate::sandbox::OutputListener {
        let events = self.events().clone();
        let (id, agent, session) = (id.clone(), Arc::<str>::from(agent), caller.session);
        Box::new(move |chunk| {
            if !events.has_listeners() {
                return;
            }
            // Small pieces bound what a slow listener's backlog can hold.
            for piece in utf8_pieces(chunk, OUTPUT_EVENT_BYTES) {
                events.send(TaskEvent {
                    id: id.clone(),
                    agent: agent.clone(),
                    session,
                    depth,
                    kind: EventKind::Output(String::from_utf8_lossy(piece).into()),
                });
            }
        })
    }
}

/// Splits `bytes` into pieces of at most `size` bytes, not inside a UTF-8
/// character (unless a "character" is longer than `size`, which valid
/// UTF-8 never is).
fn utf8_pieces(mut bytes: &[u8], size: usize) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let mut end = bytes.len().min(size);
        while end < bytes.len()
            && end > size.saturating_sub(4)
            && bytes[end] & 0b1100_0000 == 0b1000_0000
        {
            end -= 1;
        }
        let (piece, rest) = bytes.split_at(end);
        bytes = rest;
        Some(piece)
    })
}

fn wait_entry(id: &str, task: Option<&Task>) -> WaitEntry {
    let Some(task) = task else {
        return WaitEntry {
            task_id: id.to_string(),
            status: None,
            output: None,
            error: Some(WAIT_NOT_FOUND.to_string()),
            truncated: false,
        };
    };
    // Only what the entry can hold is copied, however much output there is.
    let view = task.view_head(WAIT_OUTPUT_CAP);
    let output = match view.info.status {
        TaskStatus::Completed => view.result,
        _ => Some(view.output.text).filter(|text| !text.is_empty()),
    };
    let (output, output_cut) = cap_text(output);
    let (error, error_cut) = cap_text(view.error);
    WaitEntry {
        task_id: id.to_string(),
        status: Some(view.info.status),
        output,
        error,
        truncated: output_cut || error_cut || view.output.truncated,
    }
}

/// Cuts `text` to [`WAIT_OUTPUT_CAP`] bytes on a character boundary.
fn cap_text(text: Option<String>) -> (Option<String>, bool) {
    match text {
        Some(mut text) if text.len() > WAIT_OUTPUT_CAP => {
            text.truncate(text.floor_char_boundary(WAIT_OUTPUT_CAP));
            (Some(text), true)
        }
        other => (other, false),
    }
}

#[cfg(test)]
mod tests {
    use super::utf8_pieces;

    #[test]
    fn output_pieces_do_not_split_characters() {
        let text = "aé€😀".repeat(1000);
        let pieces: Vec<&[u8]> = utf8_pieces(text.as_bytes(), 16).collect();
        assert!(pieces.iter().all(|piece| piece.len() <= 16));
        assert!(
            pieces
                .iter()
                .all(|piece| std::str::from_utf8(piece).is_ok())
        );
        assert_eq!(pieces.concat(), text.as_bytes());
    }
}

/// How [`Toolset::start_as`] admits a task.
#[derive(Clone, Copy)]
enum Admit {
    /// A new task, under a new id.
    New,
    /// A task run here again under its id (a cluster worker's run): an
    /// earlier attempt that ended here is replaced.
    Rerun,
    /// A task that runs elsewhere, listed and followed here (a sub-agent a
    /// guest on a worker started, or a task followed again after a
    /// restart); `replace_ended`: an ended record of it is replaced.
    Follow { replace_ended: bool },
}

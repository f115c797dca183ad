//! One task's record: who started it, what it runs, and its status, which
//! moves forward only (`queued → running → completed | failed | stopped`) and
//! never changes again once final. A task the previous process left queued
//! or running comes back from the task store `interrupted`, also final.
//! With a store attached, every status change is written to it under the
//! task's lock, before the change is announced or seen by anyone.

use crate::sandbox::{OutputBuffer, OutputSnapshot};
use crate::store::{Ending, Store, TaskRecord, Transition};
use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

use super::scope::SessionId;

/// `agent_task_<uuid v4>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(Arc<str>);

impl TaskId {
    pub(crate) fn generate() -> TaskId {
        TaskId(format!("agent_task_{}", uuid::Uuid::new_v4()).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TaskId {
    fn from(text: &str) -> TaskId {
        TaskId(text.into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Stopped,
    /// Queued or running when the process that ran it ended (restored from
    /// the task store); its error says when and why.
    Interrupted,
}

impl TaskStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Stopped
                | TaskStatus::Interrupted
        )
    }

    /// The status [`TaskStatus::as_str`] names.
    pub fn parse(name: &str) -> Option<TaskStatus> {
        [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Stopped,
            TaskStatus::Interrupted,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Stopped => "stopped",
            TaskStatus::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed(String),
    Failed(String),
    Stopped,
    /// Its process (a cluster's worker) went away while it ran: why.
    Interrupted(String),
}

/// What list shows of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: TaskId,
    pub agent: String,
    pub status: TaskStatus,
    /// Time spent running (zero while queued; frozen once final).
    pub runtime: Duration,
    pub parent: Option<TaskId>,
    /// What the task's model calls used; none before its first call.
    pub model: Option<ModelUse>,
    /// When the task was accepted (queued), on the wall clock.
    pub created: SystemTime,
}

/// What view shows of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub info: TaskInfo,
    pub task: String,
    pub output: OutputSnapshot,
    pub result: Option<String>,
    pub error: Option<String>,
}

/// Model calls a task made and the tokens they used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ModelUse {
    pub calls: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl ModelUse {
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// A one-way signal: closed until opened, then open for good. Waiters are
/// woken when it opens.
#[derive(Debug, Clone, Default)]
pub struct Latch(CancellationToken);

impl Latch {
    pub fn open(&self) {
        self.0.cancel();
    }

    pub fn is_open(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once the latch is open.
    pub async fn opened(&self) {
        self.0.cancelled().await
    }

    /// Like [`Latch::opened`], owning a handle to the latch.
    pub fn opened_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.0.clone().cancelled_owned()
    }
}

/// A task known to the host, live or finished.
pub struct Task {
    pub id: TaskId,
    pub agent: String,
    pub task: String,
    pub expected_output: Option<String>,
    /// The session whose tree this task belongs to.
    pub session: SessionId,
    /// Tasks above this one, outermost first (its parent last).
    pub ancestors: Vec<TaskId>,
    /// Agent names from the dispatching session's agent down to this task's.
    pub lineage: Vec<String>,
    pub output: Arc<OutputBuffer>,
    /// Cancelled to stop the task; child tasks hold child tokens, so stopping
    /// a task reaches its whole subtree.
    pub cancel: CancellationToken,
    /// Opened once the task is over: its status is final and its guest no
    /// longer runs (its Store is dropped). A stop marks the status final at
    /// once; this follows as soon as the guest is gone.
    pub exited: Latch,
    /// Tasks this task has started so far (for its spawn limit).
    pub spawned: AtomicUsize,
    /// Its model calls so far (for its token and call limits, and views).
    pub model: Mutex<Option<ModelUse>>,
    /// Where its status changes are written, once the registry admitted it
    /// into a toolset that has a store.
    store: OnceLock<Store>,
    /// When it was accepted, on the wall clock (for clients and records).
    pub created: SystemTime,
    state: Mutex<TaskState>,
}

struct TaskState {
    status: TaskStatus,
    started: Option<Instant>,
    ended: Option<Instant>,
    result: Option<String>,
    error: Option<String>,
}

/// The identity half of a new task; the registry fills in the rest.
pub struct NewTask {
    pub agent: String,
    pub task: String,
    pub expected_output: Option<String>,
    pub session: SessionId,
    pub ancestors: Vec<TaskId>,
    pub lineage: Vec<String>,
    pub cancel: CancellationToken,
}

impl Task {
    pub(crate) fn new(id: TaskId, spec: NewTask, output: Arc<OutputBuffer>) -> Task {
        Task {
            id,
            agent: spec.agent,
            task: spec.task,
            expected_output: spec.expected_output,
            session: spec.session,
            ancestors: spec.ancestors,
            lineage: spec.lineage,
            output,
            cancel: spec.cancel,
            exited: Latch::default(),
            spawned: AtomicUsize::new(0),
            model: Mutex::new(None),
            store: OnceLock::new(),
            created: SystemTime::now(),
            state: Mutex::new(TaskState {
                status: TaskStatus::Queued,
                started: None,
                ended: None,
                result: None,
                error: None,
            }),
        }
    }

    /// A finished task as the store kept it, with `output`. It belongs to
    /// no live session ([`SessionId::RESTORED`]) and its guest is gone.
    pub(crate) fn restored(record: &TaskRecord, output: &str) -> Option<Task> {
        let status = record.status().filter(|status| status.is_final())?;
        let at = |wanted: &[TaskStatus]| {
            (record.transitions.iter())
                .filter(|t| TaskStatus::parse(&t.status).is_some_and(|s| wanted.contains(&s)))
                .map(|t| t.at_ms)
                .next_back()
        };
        // An interrupted task's runtime is unknown (the process died at
        // some point after it started): shown as zero.
        let runtime = match (at(&[TaskStatus::Running]), status) {
            (_, TaskStatus::Interrupted) | (None, _) => Duration::ZERO,
            (Some(started), _) => {
                let ended = at(&[status]).unwrap_or(started);
                Duration::from_millis(ended.saturating_sub(started))
            }
        };
        // A cut output is restored as cut: a buffer exactly as large as
        // what was kept, fed one byte more.
        let output = match record.output_truncated {
            true => {
                let buffer = OutputBuffer::new(output.len() as u64, None);
                buffer.append(output.as_bytes());
                buffer.append(b" ");
                buffer
            }
            false => {
                let buffer = OutputBuffer::new(record.output_cap.max(output.len() as u64), None);
                buffer.append(output.as_bytes());
                buffer
            }
        };
        let ended = Instant::now();
        let task = Task {
            id: TaskId::from(record.id.as_str()),
            agent: record.agent.clone(),
            task: record.task.clone(),
            expected_output: record.expected_output.clone(),
            session: SessionId::RESTORED,
            ancestors: record
                .ancestors
                .iter()
                .map(|id| TaskId::from(id.as_str()))
                .collect(),
            lineage: record.lineage.clone(),
            output,
            cancel: CancellationToken::new(),
            exited: Latch::default(),
            spawned: AtomicUsize::new(0),
            model: Mutex::new(record.model),
            store: OnceLock::new(),
            // Its first status change is when it was accepted.
            created: (record.transitions.first()).map_or(UNIX_EPOCH, |first| {
                UNIX_EPOCH + Duration::from_millis(first.at_ms)
            }),
            state: Mutex::new(TaskState {
                status,
                started: Some(ended.checked_sub(runtime).unwrap_or(ended)),
                ended: Some(ended),
                result: record.result.clone(),
                error: record.error.clone(),
            }),
        };
        task.exited.open();
        Some(task)
    }

    /// Attaches `store` and writes the task's queued record to it. Its
    /// later status changes are written there too.
    pub(crate) fn persist_to(&self, store: &Store) {
        let state = self.state.lock().unwrap();
        let record = TaskRecord {
            order: store.next_order(),
            id: self.id.to_string(),
            agent: self.agent.clone(),
            task: self.task.clone(),
            expected_output: self.expected_output.clone(),
            session: self.session.raw(),
            ancestors: self.ancestors.iter().map(ToString::to_string).collect(),
            lineage: self.lineage.clone(),
            status: state.status.as_str().to_string(),
            // Its first change is when it was accepted (for a task followed
            // again, when it was first accepted).
            transitions: vec![Transition {
                status: state.status.as_str().to_string(),
                at_ms: (self.created.duration_since(UNIX_EPOCH))
                    .map_or(0, |since| since.as_millis() as u64),
            }],
            result: None,
            error: None,
            output_cap: self.output.snapshot_head(0).cap,
            output_truncated: false,
            model: None,
        };
        store.insert(record, &self.output);
        let _ = self.store.set(store.clone());
    }

    /// Hands the status `state` now has to the store, if there is one.
    fn persist(&self, state: &TaskState) {
        let Some(store) = self.store.get() else {
            return;
        };
        if !state.status.is_final() {
            store.update(self.id.as_str(), state.status);
            return;
        }
        let output = self.output.snapshot();
        let ending = Ending {
            result: state.result.clone(),
            error: state.error.clone(),
            output: output.text,
            truncated: output.truncated,
            model: *self.model.lock().unwrap(),
        };
        store.finish(self.id.as_str(), state.status, ending);
    }

    pub fn parent(&self) -> Option<&TaskId> {
        self.ancestors.last()
    }

    pub fn status(&self) -> TaskStatus {
        self.state.lock().unwrap().status
    }

    /// Queued → running. False if the task was stopped while queued.
    /// `announce` runs under the task's lock, so announcements of one task's
    /// transitions cannot overtake each other.
    pub(crate) fn mark_running(&self, announce: impl FnOnce()) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.status != TaskStatus::Queued {
            return false;
        }
        state.status = TaskStatus::Running;
        state.started = Some(Instant::now());
        self.persist(&state);
        announce();
        true
    }

    /// Records how the task ended, unless it already has a final status,
    /// and announces the new status (under the task's lock). Returns whether
    /// this call set it.
    pub(crate) fn finish(&self, outcome: Outcome, announce: impl FnOnce(TaskStatus)) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.status.is_final() {
            return false;
        }
        let now = Instant::now();
        state.started.get_or_insert(now);
        state.ended = Some(now);
        state.status = match outcome {
            Outcome::Completed(result) => {
                state.result = Some(result);
                TaskStatus::Completed
            }
            Outcome::Failed(error) => {
                state.error = Some(error);
                TaskStatus::Failed
            }
            Outcome::Stopped => TaskStatus::Stopped,
            Outcome::Interrupted(error) => {
                state.error = Some(error);
                TaskStatus::Interrupted
            }
        };
        self.persist(&state);
        announce(state.status);
        true
    }

    /// Bytes this record holds for list and view: output, result, error
    /// and task text.
    pub fn retained_bytes(&self) -> usize {
        let state = self.state.lock().unwrap();
        let text = |text: &Option<String>| text.as_ref().map_or(0, String::len);
        self.output.len() + text(&state.result) + text(&state.error) + self.task.len()
    }

    pub fn info(&self) -> TaskInfo {
        self.info_of(&self.state.lock().unwrap())
    }

    pub fn view(&self) -> TaskView {
        self.view_with(self.output.snapshot())
    }

    /// A view carrying at most the first `limit` bytes of the output.
    pub fn view_head(&self, limit: usize) -> TaskView {
        self.view_with(self.output.snapshot_head(limit))
    }

    fn view_with(&self, output: OutputSnapshot) -> TaskView {
        let state = self.state.lock().unwrap();
        TaskView {
            info: self.info_of(&state),
            task: self.task.clone(),
            output,
            result: state.result.clone(),
            error: state.error.clone(),
        }
    }

    fn info_of(&self, state: &TaskState) -> TaskInfo {
        let runtime = match (state.started, state.ended) {
            (Some(started), Some(ended)) => ended - started,
            (Some(started), None) => started.elapsed(),
            _ => Duration::ZERO,
        };
        TaskInfo {
            id: self.id.clone(),
            agent: self.agent.clone(),
            status: state.status,
            runtime,
            parent: self.parent().cloned(),
            model: *self.model.lock().unwrap(),
            created: self.created,
        }
    }
}

impl std::borrow::Borrow<str> for TaskId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

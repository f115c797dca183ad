//! Task events for front-ends that want to be told rather than poll: a task
//! was queued, started, wrote output, or ended. Slow listeners miss events
//! (they are told how many) but never slow a task down.

use super::scope::SessionId;
use super::task::{TaskId, TaskStatus};
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub struct TaskEvent {
    pub id: TaskId,
    pub agent: Arc<str>,
    pub session: SessionId,
    /// The task's depth: 1 for a task a front-end started.
    pub depth: usize,
    pub kind: EventKind,
}

#[derive(Debug, Clone)]
pub enum EventKind {
    Queued,
    Started,
    Output(Arc<str>),
    Finished(TaskStatus),
}

/// The sending side, shared by every task.
#[derive(Clone)]
pub struct Events(broadcast::Sender<TaskEvent>);

/// Events buffered per listener before the slowest starts missing some.
const BACKLOG: usize = 4096;

impl Default for Events {
    fn default() -> Self {
        Events(broadcast::channel(BACKLOG).0)
    }
}

impl Events {
    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.0.subscribe()
    }

    pub(crate) fn has_listeners(&self) -> bool {
        self.0.receiver_count() > 0
    }

    pub(crate) fn send(&self, event: TaskEvent) {
        // No listener is not an error.
        let _ = self.0.send(event);
    }
}

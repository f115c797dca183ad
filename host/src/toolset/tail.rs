//! Following tasks, for every front-end alike: a task's output read from a
//! byte offset, waiting for more if asked (how `logs -f`, the daemon's
//! output tool and the dashboard's live tail follow a running task without
//! reading its output again each time), and task events told once what
//! they tell is on disk (MCP notifications, the API's event stream).

use super::{ToolError, Toolset};
use crate::tasks::{Caller, EventKind, TaskEvent, TaskView};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// The longest an output read may wait for more output.
pub const READ_MAX_WAIT_SECS: u64 = 60;

/// How long an output read waits for more: `seconds`, at most
/// [`READ_MAX_WAIT_SECS`].
pub fn read_wait(seconds: u64) -> Result<Duration, String> {
    match seconds {
        0..=READ_MAX_WAIT_SECS => Ok(Duration::from_secs(seconds)),
        _ => Err(format!(
            "wait must be 0 to {READ_MAX_WAIT_SECS} seconds; read again to keep waiting"
        )),
    }
}

/// What an event listener is told next.
pub enum Told {
    Event(TaskEvent),
    /// It fell behind and missed this many events: it should look at the
    /// tasks anew.
    Missed(u64),
}

/// How long a woken read lets output gather before answering, so a chatty
/// task costs a few answers a second, not one per write.
const GATHER: Duration = Duration::from_millis(50);

/// What one read found.
pub struct OutputRead {
    /// The task; its output is taken out (it is in `output`).
    pub view: TaskView,
    /// The output from the offset asked for.
    pub output: String,
    /// The offset to read from next.
    pub next_offset: usize,
    /// The task is final: no more output will come.
    pub done: bool,
}

impl Toolset {
    /// Task `id`'s output from byte `offset`; when there is none past it yet
    /// and the task still runs, waits up to `wait` for some or for the task
    /// to finish. Offsets fall on character boundaries: a character still
    /// being written is left for the next read.
    pub async fn read_output(
        &self,
        caller: &Caller,
        id: &str,
        offset: usize,
        wait: Duration,
    ) -> Result<OutputRead, ToolError> {
        // Subscribed before the first look, so no output is missed.
        let mut events = self.events().subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // The status before the output: output read after a final
            // status is all there will be.
            let done = self.task_status(caller, id)?.is_final();
            let mut view = self.view_background_agent(caller, id)?;
            let text = std::mem::take(&mut view.output.text);
            let mut end = text.len();
            if !done && text.ends_with('\u{FFFD}') {
                end -= '\u{FFFD}'.len_utf8();
            }
            let start = text.floor_char_boundary(offset.min(end));
            if end > start || done || tokio::time::Instant::now() >= deadline {
                return Ok(OutputRead {
                    output: text[start..end].to_string(),
                    view,
                    next_offset: end,
                    done,
                });
            }
            // Until this task writes, finishes, or the wait ends.
            let woken = async {
                loop {
                    match events.recv().await {
                        Ok(event) if event.id.as_str() == id.trim() => {
                            if !matches!(event.kind, EventKind::Queued) {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(RecvError::Lagged(_) | RecvError::Closed) => return,
                    }
                }
            };
            if tokio::time::timeout_at(deadline, woken).await.is_ok() {
                tokio::time::sleep(GATHER).await;
                while events.try_recv().is_ok() {}
            }
        }
    }
}

impl Toolset {
    /// The next event of `events` that `wanted` accepts, once what it tells
    /// is on disk (a status change waits for the task store; output is not
    /// held back); `None` once no more can come.
    pub async fn next_told(
        &self,
        events: &mut broadcast::Receiver<TaskEvent>,
        wanted: impl Fn(&TaskEvent) -> bool,
    ) -> Option<Told> {
        loop {
            match events.recv().await {
                Ok(event) if !wanted(&event) => {}
                Ok(event) => {
                    if !matches!(event.kind, EventKind::Output(_)) {
                        // Logged by the store when it fails.
                        let _ = self.settled().await;
                    }
                    return Some(Told::Event(event));
                }
                Err(RecvError::Lagged(missed)) => return Some(Told::Missed(missed)),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

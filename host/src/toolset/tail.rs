//! A task's output read from a byte offset, waiting for more if asked: how
//! `logs -f`, the daemon's output tool and the dashboard's live tail follow
//! a running task without reading its output again each time.

use super::{ToolError, Toolset};
use crate::tasks::{Caller, EventKind, TaskView};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How long a woken read lets output gather before answering, so a chatty
/// task costs a few answers a second, not one per write.
const GATHER: Duration = Duration::from_millis(50);

/// What one read found.
pub struct OutputRead {
    /// The task, its output cut to what this read returns.
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
            let mut view = self.view_background_agent(caller, id)?;
            let done = view.info.status.is_final();
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

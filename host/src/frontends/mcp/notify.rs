//! Task activity pushed to the client: logging notifications for the
//! session's task events, filtered by the level the client set with
//! `logging/setLevel`, and the progress a `wait` reports.

use crate::tasks::{EventKind, SessionId, TaskEvent};
use crate::toolset::Toolset;
use rmcp::model::{
    LoggingLevel, LoggingMessageNotificationParam, ProgressNotificationParam, ProgressToken,
};
use rmcp::{Peer, RoleServer};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

/// The least severe level the client wants logged. Until it sets one,
/// everything is sent.
#[derive(Default)]
pub struct LogFilter {
    minimum: AtomicU8,
}

impl LogFilter {
    pub fn set(&self, level: LoggingLevel) {
        self.minimum.store(severity(level), Ordering::Relaxed);
    }

    pub fn allows(&self, level: LoggingLevel) -> bool {
        severity(level) >= self.minimum.load(Ordering::Relaxed)
    }
}

/// RFC 5424 order, least severe first.
fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// Sends the session's task activity to the client as logging
/// notifications until the events end or the client is gone. A status
/// change is sent once `toolset` has it on disk (when it keeps a store).
pub async fn forward_events(
    toolset: Toolset,
    mut events: broadcast::Receiver<TaskEvent>,
    session: SessionId,
    peer: Peer<RoleServer>,
    filter: &LogFilter,
) {
    loop {
        let (level, data) = match events.recv().await {
            Ok(event) if event.session == session => {
                if !matches!(event.kind, EventKind::Output(_)) {
                    // Logged by the store when it fails.
                    let _ = toolset.settled().await;
                }
                describe_event(&event)
            }
            Ok(_) => continue,
            Err(RecvError::Lagged(missed)) => {
                (LoggingLevel::Warning, json!({"missed_events": missed}))
            }
            Err(RecvError::Closed) => return,
        };
        if !filter.allows(level) {
            continue;
        }
        let message = LoggingMessageNotificationParam::new(level, data).with_logger("bgagents");
        if peer.notify_logging_message(message).await.is_err() {
            return;
        }
    }
}

fn describe_event(event: &TaskEvent) -> (LoggingLevel, Value) {
    let (level, mut data) = match &event.kind {
        EventKind::Queued => (LoggingLevel::Debug, json!({"event": "queued"})),
        EventKind::Started => (LoggingLevel::Info, json!({"event": "started"})),
        EventKind::Output(text) => (
            LoggingLevel::Info,
            json!({"event": "output", "output": text}),
        ),
        EventKind::Finished(status) => (
            LoggingLevel::Notice,
            json!({"event": "finished", "status": status.as_str()}),
        ),
    };
    data["task_id"] = json!(event.id.as_str());
    data["agent"] = json!(&*event.agent);
    (level, data)
}

/// Progress of one `wait`: how many of the awaited tasks have finished.
pub struct WaitProgress<'a> {
    peer: &'a Peer<RoleServer>,
    token: ProgressToken,
    awaited: &'a [String],
    /// The awaited tasks the caller may see: no other task's finish is
    /// told.
    visible: HashSet<String>,
    /// Ids, not a counter: a task that finishes as the wait starts is seen
    /// both as already final and as an event.
    finished: HashSet<String>,
}

impl<'a> WaitProgress<'a> {
    pub fn new(
        peer: &'a Peer<RoleServer>,
        token: ProgressToken,
        awaited: &'a [String],
        visible: HashSet<String>,
        already_final: impl Iterator<Item = String>,
    ) -> Self {
        WaitProgress {
            peer,
            token,
            awaited,
            visible,
            finished: already_final.collect(),
        }
    }

    /// Reports `event` if it is the first finish of an awaited task.
    pub async fn on_event(&mut self, event: &TaskEvent) {
        let EventKind::Finished(status) = &event.kind else {
            return;
        };
        let awaited = self.visible.contains(event.id.as_str());
        if !awaited || !self.finished.insert(event.id.to_string()) {
            return;
        }
        let progress =
            ProgressNotificationParam::new(self.token.clone(), self.finished.len() as f64)
                .with_total(self.awaited.len() as f64)
                .with_message(format!("{} {}", event.id, status.as_str()));
        let _ = self.peer.notify_progress(progress).await;
    }
}

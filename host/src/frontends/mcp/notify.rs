//! Task activity pushed to the client: logging notifications for the
//! session's task events, filtered by the level the client set with
//! `logging/setLevel`; `notifications/tasks` on each status change of the
//! session's tasks, for clients that declared the tasks extension; and the
//! progress a `wait` reports.

use crate::tasks::{EventKind, TaskEvent};
use crate::toolset::{Session, Told, Toolset, render};
use rmcp::model::{
    LoggingLevel, LoggingMessageNotificationParam, Notification, ProgressNotificationParam,
    ProgressToken, ServerNotification, TaskStatusNotificationParams,
};
use rmcp::{Peer, RoleServer};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::broadcast;

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
/// notifications, and its tasks' status changes as `notifications/tasks`
/// when the client declared the tasks extension, until the events end or
/// the client is gone. A status change is sent once `toolset` has it on
/// disk (when it keeps a store).
pub async fn forward_events(
    toolset: Toolset,
    mut events: broadcast::Receiver<TaskEvent>,
    session: Arc<Session>,
    peer: Peer<RoleServer>,
    filter: &LogFilter,
) {
    let session_id = session.caller().session();
    let ours = |event: &TaskEvent| event.session == session_id;
    while let Some(told) = toolset.next_told(&mut events, ours).await {
        let (level, data) = match told {
            Told::Event(event) => {
                if let Some(status) = task_status(&toolset, &session, &event, &peer)
                    && peer.send_notification(status).await.is_err()
                {
                    return;
                }
                describe_event(&event)
            }
            Told::Missed(missed) => (LoggingLevel::Warning, json!({"missed_events": missed})),
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

/// `notifications/tasks` for a status change of a task the client started
/// itself (its MCP tasks), if the client declared the tasks extension: the
/// task as `tasks/get` would report it now.
fn task_status(
    toolset: &Toolset,
    session: &Session,
    event: &TaskEvent,
    peer: &Peer<RoleServer>,
) -> Option<ServerNotification> {
    let status_changed = matches!(event.kind, EventKind::Started | EventKind::Finished(_));
    let supports_tasks = (peer.peer_info()).is_some_and(|info| info.capabilities.supports_tasks());
    if !status_changed || event.depth != 1 || !supports_tasks {
        return None;
    }
    let task = super::tasks::get(toolset, session.caller(), event.id.as_str()).ok()?;
    let params = TaskStatusNotificationParams::new(task);
    Some(ServerNotification::TaskStatusNotification(
        Notification::new(params),
    ))
}

fn describe_event(event: &TaskEvent) -> (LoggingLevel, Value) {
    let level = match &event.kind {
        EventKind::Queued => LoggingLevel::Debug,
        EventKind::Started | EventKind::Output(_) => LoggingLevel::Info,
        EventKind::Finished(_) => LoggingLevel::Notice,
    };
    (level, render::event_record(event))
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

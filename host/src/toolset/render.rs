//! The texts text-based front-ends (the CLI, MCP) show for toolset results,
//! matching docker-agent's so prompts written for it read the same, and the
//! JSON records the JSON front-ends give.

use crate::tasks::{EventKind, TaskEvent, WaitReport};
use crate::tasks::{ModelUse, TaskInfo, TaskStatus, TaskView};
use crate::toolset::OutputRead;
use serde::Serialize;
use serde_json::{Value, json};
use std::fmt::Write;

/// A duration rounded to whole seconds: `0s`, `42s`, `1m5s`, `1h2m3s`.
pub use crate::config::units::format_duration as runtime;

pub fn started(info: &TaskInfo, task: &str) -> String {
    format!(
        "Background agent task started with ID: {}\nAgent: {}\nTask: {task}",
        info.id, info.agent
    )
}

pub fn list(tasks: &[TaskInfo]) -> String {
    if tasks.is_empty() {
        return "No background agent tasks found.\n".to_string();
    }
    let mut text = String::from("Background Agent Tasks:\n\n");
    for task in tasks {
        let _ = write!(
            text,
            "ID: {}\n  Agent:   {}\n  Status:  {}\n  Runtime: {}\n\n",
            task.id,
            task.agent,
            task.status,
            runtime(task.runtime)
        );
    }
    text
}

/// "3 calls, 1200 tokens (1000 in, 200 out)".
pub fn model_use(model: &ModelUse) -> String {
    format!(
        "{} call{}, {} tokens ({} in, {} out)",
        model.calls,
        if model.calls == 1 { "" } else { "s" },
        model.tokens(),
        model.input_tokens,
        model.output_tokens
    )
}

pub fn view(view: &TaskView) -> String {
    let info = &view.info;
    let mut text = format!(
        "Task ID: {}\nAgent:   {}\nStatus:  {}\nRuntime: {}\n",
        info.id,
        info.agent,
        info.status,
        runtime(info.runtime)
    );
    if let Some(model) = &view.info.model {
        let _ = writeln!(text, "Model:   {}", model_use(model));
    }
    text.push_str("\n--- Output ---\n");
    match info.status {
        TaskStatus::Completed => match view.result.as_deref() {
            Some(result) if !result.is_empty() => text.push_str(result),
            _ => text.push_str("<no output>"),
        },
        TaskStatus::Failed => {
            text.push_str("<task failed>");
            if let Some(error) = &view.error {
                let _ = write!(text, "\nError: {error}");
            }
        }
        TaskStatus::Stopped => text.push_str("<task was stopped>"),
        TaskStatus::Interrupted => {
            text.push_str("<task was interrupted>");
            if let Some(error) = &view.error {
                let _ = write!(text, "\nError: {error}");
            }
        }
        TaskStatus::Queued => text.push_str("<queued — waiting for a free slot; not started yet>"),
        TaskStatus::Running if view.output.text.is_empty() => {
            text.push_str("<no output yet — still running>")
        }
        TaskStatus::Running => {
            text.push_str(&view.output.text);
            if view.output.truncated {
                let cap = cap_text(view.output.cap);
                let _ = write!(
                    text,
                    "\n\n[output truncated at {cap} limit — still running...]"
                );
            } else {
                text.push_str("\n\n[still running...]");
            }
        }
    }
    text
}

pub fn stopped(info: &TaskInfo) -> String {
    format!("Background agent task {} stopped.", info.id)
}

/// The compact JSON docker-agent's wait returns, keys in its order:
/// `all_done, timed_out?, tasks`, and `task_id, status, done, output?,
/// error?, truncated?` for each task.
pub fn wait(report: &WaitReport) -> String {
    #[derive(Serialize)]
    struct Report<'a> {
        all_done: bool,
        #[serde(skip_serializing_if = "is_false")]
        timed_out: bool,
        tasks: Vec<Entry<'a>>,
    }

    #[derive(Serialize)]
    struct Entry<'a> {
        task_id: &'a str,
        status: &'a str,
        done: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        output: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
        #[serde(skip_serializing_if = "is_false")]
        truncated: bool,
    }

    fn is_false(value: &bool) -> bool {
        !value
    }

    let report = Report {
        all_done: report.all_done,
        timed_out: report.timed_out,
        tasks: report
            .tasks
            .iter()
            .map(|entry| Entry {
                task_id: &entry.task_id,
                status: entry.status.map_or("not_found", TaskStatus::as_str),
                done: entry.is_done(),
                output: entry.output.as_deref(),
                error: entry.error.as_deref(),
                truncated: entry.truncated,
            })
            .collect(),
    };
    serde_json::to_string(&report).expect("a wait report serializes")
}

/// A task as the JSON front-ends (the daemon's tools, the HTTP API) give
/// it, with the session that started it when known.
pub fn info_record(info: &TaskInfo, session: Option<&str>) -> Value {
    let mut record = json!({
        "task_id": info.id.as_str(),
        "agent": info.agent,
        "status": info.status.as_str(),
        "done": info.status.is_final(),
        "runtime_secs": info.runtime.as_secs_f64(),
        "parent": info.parent.as_ref().map(|id| id.as_str()),
        "created_at": crate::clock::rfc3339_of(info.created),
    });
    if let Some(model) = &info.model {
        record["model_calls"] = json!(model.calls);
        record["input_tokens"] = json!(model.input_tokens);
        record["output_tokens"] = json!(model.output_tokens);
        record["tokens"] = json!(model.tokens());
    }
    if let Some(session) = session {
        record["session"] = json!(session);
    }
    record
}

/// A task in full as the JSON front-ends give it: its record, task text,
/// output so far, result and error.
pub fn view_record(view: &TaskView) -> Value {
    let mut record = info_record(&view.info, None);
    record["task"] = json!(view.task);
    record["output"] = json!(view.output.text);
    record["truncated"] = json!(view.output.truncated);
    record["result"] = json!(view.result);
    record["error"] = json!(view.error);
    record
}

/// One read of a task's output from an offset, as the JSON front-ends give
/// it: the task's record, the output read and the offset to read from next.
pub fn output_record(read: &OutputRead) -> Value {
    let mut record = view_record(&read.view);
    record["output"] = json!(read.output);
    record["next_offset"] = json!(read.next_offset);
    record
}

/// A task event as the JSON front-ends give it: `event` (`queued`,
/// `started`, `output` with the `output`, `finished` with the `status`),
/// and the task's id, agent and depth (1 for a task a front-end started).
pub fn event_record(event: &TaskEvent) -> Value {
    let mut record = match &event.kind {
        EventKind::Queued => json!({"event": "queued"}),
        EventKind::Started => json!({"event": "started"}),
        EventKind::Output(text) => json!({"event": "output", "output": &**text}),
        EventKind::Finished(status) => json!({"event": "finished", "status": status.as_str()}),
    };
    record["task_id"] = json!(event.id.as_str());
    record["agent"] = json!(&*event.agent);
    record["depth"] = json!(event.depth);
    record
}

/// A size the way docker-agent writes its output cap (`10MB` for 10 MiB).
fn cap_text(bytes: u64) -> String {
    let (number, unit) = crate::config::units::scale_bytes(bytes);
    format!("{number}{}", ["B", "KB", "MB", "GB"][unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn runtime_matches_go_duration_rounding() {
        assert_eq!(runtime(Duration::ZERO), "0s");
        assert_eq!(runtime(Duration::from_millis(499)), "0s");
        assert_eq!(runtime(Duration::from_millis(500)), "1s");
        assert_eq!(runtime(Duration::from_secs(42)), "42s");
        assert_eq!(runtime(Duration::from_secs(65)), "1m5s");
        assert_eq!(runtime(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(runtime(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn wait_keys_come_in_docker_agents_order() {
        use crate::tasks::WaitEntry;
        let entry = |task_id: &str, status, output: Option<&str>, error: Option<&str>| WaitEntry {
            task_id: task_id.to_string(),
            status,
            output: output.map(str::to_string),
            error: error.map(str::to_string),
            truncated: output.is_some(),
        };
        let report = WaitReport {
            all_done: false,
            timed_out: true,
            tasks: vec![
                entry("a", Some(TaskStatus::Running), Some("so far"), None),
                entry("b", Some(TaskStatus::Failed), None, Some("boom")),
                entry("c", None, None, Some("gone")),
            ],
        };
        assert_eq!(
            wait(&report),
            r#"{"all_done":false,"timed_out":true,"tasks":[{"task_id":"a","status":"running","done":false,"output":"so far","truncated":true},{"task_id":"b","status":"failed","done":true,"error":"boom"},{"task_id":"c","status":"not_found","done":true,"error":"gone"}]}"#
        );
    }

    #[test]
    fn the_output_cap_reads_as_docker_agent_writes_it() {
        assert_eq!(cap_text(10 << 20), "10MB");
        assert_eq!(cap_text(1024), "1KB");
        assert_eq!(cap_text(1536), "1.5KB");
        assert_eq!(cap_text(100), "100B");
    }
}

//! The texts text-based front-ends (the CLI, MCP) show for toolset results,
//! matching docker-agent's so prompts written for it read the same.

use super::ops::WaitReport;
use crate::config::units::format_size;
use crate::tasks::{TaskInfo, TaskStatus, TaskView};
use serde_json::{Map, Value, json};
use std::fmt::Write;
use std::time::Duration;

/// A duration rounded to whole seconds: `0s`, `42s`, `1m5s`, `1h2m3s`.
pub fn runtime(duration: Duration) -> String {
    let total = (duration.as_millis() + 500) / 1000;
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

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

pub fn view(view: &TaskView) -> String {
    let info = &view.info;
    let mut text = format!(
        "Task ID: {}\nAgent:   {}\nStatus:  {}\nRuntime: {}\n\n--- Output ---\n",
        info.id,
        info.agent,
        info.status,
        runtime(info.runtime)
    );
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
        TaskStatus::Queued => text.push_str("<queued — waiting for a free slot; not started yet>"),
        TaskStatus::Running if view.output.text.is_empty() => {
            text.push_str("<no output yet — still running>")
        }
        TaskStatus::Running => {
            text.push_str(&view.output.text);
            if view.output.truncated {
                let cap = format_size(view.output.cap).replace(' ', "");
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

/// The compact JSON docker-agent's wait returns.
pub fn wait(report: &WaitReport) -> String {
    let tasks: Vec<Value> = report
        .tasks
        .iter()
        .map(|entry| {
            let mut task = Map::new();
            task.insert("task_id".into(), json!(entry.task_id));
            let status = entry.status.map_or("not_found", TaskStatus::as_str);
            task.insert("status".into(), json!(status));
            task.insert("done".into(), json!(entry.is_done()));
            if let Some(output) = &entry.output {
                task.insert("output".into(), json!(output));
            }
            if let Some(error) = &entry.error {
                task.insert("error".into(), json!(error));
            }
            if entry.truncated {
                task.insert("truncated".into(), json!(true));
            }
            Value::Object(task)
        })
        .collect();
    let mut root = Map::new();
    root.insert("all_done".into(), json!(report.all_done));
    if report.timed_out {
        root.insert("timed_out".into(), json!(true));
    }
    root.insert("tasks".into(), Value::Array(tasks));
    Value::Object(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

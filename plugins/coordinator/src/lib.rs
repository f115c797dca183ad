//! Example coordinator: splits its task into parts, dispatches each part to
//! one of its `sub_agents` in the background, waits for all of them, and
//! combines their results.
//!
//! Parts are separated by newlines or `;`. A part written `agent: text` goes
//! to that agent; other parts go to the sub-agents in turn.

wit_bindgen::generate!({ path: "../../wit", world: "sub-agent" });

use bgagents::agents::background_agents as toolset;
use bgagents::agents::output;
use bgagents::agents::types::TaskStatus;
use exports::bgagents::agents::agent::{Guest, Request};

struct Coordinator;

impl Guest for Coordinator {
    fn run(request: Request) -> Result<String, String> {
        if request.sub_agents.is_empty() {
            return Err(
                "this coordinator has no sub_agents to dispatch; list some in \
                        the team file and grant it the background_agents toolset"
                    .into(),
            );
        }
        let parts = split_parts(&request.task);
        if parts.is_empty() {
            return Err("the task has no parts to dispatch".into());
        }
        output::write(&format!(
            "dispatching {} part(s) in parallel\n",
            parts.len()
        ));

        let mut dispatched = Vec::new();
        for (index, part) in parts.iter().enumerate() {
            let (agent, text) = route(part, &request.sub_agents, index);
            let info = toolset::run_background_agent(&agent, &text, None)?;
            output::write(&format!("  {} ← {agent}: {text}\n", info.id));
            dispatched.push((agent, text, info.id));
        }

        let ids: Vec<String> = dispatched.iter().map(|(_, _, id)| id.clone()).collect();
        loop {
            let report = toolset::wait_background_agents(&ids, 0)?;
            if report.all_done {
                break;
            }
            output::write("still waiting for sub-agents…\n");
        }
        output::write("all parts finished; combining\n");

        let mut combined = String::new();
        let mut failures = 0;
        for (agent, text, id) in &dispatched {
            let view = toolset::view_background_agent(id)?;
            combined.push_str(&format!("## {agent}: {text}\n"));
            match view.info.status {
                TaskStatus::Completed => combined.push_str(view.result.as_deref().unwrap_or("")),
                status => {
                    failures += 1;
                    let reason = view.error.unwrap_or_default();
                    combined.push_str(&format!("({status:?}) {reason}").to_lowercase());
                }
            }
            combined.push_str("\n\n");
        }
        if failures == dispatched.len() {
            return Err(format!("every part failed:\n{combined}"));
        }
        Ok(combined.trim_end().to_string())
    }
}

fn split_parts(task: &str) -> Vec<String> {
    task.split(['\n', ';'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::to_string)
        .collect()
}

/// `agent: text` goes to `agent` when it is a sub-agent; otherwise round-robin.
fn route(part: &str, sub_agents: &[String], index: usize) -> (String, String) {
    if let Some((name, text)) = part.split_once(':') {
        let name = name.trim();
        if sub_agents.iter().any(|agent| agent == name) {
            return (name.to_string(), text.trim().to_string());
        }
    }
    (
        sub_agents[index % sub_agents.len()].clone(),
        part.to_string(),
    )
}

export!(Coordinator);

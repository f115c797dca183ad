//! Example coordinator: splits its task into parts, dispatches each part to
//! one of its `sub_agents` in the background, waits for all of them, and
//! combines their results.
//!
//! Parts are separated by newlines or `;`. A part written `agent: text` goes
//! to that agent; other parts go to the sub-agents in turn.

use bgagents_guest::{Agent, Request, outcome, print, start, wait_all};

struct Coordinator;

impl Agent for Coordinator {
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
        print(&format!(
            "dispatching {} part(s) in parallel\n",
            parts.len()
        ));

        let mut dispatched = Vec::new();
        let mut ids = Vec::new();
        for (index, part) in parts.iter().enumerate() {
            let (agent, text) = route(part, &request.sub_agents, index);
            let id = start(&agent, &text)?;
            print(&format!("  {id} ← {agent}: {text}\n"));
            dispatched.push((agent, text));
            ids.push(id);
        }

        let views = wait_all(&ids)?;
        print("all parts finished; combining\n");
        let mut combined = String::new();
        let mut failures = 0;
        for ((agent, text), view) in dispatched.iter().zip(&views) {
            combined.push_str(&format!("## {agent}: {text}\n"));
            match outcome(view) {
                Ok(result) => combined.push_str(&result),
                Err(reason) => {
                    failures += 1;
                    combined.push_str(&format!("(failed) {reason}"));
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

bgagents_guest::export_agent!(Coordinator);

//! A harness CLI's command line, prompt and environment per CLI, and
//! where an unconfined CLI starts.

use super::program::Program;
use super::{HarnessAgent, SYSTEM_PATH};
use crate::config::{Grants, HarnessKind, HarnessSpec};
use std::ffi::OsString;

impl HarnessAgent {
    /// The command line for `prompt`, and what goes on its stdin: the
    /// prompt itself, never an argument (which `ps` would show to every
    /// user of the host).
    pub(super) fn command_line(&self, prompt: &str) -> (Vec<OsString>, String) {
        let spec = &self.spec;
        let mut argv: Vec<OsString> = vec![self.program.exe.clone().into()];
        let mut add = |args: &[&str]| argv.extend(args.iter().map(OsString::from));
        match spec.kind {
            HarnessKind::ClaudeCode => {
                add(&["--print", "--output-format", "stream-json", "--verbose"]);
                if spec.partial_messages {
                    add(&["--include-partial-messages"]);
                }
                if let Some(model) = &spec.model {
                    add(&["--model", model]);
                }
                if let Some(effort) = &spec.effort {
                    add(&["--effort", effort]);
                }
                if let Some(turns) = spec.max_turns {
                    add(&["--max-turns", &turns.to_string()]);
                }
                match &spec.permission_mode {
                    Some(mode) => add(&["--permission-mode", mode]),
                    None => add(&["--dangerously-skip-permissions"]),
                }
            }
            HarnessKind::Codex => {
                add(&[
                    "exec",
                    "--json",
                    "--dangerously-bypass-approvals-and-sandbox",
                    "--skip-git-repo-check",
                ]);
                if let Some(model) = &spec.model {
                    add(&["--model", model]);
                }
            }
            HarnessKind::OpenCode => {
                add(&["run", "--format", "json", "--dangerously-skip-permissions"]);
                if let Some(model) = &spec.model {
                    add(&["--model", model]);
                }
                if let Some(agent) = &spec.agent {
                    add(&["--agent", agent]);
                }
                if spec.thinking {
                    add(&["--thinking"]);
                }
                // `opencode run` appends its stdin (not a terminal) to the
                // message.
            }
        }
        argv.extend(spec.args.iter().map(OsString::from));
        if spec.kind == HarnessKind::Codex {
            // `codex exec -` reads the prompt from stdin.
            argv.push("-".into());
        }
        (argv, prompt.to_string())
    }
}

/// The delegated-task prompt: the agent's instruction, then the task and
/// the output expected, worded as the bundled LLM agent words its task
/// message (plugins/agent/src/prompt.rs).
pub fn prompt(instruction: &str, task: &str, expected_output: Option<&str>) -> String {
    let mut prompt = String::new();
    if !instruction.trim().is_empty() {
        prompt.push_str(instruction.trim_end());
        prompt.push_str("\n\n");
    }
    prompt.push_str(&format!(
        "You are a member of a team of agents. Your goal is to complete the following task:\
         \n\n<task>\n{task}\n</task>"
    ));
    if let Some(expected) = expected_output.filter(|expected| !expected.is_empty()) {
        prompt.push_str(&format!(
            "\n\n<expected_output>\n{expected}\n</expected_output>"
        ));
    }
    prompt
}

/// The environment in the sandbox: basics, the granted variables, then
/// `harness.env`.
pub(super) fn confined_env(
    harness: &HarnessSpec,
    grants: &Grants,
    program: &Program,
) -> Vec<(String, String)> {
    let mut path: Vec<String> = (program.path.iter())
        .map(|dir| dir.display().to_string())
        .collect();
    path.push(SYSTEM_PATH.to_string());
    let mut env = vec![
        ("PATH".to_string(), path.join(":")),
        ("HOME".to_string(), "/tmp/home".to_string()),
        ("TMPDIR".to_string(), "/tmp".to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
    ];
    if harness.kind == HarnessKind::ClaudeCode {
        // Claude Code skips its permission prompts as root only when told
        // it runs in a sandbox, which it does.
        env.push(("IS_SANDBOX".to_string(), "1".to_string()));
    }
    env.extend(grants.env.iter().cloned());
    env.extend(harness.env.iter().cloned());
    env
}

/// The environment of an unconfined CLI: the host's `PATH` and `HOME`
/// (where the CLI keeps its login), then the granted variables and
/// `harness.env` — nothing else of the host's.
pub(super) fn unconfined_env(harness: &HarnessSpec, grants: &Grants) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ["PATH", "HOME", "LANG", "TMPDIR"]
        .into_iter()
        .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
        .collect();
    env.extend(grants.env.iter().cloned());
    env.extend(harness.env.iter().cloned());
    env
}

/// The host directory behind guest path `guest` (inside a granted
/// directory): through the deepest grant holding it, as in the sandbox,
/// where a grant inside another is mounted over it.
pub(super) fn host_dir(grants: &Grants, guest: &str) -> Option<std::path::PathBuf> {
    (grants.dirs.iter())
        .filter_map(|dir| {
            let rest = guest.strip_prefix(dir.guest.as_str())?;
            let inside = rest.is_empty() || dir.guest.ends_with('/') || rest.starts_with('/');
            inside.then(|| (dir.guest.len(), dir.host.join(rest.trim_start_matches('/'))))
        })
        .max_by_key(|(depth, _)| *depth)
        .map(|(_, host)| host)
}

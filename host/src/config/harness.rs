//! `harness:` agents: an agent whose tasks run a coding CLI — Claude Code,
//! Codex or OpenCode — as a process on the host, confined by the agent's
//! grants (see `crate::harness`). docker-agent's team files write them as
//!
//! ```yaml
//! harness: {type: claude-code, args: [--max-turns, "30"], config: {...}, env: {...}}
//! ```
//!
//! Both key sets docker-agent has used are accepted: `type`, `command`,
//! `args`, `config`, `env`, `working_dir`, `timeout`, `model`, `effort`,
//! `agent` and `thinking` take effect; `min_version` and
//! `permission_policy` are read and ignored with a warning, as are
//! `config` keys that mean nothing under bgagents' sandbox (codex's
//! `sandbox`) or that bgagents does not know.
//!
//! The rule for `env:` — values may name the host's variables (`${NAME}`),
//! but only variables the agent's `grants.env` already passes — keeps
//! every secret a harness sees listed in one place, `grants.env`.

use super::file::{Problem, Reader, Section, kind, shorten};
use super::grants::Grants;
use super::locate::{Step, render};
use super::units::HumanDuration;
use serde_yaml::Value;
use std::collections::BTreeMap;

/// The CLIs bgagents runs as harness agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HarnessKind {
    ClaudeCode,
    Codex,
    OpenCode,
}

/// The supported types, for messages.
const SUPPORTED: &str = "claude-code, codex or opencode";

/// docker-agent's other harness types, which bgagents does not run.
const NOT_SUPPORTED: &[&str] = &["copilot", "openclaw", "pi", "cmd"];

impl HarnessKind {
    pub const ALL: [HarnessKind; 3] = [
        HarnessKind::ClaudeCode,
        HarnessKind::Codex,
        HarnessKind::OpenCode,
    ];

    /// The `type:` that names it.
    pub fn name(self) -> &'static str {
        match self {
            HarnessKind::ClaudeCode => "claude-code",
            HarnessKind::Codex => "codex",
            HarnessKind::OpenCode => "opencode",
        }
    }

    /// The program run when `command:` is not given.
    pub fn default_command(self) -> &'static str {
        match self {
            HarnessKind::ClaudeCode => "claude",
            HarnessKind::Codex => "codex",
            HarnessKind::OpenCode => "opencode",
        }
    }

    /// How to install the CLI.
    pub fn install_hint(self) -> &'static str {
        match self {
            HarnessKind::ClaudeCode => "npm install -g @anthropic-ai/claude-code",
            HarnessKind::Codex => "npm install -g @openai/codex",
            HarnessKind::OpenCode => "npm install -g opencode-ai",
        }
    }

    /// What the CLI must reach to work, for `check`: the provider's API
    /// and the variable holding its key.
    pub fn needs(self) -> &'static str {
        match self {
            HarnessKind::ClaudeCode => {
                "Claude Code calls https://api.anthropic.com with $ANTHROPIC_API_KEY"
            }
            HarnessKind::Codex => "Codex calls https://api.openai.com with $OPENAI_API_KEY",
            HarnessKind::OpenCode => {
                "OpenCode calls its model provider's API (e.g. https://api.anthropic.com with \
                 $ANTHROPIC_API_KEY)"
            }
        }
    }

    fn parse(text: &str) -> Option<HarnessKind> {
        HarnessKind::ALL
            .into_iter()
            .find(|kind| kind.name() == text)
    }

    /// The `config:` keys this CLI's adapter takes.
    fn config_keys(self) -> &'static [&'static str] {
        match self {
            HarnessKind::ClaudeCode => &[
                "command",
                "model",
                "args",
                "max_turns",
                "permission_mode",
                "include_partial_messages",
            ],
            HarnessKind::Codex => &["command", "model", "args"],
            HarnessKind::OpenCode => &["command", "model", "agent", "args"],
        }
    }
}

/// A harness agent, resolved: what to run and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarnessSpec {
    pub kind: HarnessKind,
    /// The program: a name looked up on the host's `PATH` when the team is
    /// loaded, or an absolute path.
    pub command: String,
    /// `args:` then `config.args`, passed after bgagents' own options.
    pub args: Vec<String>,
    /// `model` (claude strips a leading `anthropic/`).
    pub model: Option<String>,
    /// Claude Code's `--effort`.
    pub effort: Option<String>,
    /// OpenCode's `--agent`.
    pub agent: Option<String>,
    /// OpenCode's `--thinking`.
    pub thinking: bool,
    /// Claude Code's `--max-turns` (`config.max_turns`).
    pub max_turns: Option<u32>,
    /// Claude Code's `--permission-mode` (`config.permission_mode`); without
    /// it, permission prompts are skipped (the sandbox is the boundary).
    pub permission_mode: Option<String>,
    /// Claude Code streams text as it is written
    /// (`config.include_partial_messages`, default true).
    pub partial_messages: bool,
    /// `env:`, its references resolved from the granted variables.
    pub env: Vec<(String, String)>,
    /// Where the CLI starts: a guest path inside a granted directory, or
    /// `/tmp` when none is granted.
    pub working_dir: String,
    /// Bytes of memory the CLI's processes may use together (and their
    /// files in the sandbox's `/tmp`): `limits.memory`, or 2 GiB.
    pub memory: u64,
}

/// Memory a harness agent's processes may use when `limits.memory` is not
/// given (a node CLI alone takes a few hundred MiB).
pub const DEFAULT_HARNESS_MEMORY: u64 = 2 << 30;

/// `harness:` as written.
#[derive(Debug, Default)]
pub(super) struct HarnessFile {
    kind: Option<HarnessKind>,
    command: Option<String>,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    working_dir: Option<String>,
    pub timeout: Option<HumanDuration>,
    model: Option<String>,
    effort: Option<String>,
    agent: Option<String>,
    thinking: Option<bool>,
    max_turns: Option<u32>,
    permission_mode: Option<String>,
    partial_messages: Option<bool>,
    /// `config.X` given where the same `X` is given outside `config`.
    twice: Vec<String>,
}

const HARNESS_KEYS: &[&str] = &[
    "type",
    "command",
    "args",
    "config",
    "env",
    "working_dir",
    "timeout",
    "model",
    "effort",
    "agent",
    "thinking",
];

/// docker-agent's harness keys that have no effect here.
const IGNORED_KEYS: &[(&str, &str)] = &[
    (
        "min_version",
        "the installed version is run, whatever it is; `bgagents check` names the binary",
    ),
    (
        "permission_policy",
        "the CLI runs without asking for permission, confined by bubblewrap to the agent's \
         grants instead",
    ),
];

/// Agent limits that do not apply to a harness agent's tasks.
const LIMITS_WITHOUT_EFFECT: &[(&str, &str)] = &[
    (
        "fuel",
        "fuel meters WebAssembly; a harness is bounded by its timeout",
    ),
    ("open_files", "it bounds a component's handles"),
    ("spawns", "a harness agent starts no tasks"),
    ("concurrent_spawns", "a harness agent starts no tasks"),
    ("model_calls", "the CLI makes its own model calls"),
    (
        "model_timeout",
        "the CLI makes its own model calls; the task's timeout bounds them",
    ),
];

fn warn(reader: &mut Reader, path: &[Step], key: &str, message: String) {
    let mut locate = path.to_vec();
    locate.push(Step::Key(key.to_string()));
    reader.warnings.push(Problem {
        shown: render(path),
        locate,
        at_key: true,
        message,
    });
}

/// Reads `harness:` of the agent in `agent` (`None` if absent or
/// unreadable, with problems), and warns of the agent's limits that have no
/// effect on a harness.
pub(super) fn read(reader: &mut Reader, agent: &Section) -> Option<HarnessFile> {
    let value = agent.raw("harness")?;
    let path = agent.at("harness");
    if let Some(Value::Mapping(limits)) = agent.raw("limits") {
        for (key, why) in LIMITS_WITHOUT_EFFECT {
            if limits.contains_key(*key) {
                warn(
                    reader,
                    &agent.at("limits"),
                    key,
                    format!("`{key}` has no effect on a harness agent: {why}"),
                );
            }
        }
    }
    let section = reader.section(Some(value), &path, HARNESS_KEYS, IGNORED_KEYS)?;
    let kind = match section.raw("type") {
        None => {
            reader.push(
                &path,
                format!("missing field `type`: the harness to run, {SUPPORTED}"),
            );
            None
        }
        Some(Value::String(text)) => match HarnessKind::parse(text) {
            Some(kind) => Some(kind),
            None if NOT_SUPPORTED.contains(&text.as_str()) => {
                reader.push(
                    &section.at("type"),
                    format!(
                        "harness type `{text}` is not supported; bgagents runs {SUPPORTED} \
                         (`claude-code`, `codex`, `opencode`)"
                    ),
                );
                None
            }
            None => {
                reader.push(
                    &section.at("type"),
                    format!(
                        "unknown harness type `{}`; bgagents runs {SUPPORTED} \
                         (`claude-code`, `codex`, `opencode`)",
                        shorten(text)
                    ),
                );
                None
            }
        },
        Some(other) => {
            reader.push(
                &section.at("type"),
                format!(
                    "expected the harness type ({SUPPORTED}), found {}",
                    kind(other)
                ),
            );
            None
        }
    };
    let mut harness = HarnessFile {
        kind,
        command: section.get(reader, "command"),
        args: section.get_or_default(reader, "args"),
        env: section.get_or_default(reader, "env"),
        working_dir: section.get(reader, "working_dir"),
        timeout: section.get(reader, "timeout"),
        model: section.get(reader, "model"),
        effort: section.get(reader, "effort"),
        agent: section.get(reader, "agent"),
        thinking: section.get(reader, "thinking"),
        ..HarnessFile::default()
    };
    let Some(kind) = kind else {
        return Some(harness);
    };
    if let Some(config) = section.raw("config") {
        read_config(reader, &mut harness, kind, config, &section.at("config"));
    }
    Some(harness)
}

/// `config:`: the adapter's settings; keys it does not take are warnings.
fn read_config(
    reader: &mut Reader,
    harness: &mut HarnessFile,
    kind: HarnessKind,
    value: &Value,
    path: &[Step],
) {
    let Value::Mapping(map) = value else {
        if !value.is_null() {
            reader.push(
                path,
                format!("expected a map of settings, found {}", kind_of(value)),
            );
        }
        return;
    };
    let known = kind.config_keys();
    for key in map.keys() {
        let Some(key) = key.as_str() else { continue };
        let why = match (kind, key) {
            _ if known.contains(&key) => continue,
            (HarnessKind::Codex, "sandbox") => {
                "codex's own sandbox is not used: the CLI runs with it bypassed, inside \
                 bubblewrap, which confines it to the agent's grants"
                    .to_string()
            }
            _ => format!(
                "not a {} setting bgagents knows (it takes {})",
                kind.name(),
                known.join(", ")
            ),
        };
        warn(
            reader,
            path,
            key,
            format!("`{}` is ignored: {why}", shorten(key)),
        );
    }
    let Some(config) = reader.section(Some(value), path, known, &[]) else {
        return;
    };
    // Unknown keys were warned of above; the section's own problems for
    // them are dropped.
    reader.problems.retain(|problem| {
        !(problem.at_key
            && problem.locate.starts_with(path)
            && problem.locate.len() == path.len() + 1)
    });
    let mut once = |given: &mut Option<String>, key: &str, reader: &mut Reader| {
        if let Some(value) = config.get::<String>(reader, key) {
            match given {
                Some(_) => harness.twice.push(key.to_string()),
                None => *given = Some(value),
            }
        }
    };
    let (mut command, mut model, mut agent) = (
        harness.command.take(),
        harness.model.take(),
        harness.agent.take(),
    );
    once(&mut command, "command", reader);
    once(&mut model, "model", reader);
    once(&mut agent, "agent", reader);
    harness.command = command;
    harness.model = model;
    harness.agent = agent;
    let more: Vec<String> = config.get_or_default(reader, "args");
    harness.args.extend(more);
    harness.max_turns = config.get(reader, "max_turns");
    harness.permission_mode = config.get(reader, "permission_mode");
    harness.partial_messages = config.get(reader, "include_partial_messages");
}

fn kind_of(value: &Value) -> String {
    kind(value)
}

/// Expands `${NAME}` references in a value with a lookup of names; the
/// error is the first name the lookup does not know.
pub(super) type Expand = dyn Fn(&str, &dyn Fn(&str) -> Option<String>) -> Result<String, String>;

/// Checks `harness` against the agent it belongs to (at `at`, e.g.
/// `agents.coder`) and its resolved `grants`; `expand` replaces `${NAME}`
/// references with `lookup`'s values.
pub(super) fn resolve(
    harness: &HarnessFile,
    at: &str,
    grants: &Grants,
    memory: Option<u64>,
    expand: &Expand,
    problems: &mut Vec<String>,
) -> Option<HarnessSpec> {
    let kind = harness.kind?;
    let before = problems.len();
    let at = format!("{at}.harness");
    for key in &harness.twice {
        problems.push(format!(
            "{at}.config.{key}: `{key}` is given both in `config:` and beside it; keep one"
        ));
    }
    let command = harness
        .command
        .clone()
        .unwrap_or_else(|| kind.default_command().to_string());
    if command.trim().is_empty() {
        problems.push(format!("{at}.command: the command is empty"));
    } else if command.contains('/') && !command.starts_with('/') {
        problems.push(format!(
            "{at}.command: `{}` must be a program name looked up on PATH (e.g. `{}`) or an \
             absolute path",
            shorten(&command),
            kind.default_command()
        ));
    }
    let only = |key: &str, given: bool, owner: HarnessKind, problems: &mut Vec<String>| {
        if given && kind != owner {
            problems.push(format!(
                "{at}.{key}: `{key}` is a {} setting; a {} harness does not take it",
                owner.name(),
                kind.name()
            ));
        }
    };
    only(
        "effort",
        harness.effort.is_some(),
        HarnessKind::ClaudeCode,
        problems,
    );
    only(
        "agent",
        harness.agent.is_some(),
        HarnessKind::OpenCode,
        problems,
    );
    only(
        "thinking",
        harness.thinking.is_some(),
        HarnessKind::OpenCode,
        problems,
    );
    if let Some(effort) = &harness.effort
        && !matches!(effort.as_str(), "low" | "medium" | "high" | "max")
    {
        problems.push(format!(
            "{at}.effort: `{}` is not one of low, medium, high, max",
            shorten(effort)
        ));
    }
    if harness.max_turns == Some(0) {
        problems.push(format!("{at}.config.max_turns: must be at least 1"));
    }
    let granted = |name: &str| {
        (grants.env.iter())
            .find(|(granted, _)| granted == name)
            .map(|(_, value)| value.clone())
    };
    let mut env = Vec::new();
    for (name, value) in &harness.env {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            problems.push(format!(
                "{at}.env: `{}` is not a variable name (letters, digits and _)",
                shorten(name)
            ));
            continue;
        }
        match expand(value, &granted) {
            Ok(value) => env.push((name.clone(), value)),
            Err(missing) => problems.push(format!(
                "{at}.env.{}: refers to ${{{}}}, which the agent is not granted; a harness \
                 gets the host's variables only through grants.env: add `{}` to \
                 {}.grants.env (or write the value itself)",
                shorten(name),
                shorten(&missing),
                shorten(&missing),
                at.trim_end_matches(".harness")
            )),
        }
    }
    let working_dir = match &harness.working_dir {
        None => {
            (grants.dirs.first().map(|dir| dir.guest.clone())).unwrap_or_else(|| "/tmp".to_string())
        }
        Some(dir) => {
            let inside = |guest: &str| {
                dir == guest
                    || dir
                        .strip_prefix(guest)
                        .is_some_and(|rest| rest.starts_with('/') || guest == "/")
            };
            if !dir.starts_with('/') || dir.split('/').any(|part| part == "..") {
                problems.push(format!(
                    "{at}.working_dir: `{}` must be an absolute path inside a granted \
                     directory's guest path (e.g. {})",
                    shorten(dir),
                    grants
                        .dirs
                        .first()
                        .map_or("/work", |dir| dir.guest.as_str())
                ));
            } else if !grants.dirs.iter().any(|grant| inside(&grant.guest)) {
                let granted: Vec<&str> = grants.dirs.iter().map(|d| d.guest.as_str()).collect();
                problems.push(format!(
                    "{at}.working_dir: `{}` is not inside a granted directory ({}); grant the \
                     directory in grants.files and name its guest path",
                    shorten(dir),
                    match granted.is_empty() {
                        true => "none is granted".to_string(),
                        false => granted.join(", "),
                    }
                ));
            }
            dir.clone()
        }
    };
    let model = harness.model.clone().map(|model| match kind {
        HarnessKind::ClaudeCode => model
            .strip_prefix("anthropic/")
            .map(str::to_string)
            .unwrap_or(model),
        _ => model,
    });
    (problems.len() == before).then(|| HarnessSpec {
        kind,
        command,
        args: harness.args.clone(),
        model,
        effort: harness.effort.clone(),
        agent: harness.agent.clone(),
        thinking: harness.thinking.unwrap_or(false),
        max_turns: harness.max_turns,
        permission_mode: harness.permission_mode.clone(),
        partial_messages: harness.partial_messages.unwrap_or(true),
        env,
        working_dir,
        memory: memory.unwrap_or(DEFAULT_HARNESS_MEMORY),
    })
}

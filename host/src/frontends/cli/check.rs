//! `bgagents check`: load a team, compile every component, and show what
//! each agent may do. Every name, description and path from the team file
//! is printed through [`printable`], so a team file cannot rewrite the
//! report (erase another agent's grants, say) on the reviewer's screen.

use super::sanitise::{Keep, indented, printable, shown_path};
use crate::config::Team;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Appends one formatted line to a `String`.
macro_rules! push_line {
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// Under a field's label, where its further lines go.
const VALUE_INDENT: &str = "               ";

/// The cache directory, and what loading did for each component.
fn cache_lines(report: &crate::toolset::LoadReport) -> String {
    let mut out = String::new();
    match &report.cache_dir {
        Some(dir) => push_line!(out, "cache:       {}", shown_path(dir)),
        None => push_line!(out, "cache:       off"),
    }
    for component in &report.components {
        push_line!(
            out,
            "component:   {} — {} in {:.1} ms",
            shown_path(&component.path),
            printable(&component.cache.to_string(), Keep::OneLine),
            component.took.as_secs_f64() * 1000.0
        );
    }
    out
}

/// `bgagents compile`: compiles every component of a team (or one
/// component) into the cache, so that the first `run` or `serve` starts at
/// once — for images and CI. Exit 1 if an entry could not be stored.
pub fn compile(path: &Path) -> ExitCode {
    let toolset = match super::load(path, true) {
        Ok(toolset) => toolset,
        Err(code) => return code,
    };
    let report = toolset.load_report();
    if report.cache_dir.is_none() {
        eprintln!(
            "error: the compiled-component cache is off (engine.cache: false in {}): there is \
             nothing to fill",
            shown_path(path)
        );
        return ExitCode::from(super::EXIT_BAD_INPUT);
    }
    let _ = std::io::stdout().write_all(cache_lines(report).as_bytes());
    let unstored = (report.components.iter())
        .filter(|component| {
            matches!(
                component.cache,
                crate::components::CacheOutcome::NotStored(_)
            )
        })
        .count();
    match unstored {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

pub fn check(path: &Path) -> ExitCode {
    let toolset = match super::load(path, true) {
        Ok(toolset) => toolset,
        Err(code) => return code,
    };
    // Written in one go so that a closed pipe (`check | head`) is not a panic.
    let mut out = String::new();
    let team = toolset.team();
    push_line!(
        out,
        "{}: OK — {} agent(s), every component compiled",
        shown_path(path),
        team.agents.len()
    );
    let limits = &team.limits;
    push_line!(
        out,
        "host limits: {} running at once (more are queued), {} retained, {} output per task, depth {}",
        limits.max_running,
        limits.max_retained,
        crate::config::units::format_size(limits.max_output),
        limits.max_depth
    );
    let report = toolset.load_report();
    push_line!(out, "instances:   {}", report.allocator);
    out.push_str(&cache_lines(report));
    for agent in team.agents.values() {
        out.push_str(&format!("\n{}\n", printable(&agent.name, Keep::OneLine)));
        if !agent.description.is_empty() {
            push_line!(
                out,
                "  description: {}",
                indented(agent.description.trim_end(), VALUE_INDENT)
            );
        }
        match (&agent.component, &agent.model) {
            _ if agent.harness.is_some() => {
                push_line!(
                    out,
                    "  component:   none — a harness agent (a process on the host)"
                )
            }
            (Some(component), _) => push_line!(out, "  component:   {}", shown_path(component)),
            (None, Some(_)) => push_line!(out, "  component:   the bundled model-backed agent"),
            (None, None) => push_line!(
                out,
                "  component:   none (usable only as a front-end's identity)"
            ),
        }
        if let Some(model) = &agent.model {
            let key = match &model.key_var {
                Some(var) => format!("key from ${var}"),
                None => "no key".to_string(),
            };
            push_line!(
                out,
                "  model:       {} at {} ({}), {key}",
                printable(&model.name(), Keep::OneLine),
                printable(&model.endpoint_host(), Keep::OneLine),
                model.api.describe()
            );
            let mut settings = Vec::new();
            if let Some(value) = model.max_tokens {
                settings.push(format!("max_tokens {value}"));
            }
            if let Some(value) = model.temperature {
                settings.push(format!("temperature {value}"));
            }
            if let Some(value) = model.top_p {
                settings.push(format!("top_p {value}"));
            }
            if let Some(value) = model.parallel_tool_calls {
                settings.push(format!("parallel_tool_calls {value}"));
            }
            if agent.add_date {
                settings.push("add_date".into());
            }
            if agent.max_iterations > 0 {
                settings.push(format!("max_iterations {}", agent.max_iterations));
            }
            if !settings.is_empty() {
                push_line!(out, "  settings:    {}", settings.join(", "));
            }
        }
        if let Some(harness) = &agent.harness {
            for (index, line) in crate::harness::describe(agent, harness).iter().enumerate() {
                let label = if index == 0 { "harness:" } else { "" };
                push_line!(out, "  {label:<12} {}", printable(line, Keep::OneLine));
            }
            for line in crate::harness::program_warnings(agent, harness, team.agents.values()) {
                push_line!(out, "  {:<12} {}", "", printable(&line, Keep::OneLine));
            }
        }
        if agent.retry {
            push_line!(
                out,
                "  retry:       a task whose worker dies runs again on another (on a cluster: \
                 `serve --nats`; elsewhere it has no effect)"
            );
        }
        let mut toolsets = Vec::new();
        if agent.background_agents {
            toolsets.push("background_agents");
        }
        if agent.think {
            toolsets.push("think");
        }
        match agent.todo {
            Some(todo) if todo.shared => toolsets.push("todo (shared)"),
            Some(_) => toolsets.push("todo"),
            None => {}
        }
        if !agent.sub_agents.is_empty() {
            // docker-agent gives every agent with sub_agents this tool.
            toolsets.push("transfer_task");
        }
        for (granted, name) in [
            (agent.filesystem, "filesystem"),
            (agent.shell.is_some(), "shell"),
            (agent.fetch.is_some(), "fetch"),
            (agent.memory.is_some(), "memory"),
            (!agent.mcp.is_empty(), "mcp"),
        ] {
            if granted {
                toolsets.push(name);
            }
        }
        let toolsets = if toolsets.is_empty() {
            "none".to_string()
        } else {
            toolsets.join(", ")
        };
        push_line!(out, "  toolsets:    {toolsets}");
        for (toolset, only) in &agent.tool_filters {
            push_line!(
                out,
                "  {:<12} {toolset} tools: only {}",
                "",
                printable(&only.join(", "), Keep::OneLine)
            );
        }
        for line in confined_toolsets(agent) {
            push_line!(out, "  {:<12} {}", "", printable(&line, Keep::OneLine));
        }
        if !agent.sub_agents.is_empty() {
            let names: Vec<_> = agent
                .sub_agents
                .iter()
                .map(|name| printable(name, Keep::OneLine))
                .collect();
            push_line!(out, "  sub_agents:  {}", names.join(", "));
        }
        if agent.grants.is_empty() {
            push_line!(
                out,
                "  grants:      none — no files, no environment, no network; stdin empty"
            );
        } else {
            for (index, grant) in agent.grants.describe().iter().enumerate() {
                let label = if index == 0 { "grants:" } else { "" };
                push_line!(out, "  {label:<12} {}", printable(grant, Keep::OneLine));
            }
            push_line!(out, "  {:<12} everything else denied; stdin empty", "");
        }
        let limits = match &agent.harness {
            Some(harness) => crate::harness::describe_limits(agent, harness),
            None => Team::describe_limits(&agent.limits),
        };
        push_line!(out, "  limits:      {}", printable(&limits, Keep::OneLine));
        if agent.model.is_some() {
            push_line!(
                out,
                "  model use:   {} tokens, {} calls per task, {} per call",
                agent.limits.tokens,
                agent.limits.model_calls,
                crate::toolset::render::runtime(agent.limits.model_timeout)
            );
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    ExitCode::SUCCESS
}

/// What each toolset reaching past the sandbox is confined to, one line
/// each.
fn confined_toolsets(agent: &crate::config::AgentSpec) -> Vec<String> {
    let mut lines = Vec::new();
    let dirs: Vec<String> = (agent.grants.dirs.iter())
        .map(|dir| {
            let mode = if dir.writable { "rw" } else { "ro" };
            format!("{} ({mode})", dir.guest)
        })
        .collect();
    let dirs = match dirs.is_empty() {
        true => "no directory (grant some with grants.files)".to_string(),
        false => dirs.join(", "),
    };
    if agent.filesystem {
        lines.push(format!("filesystem: {dirs}"));
    }
    if agent.shell.is_some() {
        let probe = crate::toolset::tools::shell::probe().unwrap_or_else(|why| why);
        let mut probe = probe.lines();
        let grants = &agent.grants;
        let network = match (grants.shell_network, crate::sandbox::egress::wanted(grants)) {
            (true, _) => "the host's network".to_string(),
            (false, true) => {
                let hosts: Vec<String> = (grants.http.iter().map(ToString::to_string))
                    .chain(grants.connect.iter().map(|grant| grant.endpoint.clone()))
                    .collect();
                format!(
                    "network only to {}, through the egress gate",
                    hosts.join(", ")
                )
            }
            (false, false) => "no network".to_string(),
        };
        let how = probe.next().unwrap_or_default();
        lines.push(format!("shell: {how}; sees {dirs}; {network}"));
        // Limits this host cannot enforce, each on its own line.
        lines.extend(probe.map(str::to_string));
    }
    if agent.fetch.is_some() {
        let origins: Vec<String> = agent.grants.http.iter().map(ToString::to_string).collect();
        lines.push(match origins.is_empty() {
            true => "fetch: no origin (grant some with grants.http)".to_string(),
            false => format!("fetch: only {}", origins.join(", ")),
        });
    }
    if let Some(memory) = &agent.memory {
        lines.push(format!("memory: {}", shown_path(&memory.path)));
    }
    for toolset in &agent.mcp {
        let tools = match &toolset.tools {
            Some(only) => format!(" (only {})", only.join(", ")),
            None => String::new(),
        };
        lines.push(format!("mcp: {}{tools}", toolset.server.label()));
    }
    lines
}

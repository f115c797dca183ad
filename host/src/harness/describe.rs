//! What `bgagents check` shows of a harness agent: the program it runs
//! and binds, its sandbox, grants and network, its limits, and warnings
//! about program binds other agents may write.

use super::{MAX_FILE_SIZE, MAX_PROCESSES, network, program};
use crate::config::{AgentSpec, HarnessSpec};
use crate::sandbox::process::{self, Network};

/// A harness agent's limits, for `bgagents check` (its fuel and other
/// WebAssembly limits do not apply).
pub fn describe_limits(agent: &AgentSpec, harness: &HarnessSpec) -> String {
    use crate::config::units::{format_duration, format_size};
    format!(
        "timeout {}, output {}, result {}, tokens {}; in the sandbox: memory {} for all its \
         processes, {MAX_PROCESSES} processes, files of at most {}",
        format_duration(agent.limits.timeout),
        format_size(agent.limits.output),
        format_size(agent.limits.result),
        agent.limits.tokens,
        format_size(harness.memory),
        format_size(MAX_FILE_SIZE)
    )
}

/// Warnings for `bgagents check` (also logged) about harness agent
/// `agent`'s program binds: one that lies inside a directory some agent of
/// the team (`agents`) may write lets that agent change the CLI this one
/// runs.
pub fn program_warnings<'a>(
    agent: &AgentSpec,
    harness: &HarnessSpec,
    agents: impl IntoIterator<Item = &'a AgentSpec>,
) -> Vec<String> {
    if agent.grants.unconfined {
        return Vec::new();
    }
    let Ok(program) = program::locate(harness.kind, &harness.command) else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    for other in agents {
        for dir in other.grants.dirs.iter().filter(|dir| dir.writable) {
            let host = dir.host.canonicalize().unwrap_or_else(|_| dir.host.clone());
            for bind in program.binds.iter().filter(|bind| bind.starts_with(&host)) {
                let warning = format!(
                    "WARNING: the program bind {} lies inside {} (agents.{}.grants.files, \
                     read-write): that agent can change the CLI this agent runs; install the \
                     CLI outside every writable grant",
                    bind.display(),
                    dir.host.display(),
                    other.name
                );
                tracing::warn!(agent = %agent.name, "{warning}");
                warnings.push(warning);
            }
        }
    }
    warnings
}

/// What a harness agent may reach, for `bgagents check`: one line each.
pub fn describe(agent: &AgentSpec, harness: &HarnessSpec) -> Vec<String> {
    let grants = &agent.grants;
    let mut lines = Vec::new();
    match program::locate(harness.kind, &harness.command) {
        Ok(program) => {
            lines.push(format!(
                "runs {} ({}) as a process agent",
                program.found.display(),
                harness.kind.name()
            ));
            if !grants.unconfined && !program.binds.is_empty() {
                let binds: Vec<String> = (program.binds.iter())
                    .map(|bind| bind.display().to_string())
                    .collect();
                lines.push(format!("program (read-only): {}", binds.join(", ")));
            }
        }
        Err(why) => lines.push(why),
    }
    if grants.unconfined {
        lines.push(
            "UNCONFINED (grants.unconfined: true): no bubblewrap — it reads and writes \
             whatever the user running bgagents can, reaches every host, and the lines below \
             do not bind it"
                .to_string(),
        );
    } else {
        let sandbox = match process::bubblewrap() {
            Ok(bwrap) => process::describe(bwrap)
                .lines()
                .next()
                .unwrap_or_default()
                .replace("commands run in", "in"),
            Err(why) => format!("cannot be confined here: {why}"),
        };
        lines.push(format!("sandbox: {sandbox}"));
    }
    let dirs: Vec<String> = (grants.dirs.iter())
        .map(|dir| {
            let mode = if dir.writable {
                "read-write"
            } else {
                "read-only"
            };
            format!("{} at {} ({mode})", dir.host.display(), dir.guest)
        })
        .collect();
    lines.push(match dirs.is_empty() {
        true => "files: none granted; it starts in a private /tmp".to_string(),
        false => format!(
            "files: {}; starts in {}",
            dirs.join(", "),
            harness.working_dir
        ),
    });
    let mut names: Vec<&str> = grants.env.iter().map(|(name, _)| name.as_str()).collect();
    names.extend(harness.env.iter().map(|(name, _)| name.as_str()));
    lines.push(match names.is_empty() {
        true => "env: PATH, HOME, TMPDIR, LANG only".to_string(),
        false => format!("env: PATH, HOME, TMPDIR, LANG, {}", names.join(", ")),
    });
    let mut reachable: Vec<String> = grants.http.iter().map(ToString::to_string).collect();
    reachable.extend(grants.connect.iter().map(|grant| grant.endpoint.clone()));
    lines.push(match network(grants) {
        Network::None => "network: none".to_string(),
        Network::Host => "network: the host's whole network".to_string(),
        Network::Gated => format!(
            "network: only {}, through the egress gate (HTTPS_PROXY)",
            reachable.join(", ")
        ),
    });
    lines.push(format!(
        "{}; the CLI works only with that host granted in grants.http and its key in \
         grants.env",
        harness.kind.needs()
    ));
    lines
}

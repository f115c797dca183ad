//! Resolution: the team file as read, checked for settings that contradict
//! each other or exceed a ceiling, with every default filled in.

use super::file::{self, AgentFile, McpFile, TeamFile, ToolsetKind};
use super::grants;
use super::models::{self, ModelBinding, TodoSettings};
use super::toolsets::{
    FetchSettings, McpServerSpec, McpToolsetSpec, MemorySettings, ShellSettings,
};
use super::units::format_size;
use super::{
    AgentLimits, AgentSpec, CacheSetting, EngineSettings, HostLimits, MAX_AGENT_MEMORY,
    MAX_AGENT_MODEL_CALLS, MAX_AGENT_OPEN_FILES, MAX_AGENT_RESULT, MAX_AGENT_TIMEOUT,
    MAX_AGENT_TOKENS, MAX_FUEL_YIELD_INTERVAL, MAX_HOST_OUTPUT, MAX_WARM_INSTANCES,
    MIN_AGENT_OPEN_FILES, Pooling,
};
use std::collections::{BTreeMap, HashSet};
use std::mem::replace;
use std::path::Path;

/// Longest a `fetch` toolset's `timeout:` may be, in seconds.
const MAX_FETCH_TIMEOUT_SECS: u64 = 600;

/// The team's settings, or every problem found in them.
pub(super) fn resolve(
    file: &TeamFile,
    base_dir: &Path,
) -> Result<(HostLimits, EngineSettings, BTreeMap<String, AgentSpec>), Vec<String>> {
    let mut problems = Vec::new();
    let models = models::resolve_models(file, &mut problems);
    let limits = resolve_host_limits(file, &mut problems);
    let engine = resolve_engine(file, &limits, base_dir, &mut problems);
    if file.agents.is_empty() && !file.agents_given {
        problems.push(
            "missing `agents:`; a team file needs an `agents:` map (see examples/team.yaml)".into(),
        );
    } else if file.agents.is_empty() && file.agents_given {
        problems.push("agents: no agents are defined; add at least one under `agents:`".into());
    }
    let mut agents = BTreeMap::new();
    for (name, agent) in &file.agents {
        if let Some(spec) =
            resolve_agent(name, agent, file, &models, &limits, base_dir, &mut problems)
        {
            agents.insert(name.clone(), spec);
        }
    }
    if problems.is_empty() {
        Ok((limits, engine, agents))
    } else {
        Err(problems)
    }
}

fn resolve_engine(
    file: &TeamFile,
    limits: &HostLimits,
    base_dir: &Path,
    problems: &mut Vec<String>,
) -> EngineSettings {
    let given = &file.engine;
    let mut engine = EngineSettings::defaults(limits);
    if let Some(pooling) = given.pooling {
        engine.pooling = match pooling {
            file::PoolingFile::Auto => Pooling::Auto,
            file::PoolingFile::On => Pooling::On,
            file::PoolingFile::Off => Pooling::Off,
        };
    }
    match given.pool_size.map(|count| u32::try_from(count.0)) {
        None => {}
        Some(Ok(size)) if size > 0 => engine.pool_size = size,
        Some(_) => problems.push(format!(
            "engine.pool_size: must be between 1 and {}",
            u32::MAX
        )),
    }
    match given.fuel_yield_interval {
        None => {}
        Some(count) if count.0 == 0 => {
            problems.push("engine.fuel_yield_interval: must be at least 1".into())
        }
        Some(count) if count.0 > MAX_FUEL_YIELD_INTERVAL => problems.push(format!(
            "engine.fuel_yield_interval: {} is above the ceiling of {MAX_FUEL_YIELD_INTERVAL} \
             (past it a CPU-bound guest could outlast its timeout and ignore stop); the \
             default is {}",
            count.0,
            super::DEFAULT_FUEL_YIELD_INTERVAL
        )),
        Some(count) => engine.fuel_yield_interval = count.0,
    }
    match given.warm_instances.map(|count| u32::try_from(count.0)) {
        None => {}
        Some(Ok(count)) if count <= MAX_WARM_INSTANCES => engine.warm_instances = count,
        Some(_) => problems.push(format!(
            "engine.warm_instances: must be between 0 (none) and {MAX_WARM_INSTANCES} per agent; \
             the default is {}",
            super::DEFAULT_WARM_INSTANCES
        )),
    }
    engine.cache = match (given.cache, &given.cache_dir) {
        (Some(false), Some(_)) => {
            problems.push("engine.cache_dir: given, but engine.cache is false".into());
            CacheSetting::Off
        }
        (Some(false), None) => CacheSetting::Off,
        (_, Some(dir)) => CacheSetting::Dir(base_dir.join(dir)),
        (_, None) => CacheSetting::DefaultDir,
    };
    if let Some(size) = given.cache_max {
        engine.cache_max = size.0;
    }
    engine
}

fn resolve_host_limits(file: &TeamFile, problems: &mut Vec<String>) -> HostLimits {
    let defaults = HostLimits::default();
    let given = &file.limits;
    let mut at_least_one = |key: &str, value: Option<usize>, default: usize| match value {
        Some(0) => {
            problems.push(format!("limits.{key}: must be at least 1"));
            default
        }
        Some(value) => value,
        None => default,
    };
    let limits = HostLimits {
        max_running: at_least_one("max_running", given.max_running, defaults.max_running),
        max_retained: at_least_one("max_retained", given.max_retained, defaults.max_retained),
        max_depth: at_least_one("max_depth", given.max_depth, defaults.max_depth),
        max_output: given.max_output.map_or(defaults.max_output, |size| size.0),
    };
    if limits.max_output > MAX_HOST_OUTPUT {
        problems.push(format!(
            "limits.max_output: {} is above the ceiling of {} (output is kept in memory, for \
             every retained task)",
            format_size(limits.max_output),
            format_size(MAX_HOST_OUTPUT)
        ));
        // Agents' outputs are then checked against the ceiling, not reported again.
        return HostLimits {
            max_output: MAX_HOST_OUTPUT,
            ..limits
        };
    }
    limits
}

fn resolve_agent(
    name: &str,
    agent: &AgentFile,
    file: &TeamFile,
    models: &BTreeMap<String, Option<ModelBinding>>,
    host: &HostLimits,
    base_dir: &Path,
    problems: &mut Vec<String>,
) -> Option<AgentSpec> {
    let before = problems.len();
    let at = format!("agents.{}", file::shorten(name));
    if name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c == ',') {
        problems.push(format!(
            "{at}: agent names must be non-empty and contain no spaces or commas"
        ));
    }
    if agent.harness.is_some() {
        harness_conflicts(&at, agent, problems);
    }
    let model = agent
        .model
        .as_ref()
        .and_then(|reference| models::resolve_agent_model(reference, &at, file, models, problems));
    let mut seen = HashSet::new();
    for sub in &agent.sub_agents {
        let shown = file::shorten(sub);
        if !seen.insert(sub) {
            problems.push(format!("{at}.sub_agents: `{shown}` is listed twice"));
            continue;
        }
        match file.agents.get(sub) {
            None => problems.push(format!(
                "{at}.sub_agents: `{shown}` is not defined under `agents:` (defined: {})",
                defined_names(file)
            )),
            Some(target)
                if target.component.is_none()
                    && target.model.is_none()
                    && target.harness.is_none() =>
            {
                problems.push(format!(
                    "{at}.sub_agents: `{shown}` has no `component:` or `model:`, so it could \
                     never run; give agents.{shown} a component or a model"
                ))
            }
            Some(_) => {}
        }
    }
    let mut background_agents = false;
    let mut think = false;
    let mut todo = None;
    let mut filesystem = false;
    let mut shell = None;
    let mut fetch = None;
    let mut memory = None;
    let mut mcp = Vec::new();
    let mut tool_filters = BTreeMap::new();
    for (index, toolset) in agent.toolsets.iter().enumerate() {
        let name = toolset.kind.name();
        let again = match &toolset.kind {
            ToolsetKind::BackgroundAgents => replace(&mut background_agents, true),
            ToolsetKind::Think => replace(&mut think, true),
            ToolsetKind::Todo { shared } => {
                todo.replace(TodoSettings { shared: *shared }).is_some()
            }
            ToolsetKind::Filesystem => replace(&mut filesystem, true),
            ToolsetKind::Shell { env } => shell
                .replace(ShellSettings {
                    env: expand_all(env, &format!("{at}.toolsets[{index}].env"), problems),
                    ..ShellSettings::default()
                })
                .is_some(),
            ToolsetKind::Fetch { timeout } => {
                let mut settings = FetchSettings::default();
                match timeout {
                    Some(0) => problems.push(format!(
                        "{at}.toolsets[{index}].timeout: must be at least 1 (seconds)"
                    )),
                    Some(seconds) if *seconds > MAX_FETCH_TIMEOUT_SECS => problems.push(format!(
                        "{at}.toolsets[{index}].timeout: {seconds} s is more than the \
                         {MAX_FETCH_TIMEOUT_SECS} s a fetch may take"
                    )),
                    Some(seconds) => settings.timeout = std::time::Duration::from_secs(*seconds),
                    None => {}
                }
                fetch.replace(settings).is_some()
            }
            ToolsetKind::Memory { path } => {
                let path = base_dir.join(path);
                if path.is_dir() {
                    problems.push(format!(
                        "{at}.toolsets[{index}].path: {} is a directory; name the store's file, \
                         e.g. memory.db",
                        path.display()
                    ));
                } else if !path.parent().is_some_and(Path::is_dir) {
                    problems.push(format!(
                        "{at}.toolsets[{index}].path: the directory of {} does not exist; \
                         create it or fix the path (relative paths start at the team file's \
                         directory)",
                        path.display()
                    ));
                }
                memory.replace(MemorySettings { path }).is_some()
            }
            ToolsetKind::Mcp(server) => {
                let server = match server {
                    McpFile::Command { command, args, env } => McpServerSpec::Command {
                        command: command.clone(),
                        args: args.clone(),
                        env: expand_all(env, &format!("{at}.toolsets[{index}].env"), problems),
                        cwd: base_dir.to_path_buf(),
                    },
                    McpFile::Remote { url, headers } => McpServerSpec::Remote {
                        url: url.clone(),
                        headers: expand_all(
                            headers,
                            &format!("{at}.toolsets[{index}].remote.headers"),
                            problems,
                        ),
                    },
                    McpFile::Docker { name } => McpServerSpec::Docker { name: name.clone() },
                };
                mcp.push(McpToolsetSpec {
                    server,
                    tools: toolset.tools.clone(),
                });
                false
            }
        };
        if again {
            problems.push(format!("{at}.toolsets: {name} is listed more than once"));
        }
        // docker-agent reads an empty `tools:` as no filter.
        if let Some(tools) = &toolset.tools
            && !tools.is_empty()
            && !matches!(toolset.kind, ToolsetKind::Mcp(_))
        {
            tool_filters.insert(name.to_string(), tools.clone());
        }
    }
    if agent.model.is_none() {
        let model_only = [
            ("think", think),
            ("todo", todo.is_some()),
            ("add_date", agent.add_date),
            ("max_iterations", agent.max_iterations.is_some()),
        ];
        for (key, given) in model_only {
            if given {
                problems.push(format!(
                    "{at}: `{key}` is for model-backed agents, and this agent has no \
                     `model:`; remove it, or give the agent a `model:`"
                ));
            }
        }
    }
    let mut limits = resolve_agent_limits(&at, agent, host, problems);
    let grants = grants::resolve(&agent.grants, &at, base_dir, problems);
    let harness = agent.harness.as_ref().and_then(|harness| {
        let memory = agent.limits.memory.map(|size| size.0);
        let spec = super::harness::resolve(harness, &at, &grants, memory, &expand, problems);
        match (harness.timeout, agent.limits.timeout) {
            (Some(_), Some(_)) => problems.push(format!(
                "{at}.harness.timeout: the task's timeout is also given in limits.timeout; \
                 keep one"
            )),
            (Some(timeout), None) if timeout.0.is_zero() || timeout.0 > MAX_AGENT_TIMEOUT => {
                problems.push(format!(
                    "{at}.harness.timeout: must be longer than zero and at most 24h"
                ))
            }
            (Some(timeout), None) => limits.timeout = timeout.0,
            _ => {}
        }
        spec
    });
    if grants.unconfined && agent.harness.is_none() {
        problems.push(format!(
            "{at}.grants.unconfined: only a harness agent can run unconfined (its CLI is a host \
             process); remove it"
        ));
    }
    (problems.len() == before).then(|| AgentSpec {
        name: name.to_string(),
        description: agent.description.clone(),
        instruction: agent.instruction.clone(),
        sub_agents: agent.sub_agents.clone(),
        background_agents,
        model,
        add_date: agent.add_date,
        max_iterations: agent.max_iterations.unwrap_or(0),
        retry: agent.retry,
        think,
        todo,
        filesystem,
        shell,
        fetch,
        memory,
        mcp,
        tool_filters,
        add_environment_info: agent.add_environment_info,
        component: agent.component.as_ref().map(|path| {
            let path = base_dir.join(path);
            path.canonicalize().unwrap_or(path)
        }),
        harness,
        limits,
        grants,
    })
}

/// What a harness agent cannot also have: it runs a CLI, not a component
/// or a model of the host's, and that CLI dispatches no tasks.
fn harness_conflicts(at: &str, agent: &AgentFile, problems: &mut Vec<String>) {
    if agent.component.is_some() {
        problems.push(format!(
            "{at}: a harness agent runs its CLI, not a component; remove `component:` or \
             `harness:`"
        ));
    }
    if agent.model.is_some() {
        problems.push(format!(
            "{at}: a harness agent has no `model:` (the host makes no model calls for it); \
             name the CLI's model in `harness.model`"
        ));
    }
    if !agent.sub_agents.is_empty() {
        problems.push(format!(
            "{at}.sub_agents: a harness agent cannot dispatch sub-agents (its CLI runs on its \
             own, with its own tools); remove `sub_agents:` or give them to a model-backed \
             agent"
        ));
    }
    if !agent.toolsets.is_empty() {
        problems.push(format!(
            "{at}.toolsets: a harness agent's CLI brings its own tools; remove `toolsets:`"
        ));
    }
}

fn resolve_agent_limits(
    at: &str,
    agent: &AgentFile,
    host: &HostLimits,
    problems: &mut Vec<String>,
) -> AgentLimits {
    let defaults = AgentLimits::default();
    let given = &agent.limits;
    let limits = AgentLimits {
        fuel: given.fuel.map_or(defaults.fuel, |count| count.0),
        memory: given.memory.map_or(defaults.memory, |size| size.0),
        timeout: given.timeout.map_or(defaults.timeout, |time| time.0),
        output: given.output.map_or(host.max_output, |size| size.0),
        spawns: given.spawns.unwrap_or(defaults.spawns),
        concurrent_spawns: given
            .concurrent_spawns
            .unwrap_or(defaults.concurrent_spawns),
        result: given.result.map_or(defaults.result, |size| size.0),
        open_files: given.open_files.unwrap_or(defaults.open_files),
        tokens: given.tokens.map_or(defaults.tokens, |count| count.0),
        model_calls: match given.model_calls {
            Some(count) => u32::try_from(count.0).unwrap_or(u32::MAX),
            None => defaults.model_calls,
        },
        model_timeout: given
            .model_timeout
            .map_or(defaults.model_timeout, |time| time.0),
    };
    if limits.tokens == 0 {
        problems.push(format!("{at}.limits.tokens: must be at least 1"));
    }
    if limits.tokens > MAX_AGENT_TOKENS {
        problems.push(format!(
            "{at}.limits.tokens: {} is above the ceiling of {MAX_AGENT_TOKENS}",
            limits.tokens
        ));
    }
    if limits.model_calls == 0 {
        problems.push(format!("{at}.limits.model_calls: must be at least 1"));
    }
    if limits.model_calls > MAX_AGENT_MODEL_CALLS {
        problems.push(format!(
            "{at}.limits.model_calls: {} is above the ceiling of {MAX_AGENT_MODEL_CALLS}",
            given.model_calls.map_or(0, |count| count.0)
        ));
    }
    if limits.model_timeout.is_zero() {
        problems.push(format!(
            "{at}.limits.model_timeout: must be longer than zero"
        ));
    }
    if limits.model_timeout > MAX_AGENT_TIMEOUT {
        problems.push(format!("{at}.limits.model_timeout: must be at most 24h"));
    }
    if limits.result > MAX_AGENT_RESULT {
        problems.push(format!(
            "{at}.limits.result: {} is above the ceiling of {}",
            format_size(limits.result),
            format_size(MAX_AGENT_RESULT)
        ));
    }
    if !(MIN_AGENT_OPEN_FILES..=MAX_AGENT_OPEN_FILES).contains(&limits.open_files) {
        problems.push(format!(
            "{at}.limits.open_files: {} is outside {MIN_AGENT_OPEN_FILES} to \
             {MAX_AGENT_OPEN_FILES} (a task's own stdio streams and granted directories \
             count too)",
            limits.open_files
        ));
    }
    if limits.fuel == 0 {
        problems.push(format!("{at}.limits.fuel: must be at least 1"));
    }
    if limits.memory < 64 << 10 {
        problems.push(format!(
            "{at}.limits.memory: {} is below one WebAssembly page (64KiB)",
            format_size(limits.memory)
        ));
    }
    if limits.memory > MAX_AGENT_MEMORY {
        problems.push(format!(
            "{at}.limits.memory: {} is above the ceiling of {} (what a 32-bit guest can address)",
            format_size(limits.memory),
            format_size(MAX_AGENT_MEMORY)
        ));
    }
    if limits.timeout.is_zero() {
        problems.push(format!("{at}.limits.timeout: must be longer than zero"));
    }
    if limits.timeout > MAX_AGENT_TIMEOUT {
        problems.push(format!("{at}.limits.timeout: must be at most 24h"));
    }
    if limits.output > host.max_output {
        problems.push(format!(
            "{at}.limits.output: {} is above the host's limits.max_output of {}",
            format_size(limits.output),
            format_size(host.max_output)
        ));
    }
    if limits.concurrent_spawns > limits.spawns {
        problems.push(format!(
            "{at}.limits.concurrent_spawns: {} is above limits.spawns ({})",
            limits.concurrent_spawns, limits.spawns
        ));
    }
    limits
}

/// The agents' names for a message, the first few only: a team of
/// thousands must not make every message thousands of names long.
fn defined_names(file: &TeamFile) -> String {
    const SHOWN: usize = 10;
    let mut names: Vec<String> = file
        .agents
        .keys()
        .take(SHOWN)
        .map(|name| file::shorten(name))
        .collect();
    if file.agents.len() > SHOWN {
        names.push(format!("and {} more", file.agents.len() - SHOWN));
    }
    names.join(", ")
}

/// Component files that are missing, unreadable or not components, found
/// without compiling them: reported next to the team file's other problems
/// so that one run of `check` shows both.
pub(super) fn component_file_problems(file: &TeamFile, base_dir: &Path) -> Vec<String> {
    file.agents
        .iter()
        .filter_map(|(name, agent)| {
            let path = base_dir.join(agent.component.as_ref()?);
            let problem = super::read::check_component_file(&path).err()?;
            Some(format!(
                "agents.{}.component: {problem}",
                file::shorten(name)
            ))
        })
        .collect()
}

/// `values` with docker-agent's references to the host's environment
/// (`$NAME`, `${NAME}`, `${env.NAME}`) replaced by their values, so a team
/// file can name a token instead of holding it. A variable the host does
/// not have is a problem naming it (values are never shown).
fn expand_all(
    values: &BTreeMap<String, String>,
    at: &str,
    problems: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut expanded = Vec::new();
    for (key, value) in values {
        match expand(value, &|name| std::env::var(name).ok()) {
            Ok(value) => expanded.push((key.clone(), value)),
            Err(missing) => problems.push(format!(
                "{at}.{}: refers to ${{{}}}, which is not set on this host; `export {}=…` \
                 before running bgagents",
                file::shorten(key),
                file::shorten(&missing),
                file::shorten(&missing)
            )),
        }
    }
    expanded
}

/// Expands `$NAME`, `${NAME}` and `${env.NAME}` in `value` with `lookup`;
/// `$$` is a `$`. The error is the first name `lookup` does not know.
fn expand(value: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => {
                    let inner = &braced[..end];
                    (inner.strip_prefix("env.").unwrap_or(inner), end + 2)
                }
                None => ("", 0),
            }
        } else if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        } else {
            let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() || !name.chars().all(is_name) {
            // Not a reference: kept as written.
            out.push('$');
            rest = after;
            continue;
        }
        out.push_str(&lookup(name).ok_or_else(|| name.to_string())?);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn environment_references_expand_like_docker_agents() {
        let lookup = |name: &str| (name == "TOKEN").then(|| "s3cret".to_string());
        assert_eq!(
            expand("Bearer ${env.TOKEN}", &lookup).unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(expand("${TOKEN}-$TOKEN", &lookup).unwrap(), "s3cret-s3cret");
        assert_eq!(
            expand("cost: $$5, $ alone, ${", &lookup).unwrap(),
            "cost: $5, $ alone, ${"
        );
        assert_eq!(expand("plain", &lookup).unwrap(), "plain");
        assert_eq!(expand("${MISSING}", &lookup).unwrap_err(), "MISSING");
        assert_eq!(expand("$MISSING/x", &lookup).unwrap_err(), "MISSING");
    }
}

//! Team files and components that are wrong in every way we know of: each
//! mistake is named with its file, key (and line, for syntax and types) and
//! what to write instead; nothing panics and nothing starts.

use bgagents::Team;
use bgagents::config::{AgentLimits, HostLimits};
use bgagents_testkit::{Scratch, plugin, plugin_dir};
use std::path::Path;
use std::time::Duration;

fn problems(yaml: &str) -> Vec<String> {
    Team::parse(yaml, Path::new("team.yaml"), plugin_dir())
        .expect_err("the team file should be refused")
        .to_string()
        .lines()
        .map(str::to_string)
        .collect()
}

fn problem(yaml: &str) -> String {
    let all = problems(yaml);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.into_iter().next().unwrap()
}

#[test]
fn defaults_fill_every_limit() {
    let team = Team::parse(
        "agents:\n  root:\n    component: probe.wasm\n",
        Path::new("team.yaml"),
        plugin_dir(),
    )
    .unwrap();
    assert_eq!(team.limits, HostLimits::default());
    assert_eq!(
        team.limits,
        HostLimits {
            max_running: 20,
            max_retained: 100,
            max_output: 10 << 20,
            max_depth: 10
        }
    );
    assert_eq!(team.engine.pool_size, 100, "the pool matches max_retained");
    assert_eq!(team.engine.fuel_yield_interval, 1_000_000);
    let root = team.agent("root").unwrap();
    assert_eq!(root.limits, AgentLimits::default());
    assert_eq!(root.component.as_deref(), Some(plugin("probe").as_path()));
    assert!(!root.background_agents);
}

#[test]
fn limits_accept_human_units() {
    let team = Team::parse(
        "limits: {max_running: 3, max_output: 1MiB}\n\
         agents:\n  root:\n    component: probe.wasm\n    \
         limits: {fuel: 5_000_000, memory: 32MiB, timeout: 1m30s}\n",
        Path::new("team.yaml"),
        plugin_dir(),
    )
    .unwrap();
    assert_eq!(team.limits.max_running, 3);
    let big = Team::parse(
        "limits: {max_retained: 50000}\nagents:\n  root: {component: probe.wasm}\n",
        Path::new("team.yaml"),
        plugin_dir(),
    )
    .unwrap();
    assert_eq!(big.engine.pool_size, 1000, "the default pool is capped");
    assert_eq!(team.limits.max_output, 1 << 20);
    let limits = &team.agent("root").unwrap().limits;
    assert_eq!(limits.fuel, 5_000_000);
    assert_eq!(limits.memory, 32 << 20);
    assert_eq!(limits.timeout, Duration::from_secs(90));
}

#[test]
fn unknown_keys_name_the_line_and_the_key() {
    assert_eq!(
        problem("agents:\n  root:\n    descripton: typo\n"),
        "team.yaml: line 3: agents.root: unknown field `descripton`, expected one of \
         `description`, `instruction`, `sub_agents`, `toolsets`, `component`, `limits`, \
         `grants`, `model`, `harness`"
    );
    assert!(
        problem("agents: {}\nlimit: {}\n").starts_with("team.yaml: line 2: unknown field `limit`"),
    );
    assert!(
        problem("agents:\n  a:\n    limits:\n      cpu: 5\n")
            .starts_with("team.yaml: line 4: agents.a.limits: unknown field `cpu`"),
    );
}

#[test]
fn wrong_types_name_the_line_and_the_key() {
    assert_eq!(
        problem("agents:\n  root:\n    sub_agents: worker\n"),
        "team.yaml: line 3: agents.root.sub_agents: invalid type: string \"worker\", expected a sequence"
    );
    assert_eq!(
        problem("agents:\n  root:\n    limits: {memory: lots}\n"),
        "team.yaml: line 3: agents.root.limits.memory: `lots` is not a size such as 65536, \
         512KiB, 64MiB or 1GiB"
    );
    assert!(
        problem("agents:\n  root:\n    limits: {timeout: soon}\n").contains("is not a duration")
    );
    assert!(problem("agents:\n  root:\n    limits: {fuel: -5}\n").contains("is negative"));
    assert!(problem("agents: [\n").starts_with("team.yaml: line "));
    assert_eq!(
        problem(""),
        "team.yaml: the team file is empty; it needs an `agents:` map (see examples/team.yaml)"
    );
}

#[test]
fn unsupported_toolsets_and_agent_kinds_are_named() {
    assert_eq!(
        problem("agents:\n  root:\n    toolsets:\n      - type: think\n"),
        "team.yaml: line 4: agents.root.toolsets: toolset type `think` is not supported yet; \
         bgagents provides: background_agents"
    );
    assert!(
        problem("agents:\n  root:\n    toolsets: [{type: teleport}]\n")
            .contains("unknown toolset type `teleport`"),
    );
    assert!(
        problem("agents:\n  root:\n    toolsets: [{type: background_agents, max: 3}]\n")
            .contains("the background_agents toolset takes no options; remove `max`"),
    );
    assert_eq!(
        problem("agents:\n  root:\n    model: openai/gpt-4o\n"),
        "team.yaml: agents.root.model: `model:` agents are not supported yet; bgagents runs \
         WebAssembly components — give the agent `component: path/to/agent.wasm`"
    );
    assert!(
        problem("agents:\n  root:\n    harness: {type: codex}\n")
            .starts_with("team.yaml: agents.root.harness: `harness:` agents are not supported yet"),
    );
    assert!(
        problem("models: {gpt: {provider: openai}}\nagents:\n  root:\n    component: probe.wasm\n")
            .starts_with("team.yaml: models: model-backed agents are not supported yet"),
    );
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let all = problems(
        "limits: {max_running: 0}\n\
         agents:\n  \
           root:\n    component: probe.wasm\n    sub_agents: [ghost, idle, idle]\n    \
             toolsets: [{type: background_agents}]\n  \
           idle:\n    description: no component\n  \
           tight:\n    component: probe.wasm\n    limits: {memory: 1KiB, fuel: 0, timeout: 0s}\n",
    );
    assert_eq!(
        all,
        [
            "team.yaml: limits.max_running: must be at least 1",
            "team.yaml: agents.root.sub_agents: `ghost` is not defined under `agents:` (defined: idle, root, tight)",
            "team.yaml: agents.root.sub_agents: `idle` has no `component:`, so it could never run; give agents.idle a component",
            "team.yaml: agents.root.sub_agents: `idle` is listed twice",
            "team.yaml: agents.tight.limits.fuel: must be at least 1",
            "team.yaml: agents.tight.limits.memory: 1 KiB is below one WebAssembly page (64KiB)",
            "team.yaml: agents.tight.limits.timeout: must be longer than zero",
        ]
    );
}

fn check(team: &Path) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("check")
        .arg(team)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn bad_components_are_each_named_with_what_to_do() {
    let scratch = Scratch::new();
    scratch.write("notes.wasm", "just some text");
    // The smallest valid core module: the magic number and version 1.
    scratch.write("core.wasm", b"\0asm\x01\0\0\0");
    scratch.write("broken.wasm", b"\0asm\x0d\0\x01\0garbage");
    let team = scratch.team(
        "agents:\n  \
           missing: {component: nothing-here.wasm}\n  \
           text: {component: notes.wasm}\n  \
           core: {component: core.wasm}\n  \
           broken: {component: broken.wasm}\n  \
           command: {component: '{plugins}/not-an-agent.wasm'}\n  \
           alien: {component: '{plugins}/alien.wasm'}\n  \
           fine: {component: '{plugins}/probe.wasm'}\n",
    );
    let (code, stdout, stderr) = check(&team);
    assert_eq!(code, 2, "{stdout}{stderr}");
    let line = |agent: &str| {
        stderr
            .lines()
            .find(|line| line.contains(&format!("agents.{agent}.component:")))
            .unwrap_or_else(|| panic!("no problem reported for {agent}:\n{stderr}"))
            .to_string()
    };
    assert!(line("missing").contains("nothing-here.wasm does not exist; build the plugin"));
    assert!(line("text").contains("is not a WebAssembly file"));
    assert!(line("core").contains(
        "is a core WebAssembly module, not a component; build for --target wasm32-wasip2"
    ));
    assert!(line("broken").contains("is not a valid component"));
    assert!(
        line("command").contains("does not fit the `sub-agent` world")
            && line("command").contains("bgagents:agents/agent@0.1.0"),
        "{}",
        line("command")
    );
    assert!(
        line("alien").contains("imports something bgagents does not provide")
            && line("alien").contains("test:alien/thing"),
        "{}",
        line("alien")
    );
    assert!(!stderr.contains("agents.fine"), "{stderr}");
    let problems = stderr
        .lines()
        .filter(|line| !line.starts_with("bgagents: compiling "));
    assert_eq!(problems.count(), 6, "{stderr}");
}

#[test]
fn check_prints_each_agents_sandbox_and_limits() {
    let scratch = Scratch::new();
    let team = scratch.team(
        "agents:\n  \
           root:\n    description: Boss\n    component: '{plugins}/coordinator.wasm'\n    \
             sub_agents: [worker]\n    toolsets: [{type: background_agents}]\n  \
           worker:\n    component: '{plugins}/wordstats.wasm'\n    limits: {memory: 32MiB}\n",
    );
    let (code, stdout, stderr) = check(&team);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("OK — 2 agent(s), every component compiled"),
        "{stdout}"
    );
    assert!(stdout.contains("host limits: 20 running at once (more are queued), 100 retained, 10 MiB output per task, depth 10"), "{stdout}");
    assert!(stdout.contains("root\n  description: Boss\n"), "{stdout}");
    assert!(stdout.contains("  sub_agents:  worker\n"), "{stdout}");
    assert!(
        stdout.contains("  grants:      none — no files, no environment, no network; stdin empty"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  limits:      fuel 100000000000, memory 32 MiB, timeout 10m0s, output 10 MiB, \
             spawns 100 (20 at once)"
        ),
        "{stdout}"
    );
}

#[test]
fn grant_mistakes_are_named() {
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.dir.join("data")).unwrap();
    let yaml = format!(
        "agents:\n  a:\n    component: probe.wasm\n    grants:\n      files:\n        \
         - {{host: {dir}/missing, guest: /m}}\n        - {{host: {dir}/data, guest: data}}\n        \
         - {{host: {dir}/data, guest: /d}}\n        - {{host: {dir}/data, guest: /d}}\n      \
         env: [OK_NAME, 'bad-name', '=x']\n      network:\n        connect: [nohost, 'h:0', 'localhost:80']\n",
        dir = scratch.dir.display()
    );
    let all = problems(&yaml);
    let expected = [
        format!(
            "team.yaml: agents.a.grants.files[0].host: {}/missing is not an existing directory",
            scratch.dir.display()
        ),
        "team.yaml: agents.a.grants.files[1].guest: `data` must be an absolute guest path such as /data".into(),
        "team.yaml: agents.a.grants.files[3].guest: `/d` is granted twice".into(),
        "team.yaml: agents.a.grants.env[1]: `bad-name` is not `NAME` or `NAME=value`".into(),
        "team.yaml: agents.a.grants.env[2]: `=x` is not `NAME` or `NAME=value`".into(),
        "team.yaml: agents.a.grants.network.connect[0]: cannot use `nohost`: write it as host:port".into(),
        "team.yaml: agents.a.grants.network.connect[1]: cannot use `h:0`: write it as host:port".into(),
    ];
    assert_eq!(all.len(), expected.len(), "{all:#?}");
    for (problem, expected) in all.iter().zip(&expected) {
        assert!(
            problem.starts_with(expected.as_str()),
            "{problem}\nexpected: {expected}"
        );
    }
    assert!(
        problem(
            "agents:\n  a:\n    grants: {files: [{host: /tmp, guest: /t, mode: everything}]}\n"
        )
        .contains("unknown variant `everything`, expected `read-only` or `read-write`"),
    );
}

#[test]
fn check_prints_effective_grants_for_review() {
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.dir.join("data")).unwrap();
    let team = scratch.team(
        "agents:\n  \
           reader:\n    component: '{plugins}/probe.wasm'\n    grants:\n      \
             files: [{host: data, guest: /data}, {host: data, guest: /out, mode: read-write}]\n      \
             env: [MODE=fast, BGAGENTS_SURELY_UNSET]\n      \
             network: {connect: ['127.0.0.1:8080'], dns: true}\n",
    );
    let (code, stdout, stderr) = check(&team);
    assert_eq!(code, 0, "{stderr}");
    let data = scratch.dir.join("data").canonicalize().unwrap();
    let data = data.display();
    for line in [
        format!("  grants:      files: {data} at /data (read-only)"),
        format!("               files: {data} at /out (read-write)"),
        "               env: MODE".to_string(),
        "               env: BGAGENTS_SURELY_UNSET (not set on this host, so not passed)"
            .to_string(),
        "               network: TCP to 127.0.0.1:8080 (127.0.0.1:8080)".to_string(),
        "               network: name lookups".to_string(),
        "               everything else denied; stdin empty".to_string(),
    ] {
        assert!(
            stdout.contains(&format!("{line}\n")),
            "missing {line:?} in:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("fast"),
        "values of variables are not printed"
    );
}

//! Team files and components that are wrong in every way we know of: each
//! mistake is named with its file, key (and line, for syntax and types) and
//! what to write instead; nothing panics and nothing starts.

use bgagents::Team;
use bgagents::{AgentLimits, HostLimits};
use bgagents_testkit::{Scratch, plugin, plugin_dir};
use std::path::Path;
use std::time::Duration;

/// The problems refusing team `yaml`, a line each.
pub(crate) fn problems(yaml: &str) -> Vec<String> {
    Team::parse(yaml, Path::new("team.yaml"), plugin_dir())
        .expect_err("the team file should be refused")
        .to_string()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The one problem refusing team `yaml`.
pub(crate) fn problem(yaml: &str) -> String {
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
    assert_eq!(team.engine.warm_instances, 2);
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
         `grants`, `model`, `add_date`, `max_iterations`, `harness`, `add_environment_info`, `retry`"
    );
    assert!(
        problems("agents: {}\nlimit: {}\n")[0]
            .starts_with("team.yaml: line 2: unknown field `limit`"),
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
        problem("agents:\n  root:\n    toolsets:\n      - type: script\n"),
        "team.yaml: line 4: agents.root.toolsets[0]: toolset type `script` is not supported yet — \
         remove it and give the agent the shell toolset (its commands run in an OS sandbox) \
         (bgagents provides: background_agents, think, todo, filesystem, shell, fetch, memory, \
         mcp)"
    );
    assert_eq!(
        problem("agents:\n  root:\n    toolsets:\n      - type: memory\n"),
        "team.yaml: line 4: agents.root.toolsets[0]: the memory toolset needs `path:`, the \
         store's file (relative to the team file), e.g. `path: memory.db`"
    );
    assert!(
        problem("agents:\n  root:\n    toolsets: [{type: teleport}]\n")
            .contains("unknown toolset type `teleport`"),
    );
    assert!(
        problem("agents:\n  root:\n    toolsets: [{type: background_agents, max: 3}]\n")
            .contains("unknown field `max`, expected one of `type`, `tools`"),
    );
    assert!(
        problem("agents:\n  root:\n    harness: {type: pi}\n").starts_with(
            "team.yaml: line 3: agents.root.harness.type: harness type `pi` is not supported; \
             bgagents runs claude-code, codex or opencode"
        ),
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
            "team.yaml: agents.root.sub_agents: `idle` has no `component:` or `model:`, so it could never run; give agents.idle a component or a model",
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
            && line("command").contains("bgagents:agents/agent@0.2.0"),
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
    std::fs::create_dir_all(scratch.dir.join("out")).unwrap();
    let team = scratch.team(
        "agents:\n  \
           reader:\n    component: '{plugins}/probe.wasm'\n    grants:\n      \
             files: [{host: data, guest: /data}, {host: out, guest: /out, mode: read-write}]\n      \
             env: [MODE=fast, BGAGENTS_SURELY_UNSET]\n      \
             network: {connect: ['127.0.0.1:8080'], dns: true}\n",
    );
    let (code, stdout, stderr) = check(&team);
    assert_eq!(code, 0, "{stderr}");
    let data = scratch.dir.join("data").canonicalize().unwrap();
    let data = data.display();
    let out = scratch.dir.join("out").canonicalize().unwrap();
    let out = out.display();
    for line in [
        format!("  grants:      files: {data} at /data (read-only)"),
        format!("               files: {out} at /out (read-write)"),
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

#[test]
fn every_problem_of_every_kind_is_reported_in_one_pass() {
    // A typo'd key, an unsupported toolset, a docker-agent-only key, a bad
    // value and a contradiction, each in a different place: each used to
    // hide the ones after it.
    let all = problems(
        "agents:\n  \
           root:\n    descripton: typo\n    component: probe.wasm\n    \
             toolsets:\n      - type: script\n      - type: background_agents\n    \
             sub_agents: [ghost]\n  \
           writer:\n    component: probe.wasm\n    skills: true\n    \
             limits: {memory: lots, timeout: 0s}\n\
         limits: {max_running: 0}\n",
    );
    assert_eq!(
        all,
        [
            "team.yaml: line 3: agents.root: unknown field `descripton`, expected one of \
             `description`, `instruction`, `sub_agents`, `toolsets`, `component`, `limits`, \
             `grants`, `model`, `add_date`, `max_iterations`, `harness`, `add_environment_info`, `retry`",
            "team.yaml: line 6: agents.root.toolsets[0]: toolset type `script` is not supported \
             yet — remove it and give the agent the shell toolset (its commands run in an OS \
             sandbox) (bgagents provides: background_agents, think, todo, filesystem, shell, \
             fetch, memory, mcp)",
            "team.yaml: line 12: agents.writer.limits.memory: `lots` is not a size such as \
             65536, 512KiB, 64MiB or 1GiB",
            "team.yaml: limits.max_running: must be at least 1",
            "team.yaml: agents.root.sub_agents: `ghost` is not defined under `agents:` \
             (defined: root, writer)",
            "team.yaml: agents.writer.limits.timeout: must be longer than zero",
        ]
    );
}

#[test]
fn a_syntax_error_says_it_is_the_first_and_to_check_again() {
    let only = problem("agents:\n  root: {component: probe.wasm\n  other: [\n");
    assert!(only.starts_with("team.yaml: line "), "{only}");
    assert!(
        !only.contains("at line 3 column"),
        "the line is given once, in front: {only}"
    );
    assert!(
        only.ends_with("(the YAML parser stops at its first error: fix it and run check again)"),
        "{only}"
    );
}

#[test]
fn docker_agent_keys_bgagents_ignores_are_warnings_and_the_file_loads() {
    let team = Team::parse(
        "agents:\n  root:\n    component: probe.wasm\n    welcome_message: hi\n    \
         skills: true\n    toolsets:\n      - type: filesystem\n        ignore_vcs: true\n      \
         - type: mcp\n        command: python3\n        version: astral-sh/uv\n",
        Path::new("team.yaml"),
        plugin_dir(),
    )
    .expect("ignored keys do not refuse the file");
    assert_eq!(
        team.warnings,
        [
            "line 4: agents.root: `welcome_message` (a docker-agent key) is ignored: bgagents \
             shows no welcome message",
            "line 5: agents.root: `skills` (a docker-agent key) is ignored: skills are not loaded",
            "line 8: agents.root.toolsets[0]: `ignore_vcs` (a docker-agent key) is ignored: \
             searches cover every granted file (.gitignore is not read)",
            "line 11: agents.root.toolsets[1]: `version` (a docker-agent key) is ignored: \
             nothing is installed automatically; the command must be on PATH",
        ]
    );
}

#[test]
fn docker_agent_toolsets_bgagents_lacks_get_advice() {
    let all = problems(
        "agents:\n  root:\n    component: probe.wasm\n    toolsets:\n      - type: script\n      \
         - type: api\n      - type: lsp\n",
    );
    let expect = [
        "line 5: agents.root.toolsets[0]: toolset type `script` is not supported yet — remove it \
         and give the agent the shell toolset",
        "line 6: agents.root.toolsets[1]: toolset type `api` is not supported yet — remove it \
         and give the agent the fetch toolset with the origins in `grants.http`",
        "line 7: agents.root.toolsets[2]: toolset type `lsp` is not supported yet — remove it",
    ];
    assert_eq!(all.len(), expect.len(), "{all:#?}");
    for (problem, expect) in all.iter().zip(expect) {
        assert!(
            problem.starts_with(&format!("team.yaml: {expect}")),
            "{problem}\nexpected: {expect}"
        );
    }
}

#[test]
fn check_reports_component_files_with_the_team_files_problems() {
    let scratch = Scratch::new();
    scratch.write("notes.wasm", "just some text");
    let team = scratch.team(
        "agents:\n  \
           root:\n    component: nothing-here.wasm\n    limits: {fuel: 0}\n  \
           text:\n    component: notes.wasm\n    toolsets: [{type: memory}]\n  \
           example:\n    component: target/wasm32-wasip2/release/wordstats.wasm\n  \
           unbuilt:\n    component: ./sub/./nope.wasm\n",
    );
    let (code, stdout, stderr) = check(&team);
    assert_eq!(code, 2, "{stdout}{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 6, "{stderr}");
    assert!(
        lines[0].contains("agents.text.toolsets[0]: the memory toolset needs `path:`"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("agents.root.limits.fuel: must be at least 1"),
        "{stderr}"
    );
    assert!(
        lines[2].contains("agents.example.component:")
            && lines[2].contains("does not exist; build the plugin (run `cargo build-plugins`"),
        "{stderr}"
    );
    assert!(
        lines[3].contains("agents.root.component:")
            && lines[3].contains("nothing-here.wasm does not exist; build the plugin")
            && lines[3]
                .contains("cargo build --release --target wasm32-wasip2` in the plugin's crate"),
        "{stderr}"
    );
    assert!(
        lines[4].contains("agents.text.component:")
            && lines[4].contains("is not a WebAssembly file"),
        "{stderr}"
    );
    // Named as the file it is, without `.` steps.
    let dir = scratch.dir.display();
    assert!(
        lines[5].contains(&format!(
            "agents.unbuilt.component: component file {dir}/sub/nope.wasm does not exist"
        )),
        "{stderr}"
    );
}

#[test]
fn a_component_whose_run_has_the_wrong_signature_is_a_world_mismatch() {
    let scratch = Scratch::new();
    let team = scratch.team("agents:\n  root: {component: '{plugins}/wrong_signature.wasm'}\n");
    for target in [team, plugin("wrong_signature")] {
        let (code, stdout, stderr) = check(&target);
        assert_eq!(code, 2, "{stdout}{stderr}");
        assert!(!stdout.contains("OK"), "{stdout}");
        assert!(
            stderr.contains("does not fit the `sub-agent` world")
                && stderr.contains(
                    "exports `run: func(request: record { task-id: string, agent: string, \
                     instruction: string, task: string, expected-output: option<string>, \
                     sub-agents: list<string> }, extra: u32) -> string`"
                )
                && stderr.contains("run: func(request: request) -> result<string, string>"),
            "{stderr}"
        );
    }
}

/// `check` on `target`, failing the test if it does not end within a
/// generous bound (the hostile inputs below used to hang or exhaust memory).
fn check_bounded(target: &Path) -> (i32, String, String) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .arg("check")
        .arg(target)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match finished.recv_timeout(Duration::from_secs(30)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &id.to_string()])
                .status();
            panic!("check {} did not finish within 30 s", target.display());
        }
    };
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn check_reads_only_regular_files_of_bounded_size() {
    let scratch = Scratch::new();
    mkfifo(&scratch.dir.join("fifo.yaml"));
    mkfifo(&scratch.dir.join("fifo.wasm"));
    std::os::unix::fs::symlink("/dev/zero", scratch.dir.join("zero.yaml")).unwrap();
    let big = std::fs::File::create(scratch.dir.join("big.yaml")).unwrap();
    big.set_len(2 << 20).unwrap();
    // Sparse: takes no disk space, but a reader would have to read it all.
    let huge = std::fs::File::create(scratch.dir.join("huge.wasm")).unwrap();
    huge.set_len(300 << 20).unwrap();
    for (team, expected) in [
        (
            Path::new("/dev/zero"),
            "it is a device, not a regular file".to_string(),
        ),
        (
            &scratch.dir.join("zero.yaml"),
            "it is a device, not a regular file".into(),
        ),
        (
            &scratch.dir.join("fifo.yaml"),
            "it is a FIFO, not a regular file".into(),
        ),
        (
            &scratch.dir.join("big.yaml"),
            "it is 2 MiB — more than the 1 MiB bgagents reads".into(),
        ),
        (
            scratch.dir.as_path(),
            "it is a directory, not a regular file".into(),
        ),
    ] {
        let (code, _, stderr) = check_bounded(team);
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(
            stderr,
            format!(
                "{}: cannot read the team file: {expected}\n",
                team.display()
            ),
        );
    }
    let team = scratch.team(
        "agents:\n  \
           zero: {component: /dev/zero}\n  \
           fifo: {component: fifo.wasm}\n  \
           huge: {component: huge.wasm}\n",
    );
    let (code, _, stderr) = check_bounded(&team);
    assert_eq!(code, 2, "{stderr}");
    for (agent, expected) in [
        (
            "zero",
            "component file /dev/zero is a device, not a regular file",
        ),
        ("fifo", "fifo.wasm is a FIFO, not a regular file"),
        (
            "huge",
            "huge.wasm is 300 MiB — more than the 256 MiB bgagents reads",
        ),
    ] {
        assert!(
            stderr
                .lines()
                .any(|line| line.contains(&format!("agents.{agent}.component:"))
                    && line.contains(expected)),
            "no {expected:?} for {agent} in:\n{stderr}"
        );
    }
}

#[test]
fn error_text_stays_bounded_for_thousands_of_agents() {
    let scratch = Scratch::new();
    let mut yaml = String::from("agents:\n");
    for index in 0..10_000 {
        yaml.push_str(&format!("  agent{index}: {{sub_agents: [missing]}}\n"));
    }
    let team = scratch.team(&yaml);
    let (code, _, stderr) = check_bounded(&team);
    assert_eq!(code, 2, "{}", &stderr[..stderr.len().min(2000)]);
    assert_eq!(stderr.lines().count(), 51, "{stderr}");
    assert!(stderr.len() < 20_000, "{} bytes of errors", stderr.len());
    assert!(
        stderr.contains("`missing` is not defined under `agents:` (defined: agent0, agent1,"),
        "{stderr}"
    );
    assert!(stderr.contains("and 9990 more)"), "{stderr}");
    assert!(
        stderr.ends_with("… and 9950 more problem(s) not listed; fix these and run check again\n"),
        "{stderr}"
    );
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let deep = format!("k: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    for (name, text) in [
        (
            "flow",
            format!("agents: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        ),
        (
            "compact",
            format!(
                "agents:\n  root:\n    sub_agents:\n      {}x\n",
                "- ".repeat(100_000)
            ),
        ),
        // A quote inside a plain scalar opens nothing, so it cannot hide
        // the nesting after it.
        ("quote after a dash", format!("a: b-'c\n{deep}")),
        ("quote after a colon", format!("a: b:\"c\n{deep}")),
        ("quote after a space", format!("a: it 's\n{deep}")),
        ("quote in a flow scalar", format!("a: [x'y]\n{deep}")),
        (
            "quote continuing a plain scalar",
            format!("a: b\n  'c\n{deep}"),
        ),
        (
            "quote in a block scalar",
            format!("a: |\n  'c\n  \"d\n{deep}"),
        ),
        ("quote in a comment", format!("a: b # it's\n{deep}")),
        // Closing brackets inside quotes close nothing.
        (
            "closers in quotes",
            format!("k: [{}x]\n", "']]]', \"]]]\", [".repeat(20_000)),
        ),
        // Nesting repeated on each line stacks up.
        (
            "compact on every line",
            (0..40)
                .map(|level| format!("{}- - a:\n", " ".repeat(level * 6)))
                .collect(),
        ),
    ] {
        let started = std::time::Instant::now();
        let problem = problem(&text);
        assert!(
            problem.contains("maps and lists are nested more than 64 levels deep here"),
            "{name}: {problem}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name}: {:?}",
            started.elapsed()
        );
    }
    // A real file's nesting is well within the bound.
    let deep_enough = "agents:\n  root:\n    component: probe.wasm\n    grants:\n      \
                       network: {connect: [\"127.0.0.1:8080\"]}\n";
    Team::parse(deep_enough, Path::new("team.yaml"), plugin_dir()).unwrap();
    // Brackets and quotes in scalars and comments are not nesting.
    let busy = "agents:\n  root:\n    component: probe.wasm   # it's [[[[\n    \
                description: \"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"\n    \
                instruction: |\n      {{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{\n      \
                'quoted' text\n    \
                grants: {env: ['A=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[']}\n";
    Team::parse(busy, Path::new("team.yaml"), plugin_dir()).unwrap();
}

#[test]
fn unbounded_knobs_have_ceilings() {
    assert_eq!(
        problem(
            "engine: {fuel_yield_interval: 1_000_000_000_000_000}\n\
             agents:\n  root: {component: probe.wasm}\n"
        ),
        "team.yaml: engine.fuel_yield_interval: 1000000000000000 is above the ceiling of \
         1000000000 (past it a CPU-bound guest could outlast its timeout and ignore stop); \
         the default is 1000000"
    );
    assert_eq!(
        problem("engine: {warm_instances: 65}\nagents:\n  root: {component: probe.wasm}\n"),
        "team.yaml: engine.warm_instances: must be between 0 (none) and 64 per agent; the \
         default is 2"
    );
    assert!(
        problem("engine: {fuel_yield_interval: 1e15}\nagents:\n  root: {component: probe.wasm}\n")
            .starts_with("team.yaml: line 1: engine.fuel_yield_interval: invalid type"),
    );
    assert_eq!(
        problem("limits: {max_output: 1000GiB}\nagents:\n  root: {component: probe.wasm}\n"),
        "team.yaml: limits.max_output: 1000 GiB is above the ceiling of 1 GiB (output is kept \
         in memory, for every retained task)"
    );
    let at_the_ceiling = Team::parse(
        "limits: {max_output: 1GiB}\nengine: {fuel_yield_interval: 1_000_000_000}\n\
         agents:\n  root: {component: probe.wasm}\n",
        Path::new("team.yaml"),
        plugin_dir(),
    )
    .unwrap();
    assert_eq!(at_the_ceiling.limits.max_output, 1 << 30);
    assert_eq!(at_the_ceiling.engine.fuel_yield_interval, 1_000_000_000);
}

#[test]
fn names_from_the_file_cannot_rewrite_the_terminal() {
    let all = problems(
        "agents:\n  \"ev\\e[2Kil\\u202E\":\n    component: probe.wasm\n    \"col\\e[1Aour\": 1\n    \
         sub_agents: [\"gh\\u200Bost\"]\n",
    );
    for line in &all {
        assert!(
            !line
                .chars()
                .any(|c| c.is_control() || c == '\u{202E}' || c == '\u{200B}'),
            "{line:?}"
        );
    }
    let text = all.join("\n");
    assert!(text.contains("unknown field `col\\u{1b}[1Aour`"), "{text}");
    assert!(text.contains("`gh\\u{200b}ost` is not defined"), "{text}");
}

#[test]
fn a_read_only_grant_inside_a_read_write_one_is_refused() {
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.dir.join("work/docs")).unwrap();
    std::fs::create_dir_all(scratch.dir.join("other/out")).unwrap();
    let yaml = "agents:\n  root:\n    component: {plugins}/probe.wasm\n    grants:\n      files:\n        \
                - {host: work, guest: /work, mode: read-write}\n        \
                - {host: work/docs, guest: /docs}\n        \
                - {host: work, guest: /again, mode: read-write}\n        \
                - {host: other, guest: /other}\n        \
                - {host: other/out, guest: /out, mode: read-write}\n";
    let file = scratch.team(yaml);
    // A read-write directory inside a read-only one is fine.
    let error = Team::load(&file).expect_err("read-only inside read-write is refused");
    assert_eq!(error.problems.len(), 1, "{:#?}", error.problems);
    let problem = &error.problems[0];
    assert!(
        problem.starts_with("agents.root.grants.files[1]: ")
            && problem.contains("work/docs (read-only) lies inside")
            && problem.contains("(read-write, files[0]), through which it could be changed"),
        "{problem}"
    );
}

#[test]
fn toolset_env_and_headers_expand_host_variables_and_name_missing_ones() {
    let yaml = "agents:\n  root:\n    model: ollama/m\n    toolsets:\n      - type: mcp\n        \
                remote:\n          url: http://127.0.0.1:9/mcp\n          headers:\n            \
                Authorization: Bearer ${env.BGAGENTS_TEST_UNSET_TOKEN}\n      \
                - {type: filesystem, tools: []}\n";
    let all = problems(yaml);
    assert_eq!(
        all,
        [
            "team.yaml: agents.root.toolsets[0].remote.headers.Authorization: refers to \
          ${BGAGENTS_TEST_UNSET_TOKEN}, which is not set on this host; \
          `export BGAGENTS_TEST_UNSET_TOKEN=…` before running bgagents"
        ]
    );
    // PATH is set wherever tests run; an empty `tools:` keeps every tool.
    let team = Team::parse(
        &yaml.replace("${env.BGAGENTS_TEST_UNSET_TOKEN}", "${PATH}"),
        Path::new("team.yaml"),
        plugin_dir(),
    )
    .unwrap();
    let root = &team.agents["root"];
    assert!(root.tool_filters.is_empty(), "{:?}", root.tool_filters);
    let bgagents::McpServerSpec::Remote { headers, .. } = &root.mcp[0].server else {
        panic!("{:?}", root.mcp)
    };
    assert_eq!(
        headers,
        &[(
            "Authorization".to_string(),
            format!("Bearer {}", std::env::var("PATH").unwrap())
        )]
    );
}

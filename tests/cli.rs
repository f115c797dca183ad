//! The `bgagents` binary: `run` prints live activity to stderr and the
//! result to stdout, exits 0/1/2/130 as documented, stops every task on
//! Ctrl-C and at the end; the shipped example team runs.

use bgagents_testkit::{HANG, Scratch};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

const TEAM: &str = r#"
agents:
  root:
    component: '{plugins}/probe.wasm'
    sub_agents: [helper]
    toolsets: [{type: background_agents}]
  helper:
    component: '{plugins}/probe.wasm'
"#;

fn bgagents(args: &[&str]) -> Output {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(args)
        .output()
        .unwrap();
    assert!(started.elapsed() < HANG, "bgagents {args:?} took too long");
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The shipped example team, pointed at the plugins the tests built.
fn example_team(scratch: &Scratch) -> std::path::PathBuf {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/team.yaml"
    ))
    .unwrap()
    .replace("../target/wasm32-wasip2/release/", "{plugins}/");
    scratch.team(&yaml)
}

#[test]
fn the_example_team_runs_sub_agents_and_prints_the_combined_result() {
    let scratch = Scratch::new();
    let team = example_team(&scratch);
    let output = bgagents(&[
        "run",
        team.to_str().unwrap(),
        "wordstats: The cat sat. The cat slept; calculator: 6 * 7, 2^10",
    ]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "## wordstats: The cat sat. The cat slept\n6 words, 4 distinct, 2 sentence(s)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("## calculator: 6 * 7, 2^10\n6 * 7 = 42\n2^10 = 1024"),
        "{stdout}"
    );
    // Sub-agent activity, prefixed with agent and short id, went to stderr.
    for expected in [
        "dispatching 2 part(s) in parallel",
        "] started",
        "] completed",
        "6 * 7 = 42",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        stderr.lines().any(|line| line.starts_with("[calculator ")),
        "{stderr}"
    );
}

#[test]
fn the_example_team_checks_clean() {
    let scratch = Scratch::new();
    let team = example_team(&scratch);
    let output = bgagents(&["check", team.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("OK — 4 agent(s)"));
}

#[test]
fn the_result_alone_goes_to_stdout_and_guest_stdio_to_stderr() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let output = bgagents(&["run", team.to_str().unwrap(), "stdio", "hello", "there"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(text(&output.stdout), "written\n");
    assert!(text(&output.stderr).contains("stdout: hello there\nstderr: hello there\n"));

    let quiet = bgagents(&["run", team.to_str().unwrap(), "--quiet", "stdio", "hi"]);
    assert_eq!(text(&quiet.stdout), "written\n");
    assert_eq!(text(&quiet.stderr), "");
}

#[test]
fn exit_codes_tell_failure_from_bad_input() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let team = team.to_str().unwrap();

    let failed = bgagents(&["run", team, "fail", "nope"]);
    assert_eq!(failed.status.code(), Some(1));
    assert_eq!(text(&failed.stderr).trim_end(), "error: root failed: nope");

    let other_agent = bgagents(&["run", team, "--agent", "helper", "echo", "hi"]);
    assert_eq!(other_agent.status.code(), Some(0));
    assert_eq!(text(&other_agent.stdout), "hi\n");

    let unknown = bgagents(&["run", team, "--agent", "ghost", "echo"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("agent \"ghost\" is not defined in the team"));

    let bad_team = scratch.write("bad.yaml", "agents:\n  root:\n    colour: blue\n");
    let bad = bgagents(&["run", bad_team.to_str().unwrap(), "x"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("line 3: agents.root: unknown field `colour`"));

    let missing = bgagents(&["run", "no/such/team.yaml", "x"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read the team file"));

    let no_task = bgagents(&["run", team]);
    assert_eq!(no_task.status.code(), Some(2));
    assert!(text(&no_task.stderr).contains("TASK"));
}

#[test]
fn help_explains_the_commands_and_exit_codes() {
    let help = text(&bgagents(&["--help"]).stdout);
    for expected in [
        "run",
        "check",
        "Exit codes",
        "bgagents check examples/team.yaml",
    ] {
        assert!(help.contains(expected), "{help}");
    }
    let run_help = text(&bgagents(&["run", "--help"]).stdout);
    for expected in [
        "--agent",
        "--quiet",
        "--expected-output",
        "[default: root, or the component's own name]",
    ] {
        assert!(run_help.contains(expected), "{run_help}");
    }
}

#[test]
fn the_run_ends_when_the_agent_does_even_if_it_left_tasks_running() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    // The root starts a helper that spins forever and returns at once.
    let output = bgagents(&["run", team.to_str().unwrap(), "spawn", "helper", "spin"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("agent_task_"));
    assert!(
        text(&output.stderr).contains("] stopped"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn ctrl_c_stops_every_task_and_exits_130() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let mut child = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args([
            "run",
            team.to_str().unwrap(),
            "spawn-then-wait",
            "helper",
            "spin",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let started = Instant::now();
    while !seen.contains("] started") {
        assert!(
            started.elapsed() < HANG,
            "the helper never started:\n{seen}"
        );
        let mut line = String::new();
        assert_ne!(
            stderr.read_line(&mut line).unwrap(),
            0,
            "stderr closed:\n{seen}"
        );
        seen.push_str(&line);
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(started.elapsed() < HANG, "interrupt took too long");
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("interrupted: stopping every task"), "{rest}");
    assert!(
        rest.contains("] stopped"),
        "the helper was not reported stopped:\n{rest}"
    );
}

#[test]
fn guest_escape_sequences_never_reach_the_terminal_raw() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let output = bgagents(&[
        "run",
        team.to_str().unwrap(),
        "print 1 \u{1b}[2J\u{1b}]52;c;cGFzdGU=\u{7}wiped && fail \u{1b}[31mred",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\u{7}'),
        "{stderr:?}"
    );
    assert!(
        stderr.contains("\u{FFFD}[2J\u{FFFD}]52;c;cGFzdGU=\u{FFFD}wiped\n"),
        "{stderr:?}"
    );
    assert!(
        stderr.contains("error: root failed: \u{FFFD}[31mred"),
        "{stderr:?}"
    );
}

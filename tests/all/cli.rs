//! The `bgagents` binary: `run` prints live activity to stderr and the
//! result to stdout, exits 0/1/2/130 as documented, stops every task on
//! Ctrl-C and at the end; the shipped example team runs.

use crate::text;
use bgagents_testkit::{HANG, Scratch};
use std::path::Path;
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

/// `bgagents` with a compiled-component cache of its own.
fn bgagents_cached_in(cache: &Path, args: &[&str]) -> Output {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(args)
        .env("BGAGENTS_CACHE_DIR", cache)
        .output()
        .unwrap();
    assert!(started.elapsed() < HANG, "bgagents {args:?} took too long");
    output
}

/// `stderr` without the lines saying a component is being compiled (which
/// depends on what the machine's cache holds).
fn without_compile_notices(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|line| !line.starts_with("bgagents: compiling "))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The lines of `stderr` that the host wrote, by the rule that guests can
/// never start a line with these.
fn host_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("bgagents:") || line.starts_with("error:"))
        .collect()
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
    assert_eq!(
        without_compile_notices(&text(&failed.stderr)).trim_end(),
        "error: root failed: nope"
    );

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

    // An address to listen on needs its port, and says how to write one.
    for (address, problem) in [
        ("localhost", "\"localhost\" has no port"),
        ("127.0.0.1:http", "\"127.0.0.1:http\" is not an address"),
    ] {
        let refused = bgagents(&["serve", team, "--http", address]);
        assert_eq!(refused.status.code(), Some(2));
        let stderr = text(&refused.stderr);
        assert!(stderr.contains(problem), "{stderr}");
        assert!(stderr.contains("for example 127.0.0.1:8765"), "{stderr}");
    }
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
fn the_run_says_what_it_stopped_and_shows_a_tasks_output_before_its_status() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    // The helper floods its output until the run stops it, when the root
    // returns; output it wrote up to then comes before its `stopped` line.
    let output = bgagents(&[
        "run",
        team.to_str().unwrap(),
        "spawn helper flood 1000000000 && sleep 300",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("bgagents: stopped 1 task(s) that root left running\n"),
        "{}",
        tail(&stderr)
    );
    let status = stderr
        .lines()
        .position(|line| line.starts_with("bgagents: [helper ") && line.ends_with("] stopped"))
        .unwrap_or_else(|| panic!("no stopped line:\n{}", tail(&stderr)));
    let after: Vec<&str> = stderr.lines().skip(status + 1).collect();
    assert_eq!(
        after,
        ["bgagents: stopped 1 task(s) that root left running"],
        "output after the status line:\n{}",
        tail(&stderr)
    );
}

/// The end of a long text, for a readable failure.
fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(2000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[test]
fn an_output_flood_into_a_file_or_pipe_loses_nothing() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    const LINES: usize = 150_000;
    // One output event per line: far more than the event backlog holds.
    let output = bgagents(&[
        "run",
        team.to_str().unwrap(),
        &format!("dispatch helper print {LINES} line"),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{}", tail(&stderr));
    assert!(!stderr.contains("skipped"), "{}", tail(&stderr));
    let shown = stderr
        .lines()
        .filter(|line| line.starts_with("[helper ") && line.ends_with("] line"))
        .count();
    assert_eq!(shown, LINES, "{}", tail(&stderr));
    let last = stderr
        .lines()
        .rev()
        .find(|line| line.starts_with("[helper "));
    assert!(last.is_some_and(|line| line.ends_with("] line")));
    assert!(stderr.contains("] completed\n"), "{}", tail(&stderr));
}

#[test]
fn hitting_the_output_cap_is_said_once_and_the_cut_line_ends() {
    let scratch = Scratch::new();
    let team = scratch.team(
        r#"
agents:
  root:
    component: '{plugins}/probe.wasm'
    limits: {output: 1500}
"#,
    );
    // 1023 x's and a newline per line: the cap cuts the second line.
    let output = bgagents(&["run", team.to_str().unwrap(), "flood", "8192"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let x = "x".repeat(1023);
    let cut = "x".repeat(1500 - 1024);
    let notice = "] output reached its cap of 1.5 KiB (limits.output in the team file); \
                  the rest is dropped\n";
    let expected_start = format!("{x}\n{cut}\nbgagents: [root ");
    let stderr = without_compile_notices(&stderr);
    assert!(stderr.starts_with(&expected_start), "{stderr}");
    assert!(stderr.ends_with(notice), "{stderr}");
    assert_eq!(stderr.matches("output reached its cap").count(), 1);
}

#[test]
fn compile_fills_the_cache_so_the_first_run_compiles_nothing() {
    let scratch = Scratch::new();
    let cache = scratch.dir.join("cache");
    let team = scratch.team(TEAM);
    let team = team.to_str().unwrap();
    let compiled = bgagents_cached_in(&cache, &["compile", team]);
    assert_eq!(
        compiled.status.code(),
        Some(0),
        "{}",
        text(&compiled.stderr)
    );
    let stdout = text(&compiled.stdout);
    assert!(
        stdout.starts_with(&format!("cache:       {}\n", cache.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("probe.wasm — compiled and cached in "),
        "{stdout}"
    );
    assert!(text(&compiled.stderr).contains("compiling probe.wasm"));
    let again = bgagents_cached_in(&cache, &["compile", team]);
    assert!(text(&again.stdout).contains("probe.wasm — loaded from the cache in "));
    let run = bgagents_cached_in(&cache, &["run", team, "echo", "hi"]);
    assert_eq!(text(&run.stdout), "hi\n");
    assert!(
        !text(&run.stderr).contains("compiling"),
        "{}",
        text(&run.stderr)
    );

    // A lone component, too; with the cache off there is nothing to fill.
    let lone = bgagents_cached_in(
        &cache,
        &[
            "compile",
            bgagents_testkit::plugin("probe").to_str().unwrap(),
        ],
    );
    assert!(
        text(&lone.stdout).contains("probe.wasm — loaded from the cache"),
        "{}",
        text(&lone.stdout)
    );
    let off = scratch.write(
        "off.yaml",
        format!(
            "engine: {{cache: false}}\nagents:\n  root: {{component: '{}'}}\n",
            bgagents_testkit::plugin("probe").display()
        ),
    );
    let refused = bgagents_cached_in(&cache, &["compile", off.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("the compiled-component cache is off (engine.cache: false"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn a_cache_miss_says_what_it_compiles_and_a_hit_says_nothing() {
    let scratch = Scratch::new();
    let cache = scratch.dir.join("cache");
    let team = scratch.team(TEAM);
    let team = team.to_str().unwrap();
    let size = std::fs::metadata(bgagents_testkit::plugin("probe"))
        .unwrap()
        .len();
    let notice = format!(
        "bgagents: compiling probe.wasm ({}, first run only)…\n",
        format_size(size)
    );
    for args in [&["check", team][..], &["run", team, "echo", "hi"][..]] {
        let _ = std::fs::remove_dir_all(&cache);
        let first = bgagents_cached_in(&cache, args);
        assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
        // Once, although two agents share the component.
        assert_eq!(
            text(&first.stderr).matches(&notice).count(),
            1,
            "{args:?}: {}",
            text(&first.stderr)
        );
        let again = bgagents_cached_in(&cache, args);
        assert!(
            !text(&again.stderr).contains("compiling"),
            "{}",
            text(&again.stderr)
        );
    }
    // `--quiet` shows only the result.
    let _ = std::fs::remove_dir_all(&cache);
    let quiet = bgagents_cached_in(&cache, &["run", team, "--quiet", "echo", "hi"]);
    assert_eq!(text(&quiet.stderr), "");
}

fn format_size(bytes: u64) -> String {
    bgagents::format_size(bytes)
}

#[test]
fn on_a_terminal_the_compile_notice_counts_in_place_and_ends_its_line() {
    // `script` (util-linux) runs the command with a terminal for stdio.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` is not installed");
        return;
    }
    let scratch = Scratch::new();
    let cache = scratch.dir.join("cache");
    let team = scratch.team(TEAM);
    let command = format!(
        "{} check {}",
        env!("CARGO_BIN_EXE_bgagents"),
        team.display()
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("BGAGENTS_CACHE_DIR", &cache)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let screen = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{screen}");
    let line = "bgagents: compiling probe.wasm (";
    let start = screen.find(line).unwrap_or_else(|| panic!("{screen:?}"));
    let end = start + screen[start..].find('\n').unwrap();
    let notice = &screen[start..end];
    // Rewritten in place, ending with how long it took.
    assert!(notice.contains("first run only)…\r"), "{notice:?}");
    assert!(notice.trim_end().ends_with(" s"), "{notice:?}");
    assert!(notice.contains(" done in "), "{notice:?}");
}

#[test]
fn ctrl_c_stops_every_task_and_exits_130() {
    let scratch = Scratch::new();
    let team = scratch.team(TEAM);
    let end = crate::interrupt_run(
        &team,
        &["spawn-then-wait", "helper", "spin"],
        std::time::Duration::ZERO,
    );
    assert!(end.took < HANG, "interrupt took too long");
    let (seen, rest) = (&end.before, &end.after);
    assert_eq!(end.status.code(), Some(130), "{seen}{rest}");
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

#[test]
fn check_shows_team_file_text_inert() {
    let scratch = Scratch::new();
    // A name that moves the cursor up and erases; a description that
    // reverses what follows and hides a zero-width space, and fakes a field.
    let team = scratch.team(
        r#"
agents:
  "ev\e[1A\e[2Kil":
    component: '{plugins}/probe.wasm'
    description: "looks fine\u202Eetc\u200B\u2066\n  grants:      none"
"#,
    );
    let output = bgagents(&["check", team.to_str().unwrap()]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    for raw in ['\u{1b}', '\u{202E}', '\u{200B}', '\u{2066}'] {
        assert!(!stdout.contains(raw), "{raw:?} in {stdout:?}");
    }
    assert!(
        stdout.contains("\nev\u{FFFD}[1A\u{FFFD}[2Kil\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  description: looks fine\u{FFFD}etc\u{FFFD}\u{FFFD}\n                 grants:      none\n"),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|line| line.starts_with("  grants:"))
            .count(),
        1,
        "{stdout}"
    );
}

#[test]
fn guest_text_can_neither_hide_nor_pass_for_the_hosts_lines() {
    let scratch = Scratch::new();
    let team = scratch.team(
        r#"
agents:
  root:
    component: '{plugins}/probe.wasm'
    sub_agents: ["he\e[31mlper"]
    toolsets: [{type: background_agents}]
  "he\e[31mlper":
    component: '{plugins}/probe.wasm'
"#,
    );
    let output = bgagents(&[
        "run",
        team.to_str().unwrap(),
        "print 1 bgagents: [helper 00000000] completed \
         && print 1   error: root failed: forged \
         && print 1 a\u{202E}b\u{200B}c\u{2067}d\u{FEFF}e \
         && dispatch he\u{1b}[31mlper print 1 started",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    for raw in ['\u{1b}', '\u{202E}', '\u{200B}', '\u{2067}', '\u{FEFF}'] {
        assert!(!stderr.contains(raw), "{raw:?} in {stderr:?}");
    }
    // The guest's imitations carry its tag; the host's lines are its own.
    assert!(
        stderr.contains("] bgagents: [helper 00000000] completed\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("]   error: root failed: forged\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}e\n"),
        "{stderr}"
    );
    let tag = "[he\u{FFFD}[31mlper ";
    let host = host_lines(&stderr);
    assert_eq!(host.len(), 3, "{host:?}");
    for (line, word) in host.iter().zip(["queued", "started", "completed"]) {
        assert!(line.starts_with(&format!("bgagents: {tag}")), "{line}");
        assert!(line.ends_with(&format!("] {word}")), "{line}");
    }
    // The sub-agent's own "started" is tagged output, not a status line.
    assert!(
        stderr
            .lines()
            .any(|line| line.starts_with(tag) && line.ends_with("] started")),
        "{stderr}"
    );
}

#[test]
fn wit_out_dash_prints_to_stdout() {
    let scratch = Scratch::new();
    let output = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(["wit", "--out", "-"])
        .current_dir(&scratch.dir)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stdout).contains("package bgagents:agents@"));
    assert!(
        !scratch.dir.join("-").exists(),
        "created a directory named -"
    );
}

#[test]
fn help_says_what_each_command_takes_and_paths_print_tidy() {
    for command in ["check", "run"] {
        let help = text(&bgagents(&[command, "--help"]).stdout);
        assert!(help.contains("or a component (.wasm)"), "{command}: {help}");
    }
    let lone = bgagents(&["mcp", "agent.wasm"]);
    assert_eq!(lone.status.code(), Some(2));
    assert!(
        text(&lone.stderr).contains("serves a team, not a lone component"),
        "{}",
        text(&lone.stderr)
    );
    let wit_help = text(&bgagents(&["wit", "--help"]).stdout);
    assert!(wit_help.contains("`-` for stdout"), "{wit_help}");

    let scratch = Scratch::new();
    let team = scratch.team("agents:\n  root:\n    component: ./nope.wasm\n");
    let output = bgagents(&["check", team.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    let expected = format!("{}/nope.wasm does not exist", scratch.dir.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("/./"), "{stderr}");
}

#[test]
fn rust_log_shows_each_tasks_lifecycle_with_its_id_agent_and_parent() {
    let scratch = Scratch::new();
    let team = example_team(&scratch);
    let output = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(["run", team.to_str().unwrap(), "calculator: 6 * 7"])
        .env("RUST_LOG", "bgagents=debug")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let log = |agent: &str, event: &str| {
        stderr.lines().any(|line| {
            line.contains(" DEBUG task{id=agent_task_")
                && line.contains(&format!(" agent={agent}"))
                && line.ends_with(event)
        })
    };
    for event in ["queued", "started"] {
        assert!(log("root", event), "no {event} for root in:\n{stderr}");
        assert!(
            log("calculator", event),
            "no {event} for calculator in:\n{stderr}"
        );
    }
    assert!(
        stderr.lines().any(
            |line| line.contains(" agent=calculator parent=\"agent_task_")
                && line.contains("completed result_bytes=")
        ),
        "the child's lines name its parent:\n{stderr}"
    );
    // Without RUST_LOG the run stays quiet: no log lines at all.
    let quiet = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(["run", team.to_str().unwrap(), "calculator: 6 * 7"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = text(&quiet.stderr);
    assert!(
        !stderr.contains(" DEBUG ") && !stderr.contains(" INFO "),
        "{stderr}"
    );
    // A filter that does not parse is said once, and the run goes on.
    let bad = Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(["run", team.to_str().unwrap(), "calculator: 6 * 7"])
        .env("RUST_LOG", "bgagents=[")
        .output()
        .unwrap();
    let stderr = text(&bad.stderr);
    assert_eq!(bad.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("RUST_LOG=\"bgagents=[\" is not a log filter"),
        "{stderr}"
    );
}

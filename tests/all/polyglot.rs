//! Guests in other languages, through the real host: a Python coordinator
//! (componentize-py) that dispatches Rust and JavaScript workers, and a
//! JavaScript worker (componentize-js) on its own, and the projects
//! `bgagents new --lang python|js` creates. They need the two
//! toolchains, so `cargo test` skips them; CI builds the guests with
//! `bash plugins/polyglot/build.sh` and runs `cargo test --test all -- --ignored polyglot::`.

use crate::{bgagents_in, text};
use bgagents_testkit::{Scratch, plugin};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn polyglot(name: &str) -> PathBuf {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/polyglot")).join(name);
    assert!(
        path.exists(),
        "{} is missing: run bash plugins/polyglot/build.sh",
        path.display()
    );
    path
}

fn bgagents(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(args)
        .output()
        .unwrap()
}

fn team(scratch: &Scratch) -> PathBuf {
    scratch.team(&format!(
        "agents:\n  \
           pyroot:\n    component: {python}\n    sub_agents: [wordstats, calculator, shouter]\n    \
             toolsets: [{{type: background_agents}}]\n    limits: {{timeout: 5m}}\n  \
           pyalone:\n    component: {python}\n    limits: {{timeout: 5m}}\n  \
           wordstats: {{component: {wordstats}}}\n  \
           calculator: {{component: {calculator}}}\n  \
           shouter: {{component: {js}, limits: {{timeout: 5m}}}}\n",
        python = polyglot("coordinator-py.wasm").display(),
        js = polyglot("shouter-js.wasm").display(),
        wordstats = plugin("wordstats").display(),
        calculator = plugin("calculator").display(),
    ))
}

#[test]
#[ignore = "needs the Python and JavaScript guests: bash plugins/polyglot/build.sh"]
fn a_python_coordinator_dispatches_rust_and_javascript_workers() {
    let scratch = Scratch::new();
    let team = team(&scratch);
    let team = team.to_str().unwrap();
    let check = bgagents(&["check", team]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));

    let run = bgagents(&[
        "run",
        team,
        "--agent",
        "pyroot",
        "wordstats: the cat sat; calculator: 6*7; shouter: hello",
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(
        text(&run.stdout),
        "## wordstats: the cat sat\n\
         3 words, 3 distinct, 1 sentence(s); longest: sat; most frequent: cat ×1, sat ×1, the ×1\n\n\
         ## calculator: 6*7\n6*7 = 42\n\n\
         ## shouter: hello\nHELLO!\n"
    );
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("dispatching 3 part(s) in parallel"),
        "{stderr}"
    );
    assert!(stderr.contains("shouting 5 characters"), "{stderr}");

    // A failing worker is reported in the combined result.
    let partial = bgagents(&[
        "run",
        team,
        "--agent",
        "pyroot",
        "calculator: 1/0; shouter: hi",
    ]);
    assert_eq!(
        text(&partial.stdout),
        "## calculator: 1/0\n(failed) cannot evaluate `1/0`: division by zero\n\n## shouter: hi\nHI!\n"
    );

    // The Python guest's own error path.
    let alone = bgagents(&["run", team, "--agent", "pyalone", "a; b"]);
    assert_eq!(alone.status.code(), Some(1));
    assert!(
        text(&alone.stderr)
            .contains("error: pyalone failed: this coordinator has no sub_agents to dispatch"),
        "{}",
        text(&alone.stderr)
    );
}

#[test]
#[ignore = "needs the Python and JavaScript guests: bash plugins/polyglot/build.sh"]
fn a_javascript_worker_runs_alone_and_reports_errors() {
    let js = polyglot("shouter-js.wasm");
    let js = js.to_str().unwrap();
    let run = bgagents(&["run", js, "hi", "there"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "HI THERE!\n");
    assert!(text(&run.stderr).contains("shouting 8 characters"));
    // Rust's trim keeps U+FEFF, JavaScript's drops it: the guest's own err.
    let empty = bgagents(&["run", js, "\u{FEFF}"]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(
        text(&empty.stderr)
            .contains("shouter-js failed: the task is empty: give me something to shout\n"),
        "{}",
        text(&empty.stderr)
    );
    // A thrown Error keeps its name, message and stack.
    let long = "a".repeat(1001);
    let thrown = bgagents(&["run", js, &long]);
    assert_eq!(thrown.status.code(), Some(1));
    let stderr = text(&thrown.stderr);
    assert!(
        stderr.contains("shouter-js failed: RangeError: 1001 characters is too long to shout\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("agent.js:"),
        "the stack names the source: {stderr}"
    );
}

/// Runs `program` with `args` in `dir`, failing the test with its output if
/// it fails.
fn build(dir: &Path, program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// `bgagents new --lang python|js` projects build with the commands they
/// print and run as they are; the toolchains build.sh installed are linked
/// in rather than downloaded again.
#[test]
#[ignore = "needs the Python and JavaScript toolchains: bash plugins/polyglot/build.sh"]
fn python_and_javascript_scaffolds_build_and_run() {
    let scratch = Scratch::new();
    let toolchains = [
        ("python", polyglot("venv"), "venv", &["sh", "build.sh"][..]),
        (
            "js",
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../plugins/polyglot/js/node_modules"
            )),
            "node_modules",
            &["npm", "run", "build"][..],
        ),
    ];
    for (lang, toolchain, link, command) in toolchains {
        let name = format!("hello-{lang}");
        let created = bgagents_in(&["new", &name, "--lang", lang], &scratch.dir);
        assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
        assert!(
            text(&created.stdout).contains(&command.join(" ")),
            "{}",
            text(&created.stdout)
        );
        let project = scratch.dir.join(&name);
        std::os::unix::fs::symlink(&toolchain, project.join(link)).unwrap();
        build(&project, command[0], &command[1..]);

        let run = bgagents_in(&["run", "team.yaml", "hello", "wasm", "world"], &project);
        assert_eq!(run.status.code(), Some(0), "{lang}: {}", text(&run.stderr));
        assert_eq!(
            text(&run.stdout),
            "3 words; reversed: dlrow msaw olleh\n",
            "{lang}"
        );
        assert!(
            text(&run.stderr).contains("working on 16 characters"),
            "{lang}"
        );

        // The guest's own failure reaches the caller as the reason.
        let empty = bgagents_in(&["run", "team.yaml", "1 2 3"], &project);
        assert_eq!(empty.status.code(), Some(1), "{lang}");
        assert!(
            text(&empty.stderr).contains("root failed: give me some text with letters to work on"),
            "{lang}: {}",
            text(&empty.stderr)
        );
    }
}

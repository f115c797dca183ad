//! The plugin author's path: `bgagents wit` hands out the WIT, `bgagents
//! new` scaffolds a project that cargo builds and `bgagents run` runs, a
//! lone component runs without a team file, and a guest built for another
//! WIT version is refused naming both versions.

use bgagents_testkit::{HANG, Scratch, plugin, plugin_dir};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::{bgagents_in, text};

#[test]
fn wit_writes_the_package_guests_build_against() {
    let scratch = Scratch::new();
    let output = bgagents_in(&["wit", "--out", "for-my-plugin"], &scratch.dir);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let written = std::fs::read_to_string(scratch.dir.join("for-my-plugin/bgagents.wit")).unwrap();
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/bgagents.wit"))
            .unwrap();
    assert_eq!(written, source);
    assert!(written.contains("package bgagents:agents@0.2.0;"));
}

#[test]
fn a_scaffolded_plugin_builds_and_runs_right_away() {
    let scratch = Scratch::new();
    let created = bgagents_in(&["new", "hello-agent"], &scratch.dir);
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    assert!(text(&created.stdout).contains("cargo build --release --target wasm32-wasip2"));
    let project = scratch.dir.join("hello-agent");

    // Build it as an author would; share the plugins' target directory so
    // wit-bindgen is not compiled again.
    let started = Instant::now();
    let target = plugin_dir().ancestors().nth(2).unwrap().to_path_buf();
    let build = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build.stderr));
    assert!(
        started.elapsed() < HANG * 5,
        "building the scaffold took too long"
    );
    let component = target.join("wasm32-wasip2/release/hello_agent.wasm");
    assert!(component.exists());

    // Its team file points at target/ inside the project: link the build there.
    std::fs::create_dir_all(project.join("target/wasm32-wasip2/release")).unwrap();
    std::fs::copy(
        &component,
        project.join("target/wasm32-wasip2/release/hello_agent.wasm"),
    )
    .unwrap();
    let run = bgagents_in(&["run", "team.yaml", "hello", "wasm", "world"], &project);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "3 words; reversed: dlrow msaw olleh\n");
    assert!(text(&run.stderr).contains("working on 16 characters"));

    let digits = bgagents_in(&["run", "team.yaml", "1 2 3"], &project);
    assert_eq!(digits.status.code(), Some(1));
    assert!(
        text(&digits.stderr).contains("root failed: give me some text with letters to work on"),
        "{}",
        text(&digits.stderr)
    );

    // The same component alone, without a team file.
    let alone = bgagents_in(&["run", component.to_str().unwrap(), "abc"], &project);
    assert_eq!(text(&alone.stdout), "1 words; reversed: cba\n");
}

#[test]
fn new_refuses_bad_names_and_occupied_directories() {
    let scratch = Scratch::new();
    let bad = bgagents_in(&["new", "Hello World"], &scratch.dir);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("is not a usable plugin name"));
    scratch.write("taken/file", "x");
    let taken = bgagents_in(&["new", "ok", "--dir", "taken"], &scratch.dir);
    assert_eq!(taken.status.code(), Some(2));
    assert!(text(&taken.stderr).contains("already exists and is not empty"));
}

#[test]
fn a_lone_component_runs_with_default_limits_and_no_grants() {
    let scratch = Scratch::new();
    let probe = plugin("probe");
    let env = bgagents_in(&["run", probe.to_str().unwrap(), "env"], &scratch.dir);
    assert_eq!(env.status.code(), Some(0), "{}", text(&env.stderr));
    assert_eq!(text(&env.stdout), "[]\n");
    let escape = bgagents_in(
        &["run", probe.to_str().unwrap(), "read", "/etc/passwd"],
        &scratch.dir,
    );
    assert_eq!(escape.status.code(), Some(1));
    let check = bgagents_in(&["check", probe.to_str().unwrap()], &scratch.dir);
    assert!(
        text(&check.stdout).contains("grants:      none"),
        "{}",
        text(&check.stdout)
    );
}

#[test]
fn a_guest_built_for_another_wit_version_is_refused_naming_both() {
    let scratch = Scratch::new();
    let future = plugin_dir().join("future_agent.wasm");
    let check = bgagents_in(&["check", future.to_str().unwrap()], &scratch.dir);
    assert_eq!(check.status.code(), Some(2));
    let stderr = text(&check.stderr);
    assert!(
        stderr.contains(
            "was built for bgagents:agents@0.3.0, but this host provides bgagents:agents@0.1.0 \
             and @0.2.0; rebuild the plugin against the WIT that `bgagents wit` writes"
        ),
        "{stderr}"
    );
}

#[test]
fn a_panic_shows_its_message_and_the_plugins_own_frames_first() {
    let scratch = Scratch::new();
    let probe = plugin("probe");
    let run = bgagents_in(
        &[
            "run",
            probe.to_str().unwrap(),
            "panic index 7 is out of range",
        ],
        &scratch.dir,
    );
    assert_eq!(run.status.code(), Some(1));
    let stderr = text(&run.stderr);
    let reason = &stderr[stderr.find("guest panicked:").expect(&stderr)..];
    // The CLI indents a reason's further lines; compare them without it.
    let mut lines = reason.lines().map(str::trim_start);
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("guest panicked: index 7 is out of range (at "),
        "{reason}"
    );
    assert_eq!(
        lines.next(),
        Some("wasm backtrace (innermost first):"),
        "{reason}"
    );
    // The plugin's own frames come first (which of its functions show
    // depends on what the optimiser inlined), then the count of the rest.
    let frames: Vec<&str> = lines
        .by_ref()
        .take_while(|line| !line.starts_with("… "))
        .collect();
    assert!(
        !frames.is_empty()
            && frames
                .iter()
                .all(|frame| frame.starts_with("probe.wasm!") && frame.contains("probe::")),
        "the plugin's frames come first: {reason}"
    );
    assert!(
        frames.last() == Some(&"probe.wasm!<probe::Probe as Guest>::run"),
        "the export is the outermost frame shown: {reason}"
    );
    assert!(
        reason.trim_end().ends_with(
            " more frames of the Rust runtime, panic machinery and bindings glue left out"
        ),
        "{reason}"
    );
    // No panic machinery, no hashes, no advice that does nothing in the sandbox.
    for noise in ["std::", "core::", "abort", "::h", "[", "RUST_BACKTRACE"] {
        assert!(!reason.contains(noise), "`{noise}` in {reason}");
    }
}

#[test]
fn limit_failures_name_the_function_and_the_key_to_raise() {
    let scratch = Scratch::new();
    let team = scratch.team(&format!(
        "agents:\n  root:\n    component: {}\n    limits: {{fuel: 2_000_000}}\n",
        plugin("probe").display()
    ));
    let run = bgagents_in(&["run", team.to_str().unwrap(), "spin"], &scratch.dir);
    assert_eq!(run.status.code(), Some(1));
    let stderr = text(&run.stderr);
    assert!(
        stderr.contains("fuel budget of 2000000 exhausted in `probe.wasm!probe::")
            && stderr.contains(&format!(
                "`; raise agents.root.limits.fuel in {}",
                team.display()
            )),
        "{stderr}"
    );
    // A lone component has no team file to raise it in yet.
    let probe = plugin("probe");
    let overflow = bgagents_in(&["run", probe.to_str().unwrap(), "recurse"], &scratch.dir);
    let stderr = text(&overflow.stderr);
    assert!(
        stderr.contains("stack overflow: `probe.wasm!probe::recurse` recursed"),
        "{stderr}"
    );
}

/// The repository's root.
fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The fenced code blocks of `markdown` that follow a line `<!-- KIND: X -->`,
/// as (X, block contents).
fn marked_blocks(markdown: &str, kind: &str) -> Vec<(String, String)> {
    let prefix = format!("<!-- {kind}: ");
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix(prefix.as_str())
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(fence.starts_with("```"), "{label}: no code block follows");
        let mut contents = String::new();
        for line in lines.by_ref().take_while(|line| *line != "```") {
            contents.push_str(line);
            contents.push('\n');
        }
        blocks.push((label.to_string(), contents));
    }
    blocks
}

/// docs/recipes/run.sh runs the guide's recipes with the files under
/// docs/recipes/NAME/; this checks the guide shows those files (and the
/// scaffold templates it quotes) verbatim, so what runs is what is read.
#[test]
fn the_guides_code_blocks_are_the_files_that_run() {
    let guide = std::fs::read_to_string(repo().join("docs/plugins.md")).unwrap();
    let files = marked_blocks(&guide, "file");
    assert!(files.len() >= 10, "{} file blocks", files.len());
    for (path, block) in &files {
        let file = std::fs::read_to_string(repo().join(path))
            .unwrap_or_else(|error| panic!("docs/plugins.md quotes {path}: {error}"));
        assert_eq!(
            block, &file,
            "docs/plugins.md's copy of {path} differs from the file"
        );
    }
    let recipes: Vec<String> = marked_blocks(&guide, "recipe")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    for name in [
        "rust-scaffold",
        "rust-guest",
        "python-scaffold",
        "python-coordinator",
        "js-scaffold",
    ] {
        assert!(recipes.iter().any(|recipe| recipe == name), "{name}");
    }
    // Every file a recipe runs with is one the guide shows.
    for entry in std::fs::read_dir(repo().join("docs/recipes")).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        assert!(recipes.contains(&name), "docs/recipes/{name} has no recipe");
        let mut pending = vec![dir];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let relative = path.strip_prefix(repo()).unwrap().to_str().unwrap();
                let relative = relative.trim_start_matches("./");
                assert!(
                    files.iter().any(|(shown, _)| shown == relative),
                    "docs/plugins.md does not show {relative}"
                );
            }
        }
    }
}

#[test]
fn the_guest_crate_carries_the_hosts_wit() {
    let crate_wit =
        std::fs::read_to_string(repo().join("plugins/bgagents-guest/wit/bgagents.wit")).unwrap();
    let wit = std::fs::read_to_string(repo().join("wit/bgagents.wit")).unwrap();
    assert_eq!(
        crate_wit, wit,
        "copy wit/bgagents.wit into plugins/bgagents-guest/wit/"
    );
}

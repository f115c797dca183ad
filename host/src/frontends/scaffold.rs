//! `bgagents new NAME`: a plugin project that builds with
//! `cargo build --release --target wasm32-wasip2` and runs with
//! `bgagents run` right away. It carries its own copy of the WIT, so it
//! builds anywhere crates.io is reachable.

use crate::bindings::WIT;
use std::path::{Path, PathBuf};

/// Writes the WIT package into `dir` as `bgagents.wit`; returns the file.
pub fn write_wit(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = dir.join("bgagents.wit");
    std::fs::write(&file, WIT).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(file)
}

/// Creates the project `name` in `dir`; returns the files written.
pub fn new_plugin(name: &str, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(format!(
            "`{name}` is not a usable plugin name: start with a lowercase letter and use \
             lowercase letters, digits, - and _"
        ));
    }
    if dir.exists()
        && dir
            .read_dir()
            .map_or(true, |mut entries| entries.next().is_some())
    {
        return Err(format!(
            "{} already exists and is not empty; choose another name or --dir",
            dir.display()
        ));
    }
    // Cargo names the component after the library, with - turned into _.
    let artifact = name.replace('-', "_");
    let files = [
        ("Cargo.toml", CARGO_TOML.replace("{name}", name)),
        ("src/lib.rs", LIB_RS.to_string()),
        (
            "team.yaml",
            TEAM_YAML
                .replace("{name}", name)
                .replace("{artifact}", &artifact),
        ),
        (
            "README.md",
            README
                .replace("{name}", name)
                .replace("{artifact}", &artifact),
        ),
        (".gitignore", "target/\n".to_string()),
    ];
    let mut written = vec![write_wit(&dir.join("wit"))?];
    for (relative, contents) in files {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = "0.61"

# A plugin is its own workspace, even when created inside another one.
[workspace]
"#;

const LIB_RS: &str = r#"//! A bgagents sub-agent. Build it with
//! `cargo build --release --target wasm32-wasip2`, then run it with
//! `bgagents run team.yaml "some task"`.

wit_bindgen::generate!({ path: "wit", world: "sub-agent" });

use bgagents::agents::output;
use exports::bgagents::agents::agent::{Guest, Request};

struct Agent;

impl Guest for Agent {
    /// `Ok` becomes the task's result, `Err` its failure reason.
    fn run(request: Request) -> Result<String, String> {
        let task = request.task.trim();
        if task.is_empty() {
            return Err("give me some text to work on".into());
        }
        // Live output: what `view` shows while the task runs.
        output::write(&format!("working on {} characters\n", task.len()));
        let words = task.split_whitespace().count();
        Ok(format!("{words} words; reversed: {}", task.chars().rev().collect::<String>()))
    }
}

export!(Agent);
"#;

const TEAM_YAML: &str = r#"# Run with: bgagents run team.yaml "some task"
agents:
  root:
    description: Describe what {name} does
    component: target/wasm32-wasip2/release/{artifact}.wasm
    limits:
      timeout: 30s
"#;

const README: &str = r#"# {name}

A bgagents sub-agent: a WebAssembly component built against the WIT in
`wit/`.

    rustup target add wasm32-wasip2
    cargo build --release --target wasm32-wasip2
    bgagents run team.yaml "some task"

The component is `target/wasm32-wasip2/release/{artifact}.wasm`; try it
without a team file with `bgagents run target/wasm32-wasip2/release/{artifact}.wasm "some task"`,
and review its limits with `bgagents check team.yaml`.
"#;

//! Every integration test, in one binary: wasmtime is linked once instead of
//! once per file. Each module drives the library or the real `bgagents`
//! binary with components that `tests/support` builds from `plugins/`.
//!
//! Run one area with a filter: `cargo test --test all mcp::`. Ignored tests:
//! `cargo test --test all -- --ignored polyglot::` (needs the guests that
//! `bash plugins/polyglot/build.sh` builds) and
//! `BGAGENTS_SOAK_TASKS=300 cargo test --test all -- --ignored sandbox::soak`.

mod cli;
mod config;
mod engine;
mod fuzz;
mod limits;
mod mcp;
mod plugins;
mod polyglot;
mod sandbox;
mod toolset;

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `bgagents` binary with `args` in `dir` and collects its output.
fn bgagents_in(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bgagents"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Output bytes as text (invalid UTF-8 shown as U+FFFD).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

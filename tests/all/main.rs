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

//! Front-ends: thin adapters that reach the toolset's operations — the
//! `bgagents` command line, MCP, and the `serve` daemon (guests reach them
//! through `wit`).

pub mod cli;
pub mod http;
pub mod mcp;
pub mod scaffold;
pub mod serve;

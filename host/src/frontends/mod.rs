//! Front-ends: thin adapters that reach the toolset's operations — the
//! `bgagents` command line, MCP, the `serve` daemon, and MCP over HTTP
//! (guests reach them through `wit`).

pub mod cli;
pub mod http;
pub mod mcp;
pub mod scaffold;
pub mod serve;

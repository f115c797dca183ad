//! Front-ends: thin adapters that reach the toolset's operations — the
//! `bgagents` command line and MCP (guests reach them through `wit`).

pub mod cli;
pub mod mcp;
pub mod scaffold;

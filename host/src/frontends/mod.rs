//! Front-ends: thin adapters that reach the toolset's operations — the WIT
//! imports guests call, the `bgagents` command line, and MCP.

pub mod cli;
pub mod mcp;
pub mod scaffold;
pub mod wit_imports;

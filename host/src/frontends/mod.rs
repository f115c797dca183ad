//! Front-ends: thin adapters that reach the toolset's operations — the WIT
//! imports guests call, and the `bgagents` command line.

pub mod cli;
pub mod wit_imports;

//! bgagents: a background-agents toolset whose sub-agents are untrusted
//! WebAssembly components, each in its own sandbox.
//!
//! Data flows through the modules in this order:
//! [`config`] (the team file) → [`components`] (compile once, check the
//! world) → [`sandbox`] (what one task may touch) → [`tasks`] (task state,
//! scoping, events) → [`toolset`] (run, list, view, stop, wait) →
//! [`frontends`] (WIT imports, CLI).

pub mod bindings;
pub mod components;
pub mod config;
pub mod frontends;
pub mod sandbox;
pub mod tasks;
mod text;
pub mod toolset;

pub use config::Team;
pub use tasks::{Caller, TaskId, TaskInfo, TaskStatus, TaskView};
pub use toolset::{Session, ToolError, Toolset};

//! bgagents: a background-agents toolset whose sub-agents are untrusted
//! WebAssembly components, each in its own sandbox.
//!
//! Data flows through the (private) modules in this order: `config` (the
//! team file) → `components` (compile once, check the world) → `sandbox`
//! (what one task may touch) → `tasks` (task state, scoping, events) → `wit`
//! (the guest boundary: each WIT version's bindings and imports) → `toolset`
//! (run, list, view, stop, wait; the tools agents call; the model) →
//! `frontends` (CLI, MCP). `model` holds the chat shapes and provider
//! clients the toolset's model capability uses; `store` is the persistent
//! task store `tasks` writes to when a host keeps one. The public API is the
//! curated set of re-exports below.

mod clock;
mod cluster;
mod components;
mod config;
mod frontends;
mod harness;
mod model;
mod sandbox;
mod store;
mod tasks;
mod text;
mod toolset;
mod wit;

// The API below is what an application embedding bgagents (and this crate's
// tests, benchmark and binary) needs; everything else stays private.

// The team file, read and resolved.
pub use config::units::format_size;
pub use config::{
    AgentLimits, AgentSpec, ConfigError, ConnectGrant, DirGrant, EngineSettings, FetchSettings,
    Grants, HostLimits, HttpGrant, McpServerSpec, McpToolsetSpec, MemorySettings, ModelApi,
    ModelBinding, ShellSettings, Team, TodoSettings,
};
// Model clients: the host calls an agent's model on its behalf.
pub use model::{
    Completion, FinishReason, Message, ModelClient, ModelError, Role, ToolCall, ToolDefinition,
    Usage,
};
// Loading a team: the engine's allocator, the compiled-component cache.
pub use components::{Allocator, CacheOutcome, LoadProgress};
// Tasks as the toolset reports them, and the events it sends.
pub use tasks::{
    Caller, EventKind, Reach, SessionId, TaskEvent, TaskId, TaskInfo, TaskStatus, TaskView,
    WaitEntry, WaitReport,
};
// The persistent task store a long-lived host keeps its tasks in.
pub use store::{OUTPUT_FLUSH as STORE_OUTPUT_FLUSH, Store, StoreError, TaskRecord, Transition};
// The toolset: run, list, view, stop and wait, with the limits and texts
// every front-end shares.
pub use toolset::{
    ComponentReport, LoadError, LoadReport, MAX_EXPECTED_OUTPUT_BYTES, MAX_TASK_BYTES, Session,
    ToolError, Toolset, WAIT_DEFAULT_TIMEOUT_SECS, WAIT_MAX_IDS, WAIT_MAX_TIMEOUT_SECS,
    WAIT_OUTPUT_CAP, WarmStats, render,
};

// The network gate sandboxed OS processes reach granted hosts through.
pub use sandbox::egress::{
    Gate as EgressGate, Limits as EgressLimits, Traffic as EgressTraffic,
    set_relay_program as set_egress_relay_program,
};

/// The `bgagents` command line (the binary's `main`).
pub use frontends::cli::main as cli_main;

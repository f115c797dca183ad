//! Host-side bindings generated from `wit/` (the `sub-agent` world).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "sub-agent",
    imports: { default: async },
    exports: { default: async },
});

pub use self::bgagents::agents::types;
pub use self::exports::bgagents::agents::agent;

/// The interface a sub-agent must export, as it appears in a component.
pub const AGENT_EXPORT: &str = "bgagents:agents/agent@0.1.0";

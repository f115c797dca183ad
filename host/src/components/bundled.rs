//! The LLM agent bundled with bgagents (`plugins/agent`, docker-agent's
//! loop over the `model` and `tools` imports), built by `host/build.rs`
//! and carried inside the binary.

/// The bundled agent's component (`bgagents:agents@0.2.0`, world `sub-agent`).
pub const BUNDLED_AGENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bgagents_agent.wasm"));

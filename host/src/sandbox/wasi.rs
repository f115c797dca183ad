//! The WASI context of one task. Everything is denied unless granted: no
//! preopened directories, no environment, no arguments beyond the agent's
//! name, no sockets or name lookups, an empty stdin. Clocks and randomness
//! are allowed; stdout and stderr go to the task's output buffer.

use super::output::{OutputBuffer, OutputSink};
use std::sync::Arc;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};

/// Builds the deny-all WASI context whose stdout/stderr feed `output`.
pub fn deny_all_context(agent: &str, output: &Arc<OutputBuffer>) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .arg(agent)
        .stdout(OutputSink(output.clone()))
        .stderr(OutputSink(output.clone()))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    builder.build()
}

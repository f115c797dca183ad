//! Loading one agent's component: read, recognise, compile, and check that it
//! fits the `sub-agent` world, with errors that say what to do about it.

use crate::bindings::{AGENT_EXPORT, SubAgentPre};
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

const WASM_MAGIC: &[u8] = b"\0asm";
/// Version/layer bytes of a core module (`01 00 00 00`) and a component (`0d 00 01 00`).
const CORE_MODULE_VERSION: &[u8] = &[1, 0, 0, 0];

/// Compiles the component at `path` and pre-instantiates it against `linker`.
/// The error is a complete sentence naming the file.
pub fn load_component<T: 'static>(
    engine: &Engine,
    linker: &Linker<T>,
    path: &Path,
) -> Result<SubAgentPre<T>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => format!(
            "component file {shown} does not exist; build the plugin \
             (cargo build --release --target wasm32-wasip2) or fix the `component:` path"
        ),
        _ => format!("cannot read component file {shown}: {error}"),
    })?;
    if !bytes.starts_with(WASM_MAGIC) {
        return Err(format!(
            "{shown} is not a WebAssembly file (it does not start with `\\0asm`); \
             point `component:` at the .wasm your plugin build produces"
        ));
    }
    if bytes.get(4..8) == Some(CORE_MODULE_VERSION) {
        return Err(format!(
            "{shown} is a core WebAssembly module, not a component; build for \
             --target wasm32-wasip2 (which emits a component) or wrap it with \
             `wasm-tools component new`"
        ));
    }
    let component = Component::new(engine, &bytes)
        .map_err(|error| format!("{shown} is not a valid component: {error:#}"))?;
    let pre = linker.instantiate_pre(&component).map_err(|error| {
        format!(
            "{shown} imports something bgagents does not provide ({error:#}); a sub-agent may \
             import WASI 0.2 and the bgagents:agents interfaces in wit/ (output, background-agents)"
        )
    })?;
    SubAgentPre::new(pre).map_err(|error| {
        format!(
            "{shown} does not fit the `sub-agent` world ({error:#}); it must export \
             `{AGENT_EXPORT}` with `run: func(request) -> result<string, string>`, \
             as the wit/ package describes"
        )
    })
}

//! Loading one agent's component: read, recognise, compile, and check that it
//! fits the `sub-agent` world, with errors that say what to do about it.

use super::cache::{CacheOutcome, ComponentCache};
use crate::bindings::{
    AGENT_EXPORT, SubAgentPre, WIT_PACKAGE, WIT_VERSION, wit_version_compatible,
};
use std::path::Path;
use std::time::{Duration, Instant};
use wasmtime::Engine;
use wasmtime::component::Linker;

const WASM_MAGIC: &[u8] = b"\0asm";
/// Version/layer bytes of a core module (`01 00 00 00`) and a component (`0d 00 01 00`).
const CORE_MODULE_VERSION: &[u8] = &[1, 0, 0, 0];

/// What loading is doing, for a front-end to show while it waits.
#[derive(Debug, Clone, Copy)]
pub enum LoadProgress<'a> {
    /// `path` (`bytes` long) is not in the cache and is being compiled, which
    /// can take many seconds for a large component. `cached_after`: the
    /// result will be cached, so the next load is quick.
    Compiling {
        path: &'a Path,
        bytes: u64,
        cached_after: bool,
    },
    /// Compiling `path` ended (successfully or not) after `took`.
    Compiled { path: &'a Path, took: Duration },
}

/// A component ready to instantiate, and how it got so.
pub struct LoadedComponent<T: 'static> {
    pub pre: SubAgentPre<T>,
    pub cache: CacheOutcome,
    /// Reading, compiling or loading from the cache, and linking.
    pub took: Duration,
}

/// Compiles (or loads from `cache`) the component at `path` and
/// pre-instantiates it against `linker`, telling `progress` when it has to
/// compile. The error is a complete sentence naming the file.
pub fn load_component<T: 'static>(
    engine: &Engine,
    linker: &Linker<T>,
    cache: &ComponentCache,
    path: &Path,
    progress: &dyn Fn(LoadProgress),
) -> Result<LoadedComponent<T>, String> {
    let started = Instant::now();
    // `dir/./agent.wasm` is shown as `dir/agent.wasm`.
    let tidy: std::path::PathBuf = path
        .components()
        .filter(|part| *part != std::path::Component::CurDir)
        .collect();
    let shown = tidy.display();
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
    let compiling = !cache.contains(engine, &bytes);
    if compiling {
        progress(LoadProgress::Compiling {
            path,
            bytes: bytes.len() as u64,
            cached_after: cache.dir().is_some(),
        });
    }
    let compile_started = Instant::now();
    let loaded = cache.load(engine, &bytes);
    if compiling {
        progress(LoadProgress::Compiled {
            path,
            took: compile_started.elapsed(),
        });
    }
    let (component, outcome) =
        loaded.map_err(|error| format!("{shown} is not a valid component: {error:#}"))?;
    check_wit_version(engine, &component.component_type(), &shown.to_string())?;
    let pre = linker.instantiate_pre(&component).map_err(|error| {
        format!(
            "{shown} imports something bgagents does not provide ({error:#}); a sub-agent may \
             import WASI 0.2 and the bgagents:agents interfaces in wit/ (output, background-agents)"
        )
    })?;
    let pre = SubAgentPre::new(pre).map_err(|error| {
        format!(
            "{shown} does not fit the `sub-agent` world ({error:#}); it must export \
             `{AGENT_EXPORT}` with `run: func(request) -> result<string, string>`, \
             as the wit/ package describes"
        )
    })?;
    Ok(LoadedComponent {
        pre,
        cache: outcome,
        took: started.elapsed(),
    })
}

/// Refuses a component built against an incompatible version of our WIT
/// package, naming both versions (before linking would give a vaguer error).
fn check_wit_version(
    engine: &Engine,
    component: &wasmtime::component::types::Component,
    shown: &str,
) -> Result<(), String> {
    let imports = component.imports(engine).map(|(name, _)| name);
    let exports = component.exports(engine).map(|(name, _)| name);
    for name in imports.chain(exports) {
        let Some(version) = name
            .strip_prefix(WIT_PACKAGE)
            .and_then(|rest| rest.split_once('@'))
            .map(|(_, version)| version)
        else {
            continue;
        };
        if !wit_version_compatible(version) {
            return Err(format!(
                "{shown} was built for {WIT_PACKAGE}@{version}, but this host provides \
                 {WIT_PACKAGE}@{WIT_VERSION}; rebuild the plugin against the WIT that \
                 `bgagents wit` writes (a host accepts guests of the same 0.minor version)"
            ));
        }
    }
    Ok(())
}

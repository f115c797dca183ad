//! Loading one agent's component: read, recognise and compile it (or load it
//! from the cache), with errors that say what to do about it. Whether it
//! fits the WIT is the `wit` module's check.

use super::cache::{CacheOutcome, ComponentCache, ContentHash};
use crate::config::read::{check_component_file, read_component};
use std::path::Path;
use std::time::{Duration, Instant};
use wasmtime::Engine;
use wasmtime::component::Component;

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

/// A compiled component, and how it got so.
pub struct LoadedComponent {
    pub component: Component,
    /// The file as people should see it (`dir/./a.wasm` as `dir/a.wasm`).
    pub shown: String,
    pub cache: CacheOutcome,
    /// Reading, and compiling or loading from the cache.
    pub took: Duration,
}

/// Compiles (or loads from `cache`) the component at `path`, telling
/// `progress` when it has to compile. The error is a complete sentence
/// naming the file.
pub fn load_component(
    engine: &Engine,
    cache: &ComponentCache,
    path: &Path,
    progress: &dyn Fn(LoadProgress),
) -> Result<LoadedComponent, String> {
    let started = Instant::now();
    let tidy: std::path::PathBuf = path
        .components()
        .filter(|part| *part != std::path::Component::CurDir)
        .collect();
    let shown = tidy.display().to_string();
    // Only a regular file, within a size cap, that looks like a component.
    check_component_file(&tidy)?;
    // Unchanged since it was last loaded from here: nothing to read.
    if let Some(component) = cache.load_unchanged(engine, &tidy) {
        return Ok(LoadedComponent {
            component,
            shown,
            cache: CacheOutcome::Unchanged,
            took: started.elapsed(),
        });
    }
    let before = ComponentCache::observe(&tidy);
    let bytes = read_component(&tidy)?;
    let hash = ContentHash::of(&bytes);
    let loaded = compile(engine, cache, &bytes, &hash, path, shown, progress, started)?;
    if let Some(before) = before {
        cache.remember(&tidy, &before, &hash);
    }
    Ok(loaded)
}

/// Compiles (or loads from `cache`) a component the binary carries, shown
/// to people as `shown`.
pub fn load_embedded(
    engine: &Engine,
    cache: &ComponentCache,
    bytes: &[u8],
    shown: &str,
    progress: &dyn Fn(LoadProgress),
) -> Result<LoadedComponent, String> {
    let path = Path::new(shown);
    compile(
        engine,
        cache,
        bytes,
        &ContentHash::of(bytes),
        path,
        shown.to_string(),
        progress,
        Instant::now(),
    )
}

#[allow(clippy::too_many_arguments)]
fn compile(
    engine: &Engine,
    cache: &ComponentCache,
    bytes: &[u8],
    hash: &ContentHash,
    path: &Path,
    shown: String,
    progress: &dyn Fn(LoadProgress),
    started: Instant,
) -> Result<LoadedComponent, String> {
    let compiling = !cache.contains(engine, hash);
    if compiling {
        progress(LoadProgress::Compiling {
            path,
            bytes: bytes.len() as u64,
            cached_after: cache.dir().is_some(),
        });
    }
    let compile_started = Instant::now();
    let loaded = cache.load(engine, bytes, hash);
    if compiling {
        progress(LoadProgress::Compiled {
            path,
            took: compile_started.elapsed(),
        });
    }
    let (component, cache) =
        loaded.map_err(|error| format!("{shown} is not a valid component: {error:#}"))?;
    Ok(LoadedComponent {
        component,
        shown,
        cache,
        took: started.elapsed(),
    })
}

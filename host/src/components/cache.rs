//! Compiled components cached on disk, so only the first start of a
//! component pays for compilation. An entry is keyed by the component's
//! content hash and the engine's compatibility hash (configuration and
//! version), and carries a checksum of its own: a corrupt, truncated or
//! foreign file is recompiled and replaced, never loaded.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

/// Identifies an entry as ours, and its layout version.
const MAGIC: &[u8; 8] = b"bgagc001";
const CHECKSUM_LEN: usize = 32;

/// Where compiled components go; `None` disables the cache.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
    /// Beyond this many bytes of entries, the least recently used go.
    max_bytes: u64,
}

/// What the cache did for one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    Disabled,
    /// Loaded without compiling.
    Hit,
    /// Compiled and stored for next time.
    Stored,
    /// A bad entry was found, ignored, and replaced; the reason says why.
    Replaced(String),
    /// Compiled, but the entry could not be written; the reason says why.
    NotStored(String),
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            CacheOutcome::Disabled => write!(f, "compiled (cache off)"),
            CacheOutcome::Hit => write!(f, "loaded from the cache"),
            CacheOutcome::Stored => write!(f, "compiled and cached"),
            CacheOutcome::Replaced(why) => {
                write!(f, "compiled; replaced a bad cache entry ({why})")
            }
            CacheOutcome::NotStored(why) => write!(f, "compiled; not cached ({why})"),
        }
    }
}

impl ComponentCache {
    pub fn new(dir: Option<PathBuf>, max_bytes: u64) -> ComponentCache {
        ComponentCache { dir, max_bytes }
    }

    /// `$BGAGENTS_CACHE_DIR`, else `$XDG_CACHE_HOME/bgagents`, else
    /// `~/.cache/bgagents`.
    pub fn default_dir() -> Option<PathBuf> {
        let var = |name| std::env::var_os(name).filter(|value| !value.is_empty());
        var("BGAGENTS_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| var("XDG_CACHE_HOME").map(|dir| PathBuf::from(dir).join("bgagents")))
            .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache/bgagents")))
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether an entry for `wasm` is on disk, so that [`ComponentCache::load`]
    /// will most likely not compile (the entry is verified only then).
    pub fn contains(&self, engine: &Engine, wasm: &[u8]) -> bool {
        self.dir
            .as_ref()
            .is_some_and(|dir| dir.join(entry_name(engine, wasm)).is_file())
    }

    /// The compiled form of `wasm`, from the cache or freshly compiled.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> Result<(Component, CacheOutcome), wasmtime::Error> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, wasm)?, CacheOutcome::Disabled));
        };
        let entry = dir.join(entry_name(engine, wasm));
        let mut replaced = None;
        match std::fs::read(&entry) {
            Ok(bytes) => match deserialize(engine, &bytes) {
                Ok(component) => {
                    mark_used(&entry);
                    return Ok((component, CacheOutcome::Hit));
                }
                Err(why) => replaced = Some(why),
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => replaced = Some(format!("unreadable: {error}")),
        }
        let component = Component::new(engine, wasm)?;
        let stored = store(dir, &entry, &component);
        if stored.is_ok() {
            evict(dir, &entry, self.max_bytes);
        }
        let outcome = match stored {
            Err(why) => CacheOutcome::NotStored(why),
            Ok(()) => match replaced {
                Some(why) => CacheOutcome::Replaced(why),
                None => CacheOutcome::Stored,
            },
        };
        Ok((component, outcome))
    }
}

/// `<blake3 of the wasm>-<engine compatibility hash>.cwasm`.
fn entry_name(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    format!(
        "{}-{:016x}.cwasm",
        blake3::hash(wasm).to_hex(),
        hasher.finish()
    )
}

fn deserialize(engine: &Engine, bytes: &[u8]) -> Result<Component, String> {
    let header = MAGIC.len() + CHECKSUM_LEN;
    if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a bgagents cache entry".into());
    }
    let (checksum, payload) = bytes[MAGIC.len()..].split_at(CHECKSUM_LEN);
    if blake3::hash(payload).as_bytes() != checksum {
        return Err("checksum mismatch (corrupt or truncated)".into());
    }
    if Engine::detect_precompiled(payload) != Some(Precompiled::Component) {
        return Err("not a precompiled component".into());
    }
    // SAFETY: the payload is exactly what `Component::serialize` wrote for
    // this engine configuration (the checksum guards against corruption and
    // truncation), and wasmtime rejects artifacts from an incompatible engine.
    unsafe { Component::deserialize(engine, payload) }.map_err(|error| format!("{error:#}"))
}

/// Writes the entry atomically: a reader sees the old file or the new one.
fn store(dir: &Path, entry: &Path, component: &Component) -> Result<(), String> {
    let payload = component.serialize().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let unique = WRITES.fetch_add(1, Ordering::Relaxed);
    let partial = entry.with_extension(format!("partial-{}-{unique}", std::process::id()));
    let mut bytes = Vec::with_capacity(MAGIC.len() + CHECKSUM_LEN + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(blake3::hash(&payload).as_bytes());
    bytes.extend_from_slice(&payload);
    std::fs::write(&partial, &bytes)
        .and_then(|()| std::fs::rename(&partial, entry))
        .map_err(|error| {
            let _ = std::fs::remove_file(&partial);
            format!("cannot write {}: {error}", entry.display())
        })
}

/// Records a hit, so eviction takes the least recently used entries first.
fn mark_used(entry: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(entry) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the least recently used entries (never `keep`) until the
/// entries take at most `max_bytes`.
fn evict(dir: &Path, keep: &Path, max_bytes: u64) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = read
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let path = entry.path();
            if path.extension()? != "cwasm" {
                return None;
            }
            let meta = entry.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path != keep && std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

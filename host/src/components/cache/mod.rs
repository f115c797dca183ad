//! Compiled components cached on disk, so only the first start of a
//! component pays for compilation. An entry is keyed by the component's
//! content hash and the engine's compatibility hash (configuration and
//! version), and carries a MAC: a corrupt, truncated, foreign or planted
//! file is recompiled and replaced, never loaded.
//!
//! Entries are native code, so the cache is guarded three ways. The
//! directory is created 0700 and used only if this user owns it and no one
//! else can reach it. Each entry is authenticated with a keyed blake3 hash
//! under a 256-bit key held in the directory's `key` file (0600): without
//! the key no one can make an entry that loads. And no agent may be granted
//! a directory that contains or lies inside the cache (checked when the
//! team loads), so no guest can reach the key or the entries.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

/// Identifies an entry as ours, and its layout version.
const MAGIC: &[u8; 8] = b"bgagc002";
const MAC_LEN: usize = 32;
/// The key file, beside the entries.
const KEY_FILE: &str = "key";
const KEY_LEN: usize = 32;

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
    /// `~/.cache/bgagents`. A relative `$XDG_CACHE_HOME` is ignored, as the
    /// XDG base directory specification asks; the result is made absolute
    /// (against the current directory), so that it can be compared with
    /// grants and does not move if the current directory changes.
    pub fn default_dir() -> Option<PathBuf> {
        let var = |name| std::env::var_os(name).filter(|value| !value.is_empty());
        let dir = var("BGAGENTS_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                var("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .filter(|dir| dir.is_absolute())
                    .map(|dir| dir.join("bgagents"))
            })
            .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".cache/bgagents")))?;
        Some(std::path::absolute(&dir).unwrap_or(dir))
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
        let key = match trusted_key(dir) {
            Ok(key) => key,
            Err(why) => {
                let component = Component::new(engine, wasm)?;
                return Ok((component, CacheOutcome::NotStored(why)));
            }
        };
        let name = entry_name(engine, wasm);
        let entry = dir.join(&name);
        let mut replaced = None;
        match std::fs::read(&entry) {
            Ok(bytes) => match deserialize(engine, &key, &name, &bytes) {
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
        let stored = store(&key, &name, &entry, &component);
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

/// The MAC of an entry: keyed blake3 over its name (which names the
/// component and the engine) and its payload, so an entry is valid only
/// under its own name and only if written with this host's key.
fn mac(key: &[u8; KEY_LEN], name: &str, payload: &[u8]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&(name.len() as u64).to_le_bytes());
    hasher.update(name.as_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn deserialize(
    engine: &Engine,
    key: &[u8; KEY_LEN],
    name: &str,
    bytes: &[u8],
) -> Result<Component, String> {
    let header = MAGIC.len() + MAC_LEN;
    if bytes.len() < header || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a bgagents cache entry".into());
    }
    let (tag, payload) = bytes[MAGIC.len()..].split_at(MAC_LEN);
    let tag: [u8; MAC_LEN] = tag.try_into().expect("split at MAC_LEN");
    // `Hash`'s equality is constant-time.
    if mac(key, name, payload) != blake3::Hash::from_bytes(tag) {
        return Err(
            "authentication failed (corrupt, truncated, or not written by this host)".into(),
        );
    }
    if Engine::detect_precompiled(payload) != Some(Precompiled::Component) {
        return Err("not a precompiled component".into());
    }
    // SAFETY: `deserialize` runs native code from the payload, so it must be
    // exactly what `Component::serialize` wrote on this host. The keyed MAC
    // proves that: only holders of the key, which lives 0600 in a 0700
    // directory of this user that no guest can be granted, can make an
    // entry that passes; corruption and truncation fail it too. Wasmtime
    // still rejects artifacts from an incompatible engine configuration.
    unsafe { Component::deserialize(engine, payload) }.map_err(|error| format!("{error:#}"))
}

/// Creates `dir` (0700) if needed, checks that only this user can reach it,
/// and returns the MAC key, creating it on first use.
fn trusted_key(dir: &Path) -> Result<[u8; KEY_LEN], String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let meta = std::fs::symlink_metadata(dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(foreign_owner(dir, meta.uid(), me));
        }
        if meta.mode() & 0o077 != 0 {
            // Ours, but others may have written to it: close it. Entries
            // someone else planted meanwhile fail authentication.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot make {} private (chmod 700): {e}", dir.display()))?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(KEY_FILE);
    match read_key_settled(&path) {
        Ok(key) => Ok(key),
        Err(KeyProblem::Missing) => create_key(&path),
        Err(KeyProblem::WrongLength(len)) => replace_key(&path, len),
        Err(KeyProblem::Other(error)) => Err(format!("cache key {}: {error}", path.display())),
    }
}

/// Why the key file could not be used.
#[derive(Debug)]
enum KeyProblem {
    Missing,
    /// Not `KEY_LEN` bytes long: damaged, safe to replace.
    WrongLength(u64),
    Other(std::io::Error),
}

/// Why a cache directory owned by someone else is not used.
fn foreign_owner(dir: &Path, owner: u32, me: u32) -> String {
    format!(
        "the cache directory {} belongs to user {owner}, not to this user ({me}); \
         choose another with engine.cache_dir or BGAGENTS_CACHE_DIR",
        dir.display()
    )
}

fn read_key(path: &Path) -> Result<[u8; KEY_LEN], KeyProblem> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|error| match error.kind() {
        std::io::ErrorKind::NotFound => KeyProblem::Missing,
        _ => KeyProblem::Other(error),
    })?;
    let meta = file.metadata().map_err(KeyProblem::Other)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        if meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o077 != 0 {
            return Err(KeyProblem::Other(std::io::Error::other(
                "not owned by this user or readable by others; delete it to make a new one",
            )));
        }
    }
    if meta.len() != KEY_LEN as u64 {
        return Err(KeyProblem::WrongLength(meta.len()));
    }
    let mut key = [0; KEY_LEN];
    file.read_exact(&mut key).map_err(KeyProblem::Other)?;
    Ok(key)
}

/// [`read_key`], but a key file of the wrong length is read again a few
/// times over about 100 ms first: an older bgagents created the file and
/// then wrote it, so another process may see it empty for a moment.
fn read_key_settled(path: &Path) -> Result<[u8; KEY_LEN], KeyProblem> {
    let mut attempts = 0;
    loop {
        match read_key(path) {
            Err(KeyProblem::WrongLength(_)) if attempts < 10 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// A file beside `path`, private to this user, holding `key` on disk.
fn write_temp_key(path: &Path, key: &[u8; KEY_LEN]) -> Result<PathBuf, String> {
    use std::io::Write;
    static KEYS: AtomicU64 = AtomicU64::new(0);
    let unique = KEYS.fetch_add(1, Ordering::Relaxed);
    let temp = path.with_extension(format!("new-{}-{unique}", std::process::id()));
    let mut options = std::fs::File::options();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(&temp)
        .and_then(|mut file| file.write_all(key).and_then(|()| file.sync_all()))
        .map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            format!("cannot write the cache key {}: {e}", temp.display())
        })?;
    Ok(temp)
}

fn random_key() -> Result<[u8; KEY_LEN], String> {
    use std::io::Read;
    let mut key = [0; KEY_LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut key))
        .map_err(|e| format!("cannot read /dev/urandom for the cache key: {e}"))?;
    Ok(key)
}

/// Makes a fresh random key (0600) appear whole or not at all, without
/// replacing one another process created meanwhile: it is written to a
/// temporary file and hard-linked into place, which fails if the key exists.
fn create_key(path: &Path) -> Result<[u8; KEY_LEN], String> {
    let key = random_key()?;
    let temp = write_temp_key(path, &key)?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => Ok(key),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            match read_key_settled(path) {
                Ok(key) => Ok(key),
                Err(KeyProblem::WrongLength(len)) => replace_key(path, len),
                Err(KeyProblem::Missing) => Err(format!(
                    "cache key {}: removed while being created; try again",
                    path.display()
                )),
                Err(KeyProblem::Other(error)) => {
                    Err(format!("cache key {}: {error}", path.display()))
                }
            }
        }
        Err(error) => Err(format!(
            "cannot create the cache key {}: {error}",
            path.display()
        )),
    }
}

/// Replaces a damaged key file (`len` bytes, not [`KEY_LEN`]) with a fresh
/// key, atomically. Entries made under the old key, if any, then fail
/// authentication and are recompiled. If another process replaced it too,
/// the last rename wins, and whichever key loses only costs recompiles.
fn replace_key(path: &Path, len: u64) -> Result<[u8; KEY_LEN], String> {
    let key = random_key()?;
    let temp = write_temp_key(path, &key)?;
    std::fs::rename(&temp, path).map_err(|error| {
        let _ = std::fs::remove_file(&temp);
        format!(
            "cannot replace the damaged cache key {} ({len} bytes, not {KEY_LEN}): {error}",
            path.display()
        )
    })?;
    Ok(key)
}

/// Writes the entry atomically: a reader sees the old file or the new one.
fn store(
    key: &[u8; KEY_LEN],
    name: &str,
    entry: &Path,
    component: &Component,
) -> Result<(), String> {
    let payload = component.serialize().map_err(|e| e.to_string())?;
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let unique = WRITES.fetch_add(1, Ordering::Relaxed);
    let partial = entry.with_extension(format!("partial-{}-{unique}", std::process::id()));
    let mut bytes = Vec::with_capacity(MAGIC.len() + MAC_LEN + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(mac(key, name, &payload).as_bytes());
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

/// Refuses grants that contain the cache directory or lie inside it: a
/// guest that could write there could plant native code for the host, and
/// one that could read there could learn the key. One problem per grant,
/// naming both.
pub fn check_grants_avoid_cache<'a>(
    cache_dir: &Path,
    grants: impl IntoIterator<Item = (&'a str, &'a Path)>,
) -> Vec<String> {
    crate::config::grants::check_grants_avoid(
        cache_dir,
        &crate::config::grants::Protected {
            what: "the compiled-component cache",
            why: "a guest could plant native code the host would run",
            fix: "move the cache with engine.cache_dir or BGAGENTS_CACHE_DIR",
        },
        grants,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_name_changes_with_the_engine_configuration() {
        let wasm = b"\0asm\x0d\0\x01\0";
        let name = |epoch: bool| {
            let mut config = wasmtime::Config::new();
            config.epoch_interruption(epoch).consume_fuel(true);
            entry_name(&Engine::new(&config).unwrap(), wasm)
        };
        assert_ne!(name(true), name(false));
        assert_eq!(name(true), name(true));
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("bgagents-cache-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_foreign_owner_message_reads_as_one_sentence() {
        let message = foreign_owner(Path::new("/c"), 0, 1000);
        assert_eq!(
            message,
            "the cache directory /c belongs to user 0, not to this user (1000); choose \
             another with engine.cache_dir or BGAGENTS_CACHE_DIR"
        );
    }

    #[test]
    fn processes_creating_the_key_at_once_all_get_the_same_whole_key() {
        for round in 0..20 {
            let dir = scratch(&format!("race-{round}"));
            let barrier = std::sync::Barrier::new(8);
            let keys: Vec<Result<[u8; KEY_LEN], String>> = std::thread::scope(|scope| {
                let threads: Vec<_> = (0..8)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            trusted_key(&dir)
                        })
                    })
                    .collect();
                threads.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let on_disk = std::fs::read(dir.join(KEY_FILE)).unwrap();
            assert_eq!(on_disk.len(), KEY_LEN);
            for key in keys {
                assert_eq!(key.as_ref().map(|key| &key[..]), Ok(&on_disk[..]));
            }
            let leftovers: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .filter(|name| name != KEY_FILE)
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_key_of_the_wrong_length_is_replaced_not_a_reason_to_stop_caching() {
        for damaged in [&b""[..], b"short", &[7; KEY_LEN + 1]] {
            let dir = scratch("damaged");
            trusted_key(&dir).unwrap();
            let path = dir.join(KEY_FILE);
            std::fs::write(&path, damaged).unwrap();
            let key = trusted_key(&dir).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), key);
            assert_eq!(trusted_key(&dir).unwrap(), key);
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

//! Compiled components cached on disk, so only the first start of a
//! component pays for compilation. An entry is keyed by the component's
//! content hash and the engine's compatibility hash (configuration and
//! version), and is authenticated by a MAC: a corrupt, truncated, foreign
//! or planted file is recompiled and replaced, never loaded.
//!
//! Entries are native code, so the cache is guarded three ways. The
//! directory is created 0700 and used only if this user owns it and no one
//! else can reach it ([`key`]). Each entry is authenticated with a keyed
//! blake3 hash under a 256-bit key held in the directory's `key` file
//! (0600): without the key no one can make an entry that loads. And no
//! agent may be granted a directory that contains or lies inside the cache
//! (checked when the team loads), so no guest can reach the key or the
//! entries.
//!
//! A load that finds everything as it left it reads neither the component
//! nor the entry ([`record`]): the component's path maps to its content
//! hash, and the entry's MAC was checked against the same file before,
//! both vouched for by authenticated records of the files' fingerprints.
//! The entry is then mapped into memory, not read: a cached load of a
//! large guest takes milliseconds. This trusts the file system's change
//! times: a change that leaves a file's size and times as they were (bit
//! rot under a stable inode, a file system that keeps no change time) is
//! not noticed until the file changes again.
//!
//! Layout: `key`; `HASH-ENGINE.cwasm`, the compiled component exactly as
//! wasmtime serialised it; `HASH-ENGINE.mac`, its record (its content MAC,
//! and its mtime the entry's last use, for eviction); `paths/PATHHASH`, a
//! component path's record.

mod key;
mod record;

use key::{Key, trusted_key};
use record::{Fingerprint, Observed, Record, Refused, Use, mac};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

/// The records of component paths, under the cache directory.
const PATHS_DIR: &str = "paths";
/// At most this many path records are kept; the oldest go first.
const MAX_PATH_RECORDS: usize = 4096;
/// The layout of entries and their records, part of each entry's name: a
/// host of another layout never reads them.
const ENTRY_LAYOUT: &str = "bgagents-entry-3";

/// A component as it was just before it was read: see
/// [`ComponentCache::observe`].
pub struct Observation {
    fingerprint: Fingerprint,
    observed: Observed,
}

/// Where compiled components go; `None` disables the cache.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
    /// The directory's key, once read and its directory checked: every
    /// component of a team is loaded with one reading of it.
    key: Arc<OnceLock<Key>>,
    /// Beyond this many bytes of entries, the least recently used go.
    max_bytes: u64,
}

/// What the cache did for one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    Disabled,
    /// Loaded without compiling.
    Hit,
    /// Loaded without compiling, and without reading: the component and
    /// its entry were unchanged since they were last checked, and the
    /// entry was mapped.
    Unchanged,
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
            CacheOutcome::Hit | CacheOutcome::Unchanged => write!(f, "loaded from the cache"),
            CacheOutcome::Stored => write!(f, "compiled and cached"),
            CacheOutcome::Replaced(why) => {
                write!(f, "compiled; replaced a bad cache entry ({why})")
            }
            CacheOutcome::NotStored(why) => write!(f, "compiled; not cached ({why})"),
        }
    }
}

/// A component's content hash, computed once per load.
pub struct ContentHash([u8; 32]);

impl ContentHash {
    pub fn of(wasm: &[u8]) -> ContentHash {
        ContentHash(*blake3::hash(wasm).as_bytes())
    }
}

impl ComponentCache {
    pub fn new(dir: Option<PathBuf>, max_bytes: u64) -> ComponentCache {
        ComponentCache {
            dir,
            key: Arc::default(),
            max_bytes,
        }
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

    /// The key of `dir` (this cache's directory), checking the directory
    /// and reading or making the key the first time. A failure is not
    /// kept: the next load tries again.
    fn key(&self, dir: &Path) -> Result<Key, String> {
        if let Some(key) = self.key.get() {
            return Ok(*key);
        }
        let key = trusted_key(dir)?;
        Ok(*self.key.get_or_init(|| key))
    }

    /// Whether an entry for the component of `hash` is on disk, so that
    /// [`ComponentCache::load`] will most likely not compile (the entry is
    /// verified only then).
    pub fn contains(&self, engine: &Engine, hash: &ContentHash) -> bool {
        (self.dir.as_ref()).is_some_and(|dir| entry_path(dir, &entry_name(engine, hash)).is_file())
    }

    /// The compiled component at `path` if the cache has it and nothing
    /// changed since it was last loaded from there, without reading the
    /// component or the entry; `None`: load it with [`ComponentCache::load`]
    /// (and [`ComponentCache::remember`] the path).
    pub fn load_unchanged(&self, engine: &Engine, path: &Path) -> Option<Component> {
        let dir = self.dir.as_ref()?;
        let key = self.key(dir).ok()?;
        let (_, current, _) = Fingerprint::of_open(path)?;
        let subject = path_subject(path);
        let record = Record::read(&key, &subject, &path_record(dir, &subject))
            .ok()??
            .ok()?;
        if !record.vouches_for(&current) {
            return None;
        }
        let name = entry_name(engine, &ContentHash(record.hash));
        load_entry(engine, &key, dir, &name, Trust::RecordOnly).ok()
    }

    /// What [`ComponentCache::remember`] needs to know of a component
    /// before it is read: its fingerprint, and the moment just before it
    /// was taken.
    pub fn observe(path: &Path) -> Option<Observation> {
        Fingerprint::of_open(path).map(|(_, fingerprint, observed)| Observation {
            fingerprint,
            observed,
        })
    }

    /// Records that the component at `path`, observed as `before` when it
    /// was about to be read, has content `hash`, so that the next load from
    /// there needs no reading. Nothing is recorded if the file changed
    /// since.
    pub fn remember(&self, path: &Path, before: &Observation, hash: &ContentHash) {
        let Some(dir) = &self.dir else { return };
        if Fingerprint::of_open(path).map(|(_, now, _)| now) != Some(before.fingerprint) {
            return;
        }
        let Ok(key) = self.key(dir) else { return };
        let paths = dir.join(PATHS_DIR);
        if let Err(error) = std::fs::create_dir_all(&paths) {
            tracing::debug!(%error, "cannot record component paths in the cache");
            return;
        }
        let subject = path_subject(path);
        let record = Record::new(hash.0, before.fingerprint, before.observed);
        if let Err(error) = record.write(&key, &subject, &path_record(dir, &subject)) {
            tracing::debug!(%error, "cannot record a component path in the cache");
        }
    }

    /// The compiled form of `wasm` (whose content hash is `hash`), from the
    /// cache or freshly compiled.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        hash: &ContentHash,
    ) -> Result<(Component, CacheOutcome), wasmtime::Error> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, wasm)?, CacheOutcome::Disabled));
        };
        let key = match self.key(dir) {
            Ok(key) => key,
            Err(why) => {
                let component = Component::new(engine, wasm)?;
                return Ok((component, CacheOutcome::NotStored(why)));
            }
        };
        let name = entry_name(engine, hash);
        let replaced = match load_entry(engine, &key, dir, &name, Trust::RecordOrContent) {
            Ok(component) => return Ok((component, CacheOutcome::Hit)),
            Err(EntryError::NotThere) => None,
            Err(EntryError::Bad(why)) => Some(why),
        };
        let component = Component::new(engine, wasm)?;
        let stored = store(&key, dir, &name, &component);
        if stored.is_ok() {
            evict(dir, &entry_path(dir, &name), self.max_bytes);
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

/// `<blake3 of the wasm>-<engine compatibility hash>`: the entry's name,
/// without its extension.
fn entry_name(engine: &Engine, hash: &ContentHash) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    ENTRY_LAYOUT.hash(&mut hasher);
    let hex: String = hash.0.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{hex}-{:016x}", hasher.finish())
}

fn entry_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.cwasm"))
}

fn entry_record(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.mac"))
}

/// What a path's record is about: the path's bytes.
fn path_subject(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    absolute.as_os_str().as_bytes().to_vec()
}

fn path_record(dir: &Path, subject: &[u8]) -> PathBuf {
    dir.join(PATHS_DIR)
        .join(blake3::hash(subject).to_hex().as_str())
}

/// How much an entry's record may stand in for reading the entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// Only if the record vouches for the entry file as it is now.
    RecordOnly,
    /// Or by reading the entry and checking its content MAC.
    RecordOrContent,
}

/// Why an entry could not be loaded.
enum EntryError {
    NotThere,
    Bad(String),
}

/// Loads entry `name`: mapped straight from its file when its record
/// vouches for the file as it is, else (with `RecordOrContent`) read and
/// checked against its content MAC, and its record renewed. The file is
/// opened once, and what is mapped or read is that open file, the one
/// whose fingerprint was checked.
fn load_entry(
    engine: &Engine,
    key: &Key,
    dir: &Path,
    name: &str,
    trust: Trust,
) -> Result<Component, EntryError> {
    let entry = entry_path(dir, name);
    let Some((mut file, current, observed)) = Fingerprint::of_open(&entry) else {
        return Err(EntryError::NotThere);
    };
    let record_path = entry_record(dir, name);
    let record = match Record::read(key, name.as_bytes(), &record_path) {
        Ok(Some(Ok(record))) => record,
        Ok(Some(Err(Refused::Damaged))) => {
            return Err(EntryError::Bad(
                "not a bgagents cache entry (its record is damaged)".into(),
            ));
        }
        Ok(Some(Err(Refused::Unauthentic))) => {
            return Err(EntryError::Bad(
                "authentication failed (its record was not written by this host)".into(),
            ));
        }
        Ok(None) => {
            return Err(EntryError::Bad(
                "not a bgagents cache entry (it has no record)".into(),
            ));
        }
        Err(error) => {
            return Err(EntryError::Bad(format!(
                "its record is unreadable: {error}"
            )));
        }
    };
    if record.vouches_for(&current) {
        use std::os::fd::AsRawFd;
        // The open file itself, not whatever the name means by now.
        let open = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        // SAFETY: `deserialize_file` maps the entry and runs its native
        // code. The record proves the open file is the one whose content
        // MAC was checked — only holders of the key, which lives 0600 in a
        // 0700 directory of this user that no guest can be granted, can
        // write a record that passes — and unchanged since (its inode,
        // size and times; the change time cannot be set, and the record
        // is relied on only once the file had settled before it was
        // fingerprinted). Entries are replaced by rename and removed by
        // unlink, never rewritten in place, so a mapped entry does not
        // change under the host. Wasmtime still rejects artifacts of
        // another engine configuration.
        match unsafe { Component::deserialize_file(engine, &open) } {
            Ok(component) => {
                mark_used(&record_path);
                return Ok(component);
            }
            // Mapping can fail for reasons of the moment (memory, file
            // descriptors): read it instead, if allowed.
            Err(error) if trust == Trust::RecordOnly => {
                return Err(EntryError::Bad(format!("{error:#}")));
            }
            Err(_) => {}
        }
    } else if trust == Trust::RecordOnly {
        return Err(EntryError::Bad("its record is out of date".into()));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|error| EntryError::Bad(format!("unreadable: {error}")))?;
    let component = deserialize(engine, key, name, &record, &bytes).map_err(EntryError::Bad)?;
    // Read and checked now: the next load needs neither, once the file has
    // settled (the record says when it was fingerprinted).
    let _ = Record::new(record.hash, current, observed).write(key, name.as_bytes(), &record_path);
    mark_used(&record_path);
    Ok(component)
}

fn deserialize(
    engine: &Engine,
    key: &Key,
    name: &str,
    record: &Record,
    bytes: &[u8],
) -> Result<Component, String> {
    // Compiled components are ELF objects.
    if !bytes.starts_with(b"\x7fELF") {
        return Err("not a bgagents cache entry (not compiled code)".into());
    }
    // `Hash`'s equality is constant-time.
    if mac(key, Use::Entry, name.as_bytes(), bytes) != blake3::Hash::from_bytes(record.hash) {
        return Err(
            "authentication failed (corrupt, truncated, or not written by this host)".into(),
        );
    }
    if Engine::detect_precompiled(bytes) != Some(Precompiled::Component) {
        return Err("not a compiled component".into());
    }
    // SAFETY: `deserialize` runs native code from `bytes`, so they must be
    // exactly what `Component::serialize` wrote on this host. The keyed MAC
    // proves that: only holders of the key, which lives 0600 in a 0700
    // directory of this user that no guest can be granted, can make a
    // record that passes; corruption and truncation fail it too. Wasmtime
    // still rejects artifacts from an incompatible engine configuration.
    unsafe { Component::deserialize(engine, bytes) }.map_err(|error| format!("{error:#}"))
}

/// Writes `bytes` to `path` atomically: a reader sees the old file or the
/// new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let unique = WRITES.fetch_add(1, Ordering::Relaxed);
    let partial = path.with_extension(format!("partial-{}-{unique}", std::process::id()));
    std::fs::write(&partial, bytes)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|error| {
            let _ = std::fs::remove_file(&partial);
            format!("cannot write {}: {error}", path.display())
        })
}

/// Writes the entry and then its record (content MAC, and a fingerprint
/// that is not relied on until it has settled).
fn store(key: &Key, dir: &Path, name: &str, component: &Component) -> Result<(), String> {
    let payload = component.serialize().map_err(|e| e.to_string())?;
    let entry = entry_path(dir, name);
    let record = entry_record(dir, name);
    let tag = *mac(key, Use::Entry, name.as_bytes(), &payload).as_bytes();
    // The record first (vouching for no file yet), so that another process
    // loading at the same moment finds the new entry with its record, not
    // an entry without one, which would look like tampering.
    Record::new(tag, Fingerprint::default(), Observed::never()).write(
        key,
        name.as_bytes(),
        &record,
    )?;
    write_atomically(&entry, &payload)?;
    let (_, fingerprint, observed) = Fingerprint::of_open(&entry)
        .ok_or_else(|| format!("{} vanished as it was written", entry.display()))?;
    Record::new(tag, fingerprint, observed).write(key, name.as_bytes(), &record)
}

/// Records a hit on the entry's record, so eviction takes the least
/// recently used entries first (the entry itself is never touched: its
/// times are part of its fingerprint).
fn mark_used(record: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(record) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the least recently used entries (never `keep`), with their
/// records, until the entries take at most `max_bytes`. An entry's last
/// use is its record's modification time.
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
            let len = entry.metadata().ok()?.len();
            let used = std::fs::metadata(path.with_extension("mac"))
                .or_else(|_| entry.metadata())
                .ok()?
                .modified()
                .ok()?;
            Some((used, len, path))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path != keep && std::fs::remove_file(&path).is_ok() {
            let _ = std::fs::remove_file(path.with_extension("mac"));
            total -= len;
        }
    }
    prune_path_records(&dir.join(PATHS_DIR));
}

/// Keeps at most [`MAX_PATH_RECORDS`] path records, the newest: a
/// component loaded from many paths over time (scratch directories) does
/// not grow the cache without end. A pruned path is only read once more.
fn prune_path_records(paths: &Path) {
    let Ok(read) = std::fs::read_dir(paths) else {
        return;
    };
    let mut records: Vec<(std::time::SystemTime, PathBuf)> = read
        .filter_map(|entry| {
            let entry = entry.ok()?;
            Some((entry.metadata().ok()?.modified().ok()?, entry.path()))
        })
        .collect();
    if records.len() <= MAX_PATH_RECORDS {
        return;
    }
    records.sort();
    let excess = records.len() - MAX_PATH_RECORDS;
    for (_, path) in records.into_iter().take(excess) {
        let _ = std::fs::remove_file(path);
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
            entry_name(&Engine::new(&config).unwrap(), &ContentHash::of(wasm))
        };
        assert_ne!(name(true), name(false));
        assert_eq!(name(true), name(true));
    }
}

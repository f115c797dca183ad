//! Components shipped by content hash: the coordinator puts each agent's
//! component into the object store [`COMPONENT_STORE`] under its BLAKE3
//! hash (once per content) and records, under `c.<agent>` in the bucket,
//! the hash that agent runs. A worker whose own file for an agent has
//! other content, or none at the team's path, fetches the coordinator's
//! bytes by hash into its cache (at most [`MAX_FETCHED_BYTES`], checked
//! against the hash, kept for next time) and runs those: every worker runs
//! what the coordinator was started with.
//!
//! Each task's record names the hash of its agent's component where it
//! was queued; a worker running another one refuses the task ([`check`])
//! instead of running other code than was asked for.

use super::{Cluster, subject_token};
use crate::config::Team;
use async_nats::jetstream::object_store;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The object store holding components by hash.
pub const COMPONENT_STORE: &str = "bgagents_components";

fn component_key(agent: &str) -> String {
    format!("c.{}", subject_token(agent))
}

pub(crate) async fn store(cluster: &Cluster) -> Result<object_store::ObjectStore, String> {
    if let Ok(store) = cluster.js.get_object_store(COMPONENT_STORE).await {
        return Ok(store);
    }
    (cluster.js)
        .create_object_store(object_store::Config {
            bucket: COMPONENT_STORE.to_string(),
            description: Some("bgagents: components by BLAKE3 hash".to_string()),
            ..Default::default()
        })
        .await
        .map_err(|error| format!("cannot set up the component store in NATS: {error}"))
}

/// The BLAKE3 hash of `bytes`, in hex.
fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// What [`publish`] did.
pub struct Published {
    /// Components put into the store (those already there are not).
    pub uploaded: usize,
    /// Each agent's component hash, as recorded in the bucket.
    pub hashes: HashMap<String, String>,
}

/// The coordinator's side: every agent's component into the store, and
/// which hash each agent runs into the bucket.
pub async fn publish(cluster: &Cluster, team: &Team) -> Result<Published, String> {
    let store = store(cluster).await?;
    let mut published = Published {
        uploaded: 0,
        hashes: HashMap::new(),
    };
    for spec in team.agents.values() {
        let Some(path) = &spec.component else {
            continue;
        };
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let hash = hash(&bytes);
        if store.info(&hash).await.is_err() {
            store
                .put(hash.as_str(), &mut bytes.as_slice())
                .await
                .map_err(|error| format!("cannot put {} into NATS: {error}", path.display()))?;
            published.uploaded += 1;
        }
        (cluster.kv)
            .put(component_key(&spec.name), hash.clone().into())
            .await
            .map_err(|error| format!("cannot record {}'s component in NATS: {error}", spec.name))?;
        published.hashes.insert(spec.name.clone(), hash);
    }
    Ok(published)
}

/// What [`fetch`] did.
pub struct Fetched {
    /// The agents now running the coordinator's component instead of this
    /// machine's file: the agent, the fetched file, and whether this
    /// machine has no file at the team's path at all.
    pub changed: Vec<(String, PathBuf, bool)>,
    /// Each agent's component hash, as it now runs.
    pub hashes: HashMap<String, String>,
}

/// The worker's side: each agent of `team` whose component differs from
/// the one the coordinator recorded, or is not on this machine at all,
/// gets the coordinator's, fetched by hash into `cache` (or found there).
/// Agents the coordinator recorded nothing for keep their own file, which
/// must then be here.
pub async fn fetch(cluster: &Cluster, team: &mut Team, cache: &Path) -> Result<Fetched, String> {
    let mut fetched = Fetched {
        changed: Vec::new(),
        hashes: HashMap::new(),
    };
    for spec in team.agents.values_mut() {
        let Some(path) = &spec.component else {
            continue;
        };
        let wanted = match cluster.kv.get(component_key(&spec.name)).await {
            Ok(Some(value)) => Some(String::from_utf8_lossy(&value).into_owned()),
            Ok(None) => None,
            Err(error) => {
                return Err(format!(
                    "cannot read {}'s component hash: {error}",
                    spec.name
                ));
            }
        };
        // It names a file here: only a hash is taken.
        if let Some(wanted) = &wanted
            && !is_hash(wanted)
        {
            return Err(format!(
                "{}'s component hash in NATS is not a BLAKE3 hash",
                spec.name
            ));
        }
        // A file missing here is fetched; any other failure to read it is
        // said (it may be a mistake worth knowing about).
        let own = match tokio::fs::read(path).await {
            Ok(bytes) => Some(hash(&bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let wanted = match (wanted, own) {
            (None, Some(own)) => {
                fetched.hashes.insert(spec.name.clone(), own);
                continue;
            }
            (None, None) => {
                return Err(format!(
                    "{}'s component {} is not on this machine, and no coordinator has put \
                     one for {} into NATS: start the coordinator (`bgagents serve TEAM.yaml \
                     --nats URL`) first, or copy the file here",
                    spec.name,
                    path.display(),
                    spec.name
                ));
            }
            (Some(wanted), Some(own)) if own == wanted => {
                fetched.hashes.insert(spec.name.clone(), own);
                continue;
            }
            (Some(wanted), own) => (wanted, own.is_none()),
        };
        let (wanted, missing) = wanted;
        let cached = fetch_component(cluster, &spec.name, &wanted, cache).await?;
        spec.component = Some(cached.clone());
        fetched.hashes.insert(spec.name.clone(), wanted);
        fetched.changed.push((spec.name.clone(), cached, missing));
    }
    Ok(fetched)
}

/// Whether `text` is a BLAKE3 hash in hex.
pub(crate) fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The largest component a worker fetches: the largest file the team
/// loader reads as a component, so an object in the store cannot fill a
/// worker's disk.
pub const MAX_FETCHED_BYTES: u64 = crate::config::read::MAX_COMPONENT_FILE;

/// Component `hash` (of `agent`) in `cache`, fetched from the store when
/// it is not there yet. What is fetched is streamed to a file, refused
/// past [`MAX_FETCHED_BYTES`] and kept only when its BLAKE3 hash is
/// `hash`.
async fn fetch_component(
    cluster: &Cluster,
    agent: &str,
    hash: &str,
    cache: &Path,
) -> Result<PathBuf, String> {
    debug_assert!(is_hash(hash));
    let cached = cache.join(format!("{hash}.wasm"));
    if hash_of_file(&cached).await.as_deref() == Some(hash) {
        return Ok(cached);
    }
    sweep_partials(cache);
    let store = store(cluster).await?;
    let object = store.get(hash).await.map_err(|error| {
        format!(
            "cannot fetch {agent}'s component {hash} from NATS's component store \
             ({COMPONENT_STORE}): {error}"
        )
    })?;
    if object.info.size as u64 > MAX_FETCHED_BYTES {
        return Err(format!(
            "{agent}'s component {hash} in NATS is {} bytes, more than the {MAX_FETCHED_BYTES} \
             a worker fetches; refused",
            object.info.size
        ));
    }
    std::fs::create_dir_all(cache)
        .map_err(|error| format!("cannot create {}: {error}", cache.display()))?;
    static PARTIALS: AtomicU64 = AtomicU64::new(0);
    let partial = cache.join(format!(
        "{hash}.wasm.{}-{}",
        std::process::id(),
        PARTIALS.fetch_add(1, Ordering::Relaxed)
    ));
    let written = copy_capped(object, &partial, agent, hash).await;
    let kept = written.and_then(|got| {
        if got != hash {
            return Err(format!(
                "{agent}'s component fetched from NATS does not match its hash {hash} \
                 (its content hashes to {got}); refused"
            ));
        }
        std::fs::rename(&partial, &cached)
            .map_err(|error| format!("cannot write {}: {error}", cached.display()))
    });
    if kept.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    kept.map(|()| cached)
}

/// The BLAKE3 hash of the file at `path`, read in pieces (a component may
/// be hundreds of megabytes); `None` when it cannot be read.
async fn hash_of_file(path: &Path) -> Option<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(path).ok()?;
        let mut hasher = blake3::Hasher::new();
        std::io::copy(&mut file, &mut hasher).ok()?;
        Some(hasher.finalize().to_hex().to_string())
    })
    .await
    .ok()
    .flatten()
}

/// Removes from `cache` the partial fetches (`HASH.wasm.PID-N`) of worker
/// processes that are gone (killed while fetching).
fn sweep_partials(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = (name.to_str())
            .and_then(|name| name.split_once(".wasm."))
            .and_then(|(_, rest)| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Copies `object` to `file`, at most [`MAX_FETCHED_BYTES`] of it (whatever
/// its recorded size says), and returns the BLAKE3 hash of what it wrote.
async fn copy_capped(
    mut object: object_store::Object,
    file: &Path,
    agent: &str,
    hash: &str,
) -> Result<String, String> {
    let write_error = |error: std::io::Error| format!("cannot write {}: {error}", file.display());
    let mut out = tokio::fs::File::create(file).await.map_err(write_error)?;
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let read = object
            .read(&mut buffer)
            .await
            .map_err(|error| format!("cannot fetch {agent}'s component {hash}: {error}"))?;
        if read == 0 {
            break;
        }
        total += read as u64;
        if total > MAX_FETCHED_BYTES {
            return Err(format!(
                "{agent}'s component {hash} in NATS is larger than the {MAX_FETCHED_BYTES} \
                 bytes a worker fetches; refused"
            ));
        }
        hasher.update(&buffer[..read]);
        out.write_all(&buffer[..read]).await.map_err(write_error)?;
    }
    out.sync_all().await.map_err(write_error)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Before a worker runs a task: refused unless the component hash its
/// record names (when it names one) is the one `runs` says this worker
/// runs for its agent. The record's component is fetched first, once, so
/// it is here for a restart of the worker, and the error says whether it
/// could be.
pub(crate) async fn check(
    cluster: &Cluster,
    runs: &HashMap<String, String>,
    record: &super::Record,
) -> Result<(), String> {
    let Some(wanted) = &record.component else {
        return Ok(());
    };
    let agent = &record.agent;
    let own = runs.get(agent);
    if own == Some(wanted) {
        return Ok(());
    }
    let own = own.map_or("none", String::as_str);
    if !is_hash(wanted) {
        return Err(format!(
            "refused to run {agent}'s task: its record names component {:?}, which is not \
             a BLAKE3 hash (this worker runs {own})",
            wanted.chars().take(80).collect::<String>()
        ));
    }
    let fetched = fetch_component(cluster, agent, wanted, &cache_dir()).await;
    tracing::warn!(task = %record.id, agent = %agent, wanted = %wanted, runs = %own, fetched = fetched.is_ok(), "a task for another component; refused");
    Err(match fetched {
        Ok(file) => format!(
            "refused to run {agent}'s task: it was queued for component {wanted}, and this \
             worker runs {own}; the queued one is fetched now ({}): restart the worker to \
             run it",
            file.display()
        ),
        Err(error) => format!(
            "refused to run {agent}'s task: it was queued for component {wanted}, and this \
             worker runs {own}; the queued one cannot be fetched either: {error}"
        ),
    })
}

/// Where a worker keeps the components it fetched:
/// `$XDG_CACHE_HOME/bgagents/cluster-components`, or under `~/.cache`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("bgagents").join("cluster-components")
}

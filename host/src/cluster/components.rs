//! Components shipped by content hash: the coordinator puts each agent's
//! component into the object store [`COMPONENT_STORE`] under its BLAKE3
//! hash (once per content) and records, under `c.<agent>` in the bucket,
//! the hash that agent runs. A worker whose own file for an agent has
//! other content fetches the coordinator's bytes by hash into its cache
//! (checked against the hash, kept for next time) and runs those: every
//! worker runs what the coordinator was started with.

use super::{Cluster, subject_token};
use crate::config::Team;
use async_nats::jetstream::object_store;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

/// The object store holding components by hash.
pub const COMPONENT_STORE: &str = "bgagents_components";

fn component_key(agent: &str) -> String {
    format!("c.{}", subject_token(agent))
}

async fn store(cluster: &Cluster) -> Result<object_store::ObjectStore, String> {
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

/// The coordinator's side: every agent's component into the store, and
/// which hash each agent runs into the bucket. Returns how many
/// components were uploaded (those already there are not).
pub async fn publish(cluster: &Cluster, team: &Team) -> Result<usize, String> {
    let store = store(cluster).await?;
    let mut uploaded = 0;
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
            uploaded += 1;
        }
        (cluster.kv)
            .put(component_key(&spec.name), hash.into())
            .await
            .map_err(|error| format!("cannot record {}'s component in NATS: {error}", spec.name))?;
    }
    Ok(uploaded)
}

/// The worker's side: each agent of `team` whose component differs from
/// the one the coordinator recorded gets the coordinator's, fetched by
/// hash into `cache` (or found there). Returns the agents changed, with
/// the file each now runs. Agents the coordinator recorded nothing for
/// keep their own file.
pub async fn fetch(
    cluster: &Cluster,
    team: &mut Team,
    cache: &Path,
) -> Result<Vec<(String, PathBuf)>, String> {
    let mut changed = Vec::new();
    for spec in team.agents.values_mut() {
        let Some(path) = &spec.component else {
            continue;
        };
        let wanted = match cluster.kv.get(component_key(&spec.name)).await {
            Ok(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
            Ok(None) => continue,
            Err(error) => {
                return Err(format!(
                    "cannot read {}'s component hash: {error}",
                    spec.name
                ));
            }
        };
        // It names a file here: only a hash is taken.
        if wanted.len() != 64 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{}'s component hash in NATS is not a BLAKE3 hash",
                spec.name
            ));
        }
        let own = tokio::fs::read(path)
            .await
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        if hash(&own) == wanted {
            continue;
        }
        let cached = cache.join(format!("{wanted}.wasm"));
        let have = tokio::fs::read(&cached).await.ok();
        if have.as_deref().map(hash).as_ref() != Some(&wanted) {
            let store = store(cluster).await?;
            let mut object = store.get(&wanted).await.map_err(|error| {
                format!(
                    "cannot fetch {}'s component ({wanted}) from NATS: {error}",
                    spec.name
                )
            })?;
            let mut bytes = Vec::new();
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|error| format!("cannot fetch {}'s component: {error}", spec.name))?;
            if hash(&bytes) != wanted {
                return Err(format!(
                    "{}'s component fetched from NATS does not match its hash {wanted}",
                    spec.name
                ));
            }
            std::fs::create_dir_all(cache)
                .map_err(|error| format!("cannot create {}: {error}", cache.display()))?;
            let partial = cache.join(format!("{wanted}.wasm.{}", std::process::id()));
            std::fs::write(&partial, &bytes)
                .and_then(|()| std::fs::rename(&partial, &cached))
                .map_err(|error| format!("cannot write {}: {error}", cached.display()))?;
        }
        spec.component = Some(cached.clone());
        changed.push((spec.name.clone(), cached));
    }
    Ok(changed)
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

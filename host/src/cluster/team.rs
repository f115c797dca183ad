//! The team shipped to workers: a coordinator puts the text of its team
//! file, exactly as it loaded it, into the object store
//! [`COMPONENT_STORE`](super::components::COMPONENT_STORE) under
//! `team.<BLAKE3 hash>`, and under [`TEAM_KEY`] in the bucket a small
//! JSON pointer to it: the hash, the file's path on the coordinator and
//! the directory its relative paths are resolved against. A worker
//! started without a team file reads the pointer, fetches the text by
//! hash (checked against it, at most
//! [`MAX_TEAM_FILE`](crate::config::read::MAX_TEAM_FILE)) and parses it as
//! if it were its own file in that directory; the components it names
//! come by hash as for any worker ([`components`](super::components)).
//!
//! The text, not the pointer, goes to the object store: a key-value value
//! is limited to the server's largest message (1 MiB by default), which a
//! team file of the largest size the loader reads, with the pointer
//! around it, would not fit; an object has no such limit.
//!
//! Secrets: a team file names the environment variables holding keys
//! (`token_key:`, `${NAME}` in `env:` and `headers:`), and each worker
//! reads its own environment. A file that writes what looks like a secret
//! value itself (an `env:` or `headers:` entry named like a key, token,
//! password or authorization, holding no `${NAME}` reference) is not
//! shipped at all ([`written_secrets`]): the coordinator says so, and its
//! workers need their own team file.

use super::Cluster;
use super::components::store;
use crate::config::Team;
use crate::config::read::MAX_TEAM_FILE;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tokio::io::AsyncReadExt;

/// The bucket key of the pointer to the shipped team.
pub const TEAM_KEY: &str = "team";

/// What [`TEAM_KEY`] holds (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pointer {
    /// The text's BLAKE3 hash (hex); the object is `team.<hash>`.
    hash: String,
    /// The team file's path on the coordinator.
    source: PathBuf,
    /// The directory relative paths in it are resolved against.
    base_dir: PathBuf,
}

fn object_name(hash: &str) -> String {
    format!("team.{hash}")
}

/// What [`publish`] did.
#[derive(Debug)]
pub enum Shipped {
    /// The team is in NATS, with this hash.
    Team { hash: String },
    /// Not shipped, for this reason (workers need their own team file).
    Withheld(String),
}

/// The coordinator's side: `team`'s text into the store and the pointer to
/// it into the bucket. A team that is not shipped (no text, or one that
/// writes a secret) removes any pointer an earlier coordinator left, so
/// no worker takes a team this coordinator does not serve.
pub async fn publish(cluster: &Cluster, team: &Team) -> Result<Shipped, String> {
    let withheld = if team.text.is_empty() {
        Some("it was not read from a team file".to_string())
    } else {
        let written = written_secrets(&team.text);
        (!written.is_empty()).then(|| {
            format!(
                "it writes what looks like a secret value into the file at {} (never sent to \
                 NATS); write each as `${{NAME}}` and export NAME on every machine, or give \
                 each worker its own team file",
                written.join(", ")
            )
        })
    };
    if let Some(why) = withheld {
        cluster
            .kv
            .purge(TEAM_KEY)
            .await
            .map_err(|error| format!("cannot remove an earlier team from NATS: {error}"))?;
        return Ok(Shipped::Withheld(why));
    }
    let hash = blake3::hash(team.text.as_bytes()).to_hex().to_string();
    let store = store(cluster).await?;
    let name = object_name(&hash);
    if store.info(&name).await.is_err() {
        store
            .put(name.as_str(), &mut team.text.as_bytes())
            .await
            .map_err(|error| format!("cannot put the team file into NATS: {error}"))?;
    }
    let pointer = Pointer {
        hash: hash.clone(),
        source: std::path::absolute(&team.source).unwrap_or_else(|_| team.source.clone()),
        base_dir: team.base_dir.clone(),
    };
    let value = serde_json::to_vec(&pointer).expect("a pointer always serialises");
    (cluster.kv)
        .put(TEAM_KEY, value.into())
        .await
        .map_err(|error| format!("cannot record the team in NATS: {error}"))?;
    Ok(Shipped::Team { hash })
}

/// A team a coordinator shipped.
#[derive(Debug)]
pub struct ShippedTeam {
    /// Its text, checked against `hash`.
    pub text: String,
    pub hash: String,
    /// Its path on the coordinator.
    pub source: PathBuf,
    /// The directory its relative paths are resolved against.
    pub base_dir: PathBuf,
}

/// The worker's side: the team the coordinator last shipped. `url` names
/// the server in messages.
pub async fn fetch(cluster: &Cluster, url: &str) -> Result<ShippedTeam, String> {
    let none = || {
        format!(
            "no coordinator has put its team into NATS at {url}: start the coordinator first \
             (`bgagents serve TEAM.yaml --nats {url}`), or give this worker a team file of its \
             own (`bgagents worker --nats {url} TEAM.yaml`)"
        )
    };
    let value = match cluster.kv.get(TEAM_KEY).await {
        Ok(Some(value)) => value,
        Ok(None) => return Err(none()),
        Err(error) => return Err(format!("cannot read the coordinator's team: {error}")),
    };
    let pointer: Pointer = serde_json::from_slice(&value)
        .map_err(|error| format!("the team pointer in NATS is not one bgagents wrote: {error}"))?;
    if !super::components::is_hash(&pointer.hash) {
        return Err("the team pointer in NATS names no BLAKE3 hash".to_string());
    }
    let store = store(cluster).await?;
    let mut object = store
        .get(object_name(&pointer.hash))
        .await
        .map_err(|error| format!("cannot fetch the coordinator's team from NATS: {error}"))?;
    let mut bytes = Vec::new();
    (&mut object)
        .take(MAX_TEAM_FILE + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|error| format!("cannot fetch the coordinator's team from NATS: {error}"))?;
    if bytes.len() as u64 > MAX_TEAM_FILE {
        return Err(format!(
            "the coordinator's team in NATS is larger than the {MAX_TEAM_FILE} bytes a team \
             file may have; refused"
        ));
    }
    let got = blake3::hash(&bytes).to_hex().to_string();
    if got != pointer.hash {
        return Err(format!(
            "the coordinator's team fetched from NATS does not match its hash {} (it hashes \
             to {got}); refused",
            pointer.hash
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| "the coordinator's team in NATS is not UTF-8 text".to_string())?;
    Ok(ShippedTeam {
        text,
        hash: pointer.hash,
        source: pointer.source,
        base_dir: pointer.base_dir,
    })
}

/// Watches the pointer to the shipped team and says (once per change)
/// when a coordinator ships another team than `hash`, the one this worker
/// serves: it goes on serving its own until restarted.
pub async fn watch(cluster: Cluster, hash: String) {
    use futures_util::StreamExt;
    let Ok(mut changes) = cluster.kv.watch(TEAM_KEY).await else {
        return;
    };
    let mut said = hash.clone();
    while let Some(change) = changes.next().await {
        let Ok(entry) = change else { continue };
        if entry.operation != async_nats::jetstream::kv::Operation::Put {
            if !said.is_empty() {
                said.clear();
                tracing::warn!(serving = %hash, "the coordinator now ships no team (its workers need their own team file); this worker goes on serving the team it started with");
            }
            continue;
        }
        let Ok(pointer) = serde_json::from_slice::<Pointer>(&entry.value) else {
            continue;
        };
        if pointer.hash != said {
            said = pointer.hash.clone();
            if said == hash {
                tracing::info!("the coordinator ships the team this worker serves again");
            } else {
                tracing::warn!(team = %pointer.source.display(), hash = %pointer.hash, serving = %hash, "the coordinator now ships another team; restart this worker to serve it");
            }
        }
    }
}

/// Where team YAML `text` writes what looks like a secret value itself:
/// the place of each (`agents.NAME.toolsets[0].remote.headers.KEY`),
/// never the value. An entry of an `env:` or `headers:` map counts when
/// its name has a part such as KEY, TOKEN, SECRET, PASSWORD or
/// AUTHORIZATION and its value holds no `$NAME`/`${NAME}` reference.
pub fn written_secrets(text: &str) -> Vec<String> {
    let Ok(root) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        // Not YAML: nothing the coordinator loaded; not shipped either way.
        return vec!["(the file is not YAML)".to_string()];
    };
    let mut found = Vec::new();
    walk(&root, "", &mut found);
    found
}

fn walk(value: &serde_yaml::Value, at: &str, found: &mut Vec<String>) {
    use serde_yaml::Value;
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                let key = match key {
                    Value::String(key) => key.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let here = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                if (key == "env" || key == "headers")
                    && let Value::Mapping(entries) = value
                {
                    for (name, value) in entries {
                        let (Value::String(name), Value::String(value)) = (name, value) else {
                            continue;
                        };
                        if named_like_a_secret(name) && !references_a_variable(value) {
                            found.push(format!("{here}.{name}"));
                        }
                    }
                }
                walk(value, &here, found);
            }
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, &format!("{at}[{index}]"), found);
            }
        }
        Value::Tagged(tagged) => walk(&tagged.value, at, found),
        _ => {}
    }
}

fn named_like_a_secret(name: &str) -> bool {
    const PARTS: &[&str] = &[
        "KEY",
        "APIKEY",
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "PASS",
        "PWD",
        "AUTH",
        "AUTHORIZATION",
        "CREDENTIAL",
        "CREDENTIALS",
        "COOKIE",
        "SESSION",
        "PRIVATE",
        "BEARER",
    ];
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|part| PARTS.contains(&part.to_ascii_uppercase().as_str()))
}

/// Whether `value` names a variable (`$NAME`, `${NAME}`, `${env.NAME}`);
/// `$$` is a plain `$`.
fn references_a_variable(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'$' {
            match bytes.get(at + 1) {
                Some(b'$') => at += 1,
                Some(b'{') => return true,
                Some(c) if c.is_ascii_alphabetic() || *c == b'_' => return true,
                _ => {}
            }
        }
        at += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_secrets_are_found_by_place_and_references_are_not() {
        let text = r#"
agents:
  a:
    toolsets:
      - type: mcp
        remote:
          url: https://mcp.example.com/mcp
          headers: {Authorization: "Bearer sk-live-1", Accept: application/json}
      - type: mcp
        command: server
        env: {API_KEY: "${API_KEY}", GITHUB_TOKEN: "$GH", LANG: C, AUTHOR: me, DB_PASSWORD: "pa$$word"}
"#;
        assert_eq!(
            written_secrets(text),
            [
                "agents.a.toolsets[0].remote.headers.Authorization",
                "agents.a.toolsets[1].env.DB_PASSWORD"
            ]
        );
        assert!(written_secrets("agents:\n  a: {component: a.wasm}\n").is_empty());
    }
}

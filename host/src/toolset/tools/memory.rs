//! The `memory` toolset under docker-agent's tool names and arguments:
//! notes an agent keeps across tasks and runs, in a store file named by the
//! toolset's `path:` (relative to the team file). Agents naming the same
//! path share one store.
//!
//! The store is a JSON file, replaced whole on every change (written to a
//! temporary file, synced, then renamed over it), so a crash leaves either
//! the old store or the new one, never a torn one. Two bgagents processes
//! sharing one store file do not see each other's changes until restarted;
//! within one process every agent sees every change at once.

use super::ToolSpec;
use super::args::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const ADD: &str = "add_memory";
pub const GET: &str = "get_memories";
pub const DELETE: &str = "delete_memory";
pub const SEARCH: &str = "search_memories";
pub const UPDATE: &str = "update_memory";

/// Memories one store keeps.
pub const MAX_MEMORIES: usize = 10_000;
/// Bytes of one memory's text.
pub const MAX_MEMORY_BYTES: usize = 16 << 10;
/// Bytes of a store file bgagents reads.
const MAX_STORE_BYTES: u64 = 64 << 20;
/// Memories one answer lists; the rest are counted.
const MAX_LISTED: usize = 200;

pub fn specs() -> Vec<ToolSpec> {
    let category =
        json!({"type": "string", "description": "A category such as preference, fact or project"});
    let id = json!({"type": "string", "description": "The memory's ID, as add_memory or a listing gave it"});
    let spec =
        |name: &str, description: &str, properties: Value, required: &[&str], read_only| ToolSpec {
            name: name.to_string(),
            description: description.to_string(),
            parameters: json!({
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            }),
            read_only,
        };
    vec![
        spec(
            ADD,
            "Remember something across tasks: store a memory and get its ID.",
            json!({
                "memory": {"type": "string", "description": "What to remember"},
                "category": category,
            }),
            &["memory"],
            false,
        ),
        spec(
            GET,
            "List every stored memory (JSON).",
            json!({}),
            &[],
            true,
        ),
        spec(
            DELETE,
            "Forget one memory.",
            json!({"id": id}),
            &["id"],
            false,
        ),
        spec(
            SEARCH,
            "Find memories whose text holds all the given keywords (any case), optionally in \
             one category (JSON).",
            json!({
                "query": {"type": "string", "description": "Keywords separated by spaces; all must appear"},
                "category": category,
            }),
            &[],
            true,
        ),
        spec(
            UPDATE,
            "Replace one memory's text, and its category if given.",
            json!({
                "id": id,
                "memory": {"type": "string", "description": "The memory's new text"},
                "category": category,
            }),
            &["id", "memory"],
            false,
        ),
    ]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Memory {
    id: String,
    created_at: String,
    memory: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    category: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    memories: Vec<Memory>,
}

/// One store file, shared by every agent naming its path.
pub struct MemoryStore {
    path: PathBuf,
    memories: Mutex<Vec<Memory>>,
}

impl MemoryStore {
    /// Reads the store at `path`, or starts an empty one there (the file is
    /// created on the first change).
    pub fn open(path: &Path) -> Result<Arc<MemoryStore>, String> {
        let shown = path.display();
        let memories = match std::fs::metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(format!("cannot read the memory store {shown}: {error}")),
            Ok(metadata) if !metadata.is_file() => {
                return Err(format!("the memory store {shown} is not a regular file"));
            }
            Ok(metadata) if metadata.len() > MAX_STORE_BYTES => {
                return Err(format!(
                    "the memory store {shown} is larger than the {} MiB bgagents reads",
                    MAX_STORE_BYTES >> 20
                ));
            }
            Ok(metadata) if metadata.len() == 0 => Vec::new(),
            Ok(_) => {
                let bytes = std::fs::read(path)
                    .map_err(|error| format!("cannot read the memory store {shown}: {error}"))?;
                let store: StoreFile = serde_json::from_slice(&bytes).map_err(|_| {
                    format!(
                        "{shown} is not a bgagents memory store (a JSON file this toolset \
                         writes); if it is another tool's database, point `path:` at a new file"
                    )
                })?;
                store.memories
            }
        };
        Ok(Arc::new(MemoryStore {
            path: path.to_path_buf(),
            memories: Mutex::new(memories),
        }))
    }

    /// Runs tool `name`; `None` if it is not one of this toolset's. The
    /// store is written on a blocking thread, under the store's lock, so
    /// changes are saved in the order they were made.
    pub async fn call(self: &Arc<Self>, name: &str, args: &Args) -> Option<Result<String, String>> {
        if ![ADD, GET, DELETE, SEARCH, UPDATE].contains(&name) {
            return None;
        }
        let store = self.clone();
        let (name, args) = (name.to_string(), Args::new(Some(args.as_map().clone())));
        let answer = tokio::task::spawn_blocking(move || store.run(&name, &args)).await;
        Some(answer.unwrap_or_else(|_| Err("the memory store failed unexpectedly".to_string())))
    }

    fn run(&self, name: &str, args: &Args) -> Result<String, String> {
        let mut memories = self
            .memories
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match name {
            ADD => {
                args.only(&["memory", "category"])?;
                if memories.len() >= MAX_MEMORIES {
                    return Err(format!(
                        "the store holds {MAX_MEMORIES} memories, its most; delete some first"
                    ));
                }
                let memory = Memory {
                    id: next_id(&memories),
                    created_at: crate::clock::now_rfc3339(),
                    memory: text(args, "memory")?,
                    category: category(args)?.unwrap_or_default(),
                };
                let id = memory.id.clone();
                let mut changed = memories.clone();
                changed.push(memory);
                self.save(&changed)?;
                *memories = changed;
                Ok(format!("memory added with ID {id}"))
            }
            GET => {
                args.only(&[])?;
                Ok(listing(memories.iter()))
            }
            SEARCH => {
                args.only(&["query", "category"])?;
                let words: Vec<String> = (args.string("query")?.unwrap_or_default())
                    .split_whitespace()
                    .map(str::to_lowercase)
                    .collect();
                let category = args.string("category")?.filter(|c| !c.is_empty());
                let found = memories.iter().filter(|memory| {
                    let text = memory.memory.to_lowercase();
                    words.iter().all(|word| text.contains(word.as_str()))
                        && category
                            .as_ref()
                            .is_none_or(|c| c.eq_ignore_ascii_case(&memory.category))
                });
                Ok(listing(found))
            }
            DELETE => {
                args.only(&["id"])?;
                let at = position(&memories, args)?;
                let mut changed = memories.clone();
                let removed = changed.remove(at);
                self.save(&changed)?;
                *memories = changed;
                Ok(format!("memory {} deleted", removed.id))
            }
            _ => {
                args.only(&["id", "memory", "category"])?;
                let at = position(&memories, args)?;
                let mut changed = memories.clone();
                changed[at].memory = text(args, "memory")?;
                if let Some(category) = category(args)? {
                    changed[at].category = category;
                }
                self.save(&changed)?;
                let id = changed[at].id.clone();
                *memories = changed;
                Ok(format!("memory {id} updated"))
            }
        }
    }

    /// Replaces the store file with `memories`: a new temporary file
    /// beside it (a fresh name, created exclusively, so a link planted where
    /// it will be is never written through), synced, then renamed over it.
    /// A store that would outgrow what [`MemoryStore::open`] reads is
    /// refused, so a full store never stops the next run.
    fn save(&self, memories: &[Memory]) -> Result<(), String> {
        let store = StoreFile {
            version: 1,
            memories: memories.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&store).expect("memories serialise");
        if bytes.len() as u64 > MAX_STORE_BYTES {
            return Err(format!(
                "the store would grow past the {} MiB it may hold; delete or shorten some \
                 memories first (nothing was changed)",
                MAX_STORE_BYTES >> 20
            ));
        }
        let fail = |error: std::io::Error| {
            tracing::warn!(store = %self.path.display(), %error, "memory store not saved");
            format!("the memory could not be saved ({error}); nothing was changed")
        };
        let mut temporary = self.path.clone().into_os_string();
        temporary.push(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
        let temporary = PathBuf::from(temporary);
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.map_err(fail)
    }
}

/// Bytes of a category.
const MAX_CATEGORY_BYTES: usize = 256;

fn category(args: &Args) -> Result<Option<String>, String> {
    let category = args.string("category")?;
    match category {
        Some(text) if text.len() > MAX_CATEGORY_BYTES => Err(format!(
            "category is {} bytes; a category holds at most {MAX_CATEGORY_BYTES}",
            text.len()
        )),
        other => Ok(other),
    }
}

fn text(args: &Args, name: &str) -> Result<String, String> {
    let text = args.string(name)?.unwrap_or_default();
    if text.trim().is_empty() {
        return Err(format!("{name} is required: the text to remember"));
    }
    if text.len() > MAX_MEMORY_BYTES {
        return Err(format!(
            "{name} is {} bytes; a memory holds at most {} KiB",
            text.len(),
            MAX_MEMORY_BYTES >> 10
        ));
    }
    Ok(text)
}

fn position(memories: &[Memory], args: &Args) -> Result<usize, String> {
    let id = args.string("id")?.ok_or("id is required")?;
    memories
        .iter()
        .position(|memory| memory.id == id)
        .ok_or_else(|| {
            format!("no memory has ID {id:?}; search_memories or get_memories lists the IDs")
        })
}

/// An ID after every existing one: the time in nanoseconds, or one more
/// than the newest.
fn next_id(memories: &[Memory]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let newest = (memories.iter())
        .filter_map(|memory| memory.id.parse::<u128>().ok())
        .max()
        .unwrap_or(0);
    now.max(newest.saturating_add(1)).to_string()
}

fn listing<'a>(memories: impl Iterator<Item = &'a Memory>) -> String {
    let all: Vec<&Memory> = memories.collect();
    let shown: Vec<&&Memory> = all.iter().take(MAX_LISTED).collect();
    let mut out = serde_json::to_string(&shown).expect("memories serialise");
    if all.len() > MAX_LISTED {
        out.push_str(&format!(
            "\n… {} more; narrow the search with search_memories",
            all.len() - MAX_LISTED
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "bgagents-memory-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn memory(id: u128, text: String) -> Memory {
        Memory {
            id: id.to_string(),
            created_at: String::new(),
            memory: text,
            category: String::new(),
        }
    }

    #[test]
    fn a_link_planted_beside_the_store_is_never_written_through() {
        let dir = scratch("link");
        let victim = dir.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let path = dir.join("memory.db");
        // Where an earlier scheme put its temporary file.
        std::os::unix::fs::symlink(&victim, dir.join("memory.db.tmp")).unwrap();
        let store = MemoryStore::open(&path).unwrap();
        store.save(&[memory(1, "noted".into())]).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(std::fs::read_to_string(&path).unwrap().contains("noted"));
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 3, "no temporary file is left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_store_that_would_outgrow_what_open_reads_is_refused_unchanged() {
        let dir = scratch("full");
        let path = dir.join("memory.db");
        let store = MemoryStore::open(&path).unwrap();
        store.save(&[memory(1, "kept".into())]).unwrap();
        let big = "x".repeat(MAX_MEMORY_BYTES);
        let too_many: Vec<Memory> = (0..(MAX_STORE_BYTES as usize / MAX_MEMORY_BYTES + 1) as u128)
            .map(|id| memory(id, big.clone()))
            .collect();
        let refused = store.save(&too_many).unwrap_err();
        assert!(refused.contains("would grow past the 64 MiB"), "{refused}");
        assert!(std::fs::read_to_string(&path).unwrap().contains("kept"));
        assert!(MemoryStore::open(&path).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ids_never_overflow() {
        let newest = [memory(u128::MAX, "last".into())];
        assert_eq!(next_id(&newest), u128::MAX.to_string());
    }
}

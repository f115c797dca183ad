//! The database file: its tables and format mark, making a new one
//! atomically, refusing a foreign one before redb touches it, and claiming
//! an existing one (tasks the previous process left unfinished become
//! interrupted).

use super::error::{StoreError, classify, open_error};
use super::record::{TaskRecord, Transition, interrupted_reason, now_ms};
use crate::tasks::TaskStatus;
use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition,
    TableHandle,
};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The database file's name in the state directory.
pub const FILE_NAME: &str = "tasks.redb";

/// Admission order → [`TaskRecord`] as JSON. Keyed by order, not by id,
/// so that new records go at the end of the tree: a commit rewrites a few
/// pages, not one page per task as random ids would.
pub(super) const TASKS: TableDefinition<u64, &[u8]> = TableDefinition::new("tasks");
/// Admission order → a final task's output (within the agent's output cap).
pub(super) const OUTPUT: TableDefinition<u64, &[u8]> = TableDefinition::new("output");
/// (admission order, offset) → the bytes a task not yet final wrote from
/// that offset on, appended as its output grows (so a chatty task costs
/// what it writes, not its whole output, at each flush); folded into
/// [`OUTPUT`] once it is final.
pub(super) const OUTPUT_PARTS: TableDefinition<(u64, u64), &[u8]> =
    TableDefinition::new("output_parts");
/// `format` → [`FORMAT`]: tells our store from any other redb file.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const FORMAT: &str = "bgagents task store 1";

/// redb's file signature (its first bytes), checked before redb sees a file
/// so that a foreign file is refused without being touched.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// The prefix of the files a new store is made in before it is renamed
/// into place (followed by the creating process's id).
const NEW_PREFIX: &str = "tasks.redb.new-";

/// Makes a new, empty store at `path` atomically: built and synced under
/// another name, then renamed. A crash while a store is made leaves either
/// no store or a whole one, never a file that cannot be opened.
pub(super) fn create_new(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let fresh = dir.join(format!("{NEW_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_file(&fresh);
    let io = |error: std::io::Error| classify(path, redb::Error::Io(error));
    {
        let db = Database::create(&fresh).map_err(|error| open_error(&fresh, error))?;
        let redb = |error: redb::Error| classify(&fresh, error);
        let txn = db.begin_write().map_err(|e| redb(e.into()))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| redb(e.into()))?;
            meta.insert("format", FORMAT).map_err(|e| redb(e.into()))?;
            txn.open_table(TASKS).map_err(|e| redb(e.into()))?;
            txn.open_table(OUTPUT).map_err(|e| redb(e.into()))?;
            txn.open_table(OUTPUT_PARTS).map_err(|e| redb(e.into()))?;
        }
        txn.commit().map_err(|e| redb(e.into()))?;
    }
    // Only its owner reads it: it holds every task's text and output.
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    std::fs::File::open(&fresh)
        .and_then(|file| file.sync_all())
        .map_err(io)?;
    std::fs::rename(&fresh, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io)?;
    Ok(())
}

/// Removes the half-made new stores of processes that died making one.
pub(super) fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(NEW_PREFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether `path` exists. Refuses a file that does not start with redb's
/// signature, before redb opens (and might write to) it.
pub(super) fn check_signature(path: &Path) -> Result<bool, StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                detail: format!("cannot read it: {error}"),
            });
        }
    };
    let mut head = Vec::with_capacity(REDB_MAGIC.len());
    (&mut file)
        .take(REDB_MAGIC.len() as u64)
        .read_to_end(&mut head)
        .map_err(|error| StoreError::Io {
            path: path.to_path_buf(),
            detail: format!("cannot read it: {error}"),
        })?;
    match head.is_empty() {
        // Holds nothing: made anew in its place.
        true => return Ok(false),
        false if head == REDB_MAGIC => return Ok(true),
        false => {}
    }
    Err(StoreError::Foreign {
        path: path.to_path_buf(),
        what: "it is not a database file".to_string(),
    })
}

/// Checks (or writes, in a new file) the format mark, and marks tasks
/// left queued or running as interrupted. Returns the next order and each
/// stored task's order by id.
pub(super) fn claim_and_interrupt(
    db: &Database,
    path: &Path,
) -> Result<(u64, HashMap<String, u64>), StoreError> {
    let io = |error: redb::Error| classify(path, error);
    let txn = db.begin_write().map_err(|e| io(e.into()))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| io(e.into()))?;
        let format = meta
            .get("format")
            .map_err(|e| io(e.into()))?
            .map(|value| value.value().to_string());
        match format {
            Some(format) if format == FORMAT => {}
            Some(other) => {
                return Err(StoreError::Foreign {
                    path: path.to_path_buf(),
                    what: format!("its format is {other:?}"),
                });
            }
            None => {
                let others: Vec<String> = txn
                    .list_tables()
                    .map_err(|e| io(e.into()))?
                    .map(|table| table.name().to_string())
                    .filter(|name| name != "meta")
                    .collect();
                if !others.is_empty() {
                    return Err(StoreError::Foreign {
                        path: path.to_path_buf(),
                        what: format!(
                            "it is a redb database of another program (tables {})",
                            others.join(", ")
                        ),
                    });
                }
                meta.insert("format", FORMAT).map_err(|e| io(e.into()))?;
            }
        }
    }
    let mut next = 0;
    let mut orders = HashMap::new();
    let mut interrupted = 0usize;
    {
        let mut tasks = txn.open_table(TASKS).map_err(|e| io(e.into()))?;
        let mut output = txn.open_table(OUTPUT).map_err(|e| io(e.into()))?;
        // Made here in a store from before parts were kept.
        let mut parts = txn.open_table(OUTPUT_PARTS).map_err(|e| io(e.into()))?;
        let mut changed = Vec::new();
        for entry in tasks.iter().map_err(|e| io(e.into()))? {
            let (key, value) = entry.map_err(|e| io(e.into()))?;
            let mut record = decode(path, &key.value().to_string(), value.value())?;
            next = next.max(record.order + 1);
            orders.insert(record.id.clone(), record.order);
            if let Some(status @ (TaskStatus::Queued | TaskStatus::Running)) = record.status() {
                let at = now_ms();
                record.status = TaskStatus::Interrupted.as_str().to_string();
                record.transitions.push(Transition {
                    status: record.status.clone(),
                    at_ms: at,
                });
                record.error = Some(interrupted_reason(status));
                changed.push(record);
            }
        }
        for record in changed {
            tasks
                .insert(record.order, encode(&record).as_slice())
                .map_err(|e| io(e.into()))?;
            // The output it had written, as a final task's.
            // (A store written before parts were kept has it there already.)
            let written = parts_of(&parts, record.order).map_err(io)?;
            if !written.is_empty() {
                output
                    .insert(record.order, written.as_slice())
                    .map_err(|e| io(e.into()))?;
                remove_parts(&mut parts, record.order).map_err(io)?;
            }
            tracing::warn!(task = %record.id, agent = %record.agent, "interrupted by the previous process's end");
            interrupted += 1;
        }
    }
    txn.commit().map_err(|e| io(e.into()))?;
    if interrupted > 0 {
        tracing::warn!(
            count = interrupted,
            "tasks left queued or running by the previous process marked interrupted"
        );
    }
    Ok((next, orders))
}

/// The output parts of the task stored under `order`, joined.
pub(super) fn parts_of(
    parts: &impl ReadableTable<(u64, u64), &'static [u8]>,
    order: u64,
) -> Result<Vec<u8>, redb::Error> {
    let mut joined = Vec::new();
    for part in parts.range((order, 0)..=(order, u64::MAX))? {
        joined.extend_from_slice(part?.1.value());
    }
    Ok(joined)
}

/// Removes the output parts of the task stored under `order`.
pub(super) fn remove_parts(
    parts: &mut redb::Table<(u64, u64), &'static [u8]>,
    order: u64,
) -> Result<(), redb::Error> {
    parts.retain_in((order, 0)..=(order, u64::MAX), |_, _| false)?;
    Ok(())
}

/// Reads a stored record.
pub(super) fn decode(path: &Path, id: &str, bytes: &[u8]) -> Result<TaskRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Damaged {
        path: path.to_path_buf(),
        detail: format!("the record of task {id:?} cannot be read: {error}"),
    })
}

pub(super) fn encode(record: &TaskRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a task record always serialises")
}

/// Refuses another program's redb file before it is opened for writing
/// (which rewrites its header): its format mark, read without changing it.
/// A file left needing repair by a crash cannot be read so; it is let
/// through, as a task store a killed host left behind is, and checked
/// again once repaired.
pub(super) fn check_format(path: &Path) -> Result<(), StoreError> {
    let db = match ReadOnlyDatabase::open(path) {
        Ok(db) => db,
        Err(DatabaseError::RepairAborted) => return Ok(()),
        Err(error) => return Err(open_error(path, error)),
    };
    let io = |error: redb::Error| classify(path, error);
    let txn = db.begin_read().map_err(|e| io(e.into()))?;
    let format = match txn.open_table(META) {
        Ok(meta) => meta
            .get("format")
            .map_err(|e| io(e.into()))?
            .map(|value| value.value().to_string()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(io(error.into())),
    };
    match format {
        Some(format) if format == FORMAT => Ok(()),
        Some(other) => Err(StoreError::Foreign {
            path: path.to_path_buf(),
            what: format!("its format is {other:?}"),
        }),
        None => {
            let tables: Vec<String> = txn
                .list_tables()
                .map_err(|e| io(e.into()))?
                .map(|table| table.name().to_string())
                .collect();
            match tables.is_empty() {
                // Empty: made by a store that died before its first commit.
                true => Ok(()),
                false => Err(StoreError::Foreign {
                    path: path.to_path_buf(),
                    what: format!(
                        "it is a redb database of another program (tables {})",
                        tables.join(", ")
                    ),
                }),
            }
        }
    }
}

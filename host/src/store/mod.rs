//! The persistent task store: every task's record (who started it, what it
//! runs, each status change with its time, result, error) and its output,
//! in one redb database file in the state directory, written as things
//! happen so that a restarted host lists what the previous one did.
//!
//! What is written when, and what a crash (`kill -9`, power loss) can lose:
//! - a task's queued record when it is admitted, before it can start;
//! - `running` when its guest is about to start;
//! - its final status, result, error and output in one transaction under
//!   the task's lock, before anyone can see the status: a stop is on disk
//!   before the guest is cancelled, a result before the task is reported
//!   completed.
//!
//! Each of these is a committed (fsynced) transaction, so no status is
//! ever lost. The output of running tasks is written in batches, every
//! [`OUTPUT_FLUSH`] (one transaction for all tasks whose output grew), and
//! whole with the final status: a crash loses at most the output an
//! in-flight task wrote in the last [`OUTPUT_FLUSH`] (its record becomes
//! `interrupted` with the output written before), never a status, result
//! or error.
//!
//! On open, tasks that were queued or running when the previous process
//! died are marked [`TaskStatus::Interrupted`](crate::tasks::TaskStatus)
//! with the time and why; finished ones are left as they were. The file is
//! locked by redb while open, so one process at a time owns a store.

use crate::sandbox::OutputBuffer;
use crate::tasks::TaskStatus;
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the output of running tasks is written.
pub const OUTPUT_FLUSH: Duration = Duration::from_millis(250);

/// The database file's name in the state directory.
pub const FILE_NAME: &str = "tasks.redb";

/// Task id → [`TaskRecord`] as JSON.
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
/// Task id → its output (within the agent's output cap).
const OUTPUT: TableDefinition<&str, &[u8]> = TableDefinition::new("output");
/// `format` → [`FORMAT`]: tells our store from any other redb file.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const FORMAT: &str = "bgagents task store 1";

/// redb's file signature (its first bytes), checked before redb sees a file
/// so that a foreign file is refused without being touched.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// An open task store. Cheap to clone; all clones share the database,
/// which is closed (and its lock released) when the last clone is dropped.
#[derive(Clone)]
pub struct Store(Arc<Handle>);

/// The database and the thread writing running tasks' output, which is
/// stopped and joined on drop so that the database is closed by then.
struct Handle {
    inner: Arc<Inner>,
    stop: Option<mpsc::Sender<()>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for Handle {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

struct Inner {
    db: Database,
    path: PathBuf,
    /// Admission order for the next task (records sort by it).
    next_order: AtomicU64,
    /// The output of each task not yet final, with the bytes written of it.
    live: Mutex<HashMap<String, (Weak<OutputBuffer>, usize)>>,
}

/// One status change and when it happened (milliseconds since the Unix
/// epoch, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub status: String,
    pub at_ms: u64,
}

/// A task as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Admission order: records are listed oldest first.
    pub order: u64,
    pub id: String,
    pub agent: String,
    pub task: String,
    pub expected_output: Option<String>,
    /// The session (front-end connection) that started its tree, as the
    /// process that ran it numbered them.
    pub session: u64,
    /// Tasks above this one, outermost first (its parent last).
    pub ancestors: Vec<String>,
    pub lineage: Vec<String>,
    /// `queued`, `running`, `completed`, `failed`, `stopped` or
    /// `interrupted`.
    pub status: String,
    /// Every status it has had, oldest first.
    pub transitions: Vec<Transition>,
    pub result: Option<String>,
    pub error: Option<String>,
    /// The output cap in force for it, and whether output was cut there.
    pub output_cap: u64,
    pub output_truncated: bool,
}

impl TaskRecord {
    pub fn status(&self) -> Option<TaskStatus> {
        TaskStatus::parse(&self.status)
    }

    pub fn parent(&self) -> Option<&str> {
        self.ancestors.last().map(String::as_str)
    }
}

/// Why a store could not be opened or written.
#[derive(Debug)]
pub enum StoreError {
    /// The state directory cannot be created or written.
    Directory { dir: PathBuf, error: std::io::Error },
    /// The file is not a bgagents task store (another program's file or
    /// another redb database). It is left as it is.
    Foreign { path: PathBuf, what: String },
    /// The file is a task store, but damaged beyond what redb repairs.
    Damaged { path: PathBuf, detail: String },
    /// Another process holds the store.
    Locked { path: PathBuf },
    /// The file or its directory is read-only.
    ReadOnly {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Any other failure reading or writing the file.
    Io { path: PathBuf, detail: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            StoreError::Directory { dir, error } => write!(
                f,
                "task store: cannot use the state directory {}: {error}; choose a writable \
                 directory with --state",
                dir.display()
            ),
            StoreError::Foreign { path, what } => write!(
                f,
                "task store {}: {what}, not a bgagents task store; it was left unchanged — \
                 move it away or choose another state directory with --state",
                path.display()
            ),
            StoreError::Damaged { path, detail } => write!(
                f,
                "task store {} is damaged ({detail}); it was left unchanged — move it away \
                 to start with an empty store (its tasks are then forgotten)",
                path.display()
            ),
            StoreError::Locked { path } => write!(
                f,
                "task store {} is in use by another bgagents process; stop that process or \
                 choose another state directory with --state",
                path.display()
            ),
            StoreError::ReadOnly { path, error } => write!(
                f,
                "task store {} cannot be written ({error}); the state directory must be on a \
                 writable filesystem: choose another with --state",
                path.display()
            ),
            StoreError::Io { path, detail } => {
                write!(f, "task store {}: {detail}", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

impl Store {
    /// Opens (or creates) the store in `dir`, marking the tasks the previous
    /// process left queued or running as interrupted.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|error| StoreError::Directory {
            dir: dir.to_path_buf(),
            error,
        })?;
        let path = dir.join(FILE_NAME);
        if !check_signature(&path)? {
            create_new(dir, &path)?;
        }
        let db = Database::create(&path).map_err(|error| open_error(&path, error))?;
        let mut store = Handle {
            inner: Arc::new(Inner {
                db,
                path,
                next_order: AtomicU64::new(0),
                live: Mutex::default(),
            }),
            stop: None,
            writer: None,
        };
        let next = store.inner.claim_and_interrupt()?;
        store.next_order.store(next, Ordering::Relaxed);
        remove_leftovers(dir);
        let (stop, stopped) = mpsc::channel();
        let inner = store.inner.clone();
        store.writer = Some(
            std::thread::Builder::new()
                .name("task-store-output".into())
                .spawn(move || flush_outputs(inner, stopped))
                .map_err(|error| StoreError::Io {
                    path: store.path.clone(),
                    detail: format!("cannot start its output writer: {error}"),
                })?,
        );
        store.stop = Some(stop);
        let store = Store(Arc::new(store));
        tracing::info!(path = %store.0.path.display(), "task store open");
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Every stored task, oldest first, with its output.
    pub fn records(&self) -> Result<Vec<(TaskRecord, String)>, StoreError> {
        let txn = self.0.db.begin_read().map_err(|e| self.io(e))?;
        let tasks = txn.open_table(TASKS).map_err(|e| self.io(e))?;
        let output = txn.open_table(OUTPUT).map_err(|e| self.io(e))?;
        let mut records = Vec::new();
        for entry in tasks.iter().map_err(|e| self.io(e))? {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            let record = self.decode(key.value(), value.value())?;
            let text = output
                .get(key.value())
                .map_err(|e| self.io(e))?
                .map(|bytes| String::from_utf8_lossy(bytes.value()).into_owned())
                .unwrap_or_default();
            records.push((record, text));
        }
        records.sort_by_key(|(record, _)| record.order);
        Ok(records)
    }

    /// The next admission order.
    pub(crate) fn next_order(&self) -> u64 {
        self.0.next_order.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes a new task's record.
    pub(crate) fn insert(&self, record: &TaskRecord) -> Result<(), StoreError> {
        let txn = self.0.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.io(e))?;
            tasks
                .insert(record.id.as_str(), encode(record).as_slice())
                .map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    /// Records `id`'s move to `status`, with what `change` sets on its
    /// record and, when given, its output, in one transaction.
    pub(crate) fn update(
        &self,
        id: &str,
        status: TaskStatus,
        output: Option<&[u8]>,
        change: impl FnOnce(&mut TaskRecord),
    ) -> Result<(), StoreError> {
        let txn = self.0.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.io(e))?;
            let current = tasks
                .get(id)
                .map_err(|e| self.io(e))?
                .map(|value| value.value().to_vec());
            let Some(current) = current else {
                // Pruned already: nothing to keep.
                return Ok(());
            };
            let mut record = self.decode(id, &current)?;
            record.status = status.as_str().to_string();
            record.transitions.push(Transition {
                status: record.status.clone(),
                at_ms: now_ms(),
            });
            change(&mut record);
            tasks
                .insert(id, encode(&record).as_slice())
                .map_err(|e| self.io(e))?;
            if let Some(output) = output {
                let mut table = txn.open_table(OUTPUT).map_err(|e| self.io(e))?;
                table.insert(id, output).map_err(|e| self.io(e))?;
            }
        }
        txn.commit().map_err(|e| self.io(e))
    }

    /// Writes `output` of task `id` every [`OUTPUT_FLUSH`] while it grows,
    /// until the task is final.
    pub(crate) fn watch_output(&self, id: &str, output: &Arc<OutputBuffer>) {
        let mut live = self.0.live.lock().unwrap();
        live.insert(id.to_string(), (Arc::downgrade(output), 0));
    }

    /// Stops writing `id`'s output in batches (its final write has it all).
    pub(crate) fn forget_output(&self, id: &str) {
        self.0.live.lock().unwrap().remove(id);
    }

    /// Forgets `id` (pruned from the retained set).
    pub(crate) fn remove(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.0.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.io(e))?;
            tasks.remove(id).map_err(|e| self.io(e))?;
            let mut output = txn.open_table(OUTPUT).map_err(|e| self.io(e))?;
            output.remove(id).map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    fn decode(&self, id: &str, bytes: &[u8]) -> Result<TaskRecord, StoreError> {
        self.0.inner.decode(id, bytes)
    }

    fn io(&self, error: impl Into<redb::Error>) -> StoreError {
        self.0.inner.io(error)
    }
}

impl Inner {
    /// Checks (or writes, in a new file) the format mark, and marks tasks
    /// left queued or running as interrupted. Returns the next order.
    fn claim_and_interrupt(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.io(e))?;
            let format = meta
                .get("format")
                .map_err(|e| self.io(e))?
                .map(|value| value.value().to_string());
            match format {
                Some(format) if format == FORMAT => {}
                Some(other) => {
                    return Err(StoreError::Foreign {
                        path: self.path.clone(),
                        what: format!("its format is {other:?}"),
                    });
                }
                None => {
                    let others: Vec<String> = txn
                        .list_tables()
                        .map_err(|e| self.io(e))?
                        .map(|table| table.name().to_string())
                        .filter(|name| name != "meta")
                        .collect();
                    if !others.is_empty() {
                        return Err(StoreError::Foreign {
                            path: self.path.clone(),
                            what: format!(
                                "it is a redb database of another program (tables {})",
                                others.join(", ")
                            ),
                        });
                    }
                    meta.insert("format", FORMAT).map_err(|e| self.io(e))?;
                }
            }
        }
        let mut next = 0;
        let mut interrupted = 0usize;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.io(e))?;
            txn.open_table(OUTPUT).map_err(|e| self.io(e))?;
            let mut changed = Vec::new();
            for entry in tasks.iter().map_err(|e| self.io(e))? {
                let (key, value) = entry.map_err(|e| self.io(e))?;
                let mut record = self.decode(key.value(), value.value())?;
                next = next.max(record.order + 1);
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
                    .insert(record.id.as_str(), encode(&record).as_slice())
                    .map_err(|e| self.io(e))?;
                tracing::warn!(task = %record.id, agent = %record.agent, "interrupted by the previous process's end");
                interrupted += 1;
            }
        }
        txn.commit().map_err(|e| self.io(e))?;
        if interrupted > 0 {
            tracing::warn!(
                count = interrupted,
                "tasks left queued or running by the previous process marked interrupted"
            );
        }
        Ok(next)
    }

    /// Writes the output that grew since the last flush, in one
    /// transaction, for tasks not yet final (a final record's output was
    /// written with its status and is never replaced).
    fn flush(&self) -> Result<(), StoreError> {
        let grown: Vec<(String, String, usize)> = {
            let mut live = self.live.lock().unwrap();
            live.retain(|_, (output, _)| output.strong_count() > 0);
            live.iter()
                .filter_map(|(id, (output, written))| {
                    let output = output.upgrade()?;
                    (output.len() != *written)
                        .then(|| (id.clone(), output.snapshot().text, output.len()))
                })
                .collect()
        };
        if grown.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            let tasks = txn.open_table(TASKS).map_err(|e| self.io(e))?;
            let mut output = txn.open_table(OUTPUT).map_err(|e| self.io(e))?;
            for (id, text, _) in &grown {
                let record = tasks.get(id.as_str()).map_err(|e| self.io(e))?;
                let Some(record) = record else { continue };
                let record = self.decode(id, record.value())?;
                if record.status().is_some_and(TaskStatus::is_final) {
                    continue;
                }
                output
                    .insert(id.as_str(), text.as_bytes())
                    .map_err(|e| self.io(e))?;
            }
        }
        txn.commit().map_err(|e| self.io(e))?;
        let mut live = self.live.lock().unwrap();
        for (id, _, len) in grown {
            if let Some((_, written)) = live.get_mut(&id) {
                *written = len;
            }
        }
        Ok(())
    }

    fn decode(&self, id: &str, bytes: &[u8]) -> Result<TaskRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(|error| StoreError::Damaged {
            path: self.path.clone(),
            detail: format!("the record of task {id:?} cannot be read: {error}"),
        })
    }

    fn io(&self, error: impl Into<redb::Error>) -> StoreError {
        classify(&self.path, error.into())
    }
}

/// The output writer's loop: flushes every [`OUTPUT_FLUSH`] until the
/// store is dropped.
fn flush_outputs(inner: Arc<Inner>, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(OUTPUT_FLUSH) {
        if let Err(error) = inner.flush() {
            tracing::error!("{error}");
        }
    }
    // One last time: what was written since the last flush.
    if let Err(error) = inner.flush() {
        tracing::error!("{error}");
    }
}

fn encode(record: &TaskRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a task record always serialises")
}

/// The error text an interrupted task carries.
fn interrupted_reason(was: TaskStatus) -> String {
    format!(
        "interrupted: the bgagents process running this task ended while it was {was}; \
         found at restart, {}",
        crate::clock::now_rfc3339()
    )
}

/// The prefix of the files a new store is made in before it is renamed
/// into place (followed by the creating process's id).
const NEW_PREFIX: &str = "tasks.redb.new-";

/// Makes a new, empty store at `path` atomically: built and synced under
/// another name, then renamed. A crash while a store is made leaves either
/// no store or a whole one, never a file that cannot be opened.
fn create_new(dir: &Path, path: &Path) -> Result<(), StoreError> {
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
        }
        txn.commit().map_err(|e| redb(e.into()))?;
    }
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
fn remove_leftovers(dir: &Path) {
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
fn check_signature(path: &Path) -> Result<bool, StoreError> {
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

fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    classify(path, error.into())
}

fn classify(path: &Path, error: redb::Error) -> StoreError {
    let path = path.to_path_buf();
    match error {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreError::Locked { path }
        }
        redb::Error::Corrupted(detail) => StoreError::Damaged { path, detail },
        redb::Error::UpgradeRequired(version) => StoreError::Foreign {
            path,
            what: format!("it is in redb's old file format {version}"),
        },
        redb::Error::Io(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            StoreError::ReadOnly { path, error }
        }
        other => StoreError::Io {
            path,
            detail: other.to_string(),
        },
    }
}

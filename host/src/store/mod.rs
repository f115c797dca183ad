//! The persistent task store: every task's record (who started it, what it
//! runs, each status change with its time, result, error) and its output,
//! in one redb database file in the state directory, written as things
//! happen so that a restarted host lists what the previous one did.
//!
//! Changes are committed by one writer thread in groups ([`writer`]): a
//! task hands its change over and goes on, and every change that arrives
//! while a commit is being synced goes into the next one. What is written:
//! - a task's queued record when it is admitted;
//! - `running` when its guest is about to start;
//! - its final status, result, error and whole output in one change;
//! - the output of running tasks every [`OUTPUT_FLUSH`], for those whose
//!   output grew.
//!
//! A front-end that must not tell anyone more than the disk holds waits
//! for [`Store::settled`] before it answers: every change made until then
//! is committed by the time it returns. A crash (`kill -9`, power loss)
//! thus never loses a task, status, result or error anyone was told of; an
//! in-flight task loses at most the output it wrote in the last
//! [`OUTPUT_FLUSH`] and comes back interrupted.
//!
//! On open, tasks that were queued or running when the previous process
//! died are marked [`TaskStatus::Interrupted`](crate::tasks::TaskStatus)
//! with the time and why; finished ones are left as they were. The file is
//! locked by redb while open, so one process at a time owns a store.

mod error;
mod file;
mod record;
mod writer;

pub use error::StoreError;
pub use file::FILE_NAME;
pub(crate) use record::{Ending, now_ms};
pub use record::{TaskRecord, Transition};

use crate::sandbox::OutputBuffer;
use crate::tasks::TaskStatus;
use error::{classify, open_error};
use file::{OUTPUT, OUTPUT_PARTS, TASKS};
use redb::{Database, ReadableDatabase, ReadableTable};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use writer::{Op, Writer};

/// How often the output of running tasks is written.
pub const OUTPUT_FLUSH: Duration = Duration::from_millis(250);

/// An open task store. Cheap to clone; all clones share the database,
/// which is closed (and its lock released) when the last clone is dropped.
#[derive(Clone)]
pub struct Store(Arc<Handle>);

/// The writer and its thread, which commits what is left and is joined on
/// drop, so that the database is closed by then.
struct Handle {
    writer: Arc<Writer>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
    /// Admission order for the next task (records sort by it).
    next_order: AtomicU64,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.writer.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
        match file::check_signature(&path)? {
            true => file::check_format(&path)?,
            false => file::create_new(dir, &path)?,
        }
        let db = Database::create(&path).map_err(|error| open_error(&path, error))?;
        let (next, orders) = file::claim_and_interrupt(&db, &path)?;
        file::remove_leftovers(dir);
        let writer = Arc::new(Writer::new(db, path.clone(), orders));
        let thread = {
            let writer = writer.clone();
            std::thread::Builder::new()
                .name("task-store".into())
                .spawn(move || writer.run())
                .map_err(|error| StoreError::Io {
                    path: path.clone(),
                    detail: format!("cannot start its writer: {error}"),
                })?
        };
        tracing::info!(path = %path.display(), "task store open");
        Ok(Store(Arc::new(Handle {
            writer,
            thread: Some(thread),
            path,
            next_order: AtomicU64::new(next),
        })))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Every stored task, oldest first, with its output; changes made
    /// before the call included.
    pub fn records(&self) -> Result<Vec<(TaskRecord, String)>, StoreError> {
        let io = |error: redb::Error| classify(&self.0.path, error);
        // A failed commit was logged; what is on disk is what is read.
        let _ = self.0.writer.settled_blocking();
        let db = self.0.writer.db();
        let Some(db) = db.as_ref() else {
            return Err(StoreError::Io {
                path: self.0.path.clone(),
                detail: "it could not be reopened after an error".to_string(),
            });
        };
        let txn = db.begin_read().map_err(|e| io(e.into()))?;
        let tasks = txn.open_table(TASKS).map_err(|e| io(e.into()))?;
        let output = txn.open_table(OUTPUT).map_err(|e| io(e.into()))?;
        // Absent from a store made before output parts were kept.
        let parts = match txn.open_table(OUTPUT_PARTS) {
            Ok(parts) => Some(parts),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(error) => return Err(io(error.into())),
        };
        let mut records = Vec::new();
        for entry in tasks.iter().map_err(|e| io(e.into()))? {
            let (key, value) = entry.map_err(|e| io(e.into()))?;
            let record = file::decode(&self.0.path, &key.value().to_string(), value.value())?;
            // A final task's output, or what one still running has written.
            let text = match output.get(key.value()).map_err(|e| io(e.into()))? {
                Some(bytes) => String::from_utf8_lossy(bytes.value()).into_owned(),
                None => match &parts {
                    Some(parts) => {
                        let joined = file::parts_of(parts, key.value()).map_err(io)?;
                        String::from_utf8_lossy(&joined).into_owned()
                    }
                    None => String::new(),
                },
            };
            records.push((record, text));
        }
        Ok(records)
    }

    /// Waits until every change made so far is committed to disk. An error
    /// says a commit holding one of them failed (the change is then only in
    /// memory).
    pub async fn settled(&self) -> Result<(), String> {
        self.0.writer.settled().await
    }

    /// Why the store cannot be written, while that lasts (its writer
    /// keeps trying).
    pub fn failing(&self) -> Option<String> {
        self.0.writer.failing()
    }

    /// The next admission order.
    pub(crate) fn next_order(&self) -> u64 {
        self.0.next_order.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes a new task's record, and its output while it grows.
    pub(crate) fn insert(&self, record: TaskRecord, output: &Arc<OutputBuffer>) {
        self.0.writer.watch_output(&record.id, output);
        self.0.writer.submit(Op::Insert(record));
    }

    /// Records `id`'s move to a status that is not final.
    pub(crate) fn update(&self, id: &str, status: TaskStatus) {
        self.0.writer.submit(Op::Update {
            id: id.to_string(),
            status,
            at_ms: now_ms(),
            ending: None,
        });
    }

    /// Records how `id` ended: its final status with result, error and
    /// output, in one change.
    pub(crate) fn finish(&self, id: &str, status: TaskStatus, ending: Ending) {
        self.0.writer.forget_output(id);
        self.0.writer.submit(Op::Update {
            id: id.to_string(),
            status,
            at_ms: now_ms(),
            ending: Some(ending),
        });
    }

    /// Forgets `id` (pruned from the retained set).
    pub(crate) fn remove(&self, id: &str) {
        self.0.writer.forget_output(id);
        self.0.writer.submit(Op::Remove(id.to_string()));
    }
}

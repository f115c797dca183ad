//! The store's one writer thread, committing in groups: a task hands its
//! change over and never waits for the disk. Changes are numbered as they
//! are submitted; a caller that must not get ahead of the disk waits until
//! its number is committed ([`Writer::settled`]), and the writer commits at
//! once when someone waits — with every change that arrived meanwhile —
//! and otherwise at most [`BATCH_DELAY`] after a change, so that a busy
//! host pays one commit for many changes. Each commit is synced
//! ([`redb::Durability::Immediate`], redb's default).
//!
//! A commit that fails (a full disk, an I/O error) is not dropped: the
//! database is reopened and the same changes, with those that arrived
//! since, are tried again every [`RETRY_EVERY`]. Until one succeeds the
//! store is *failing*: waiters are told at once, with the reason, and the
//! toolset admits no new task.
//!
//! The output of running tasks is written here too, every
//! [`OUTPUT_FLUSH`](super::OUTPUT_FLUSH), for the tasks whose output grew:
//! only what each wrote since, as a part of its own; a task's end writes
//! its whole output once and drops its parts.

use super::OUTPUT_FLUSH;
use super::error::{StoreError, classify};
use super::file::{OUTPUT, OUTPUT_PARTS, TASKS, decode, encode, remove_parts};
use super::record::{Ending, TaskRecord, Transition};
use crate::sandbox::OutputBuffer;
use crate::tasks::TaskStatus;
use redb::{Database, ReadableTable};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The longest a change waits for its commit when nobody waits for it. A
/// commit costs about a millisecond here, mostly its sync; batching this
/// long keeps the store at a small share of the host's CPU under load.
pub(super) const BATCH_DELAY: Duration = Duration::from_millis(20);

/// How often a failed commit is tried again.
pub(super) const RETRY_EVERY: Duration = Duration::from_secs(1);

/// One change to the store.
pub(super) enum Op {
    /// A new task's record.
    Insert(TaskRecord),
    /// A task's move to `status` at `at_ms`, with how it ended when final.
    Update {
        id: String,
        status: TaskStatus,
        at_ms: u64,
        ending: Option<Ending>,
    },
    /// A task pruned from the retained set.
    Remove(String),
}

/// What the tasks and the writer thread share.
pub(super) struct Writer {
    /// `None` after a failed commit until it is reopened.
    db: Mutex<Option<Database>>,
    path: PathBuf,
    queue: Mutex<Queue>,
    /// Wakes the writer when it is idle and a change arrives.
    wake: Condvar,
    done: Mutex<Done>,
    /// Wakes blocking waiters when a commit ends.
    done_changed: Condvar,
    /// Wakes async waiters when a commit ends.
    done_notify: Notify,
    /// Each stored task's admission order (its key) by id, as committed.
    orders: Mutex<HashMap<String, u64>>,
    /// The output of each task not yet final, with the bytes written of it.
    live: Mutex<HashMap<String, (Weak<OutputBuffer>, usize)>>,
}

#[derive(Default)]
struct Queue {
    ops: Vec<Op>,
    /// How many changes were ever submitted: the last one's number.
    submitted: u64,
    /// The store is being closed: commit what is left and end.
    closing: bool,
    /// The writer is waiting for work.
    idle: bool,
    /// When the oldest change in `ops` arrived.
    oldest: Option<Instant>,
    /// The highest change number someone waits to see committed.
    wanted: u64,
}

#[derive(Default)]
struct Done {
    /// Every change up to this number is committed.
    committed: u64,
    /// While commits fail: why (the changes after `committed` wait to be
    /// tried again).
    failing: Option<String>,
}

/// A running task's output that grew since it was last written: the bytes
/// from `from` on, up to `len`.
struct Grown {
    id: String,
    from: usize,
    bytes: Vec<u8>,
}

impl Writer {
    pub(super) fn new(db: Database, path: PathBuf, orders: HashMap<String, u64>) -> Writer {
        Writer {
            db: Mutex::new(Some(db)),
            path,
            orders: Mutex::new(orders),
            queue: Mutex::default(),
            wake: Condvar::new(),
            done: Mutex::default(),
            done_changed: Condvar::new(),
            done_notify: Notify::new(),
            live: Mutex::default(),
        }
    }

    /// The open database (`None` while a failed one is being reopened).
    pub(super) fn db(&self) -> std::sync::MutexGuard<'_, Option<Database>> {
        self.db.lock().unwrap()
    }

    /// Why commits fail, while they do.
    pub(super) fn failing(&self) -> Option<String> {
        self.done.lock().unwrap().failing.clone()
    }

    /// Queues `op` for the next commit; returns its number.
    pub(super) fn submit(&self, op: Op) -> u64 {
        let mut queue = self.queue.lock().unwrap();
        queue.ops.push(op);
        queue.submitted += 1;
        if queue.oldest.is_none() {
            queue.oldest = Some(Instant::now());
            // Its batch is due within BATCH_DELAY, not at the next output
            // flush the idle writer sleeps until.
            if queue.idle {
                self.wake.notify_one();
            }
        }
        queue.submitted
    }

    /// The number of the last change submitted, which the writer is asked
    /// to commit now.
    fn want_everything(&self) -> u64 {
        let mut queue = self.queue.lock().unwrap();
        queue.wanted = queue.submitted;
        if queue.idle {
            self.wake.notify_one();
        }
        queue.submitted
    }

    /// Whether every change up to `target` is committed: `None` while not,
    /// then `Ok`, or the error of the commit that failed to hold it.
    fn outcome(&self, done: &Done, target: u64) -> Option<Result<(), String>> {
        if done.committed >= target {
            return Some(Ok(()));
        }
        done.failing.clone().map(Err)
    }

    /// Waits until every change submitted so far is committed.
    pub(super) async fn settled(&self) -> Result<(), String> {
        let target = self.want_everything();
        loop {
            let notified = self.done_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(outcome) = self.outcome(&self.done.lock().unwrap(), target) {
                return outcome;
            }
            notified.await;
        }
    }

    /// [`Writer::settled`], blocking the thread.
    pub(super) fn settled_blocking(&self) -> Result<(), String> {
        let target = self.want_everything();
        let mut done = self.done.lock().unwrap();
        loop {
            if let Some(outcome) = self.outcome(&done, target) {
                return outcome;
            }
            done = self.done_changed.wait(done).unwrap();
        }
    }

    /// Writes `output` of task `id` every [`OUTPUT_FLUSH`] while it grows,
    /// until the task is final.
    pub(super) fn watch_output(&self, id: &str, output: &Arc<OutputBuffer>) {
        let mut live = self.live.lock().unwrap();
        live.insert(id.to_string(), (Arc::downgrade(output), 0));
    }

    /// Stops writing `id`'s output in batches (its final write has it all).
    pub(super) fn forget_output(&self, id: &str) {
        self.live.lock().unwrap().remove(id);
    }

    /// Asks the writer to commit what is queued and end.
    pub(super) fn close(&self) {
        let mut queue = self.queue.lock().unwrap();
        queue.closing = true;
        self.wake.notify_one();
    }

    /// The writer thread's loop, until [`Writer::close`].
    pub(super) fn run(&self) {
        let mut last_output = Instant::now();
        // Changes of a failed commit, tried again first, and when.
        let mut failed: Vec<Op> = Vec::new();
        let mut retry_at: Option<Instant> = None;
        loop {
            let (mut ops, last, closing) = {
                let mut queue = self.queue.lock().unwrap();
                loop {
                    let now = Instant::now();
                    let due = match retry_at {
                        // Failing: tried again on its own clock only.
                        Some(at) => at,
                        None => {
                            let pending_from = queue.submitted - queue.ops.len() as u64;
                            if queue.wanted > pending_from {
                                break;
                            }
                            let output_due = last_output + OUTPUT_FLUSH;
                            let batch_due = queue.oldest.map(|oldest| oldest + BATCH_DELAY);
                            batch_due.map_or(output_due, |batch| batch.min(output_due))
                        }
                    };
                    if queue.closing || now >= due {
                        break;
                    }
                    queue.idle = true;
                    queue = self.wake.wait_timeout(queue, due - now).unwrap().0;
                    queue.idle = false;
                }
                queue.oldest = None;
                (
                    std::mem::take(&mut queue.ops),
                    queue.submitted,
                    queue.closing,
                )
            };
            if !failed.is_empty() {
                failed.append(&mut ops);
                ops = std::mem::take(&mut failed);
            }
            let grown = if closing || last_output.elapsed() >= OUTPUT_FLUSH {
                last_output = Instant::now();
                self.grown_outputs()
            } else {
                Vec::new()
            };
            if !ops.is_empty() || !grown.is_empty() {
                match self.commit(&ops, &grown) {
                    Ok(written) => {
                        self.mark_written(written);
                        retry_at = None;
                        let mut done = self.done.lock().unwrap();
                        done.committed = last;
                        if done.failing.take().is_some() {
                            tracing::info!(path = %self.path.display(), "task store written again");
                        }
                    }
                    Err(error) => {
                        tracing::error!(
                            changes = ops.len(),
                            "{error}; trying again every {} s",
                            RETRY_EVERY.as_secs()
                        );
                        self.done.lock().unwrap().failing = Some(error.to_string());
                        failed = ops;
                        retry_at = Some(Instant::now() + RETRY_EVERY);
                        self.reopen();
                    }
                }
                self.done_changed.notify_all();
                self.done_notify.notify_waiters();
            }
            if closing {
                if !failed.is_empty() {
                    tracing::error!(
                        changes = failed.len(),
                        path = %self.path.display(),
                        "task store closed with changes it could not write"
                    );
                }
                return;
            }
        }
    }

    /// Reopens the database after a failed commit: redb refuses every
    /// commit after an I/O error until it is.
    fn reopen(&self) {
        let mut db = self.db.lock().unwrap();
        // The old handle releases the file's lock first.
        drop(db.take());
        match Database::create(&self.path) {
            Ok(reopened) => *db = Some(reopened),
            Err(error) => {
                tracing::error!(path = %self.path.display(), %error, "cannot reopen the task store")
            }
        }
    }

    /// The running tasks' output that grew since it was last written.
    fn grown_outputs(&self) -> Vec<Grown> {
        let mut live = self.live.lock().unwrap();
        live.retain(|_, (output, _)| output.strong_count() > 0);
        live.iter()
            .filter_map(|(id, (output, written))| {
                let bytes = output.upgrade()?.bytes_from(*written);
                (!bytes.is_empty()).then(|| Grown {
                    id: id.clone(),
                    from: *written,
                    bytes,
                })
            })
            .collect()
    }

    fn mark_written(&self, written: Vec<(String, usize)>) {
        let mut live = self.live.lock().unwrap();
        for (id, len) in written {
            if let Some((_, written)) = live.get_mut(&id) {
                *written = len;
            }
        }
    }

    /// Applies `ops` and writes `grown` output in one synced transaction.
    /// A task's changes in one batch (often its queued, running and final
    /// records, for a short task) are applied in memory and its record
    /// written once.
    /// Returns the output it wrote: (task, length).
    fn commit(&self, ops: &[Op], grown: &[Grown]) -> Result<Vec<(String, usize)>, StoreError> {
        let io = |error: redb::Error| classify(&self.path, error);
        let db = self.db.lock().unwrap();
        let Some(db) = db.as_ref() else {
            return Err(StoreError::Io {
                path: self.path.clone(),
                detail: "it could not be reopened after an error".to_string(),
            });
        };
        let mut written = Vec::new();
        let mut orders = self.orders.lock().unwrap();
        // This batch's changes to `orders`, applied once it is committed (a
        // failed batch is tried again from the same state).
        let mut added: HashMap<&str, u64> = HashMap::new();
        let mut removed: HashSet<&str> = HashSet::new();
        let order_of = |id: &str, added: &HashMap<&str, u64>, removed: &HashSet<&str>| {
            let known = added.get(id).or_else(|| orders.get(id)).copied();
            known.filter(|_| !removed.contains(id))
        };
        let txn = db.begin_write().map_err(|e| io(e.into()))?;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| io(e.into()))?;
            let mut output = txn.open_table(OUTPUT).map_err(|e| io(e.into()))?;
            let mut parts = txn.open_table(OUTPUT_PARTS).map_err(|e| io(e.into()))?;
            let mut touched: HashMap<u64, TaskRecord> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(record) => {
                        added.insert(record.id.as_str(), record.order);
                        removed.remove(record.id.as_str());
                        touched.insert(record.order, record.clone());
                    }
                    Op::Update {
                        id,
                        status,
                        at_ms,
                        ending,
                    } => {
                        // Pruned already, or never stored: nothing to keep.
                        let Some(order) = order_of(id, &added, &removed) else {
                            continue;
                        };
                        let record = match touched.entry(order) {
                            Entry::Occupied(entry) => entry.into_mut(),
                            Entry::Vacant(entry) => {
                                let stored = tasks
                                    .get(order)
                                    .map_err(|e| io(e.into()))?
                                    .map(|value| decode(&self.path, id, value.value()));
                                match stored {
                                    Some(Ok(record)) => entry.insert(record),
                                    None => continue,
                                    Some(Err(error)) => {
                                        // One damaged record must not cost
                                        // the batch's other changes.
                                        tracing::error!("{error}");
                                        continue;
                                    }
                                }
                            }
                        };
                        record.status = status.as_str().to_string();
                        record.transitions.push(Transition {
                            status: record.status.clone(),
                            at_ms: *at_ms,
                        });
                        if let Some(ending) = ending {
                            record.result = ending.result.clone();
                            record.error = ending.error.clone();
                            record.output_truncated = ending.truncated;
                            record.model = ending.model;
                            output
                                .insert(order, ending.output.as_bytes())
                                .map_err(|e| io(e.into()))?;
                            remove_parts(&mut parts, order).map_err(io)?;
                        }
                    }
                    Op::Remove(id) => {
                        let Some(order) = order_of(id, &added, &removed) else {
                            continue;
                        };
                        removed.insert(id.as_str());
                        added.remove(id.as_str());
                        touched.remove(&order);
                        tasks.remove(order).map_err(|e| io(e.into()))?;
                        output.remove(order).map_err(|e| io(e.into()))?;
                        remove_parts(&mut parts, order).map_err(io)?;
                    }
                }
            }
            for (order, record) in &touched {
                tasks
                    .insert(*order, encode(record).as_slice())
                    .map_err(|e| io(e.into()))?;
            }
            for Grown { id, from, bytes } in grown {
                let Some(order) = order_of(id, &added, &removed) else {
                    continue;
                };
                let final_already = match touched.get(&order) {
                    Some(record) => record.status().is_none_or(TaskStatus::is_final),
                    None => match tasks.get(order).map_err(|e| io(e.into()))? {
                        None => true,
                        Some(record) => decode(&self.path, id, record.value())
                            .map_or(true, |record| {
                                record.status().is_none_or(TaskStatus::is_final)
                            }),
                    },
                };
                // A final record's output was written with its status.
                if !final_already {
                    parts
                        .insert((order, *from as u64), bytes.as_slice())
                        .map_err(|e| io(e.into()))?;
                    written.push((id.clone(), from + bytes.len()));
                }
            }
        }
        txn.commit().map_err(|e| io(e.into()))?;
        for id in removed {
            orders.remove(id);
        }
        for (id, order) in added {
            orders.insert(id.to_string(), order);
        }
        Ok(written)
    }
}

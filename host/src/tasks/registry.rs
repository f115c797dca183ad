//! The retained tasks, oldest first. At the cap, the oldest *finished* task
//! is pruned to make room; live tasks are never pruned. While what the
//! finished tasks hold (outputs, results, errors) is over
//! [`RETAINED_BYTES`], the oldest finished tasks first give up their live
//! output (their status, result and error stay, so a coordinator can still
//! collect them), and only then are whole records pruned, oldest first.
//!
//! With a task store, every admitted task is written to it, the finished
//! and interrupted tasks it holds are restored on load, and a pruned task is
//! pruned from the store too.

use super::task::{Task, TaskId};
use crate::store::{Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Bytes of output, results and errors the finished tasks may hold in total.
pub const RETAINED_BYTES: usize = 256 << 20;

pub struct Registry {
    max_retained: usize,
    /// Keyed by admission order, so iteration is oldest first.
    tasks: BTreeMap<u64, Arc<Task>>,
    order_of: HashMap<TaskId, u64>,
    next_order: u64,
    /// Bytes each finished task holds, by admission order.
    finished_bytes: BTreeMap<u64, usize>,
    finished_total: usize,
    /// [`RETAINED_BYTES`], but for tests.
    max_bytes: usize,
    store: Option<Store>,
    /// Told the id of each task pruned (a cluster's coordinator drops its
    /// record from the cluster too).
    on_prune: Option<PruneHook>,
}

/// What is told the id of each task pruned.
pub(crate) type PruneHook = Box<dyn Fn(&str) + Send + Sync>;

/// Every retained task is still queued or running.
#[derive(Debug)]
pub struct RegistryFull;

impl Registry {
    pub fn new(max_retained: usize) -> Registry {
        Registry {
            max_retained,
            tasks: BTreeMap::new(),
            order_of: HashMap::new(),
            next_order: 0,
            finished_bytes: BTreeMap::new(),
            finished_total: 0,
            max_bytes: RETAINED_BYTES,
            store: None,
            on_prune: None,
        }
    }

    /// A registry backed by `store`, holding the tasks it kept (oldest
    /// first, pruned to `max_retained` like any others).
    pub fn with_store(max_retained: usize, store: Store) -> Result<Registry, StoreError> {
        let mut registry = Registry::new(max_retained);
        let records = store.records()?;
        registry.store = Some(store);
        let mut restored = 0usize;
        for (record, output) in &records {
            let Some(task) = Task::restored(record, output) else {
                // Opening the store marked every unfinished task interrupted.
                tracing::warn!(task = %record.id, status = %record.status, "stored task skipped: not final");
                continue;
            };
            let task = Arc::new(task);
            if registry.insert(task.clone()).is_ok() {
                registry.finished(&task);
                restored += 1;
            }
        }
        tracing::info!(tasks = restored, "tasks restored from the task store");
        Ok(registry)
    }

    /// Adds `task`, pruning the oldest finished task if at the cap. Only a
    /// task whose guest has exited counts as finished here, so no task that
    /// could still run is ever forgotten.
    pub fn admit(&mut self, task: Arc<Task>) -> Result<(), RegistryFull> {
        self.insert(task.clone())?;
        if let Some(store) = &self.store {
            task.persist_to(store);
        }
        Ok(())
    }

    fn insert(&mut self, task: Arc<Task>) -> Result<(), RegistryFull> {
        while self.tasks.len() >= self.max_retained {
            let oldest_finished = self
                .tasks
                .iter()
                .find(|(_, task)| task.exited.is_open())
                .map(|(order, _)| *order);
            let order = oldest_finished.ok_or(RegistryFull)?;
            self.prune(order);
        }
        let order = self.next_order;
        self.next_order += 1;
        self.order_of.insert(task.id.clone(), order);
        self.tasks.insert(order, task);
        Ok(())
    }

    /// Records that `task` has finished (its guest exited), counting what
    /// it holds, then, while the finished tasks hold more than
    /// [`RETAINED_BYTES`], releases the oldest ones' output and after that
    /// prunes the oldest (never `task` itself).
    pub fn finished(&mut self, task: &Task) {
        let Some(&order) = self.order_of.get(&task.id) else {
            return;
        };
        let bytes = task.retained_bytes();
        if self.finished_bytes.insert(order, bytes).is_none() {
            self.finished_total += bytes;
        }
        if self.finished_total <= self.max_bytes {
            return;
        }
        // The task that just finished keeps its output: a front-end may still
        // be reading it.
        let older: Vec<u64> = self
            .finished_bytes
            .keys()
            .copied()
            .filter(|older| *older != order)
            .collect();
        let mut with_output = older.into_iter();
        while self.finished_total > self.max_bytes {
            let Some(oldest) = with_output.next() else {
                break;
            };
            let Some(held) = self.tasks.get(&oldest) else {
                continue;
            };
            let freed = held.output.release();
            if let Some(bytes) = self.finished_bytes.get_mut(&oldest) {
                *bytes -= freed.min(*bytes);
            }
            self.finished_total -= freed.min(self.finished_total);
        }
        while self.finished_total > self.max_bytes {
            let oldest = self
                .finished_bytes
                .keys()
                .copied()
                .find(|oldest| *oldest != order);
            match oldest {
                Some(oldest) => self.prune(oldest),
                None => break,
            }
        }
    }

    /// Sets what is told of each task pruned.
    pub(crate) fn on_prune(&mut self, told: PruneHook) {
        self.on_prune = Some(told);
    }

    /// Removes a finished task to make room (past `max_retained` or the
    /// byte budget).
    fn prune(&mut self, order: u64) {
        if let (Some(told), Some(task)) = (&self.on_prune, self.tasks.get(&order)) {
            told(task.id.as_str());
        }
        self.remove(order);
    }

    fn remove(&mut self, order: u64) {
        if let Some(task) = self.tasks.remove(&order) {
            self.order_of.remove(&task.id);
            if let Some(store) = &self.store {
                store.remove(task.id.as_str());
            }
        }
        if let Some(bytes) = self.finished_bytes.remove(&order) {
            self.finished_total -= bytes;
        }
    }

    /// Forgets task `id` (here and in the store), to admit a live record
    /// under its id instead.
    pub(crate) fn forget(&mut self, id: &str) {
        if let Some(&order) = self.order_of.get(id) {
            self.remove(order);
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Task>> {
        self.order_of
            .get(id)
            .and_then(|order| self.tasks.get(order))
    }

    /// Retained tasks, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Task>> {
        self.tasks.values()
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::OutputBuffer;
    use crate::tasks::{NewTask, Outcome, SessionId};
    use tokio_util::sync::CancellationToken;

    fn finished_task(result_bytes: usize) -> Arc<Task> {
        let task = Task::new(
            TaskId::generate(),
            NewTask {
                agent: "a".into(),
                task: "t".into(),
                expected_output: None,
                session: SessionId::next(),
                ancestors: Vec::new(),
                lineage: Vec::new(),
                cancel: CancellationToken::new(),
            },
            OutputBuffer::new(1024, None),
        );
        task.finish(Outcome::Completed("r".repeat(result_bytes)), |_| {});
        task.exited.open();
        Arc::new(task)
    }

    #[test]
    fn outputs_go_before_records_past_the_byte_budget() {
        let mut registry = Registry::new(100);
        registry.max_bytes = 1000;
        let tasks: Vec<Arc<Task>> = (0..4)
            .map(|_| {
                let task = finished_task(10);
                task.output.append(&[b'o'; 300]);
                task
            })
            .collect();
        for task in &tasks {
            registry.admit(task.clone()).unwrap();
            registry.finished(task);
        }
        // 4 × 311 bytes against 1000: the oldest gives up its output, and
        // every record, with its result, stays.
        assert_eq!(registry.len(), 4);
        assert!(tasks[0].output.len() == 0 && tasks[0].output.snapshot().truncated);
        assert!(tasks[1..].iter().all(|task| task.output.len() == 300));
        assert!(tasks.iter().all(|task| task.view().result.is_some()));
        assert_eq!(registry.finished_total, 10 * 4 + 4 + 300 * 3);
    }

    #[test]
    fn finished_tasks_are_pruned_oldest_first_past_the_byte_budget() {
        let mut registry = Registry::new(100);
        registry.max_bytes = 1000;
        let tasks: Vec<Arc<Task>> = (0..4).map(|_| finished_task(400)).collect();
        for task in &tasks {
            registry.admit(task.clone()).unwrap();
            registry.finished(task);
        }
        // 4 × 401 bytes against 1000: the two oldest go.
        let kept: Vec<&TaskId> = registry.iter().map(|task| &task.id).collect();
        assert_eq!(kept, [&tasks[2].id, &tasks[3].id]);
        // One record alone over the budget is kept (it is the newest).
        let huge = finished_task(5000);
        registry.admit(huge.clone()).unwrap();
        registry.finished(&huge);
        let kept: Vec<&TaskId> = registry.iter().map(|task| &task.id).collect();
        assert_eq!(kept, [&huge.id]);
        assert_eq!(registry.finished_total, huge.retained_bytes());
    }
}

//! The retained tasks, oldest first. At the cap, the oldest *finished* task
//! is pruned to make room; live tasks are never pruned.

use super::task::{Task, TaskId};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub struct Registry {
    max_retained: usize,
    /// Keyed by admission order, so iteration is oldest first.
    tasks: BTreeMap<u64, Arc<Task>>,
    order_of: HashMap<TaskId, u64>,
    next_order: u64,
}

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
        }
    }

    /// Adds `task`, pruning the oldest finished task if at the cap. Only a
    /// task whose guest has exited counts as finished here, so no task that
    /// could still run is ever forgotten.
    pub fn admit(&mut self, task: Arc<Task>) -> Result<(), RegistryFull> {
        while self.tasks.len() >= self.max_retained {
            let oldest_finished = self
                .tasks
                .iter()
                .find(|(_, task)| task.exited.is_cancelled())
                .map(|(order, task)| (*order, task.id.clone()));
            let (order, id) = oldest_finished.ok_or(RegistryFull)?;
            self.tasks.remove(&order);
            self.order_of.remove(&id);
        }
        let order = self.next_order;
        self.next_order += 1;
        self.order_of.insert(task.id.clone(), order);
        self.tasks.insert(order, task);
        Ok(())
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

    /// Tasks below `id` in the delegation tree (not `id` itself).
    pub fn descendants(&self, id: &TaskId) -> Vec<Arc<Task>> {
        self.iter()
            .filter(|task| task.ancestors.contains(id))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

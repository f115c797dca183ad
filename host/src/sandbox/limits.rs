//! Per-task resource limits enforced inside the Store: linear memory (summed
//! over all of the task's memories), table elements and instance counts.
//! A refused growth is remembered so the task's failure can name the limit.

use crate::config::units::format_size;
use wasmtime::ResourceLimiter;

/// Tables and instances a component may create; generous for real guests,
/// small enough that a hostile one cannot exhaust the host with them.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
const MAX_INSTANCES: usize = 1000;
const MAX_TABLES: usize = 1000;
const MAX_MEMORIES: usize = 100;

/// The [`ResourceLimiter`] of one task's Store.
pub struct TaskLimiter {
    max_memory: usize,
    memory_in_use: usize,
    breach: Option<String>,
}

impl TaskLimiter {
    pub fn new(max_memory: u64) -> TaskLimiter {
        TaskLimiter {
            max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
            memory_in_use: 0,
            breach: None,
        }
    }

    /// The limit the guest ran into, if any, as a person would say it.
    pub fn breach(&self) -> Option<&str> {
        self.breach.as_deref()
    }
}

impl ResourceLimiter for TaskLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let in_use = self.memory_in_use - current.min(self.memory_in_use) + desired;
        if in_use > self.max_memory {
            self.breach = Some(format!(
                "memory limit of {} reached",
                format_size(self.max_memory as u64)
            ));
            return Ok(false);
        }
        self.memory_in_use = in_use;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.breach = Some(format!(
                "table limit of {MAX_TABLE_ELEMENTS} elements reached"
            ));
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

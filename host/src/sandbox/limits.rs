//! Per-task resource limits enforced inside the Store: host memory held for
//! the task's linear memories *and* tables (summed, against one budget),
//! and instance, table and memory counts. A refused growth is remembered so
//! the task's failure can name the limit. Also the cap on the handles a task
//! holds open, and the process's own open-file limit.

use crate::config::units::format_size;
use wasmtime::ResourceLimiter;

/// Counts a component may create; generous for real guests, small enough
/// that a hostile one cannot exhaust the host with them.
const MAX_INSTANCES: usize = 1000;
const MAX_TABLES: usize = 1000;
const MAX_MEMORIES: usize = 100;
/// Host bytes one table element costs (a pointer).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

/// The [`ResourceLimiter`] of one task's Store.
pub struct TaskLimiter {
    max_memory: usize,
    /// Bytes of linear memory and table storage granted so far.
    in_use: usize,
    breach: Option<String>,
}

impl TaskLimiter {
    pub fn new(max_memory: u64) -> TaskLimiter {
        TaskLimiter {
            max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
            in_use: 0,
            breach: None,
        }
    }

    /// The limit the guest ran into, if any, as a person would say it.
    pub fn breach(&self) -> Option<&str> {
        self.breach.as_deref()
    }

    /// Grants growth from `current` to `desired` bytes if the task's total
    /// stays within its memory limit.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let in_use = (self.in_use - current.min(self.in_use)).saturating_add(desired);
        if in_use > self.max_memory {
            self.breach = Some(format!(
                "memory limit of {} reached",
                format_size(self.max_memory as u64)
            ));
            return false;
        }
        self.in_use = in_use;
        true
    }
}

impl ResourceLimiter for TaskLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
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

/// The message for a task that ran into its open-handle limit.
pub fn open_files_breach(limit: usize) -> String {
    format!(
        "open-handle limit of {limit} reached (files, directories, sockets and streams \
         held open at once); close handles sooner, or raise limits.open_files"
    )
}

/// Raises the process's soft open-file limit to its hard limit, once, so
/// that tasks (each capped by `limits.open_files`) and the host share the
/// most the system allows. Failure only leaves the limit as it was.
pub fn raise_open_file_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(unix)]
        // SAFETY: getrlimit and setrlimit only read and write the struct
        // passed by pointer, which lives on this stack frame.
        unsafe {
            let mut limit = std::mem::zeroed::<libc::rlimit>();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
                && limit.rlim_cur < limit.rlim_max
            {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_tables_share_one_budget() {
        let mut limiter = TaskLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 512 << 10, None).unwrap());
        // 64Ki elements × 8 bytes = 512 KiB: exactly fills the budget.
        assert!(limiter.table_growing(0, 64 << 10, None).unwrap());
        assert!(
            !limiter
                .table_growing(64 << 10, (64 << 10) + 1, None)
                .unwrap()
        );
        assert_eq!(limiter.breach(), Some("memory limit of 1 MiB reached"));
        assert!(!limiter.memory_growing(512 << 10, 513 << 10, None).unwrap());
    }
}

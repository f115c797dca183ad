//! The data of one task's Store: its sandbox (WASI context, resource table,
//! limiter, output) and what its imports need to call back into the toolset
//! as that task.

use super::Toolset;
use crate::sandbox::{OutputBuffer, TaskLimiter};
use crate::tasks::Caller;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub struct GuestState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: TaskLimiter,
    /// The task itself, as the caller of its imports.
    pub caller: Caller,
    pub toolset: Toolset,
    pub output: Arc<OutputBuffer>,
    /// This task's slot under the host's running cap.
    pub(super) slot: Option<OwnedSemaphorePermit>,
    pub(super) slots: Arc<Semaphore>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl GuestState {
    /// Runs `blocked` (a host call that only waits, such as waiting on
    /// sub-agents) with this task's running slot lent out, so that the tasks
    /// it waits on can use the slot instead of queueing behind it. The slot
    /// is taken back before the guest resumes.
    pub async fn lending_slot<F: Future>(&mut self, blocked: F) -> F::Output {
        self.slot = None;
        let output = blocked.await;
        // The semaphore is never closed, so acquiring only waits.
        self.slot = self.slots.clone().acquire_owned().await.ok();
        output
    }
}

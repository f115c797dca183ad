//! The data of one task's Store: its sandbox (WASI context, resource table,
//! limiter, output) and what its imports need to call back into the toolset
//! as that task.

use super::Toolset;
use super::slots::Slot;
use crate::sandbox::{OutputBuffer, TaskLimiter};
use crate::tasks::Caller;
use std::future::Future;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub(crate) struct GuestState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: TaskLimiter,
    /// The task itself, as the caller of its imports.
    pub(crate) caller: Caller,
    pub(crate) toolset: Toolset,
    pub(crate) output: Arc<OutputBuffer>,
    /// This task's slot under the host's running cap.
    pub(super) slot: Option<Slot>,
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
    pub(crate) async fn lending_slot<F: Future>(&mut self, blocked: F) -> F::Output {
        self.slot = None;
        let output = blocked.await;
        self.slot = self.toolset.0.slots.claim_first().granted().await;
        output
    }
}

//! Warm instances: a few instances of each agent's component made ahead of
//! its tasks, so that a task starts by binding one instead of waiting for
//! instantiation. Each is used by one task and dropped with it, never
//! reused: a task can no more see another's state in a warm instance than
//! in a fresh one.
//!
//! A warm instance has its sandbox (WASI context, table, limits, fuel) but
//! no task: its output is held until [`GuestState::bind`] hands it to the
//! task, and the imports that need a task answer as if there were none. If
//! the component's start-up code called one of those, or instantiation
//! failed, the agent gets no more warm instances: its tasks instantiate on
//! demand, where the same failure is reported against the task.
//!
//! Bounds: `engine.warm_instances` per agent, made after the agent's first
//! task (agents never used hold none), and, with the pooling allocator,
//! only while fewer than half of the pool's instance slots are live, so
//! warm instances never crowd out a task.

use super::guest::GuestState;
use super::{LoadedAgent, Toolset};
use crate::sandbox::SandboxOutput;
use crate::wit::AgentInstance;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::Store;

/// An agent's ready instances.
pub(super) struct WarmPool {
    /// How many to keep ready (`engine.warm_instances`).
    target: usize,
    ready: Mutex<Vec<WarmInstance>>,
    /// A refill is under way.
    refilling: AtomicBool,
    /// This agent's instances are made on demand only.
    disabled: AtomicBool,
    /// Tasks that started in a warm instance.
    used: AtomicU64,
}

/// How an agent's warm instances are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WarmStats {
    /// Ready for the agent's next tasks.
    pub ready: usize,
    /// Tasks that started in one so far.
    pub used: u64,
}

/// A guest instantiated in its own Store, waiting for its task.
pub(super) struct WarmInstance {
    pub(super) store: Store<GuestState>,
    pub(super) instance: AgentInstance,
}

impl WarmPool {
    pub(super) fn new(target: u32) -> WarmPool {
        WarmPool {
            target: target as usize,
            ready: Mutex::default(),
            refilling: AtomicBool::new(false),
            disabled: AtomicBool::new(target == 0),
            used: AtomicU64::new(0),
        }
    }

    /// A ready instance, if there is one.
    pub(super) fn take(&self) -> Option<WarmInstance> {
        let taken = self.ready.lock().unwrap().pop();
        if taken.is_some() {
            self.used.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    pub(super) fn stats(&self) -> WarmStats {
        WarmStats {
            ready: self.len(),
            used: self.used.load(Ordering::Relaxed),
        }
    }

    fn len(&self) -> usize {
        self.ready.lock().unwrap().len()
    }
}

/// Counts the Stores alive (warm or running a task), to keep warm instances
/// to the free half of the instance pool.
#[derive(Default)]
pub(super) struct LiveStores(Arc<AtomicUsize>);

/// Held by a Store's data: counted while it lives.
pub(crate) struct LiveStore(Arc<AtomicUsize>);

impl LiveStores {
    pub(super) fn enter(&self) -> LiveStore {
        self.0.fetch_add(1, Ordering::Relaxed);
        LiveStore(self.0.clone())
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for LiveStore {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tops `agent`'s pool up to its target in the background, unless a refill
/// is already under way, the pool is off, or the instance pool is half
/// used.
pub(super) fn refill(toolset: &Toolset, agent: &Arc<LoadedAgent>) {
    if !agent.warm.wanted(toolset) || agent.warm.refilling.swap(true, Ordering::AcqRel) {
        return;
    }
    let (toolset, agent) = (toolset.clone(), agent.clone());
    tokio::spawn(async move {
        let pool = &agent.warm;
        // Behind whatever this worker has queued (such as whoever waits on
        // the task that took the instance): a refill is never urgent.
        tokio::task::yield_now().await;
        loop {
            while pool.wanted(&toolset) {
                match make(&toolset, &agent).await {
                    Ok(warm) => pool.ready.lock().unwrap().push(warm),
                    Err(why) => {
                        pool.disabled.store(true, Ordering::Relaxed);
                        tracing::info!(
                            agent = %agent.spec.name,
                            reason = %why,
                            "no warm instances for this agent: its tasks are instantiated on demand"
                        );
                    }
                }
            }
            pool.refilling.store(false, Ordering::Release);
            // An instance taken after the last check found the refill
            // still under way, so it did not start one: go on for it.
            if !pool.wanted(&toolset) || pool.refilling.swap(true, Ordering::AcqRel) {
                break;
            }
        }
    });
}

impl WarmPool {
    /// Whether another instance should be made now.
    fn wanted(&self, toolset: &Toolset) -> bool {
        !self.disabled.load(Ordering::Relaxed) && self.len() < self.target && has_room(toolset)
    }
}

/// Whether another Store fits in the free half of the instance pool.
fn has_room(toolset: &Toolset) -> bool {
    match toolset.pool_slots() {
        Some(slots) => toolset.live_stores().count() < slots / 2,
        None => true,
    }
}

/// Makes one warm instance of `agent`.
async fn make(toolset: &Toolset, agent: &Arc<LoadedAgent>) -> Result<WarmInstance, String> {
    let limits = &agent.spec.limits;
    let output = SandboxOutput::unbound(limits.output);
    let mut store = super::runner::new_store(toolset, agent, output)?;
    // Start-up code is bounded like a task: by fuel (set by `new_store`),
    // the epoch, and the agent's timeout.
    let made = tokio::time::timeout(limits.timeout, agent.pre.instantiate(&mut store)).await;
    let instance = match made {
        Ok(Ok(instance)) => instance,
        Ok(Err(error)) => return Err(format!("instantiation failed: {error:#}")),
        Err(_) => return Err("instantiation outlasted the agent's timeout".into()),
    };
    if store.data().called_unbound {
        return Err("its start-up code calls the bgagents imports".into());
    }
    Ok(WarmInstance { store, instance })
}

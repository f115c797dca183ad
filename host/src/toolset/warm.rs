//! Warm instances: a few instances of each agent's component made ahead of
//! its tasks, so that a task starts by binding one instead of waiting for
//! instantiation. Each is used by one task and dropped with it, never
//! reused: a task can no more see another's state in a warm instance than
//! in a fresh one.
//!
//! A warm instance has its sandbox (table, limits, fuel, and a WASI context
//! for its start-up code) but no task: its output is held until
//! [`GuestState::bind`] hands it to the task, which also opens the granted
//! directories anew (a directory replaced since the instance was made is
//! seen as it is now), and the imports that need a task answer as if there
//! were none. If the component's start-up code called one of those, or
//! making one failed three times in a row, the agent gets no more warm
//! instances: its tasks instantiate on demand, where a failure is reported
//! against the task.
//!
//! Bounds: `engine.warm_instances` per agent, made after the agent's first
//! task (agents never used hold none), and, with the pooling allocator,
//! only while fewer than half of the pool's instance slots are live; once
//! half are, a task that starts drops every ready instance first, so warm
//! instances give their slots back to tasks.

use super::guest::GuestState;
use super::{LoadedAgent, Toolset};
use crate::sandbox::SandboxOutput;
use crate::wit::AgentInstance;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
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
    /// Attempts to make one that failed since the last that worked.
    failures: AtomicU32,
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
            failures: AtomicU32::new(0),
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
/// used. The refill holds the toolset and the agent only while it makes an
/// instance: one dropped meanwhile (with its compiled component's mapping)
/// ends it.
pub(super) fn refill(toolset: &Toolset, agent: &Arc<LoadedAgent>) {
    if !agent.warm.wanted(toolset) || agent.warm.refilling.swap(true, Ordering::AcqRel) {
        return;
    }
    let (toolset, agent) = (Arc::downgrade(&toolset.0), Arc::downgrade(agent));
    tokio::spawn(async move {
        // Behind whatever this worker has queued (such as whoever waits on
        // the task that took the instance): a refill is never urgent.
        tokio::task::yield_now().await;
        loop {
            let (Some(shared), Some(agent)) = (toolset.upgrade(), agent.upgrade()) else {
                return;
            };
            let pool = &agent.warm;
            // Cleared should making an instance panic, so a later task can
            // start a refill again.
            let on_panic = ClearedOnPanic(&pool.refilling);
            let store = {
                let toolset = Toolset(shared);
                (pool.wanted(&toolset) && !toolset.shutdown_token().is_cancelled()).then(|| {
                    let output = SandboxOutput::unbound(agent.spec.limits.output);
                    super::runner::new_store(&toolset, &agent, output)
                })
                // The toolset (its task store, open files) is not held while
                // start-up code runs.
            };
            if let Some(store) = store {
                let made = match store {
                    Ok(store) => make(store, &agent).await,
                    Err(reason) => Err(Failure::Now(reason)),
                };
                match made {
                    Ok(warm) => {
                        pool.failures.store(0, Ordering::Relaxed);
                        pool.ready.lock().unwrap().push(warm);
                        continue;
                    }
                    // Tried again at the agent's next task.
                    Err(failure) => pool.failed(&agent.spec.name, failure),
                }
            }
            drop(on_panic);
            pool.refilling.store(false, Ordering::Release);
            // An instance taken after the last check found the refill
            // still under way, so it did not start one: go on for it.
            let wanted = (toolset.upgrade()).is_some_and(|shared| pool.wanted(&Toolset(shared)));
            if pool.failures.load(Ordering::Relaxed) > 0
                || !wanted
                || pool.refilling.swap(true, Ordering::AcqRel)
            {
                return;
            }
        }
    });
}

/// Clears a pool's `refilling` flag when dropped while panicking.
struct ClearedOnPanic<'a>(&'a AtomicBool);

impl Drop for ClearedOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(false, Ordering::Release);
        }
    }
}

/// Why a warm instance could not be made.
enum Failure {
    /// Would fail the same way every time: the component's start-up code
    /// calls imports that need a task.
    Always(String),
    /// May pass: a granted directory missing for a moment, the instance
    /// pool full, a slow start-up on a loaded machine, a trap.
    Now(String),
}

/// Consecutive failures after which an agent gets no more warm instances.
const MAX_FAILURES: u32 = 3;

impl WarmPool {
    /// Whether another instance should be made now.
    fn wanted(&self, toolset: &Toolset) -> bool {
        !self.disabled.load(Ordering::Relaxed) && self.len() < self.target && has_room(toolset)
    }

    /// Notes a failure to make an instance; turns the pool off for good
    /// after one that will repeat, or after [`MAX_FAILURES`] in a row.
    fn failed(&self, agent: &str, failure: Failure) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let (why, off) = match failure {
            Failure::Always(why) => (why, true),
            Failure::Now(why) => (why, failures >= MAX_FAILURES),
        };
        if off {
            self.disabled.store(true, Ordering::Relaxed);
            tracing::info!(
                agent, reason = %why,
                "no warm instances for this agent: its tasks are instantiated on demand"
            );
        } else {
            tracing::debug!(agent, reason = %why, "a warm instance could not be made; tried again at the next task");
        }
    }

    /// Drops every ready instance, giving their pool slots back.
    pub(super) fn evict(&self) {
        let evicted = std::mem::take(&mut *self.ready.lock().unwrap());
        drop(evicted);
    }
}

/// Whether the instance pool is at least half used: warm instances then
/// give way to tasks.
pub(super) fn pool_pressed(toolset: &Toolset) -> bool {
    !has_room(toolset)
}

/// Whether another Store fits in the free half of the instance pool.
fn has_room(toolset: &Toolset) -> bool {
    match toolset.pool_slots() {
        Some(slots) => toolset.live_stores().count() < slots / 2,
        None => true,
    }
}

/// Makes one warm instance of `agent`.
/// Instantiates `agent`'s component in `store` (made by
/// [`runner::new_store`](super::runner::new_store)), unbound to any task.
async fn make(mut store: Store<GuestState>, agent: &LoadedAgent) -> Result<WarmInstance, Failure> {
    let limits = &agent.spec.limits;
    // Start-up code is bounded like a task: by fuel (set by `new_store`),
    // the epoch, and the agent's timeout.
    let made = tokio::time::timeout(limits.timeout, agent.pre.instantiate(&mut store)).await;
    let instance = match made {
        Ok(Ok(instance)) => instance,
        Ok(Err(error)) => return Err(Failure::Now(format!("instantiation failed: {error:#}"))),
        Err(_) => {
            return Err(Failure::Now(
                "instantiation outlasted the agent's timeout".into(),
            ));
        }
    };
    if store.data().called_unbound {
        return Err(Failure::Always(
            "its start-up code calls the bgagents imports".into(),
        ));
    }
    Ok(WarmInstance { store, instance })
}

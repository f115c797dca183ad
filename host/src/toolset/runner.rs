//! Executing one task: wait for a running slot, then run the guest in a fresh
//! Store under its fuel budget, memory limit and wall-clock timeout, racing
//! the task's cancellation. Epoch-driven yields (every few milliseconds,
//! whatever the guest does) let a stop or timeout take effect within a tick
//! of it, in a loop that never calls the host as in one that floods host
//! calls with huge arguments; fuel is the CPU budget.

use super::guest::GuestState;
use super::slots::{Claim, Slot};
use super::tools;
use super::trap::explain_trap;
use super::{LoadedAgent, Toolset, render, warm};
use crate::config::units::format_size;
use crate::sandbox::SandboxOutput;
use crate::tasks::{EventKind, Outcome, Task};
use crate::wit::RunRequest;
use std::sync::Arc;
use tracing::Instrument;
use wasmtime::Store;
use wasmtime::component::ResourceTableError;

pub(super) fn spawn(toolset: Toolset, task: Arc<Task>, agent: Arc<LoadedAgent>, claim: Claim) {
    // Everything logged about the task, by the host or on its behalf, carries
    // its id, agent and parent.
    let span = tracing::info_span!(
        parent: None,
        "task",
        id = %task.id,
        agent = %task.agent,
        parent = task.ancestors.last().map(|parent| parent.to_string()),
    );
    span.in_scope(|| tracing::debug!("queued"));
    tokio::spawn(drive(toolset, task, agent, claim).instrument(span));
}

/// Marks `task` stopped (final at once) and cancels it and its subtree.
/// Returns false if the task had already ended some other way.
pub(super) fn stop(toolset: &Toolset, task: &Task) -> bool {
    let stopped = task.finish(Outcome::Stopped, |status| {
        toolset.emit(task, EventKind::Finished(status))
    });
    task.cancel.cancel();
    if stopped {
        tracing::debug!(task = %task.id, agent = %task.agent, "stop requested");
    }
    stopped
}

async fn drive(toolset: Toolset, task: Arc<Task>, agent: Arc<LoadedAgent>, claim: Claim) {
    let slot = tokio::select! {
        biased;
        _ = task.cancel.cancelled() => None,
        slot = claim.granted() => slot,
    };
    let outcome = match slot {
        None => Outcome::Stopped,
        Some(slot) => {
            // On a cluster the task runs on a worker, and is running from
            // when one claims it; unless this process (a worker) took it
            // from the queue itself, and it runs here after all.
            let elsewhere = match toolset.remote().filter(|remote| remote.claims(&task)) {
                Some(remote) => {
                    let started: crate::cluster::Started = {
                        let (toolset, task) = (toolset.clone(), task.clone());
                        Box::new(move || {
                            if task.mark_running(|| toolset.emit(&task, EventKind::Started)) {
                                tracing::debug!("started on a worker");
                            }
                        })
                    };
                    tokio::select! {
                        biased;
                        _ = task.cancel.cancelled() => Some(Outcome::Stopped),
                        outcome = remote.run(task.clone(), started) => outcome,
                    }
                }
                None => None,
            };
            match elsewhere {
                Some(outcome) => outcome,
                None => run_here(&toolset, &task, &agent, slot).await,
            }
        }
    };
    // The guest's Store has been dropped: nothing of it runs any more.
    log_outcome(&outcome);
    let failed_or_stopped = !matches!(outcome, Outcome::Completed(_));
    task.finish(outcome, |status| {
        toolset.emit(&task, EventKind::Finished(status))
    });
    if failed_or_stopped {
        // Descendants of a failed or stopped task are stopped too.
        task.cancel.cancel();
    }
    task.exited.open();
    toolset.registry().finished(&task);
}

/// Runs `task` in this process, holding `slot`, until it ends or is stopped.
async fn run_here(
    toolset: &Toolset,
    task: &Arc<Task>,
    agent: &Arc<LoadedAgent>,
    slot: Slot,
) -> Outcome {
    // Running already when handed back by a cluster's follower that had
    // seen it run on another worker (it runs here now, again).
    let running = task.mark_running(|| toolset.emit(task, EventKind::Started))
        || task.status() == crate::tasks::TaskStatus::Running;
    if !running {
        return Outcome::Stopped;
    }
    tracing::debug!("started");
    tokio::select! {
        biased;
        _ = task.cancel.cancelled() => Outcome::Stopped,
        outcome = async {
            match &agent.harness {
                // A harness agent runs its CLI (holding the slot).
                Some(harness) => harness.run(task).await,
                None => run_guest(toolset, task, agent, slot).await,
            }
        } => outcome,
    }
}

/// How a task's guest ended, for operators. The reason is guest-influenced
/// text, so it is logged escaped (`?`), never raw.
fn log_outcome(outcome: &Outcome) {
    match outcome {
        Outcome::Completed(result) => tracing::debug!(result_bytes = result.len(), "completed"),
        Outcome::Failed(reason) => tracing::info!(reason = ?reason, "failed"),
        Outcome::Stopped => tracing::debug!("stopped"),
        Outcome::Interrupted(reason) => tracing::info!(reason = ?reason, "interrupted"),
    }
}

async fn run_guest(
    toolset: &Toolset,
    task: &Arc<Task>,
    agent: &Arc<LoadedAgent>,
    slot: Slot,
) -> Outcome {
    let limits = &agent.spec.limits;
    if warm::pool_pressed(toolset) {
        toolset.evict_warm_instances();
    }
    let warm = agent.warm.take();
    warm::refill(toolset, agent);
    let (mut store, ready) = match warm {
        Some(mut warm) => match warm.store.data_mut().reopen_grants(agent) {
            Ok(()) => (warm.store, Some(warm.instance)),
            Err(reason) => return Outcome::Failed(reason),
        },
        None => match new_store(toolset, agent, SandboxOutput::bound(&task.output)) {
            Ok(store) => (store, None),
            Err(reason) => return Outcome::Failed(reason),
        },
    };
    store.data_mut().bind(toolset, task, agent, slot);
    if toolset.epoch_interruption() {
        // The first yield a tick from now, whenever the Store was made.
        store.set_epoch_deadline(1);
    }
    let spec = &agent.spec;
    let request = RunRequest {
        task_id: task.id.to_string(),
        agent: task.agent.clone(),
        instruction: match spec.add_environment_info {
            true => format!("{}\n\n{}", spec.instruction, tools::environment_info(spec)),
            false => spec.instruction.clone(),
        },
        task: task.task.clone(),
        expected_output: task.expected_output.clone(),
        sub_agents: match spec.background_agents {
            true => spec.sub_agents.clone(),
            false => Vec::new(),
        },
        description: spec.description.clone(),
        date: spec.add_date.then(crate::clock::today),
        max_iterations: spec.max_iterations,
    };
    let call = async {
        let instance = match ready {
            Some(instance) => instance,
            None => match agent.pre.instantiate(&mut store).await {
                Ok(instance) => instance,
                // The pool is full: warm instances (ready, or one a refill
                // was making) give their slots to the task, which tries once
                // more.
                Err(error) if error.is::<wasmtime::PoolConcurrencyLimitError>() => {
                    toolset.evict_warm_instances();
                    tokio::task::yield_now().await;
                    toolset.evict_warm_instances();
                    agent.pre.instantiate(&mut store).await?
                }
                Err(error) => return Err(error),
            },
        };
        instance.run(&mut store, &request).await
    };
    match tokio::time::timeout(limits.timeout, call).await {
        Err(_) => Outcome::Failed(format!(
            "timed out after {}",
            render::runtime(limits.timeout)
        )),
        Ok(Ok(Ok(result))) => Outcome::Completed(cap_text(result, limits.result)),
        Ok(Ok(Err(message))) => Outcome::Failed(cap_text(message, limits.result)),
        Ok(Err(error)) if is_hostcall_overflow(&error) => Outcome::Failed(format!(
            "the guest passed more than {} to the host in one call (or returned a \
             result that large); a call may carry at most that: pass data in smaller pieces",
            format_size(HOSTCALL_BYTES as u64)
        )),
        Ok(Err(error)) if is_table_full(&error) => {
            Outcome::Failed(crate::sandbox::open_files_breach(limits.open_files))
        }
        Ok(Err(error)) => Outcome::Failed(explain_trap(&error, &store, limits.fuel)),
    }
}

/// A Store for a guest of `agent`, its output going to `output`: the
/// agent's sandbox, memory limit and fuel budget, yielding to the runtime
/// at every epoch tick and every `engine.fuel_yield_interval` of fuel.
pub(super) fn new_store(
    toolset: &Toolset,
    agent: &LoadedAgent,
    output: Arc<SandboxOutput>,
) -> Result<Store<GuestState>, String> {
    let limits = &agent.spec.limits;
    let live = toolset.live_stores().enter();
    let state = GuestState::new(&agent.spec.name, agent, output, live)?;
    let mut store = Store::new(toolset.engine(), state);
    store.limiter(|state| &mut state.limiter);
    if toolset.fuel_metering() {
        let interval = toolset.team().engine.fuel_yield_interval;
        store
            .set_fuel(limits.fuel)
            .and_then(|()| store.fuel_async_yield_interval(Some(interval)))
            .map_err(|error| format!("cannot set up fuel metering: {error}"))?;
    }
    store.set_hostcall_fuel(HOSTCALL_BYTES);
    if toolset.epoch_interruption() {
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
    }
    Ok(store)
}

/// Bytes a guest may hand the host in one call (strings and lists summed),
/// and so the largest result it may return. Checked by wasmtime before
/// anything is copied, so a guest that passes huge arguments in a loop
/// costs the host nothing per call beyond this.
pub const HOSTCALL_BYTES: usize = 4 << 20;

/// The guest passed more than [`HOSTCALL_BYTES`] in one call.
fn is_hostcall_overflow(error: &wasmtime::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .to_string()
            .starts_with("too much data is being copied")
    })
}

/// The guest tried to hold more handles than `limits.open_files`.
fn is_table_full(error: &wasmtime::Error) -> bool {
    matches!(error.downcast_ref(), Some(ResourceTableError::Full))
}

/// Cuts a task's result or error to `limit` bytes (on a character
/// boundary), noting the cut at the end the way a view notes cut output.
fn cap_text(mut text: String, limit: u64) -> String {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if text.len() <= limit {
        return text;
    }
    let total = text.len();
    text.truncate(text.floor_char_boundary(limit));
    text.shrink_to_fit();
    text.push_str(&format!(
        "\n[truncated: {total} bytes, limits.result keeps {limit}]"
    ));
    text
}

//! Executing one task: wait for a running slot, then run the guest in a fresh
//! Store under its fuel budget, memory limit and wall-clock timeout, racing
//! the task's cancellation. Fuel-driven yields let a stop or timeout take
//! effect even in a guest loop that never calls the host.

use super::guest::GuestState;
use super::slots::{Claim, Slot};
use super::trap::explain_trap;
use super::{LoadedAgent, Toolset, render};
use crate::bindings::agent::Request;
use crate::sandbox::{TaskLimiter, task_context};
use crate::tasks::{Caller, EventKind, Outcome, Task};
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::ResourceTable;

pub(super) fn spawn(toolset: Toolset, task: Arc<Task>, agent: Arc<LoadedAgent>, claim: Claim) {
    tokio::spawn(drive(toolset, task, agent, claim));
}

/// Marks `task` stopped (final at once) and cancels it and its subtree.
/// Returns false if the task had already ended some other way.
pub(super) fn stop(toolset: &Toolset, task: &Task) -> bool {
    let stopped = task.finish(Outcome::Stopped, |status| {
        toolset.emit(task, EventKind::Finished(status))
    });
    task.cancel.cancel();
    stopped
}

async fn drive(toolset: Toolset, task: Arc<Task>, agent: Arc<LoadedAgent>, claim: Claim) {
    let slot = tokio::select! {
        biased;
        _ = task.cancel.cancelled() => None,
        slot = claim.granted() => slot,
    };
    let outcome = match slot {
        Some(slot) if task.mark_running(|| toolset.emit(&task, EventKind::Started)) => {
            tokio::select! {
                biased;
                _ = task.cancel.cancelled() => Outcome::Stopped,
                outcome = run_guest(&toolset, &task, &agent, slot) => outcome,
            }
        }
        _ => Outcome::Stopped,
    };
    // The guest's Store has been dropped: nothing of it runs any more.
    let failed_or_stopped = !matches!(outcome, Outcome::Completed(_));
    task.finish(outcome, |status| {
        toolset.emit(&task, EventKind::Finished(status))
    });
    if failed_or_stopped {
        // Descendants of a failed or stopped task are stopped too.
        task.cancel.cancel();
    }
    task.exited.cancel();
}

async fn run_guest(toolset: &Toolset, task: &Task, agent: &LoadedAgent, slot: Slot) -> Outcome {
    let limits = &agent.spec.limits;
    let wasi = match task_context(&task.agent, &agent.grants, &task.output) {
        Ok(wasi) => wasi,
        Err(reason) => return Outcome::Failed(reason),
    };
    let state = GuestState {
        wasi,
        table: ResourceTable::new(),
        limiter: TaskLimiter::new(limits.memory),
        caller: Caller::for_task(task),
        toolset: toolset.clone(),
        output: task.output.clone(),
        slot: Some(slot),
    };
    let mut store = Store::new(&toolset.0.engine, state);
    store.limiter(|state| &mut state.limiter);
    if toolset.0.fuel_metering
        && let Err(error) = store.set_fuel(limits.fuel).and_then(|()| {
            let interval = toolset.0.team.engine.fuel_yield_interval;
            store.fuel_async_yield_interval(Some(interval))
        })
    {
        return Outcome::Failed(format!("cannot set up fuel metering: {error}"));
    }
    let request = Request {
        task_id: task.id.to_string(),
        agent: task.agent.clone(),
        instruction: agent.spec.instruction.clone(),
        task: task.task.clone(),
        expected_output: task.expected_output.clone(),
        sub_agents: match agent.spec.background_agents {
            true => agent.spec.sub_agents.clone(),
            false => Vec::new(),
        },
    };
    let call = async {
        let instance = agent.pre.instantiate_async(&mut store).await?;
        instance
            .bgagents_agents_agent()
            .call_run(&mut store, &request)
            .await
    };
    match tokio::time::timeout(limits.timeout, call).await {
        Err(_) => Outcome::Failed(format!(
            "timed out after {}",
            render::runtime(limits.timeout)
        )),
        Ok(Ok(Ok(result))) => Outcome::Completed(result),
        Ok(Ok(Err(message))) => Outcome::Failed(message),
        Ok(Err(error)) => Outcome::Failed(explain_trap(&error, &store, limits.fuel)),
    }
}

//! Executing one task: wait for a running slot, then run the guest in a fresh
//! Store under its fuel budget, memory limit and wall-clock timeout, racing
//! the task's cancellation. Epoch-driven yields (every few milliseconds,
//! whatever the guest does) let a stop or timeout take effect within a tick
//! of it, in a loop that never calls the host as in one that floods host
//! calls with huge arguments; fuel is the CPU budget.

use super::guest::GuestState;
use super::slots::{Claim, Slot};
use super::{LoadedAgent, Toolset, render};
use crate::bindings::agent::Request;
use crate::config::units::format_size;
use crate::sandbox::{TaskLimiter, task_context};
use crate::tasks::{Caller, EventKind, Outcome, Task};
use std::sync::Arc;
use wasmtime::component::{ResourceTable, ResourceTableError};
use wasmtime::{Store, Trap};

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
    toolset.0.registry.lock().unwrap().finished(&task);
}

async fn run_guest(toolset: &Toolset, task: &Task, agent: &LoadedAgent, slot: Slot) -> Outcome {
    let limits = &agent.spec.limits;
    let wasi = match task_context(&task.agent, &agent.grants, &task.output) {
        Ok(wasi) => wasi,
        Err(reason) => return Outcome::Failed(reason),
    };
    // Every handle a guest holds open (file, directory, socket, stream,
    // pollable) is one entry of its table: capping the table caps them all.
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.open_files);
    let state = GuestState {
        wasi,
        table,
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
    store.set_hostcall_fuel(HOSTCALL_BYTES);
    if toolset.0.epoch_interruption {
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
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
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.shrink_to_fit();
    text.push_str(&format!(
        "\n[truncated: {total} bytes, limits.result keeps {limit}]"
    ));
    text
}

/// Turns a trap into a reason a person understands: the limit that was hit,
/// or the trap with the guest's panic message and backtrace when it has one.
fn explain_trap(error: &wasmtime::Error, store: &Store<GuestState>, fuel: u64) -> String {
    let trap = error.downcast_ref::<Trap>();
    // A refused growth shows up as an abort (`unreachable`), an access past
    // the memory the guest assumed it got, or a failed instantiation — not
    // as any other trap, which keeps its own reason.
    let growth_failure = matches!(
        trap,
        None | Some(
            Trap::UnreachableCodeReached | Trap::MemoryOutOfBounds | Trap::TableOutOfBounds
        )
    );
    if growth_failure && let Some(breach) = store.data().limiter.breach() {
        return breach.to_string();
    }
    match trap {
        Some(Trap::OutOfFuel) => return format!("fuel budget of {fuel} exhausted"),
        Some(Trap::StackOverflow) => {
            return "stack overflow: the guest recursed too deeply".to_string();
        }
        _ => {}
    }
    if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return format!(
            "no free instance slot ({full}); raise engine.pool_size in the team file, \
             or set engine.pooling to off"
        );
    }
    let frames = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(collapse_backtrace)
        .unwrap_or_default();
    // Rust guests keep their stack in linear memory: running off its end is
    // an out-of-bounds access deep inside one recursing function.
    if trap == Some(&Trap::MemoryOutOfBounds)
        && let Some((function, _)) = frames.iter().find(|(_, count)| *count >= RECURSION_FRAMES)
    {
        return format!(
            "stack overflow: `{function}` recursed until the guest's stack ran out \
             (out-of-bounds memory access)"
        );
    }
    let mut reason = match trap {
        Some(trap) => format!("guest trapped: {trap}"),
        None => format!("guest failed: {}", error.root_cause()),
    };
    let output = store.data().output.snapshot().text;
    // Only the end of the output: a panic printed long before is not this one.
    let mut tail = output.len().saturating_sub(PANIC_TAIL_BYTES);
    while !output.is_char_boundary(tail) {
        tail += 1;
    }
    if let Some(panic) = panic_message(&output[tail..]) {
        reason = format!("guest panicked: {panic}");
    }
    if !frames.is_empty() {
        reason.push_str("\nwasm backtrace (innermost first):");
        for (function, count) in frames.iter().take(BACKTRACE_LINES) {
            match count {
                1 => reason.push_str(&format!("\n  {function}")),
                _ => reason.push_str(&format!("\n  {function} ×{count}")),
            }
        }
        if frames.len() > BACKTRACE_LINES {
            reason.push_str(&format!("\n  … {} more", frames.len() - BACKTRACE_LINES));
        }
    }
    reason
}

/// How much of the output's end is searched for the guest's panic message.
const PANIC_TAIL_BYTES: usize = 4096;
/// Backtrace lines shown in a failure reason.
const BACKTRACE_LINES: usize = 12;
/// Consecutive frames of one function that mean runaway recursion.
const RECURSION_FRAMES: usize = 16;

/// The backtrace's function names, innermost first, with Rust hash suffixes
/// removed and consecutive repeats counted.
fn collapse_backtrace(backtrace: &wasmtime::WasmBacktrace) -> Vec<(String, usize)> {
    let mut frames: Vec<(String, usize)> = Vec::new();
    // Frame lines read `  N: 0xOFFSET - module!function`; continuation lines
    // for inlined symbols start with `-`.
    for line in backtrace.to_string().lines().skip(1) {
        let Some((_, name)) = line.split_once(" - ").or_else(|| line.split_once(": ")) else {
            continue;
        };
        let name = strip_rust_hash(name.trim());
        match frames.last_mut() {
            Some((last, count)) if *last == name => *count += 1,
            _ => frames.push((name.to_string(), 1)),
        }
    }
    frames
}

/// `probe::recurse::h8091404d8357d1bd` → `probe::recurse`.
fn strip_rust_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((path, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            path
        }
        _ => name,
    }
}

/// The message of the last Rust panic the guest printed to stderr, if any.
fn panic_message(output: &str) -> Option<String> {
    let start = output.rfind("panicked at ")?;
    let rest = &output[start + "panicked at ".len()..];
    let mut lines = rest.lines();
    let location = lines.next()?.trim_end_matches(':');
    let message: Vec<&str> = lines
        .take_while(|line| !line.starts_with("note:"))
        .collect();
    Some(format!("{} (at {location})", message.join("\n").trim()))
}

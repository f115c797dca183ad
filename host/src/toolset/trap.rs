//! Explaining a guest's trap: the limit it hit, or its panic message and a
//! backtrace with the function names that matter to the plugin's author.

use super::guest::GuestState;
use wasmtime::{Store, Trap};

/// Turns a trap into a reason a person understands: the limit that was hit,
/// or the trap with the guest's panic message and backtrace when it has one.
pub(super) fn explain_trap(
    error: &wasmtime::Error,
    store: &Store<GuestState>,
    fuel: u64,
) -> String {
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

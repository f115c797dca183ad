//! Explaining a guest's trap: the limit it hit (where, and which key of the
//! team file raises it), or its panic message and a backtrace that shows the
//! plugin author's own functions rather than the Rust runtime's panic
//! machinery and the bindings' glue.

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
    if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return format!(
            "no free instance slot ({full}); raise engine.pool_size in the team file, \
             or set engine.pooling to off"
        );
    }
    let frames = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|backtrace| collapse_backtrace(&backtrace.to_string()))
        .unwrap_or_default();
    let innermost = frames.iter().find(|frame| frame.kind == FrameKind::Author);
    let at = innermost.map_or(String::new(), |frame| format!(" in `{}`", frame.name));
    match trap {
        Some(Trap::OutOfFuel) => {
            return format!(
                "fuel budget of {fuel} exhausted{at}; {}",
                raise_hint(store, "fuel")
            );
        }
        Some(Trap::StackOverflow) => {
            return format!(
                "stack overflow{at}: the guest recursed too deeply for the host's wasm \
                 stack; make the recursion shallower or iterative"
            );
        }
        _ => {}
    }
    // Rust guests keep their stack in linear memory: running off its end is
    // an out-of-bounds access deep inside one recursing function.
    if trap == Some(&Trap::MemoryOutOfBounds)
        && let Some(frame) = frames.iter().find(|frame| frame.count >= RECURSION_FRAMES)
    {
        return format!(
            "stack overflow: `{}` recursed until the guest's stack ran out \
             (out-of-bounds memory access); make the recursion shallower or iterative, \
             or give a Rust guest a bigger stack when linking it \
             (RUSTFLAGS=\"-C link-arg=-zstack-size=BYTES\"; the default is 1 MiB)",
            frame.name
        );
    }
    let mut reason = match trap {
        Some(trap) => format!("guest trapped: {trap}"),
        None => format!("guest failed: {}", error.root_cause()),
    };
    let output = match &store.data().task {
        Some(binding) => binding.output.snapshot().text,
        None => String::new(),
    };
    // Only the end of the output: a panic printed long before is not this one.
    let tail = output.ceil_char_boundary(output.len().saturating_sub(PANIC_TAIL_BYTES));
    if let Some(panic) = panic_message(&output[tail..]) {
        reason = format!("guest panicked: {panic}");
    }
    reason.push_str(&render_backtrace(&frames));
    reason
}

/// Where a limit is set: the agent's key in the team file, or, for a lone
/// component run without one, how to get a team file.
fn raise_hint(store: &Store<GuestState>, limit: &str) -> String {
    let Some(binding) = &store.data().task else {
        return format!("raise its limits.{limit}");
    };
    let agent = binding.caller.agent.as_deref().unwrap_or("NAME");
    let source = &binding.toolset.team().source;
    let lone = source
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("wasm"));
    match lone {
        true => format!(
            "a lone component runs with the default limits: write a team file for it \
             and raise agents.{agent}.limits.{limit} there"
        ),
        false => format!(
            "raise agents.{agent}.limits.{limit} in {}",
            source.display()
        ),
    }
}

/// How much of the output's end is searched for the guest's panic message.
const PANIC_TAIL_BYTES: usize = 4096;
/// Backtrace lines shown in a failure reason.
const BACKTRACE_LINES: usize = 12;
/// Consecutive frames of one function that mean runaway recursion.
const RECURSION_FRAMES: usize = 16;

/// Crates whose frames are the Rust runtime, its panic and allocation
/// machinery, or the bindings' runtime: never what a plugin author is after.
const RUNTIME_CRATES: &[&str] = &[
    "std",
    "core",
    "alloc",
    "panic_abort",
    "panic_unwind",
    "compiler_builtins",
    "dlmalloc",
    "wit_bindgen",
    "wit_bindgen_rt",
    "wasi",
    "wasip2",
    "__rustc",
];

/// Whose code a backtrace frame runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    /// The plugin author's own functions.
    Author,
    /// The Rust runtime, C library, allocator, panic machinery or
    /// generated bindings glue.
    Runtime,
    /// A function without a name (the component has no name section).
    Unnamed,
}

/// One function of a backtrace, with consecutive repeats counted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    /// `module!function`, with Rust hashes removed.
    name: String,
    count: usize,
    kind: FrameKind,
}

/// The lines of a failure reason that show `frames`: the author's frames,
/// innermost first, then how many others were left out. A backtrace with no
/// frame of the author's (another language's runtime, or a component built
/// without names) is shown as it is.
fn render_backtrace(frames: &[Frame]) -> String {
    if frames.is_empty() {
        return String::new();
    }
    if frames.iter().all(|frame| frame.kind == FrameKind::Unnamed) {
        let count: usize = frames.iter().map(|frame| frame.count).sum();
        return format!(
            "\nwasm backtrace: {count} frames without function names (the component \
             was built without its name section)"
        );
    }
    let authors: Vec<&Frame> = frames
        .iter()
        .filter(|frame| frame.kind == FrameKind::Author)
        .collect();
    let shown = match authors.is_empty() {
        true => frames.iter().collect(),
        false => authors,
    };
    let mut lines = "\nwasm backtrace (innermost first):".to_string();
    for frame in shown.iter().take(BACKTRACE_LINES) {
        match frame.count {
            1 => lines.push_str(&format!("\n  {}", frame.name)),
            count => lines.push_str(&format!("\n  {} ×{count}", frame.name)),
        }
    }
    let left_out = frames.len() - shown.len().min(BACKTRACE_LINES);
    if left_out > 0 {
        let others = match shown.len() < frames.len() {
            true => " of the Rust runtime, panic machinery and bindings glue",
            false => "",
        };
        lines.push_str(&format!("\n  … {left_out} more frames{others} left out"));
    }
    lines
}

/// The backtrace's functions, innermost first, with Rust hashes removed and
/// consecutive repeats counted. `backtrace` is wasmtime's rendering: frame
/// lines read `  N: 0xOFFSET - module!function`; continuation lines for
/// inlined symbols start with `-`.
fn collapse_backtrace(backtrace: &str) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    for line in backtrace.lines().skip(1) {
        let Some((_, name)) = line.split_once(" - ").or_else(|| line.split_once(": ")) else {
            continue;
        };
        let name = shorten_bindings_traits(&strip_rust_hashes(name.trim()));
        match frames.last_mut() {
            Some(last) if last.name == name => last.count += 1,
            _ => frames.push(Frame {
                kind: frame_kind(&name),
                name,
                count: 1,
            }),
        }
    }
    frames
}

/// `<a::Agent as a::exports::bgagents::agents::agent::Guest>::run` →
/// `<a::Agent as Guest>::run`: the path of a trait the bindings generate says
/// nothing the author does not know.
fn shorten_bindings_traits(name: &str) -> String {
    let mut shortened = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find(" as ") {
        let (before, after) = rest.split_at(at + " as ".len());
        shortened.push_str(before);
        let end = after.find('>').unwrap_or(after.len());
        let (path, tail) = after.split_at(end);
        match path.contains("::exports::") {
            true => shortened.push_str(path.rsplit("::").next().unwrap_or(path)),
            false => shortened.push_str(path),
        }
        rest = tail;
    }
    shortened.push_str(rest);
    shortened
}

/// Classifies `module!function` by the crate its function belongs to.
fn frame_kind(name: &str) -> FrameKind {
    let function = name.split_once('!').map_or(name, |(_, function)| function);
    if function.starts_with("<wasm function ") {
        return FrameKind::Unnamed;
    }
    // A plain C symbol (`abort`, `malloc`, `__rust_start_panic`), an
    // export shim (`bgagents:agents/agent@0.1.0#run`), or the glue
    // wit-bindgen generates inside the plugin's own crate.
    let glue = !function.contains("::")
        || function.contains('#')
        || function.contains("::_export_")
        || function.contains("::_post_return_")
        || function.contains("::_rt::")
        || function.contains("cabi_");
    if glue {
        return FrameKind::Runtime;
    }
    // `<probe::Probe as …>::run` belongs to the crate of its self type;
    // `<&mut W as core::fmt::Write>::write_str`, with a generic or built-in
    // self type, to the crate of its trait.
    let mut owner = function
        .trim_start_matches(['<', '&', '*'])
        .trim_start_matches("mut ")
        .trim_start_matches("const ")
        .trim_start_matches("dyn ");
    if function.starts_with('<')
        && let Some((self_type, rest)) = owner.split_once(" as ")
        && !self_type.contains("::")
    {
        owner = rest;
    }
    let owner = owner
        .split([':', '[', '<', '>', ' ', '(', '{'])
        .next()
        .unwrap_or(owner);
    match RUNTIME_CRATES.contains(&owner) {
        true => FrameKind::Runtime,
        false => FrameKind::Author,
    }
}

/// Removes the hashes Rust puts in symbol names: the legacy suffix
/// (`probe::recurse::h8091404d8357d1bd` → `probe::recurse`) and the v0
/// crate disambiguators (`std[1b2c3d4e5f6a7b8c]::panicking` →
/// `std::panicking`).
fn strip_rust_hashes(name: &str) -> String {
    let name = match name.rsplit_once("::h") {
        Some((path, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            path
        }
        _ => name,
    };
    let mut stripped = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(open) = rest.find('[') {
        let (before, from_bracket) = rest.split_at(open);
        stripped.push_str(before);
        let after_identifier = before
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tag = from_bracket[1..]
            .split_once(']')
            .filter(|(hash, _)| !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()));
        match tag {
            Some((_, after)) if after_identifier => rest = after,
            _ => {
                stripped.push('[');
                rest = &from_bracket[1..];
            }
        }
    }
    stripped.push_str(rest);
    stripped
}

/// The message of the last Rust panic the guest printed to stderr, if any,
/// without the runtime's `note:` lines (RUST_BACKTRACE does nothing inside
/// the sandbox; the reason carries the backtrace instead).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_of_rust_hash_are_removed() {
        assert_eq!(
            strip_rust_hashes("probe.wasm!probe::recurse::h8091404d8357d1bd"),
            "probe.wasm!probe::recurse"
        );
        assert_eq!(
            strip_rust_hashes("m!<std[1b2c3d4e5f6a7b8c]::panicking::X as core[0a1b]::Y>::take"),
            "m!<std::panicking::X as core::Y>::take"
        );
        // Slices and non-hex brackets stay.
        assert_eq!(strip_rust_hashes("m!<[u8] as a[b]>::f"), "m!<[u8] as a>::f");
        assert_eq!(strip_rust_hashes("m!<[ab] as x>::f"), "m!<[ab] as x>::f");
    }

    #[test]
    fn frames_are_sorted_by_whose_code_they_run() {
        let author = [
            "my_agent.wasm!my_agent::parse",
            "my_agent.wasm!<my_agent::Agent as my_agent::exports::bgagents::agents::agent::Guest>::run",
            "m!my_agent::parse::{{closure}}",
        ];
        for name in author {
            assert_eq!(frame_kind(name), FrameKind::Author, "{name}");
        }
        let runtime = [
            "m!abort",
            "m!std::sys::pal::wasi::helpers::abort_internal",
            "m!std::panicking::rust_panic_with_hook",
            "m!<std::panicking::begin_panic_handler::FormatStringPayload as core::panic::PanicPayload>::take_box",
            "m!<&mut W as core::fmt::Write>::write_str",
            "m!core::panicking::panic_bounds_check",
            "m!__rustc::rust_begin_unwind",
            "m!my_agent::exports::bgagents::agents::agent::_export_run_cabi",
            "m!bgagents:agents/agent@0.1.0#run",
            "m!wit_bindgen::rt::run_ctors_once",
            "m!cabi_realloc",
        ];
        for name in runtime {
            assert_eq!(frame_kind(name), FrameKind::Runtime, "{name}");
        }
        assert_eq!(frame_kind("m!<wasm function 12603>"), FrameKind::Unnamed);
        assert_eq!(
            shorten_bindings_traits("m!<a::Agent as a::exports::b::agents::agent::Guest>::run"),
            "m!<a::Agent as Guest>::run"
        );
        assert_eq!(
            shorten_bindings_traits("m!<a::X as core::fmt::Display>::fmt"),
            "m!<a::X as core::fmt::Display>::fmt"
        );
    }

    #[test]
    fn the_authors_frames_are_shown_and_the_machinery_counted() {
        let backtrace = "error while executing at wasm backtrace:\n\
            \x20   0: 0x1 - m!abort\n\
            \x20   1: 0x2 - m!std::process::abort::h0123456789abcdef\n\
            \x20   2: 0x3 - m!core::panicking::panic_fmt\n\
            \x20   3: 0x4 - m!my_agent::parse\n\
            \x20   4: 0x5 - m!my_agent::parse\n\
            \x20   5: 0x6 - m!<my_agent::Agent as my_agent::G>::run\n\
            \x20   6: 0x7 - m!bgagents:agents/agent@0.1.0#run";
        let frames = collapse_backtrace(backtrace);
        assert_eq!(frames.len(), 6);
        assert_eq!(
            render_backtrace(&frames),
            "\nwasm backtrace (innermost first):\n  \
             m!my_agent::parse ×2\n  m!<my_agent::Agent as my_agent::G>::run\n  \
             … 4 more frames of the Rust runtime, panic machinery and bindings glue left out"
        );
    }

    #[test]
    fn a_backtrace_without_the_authors_frames_is_shown_as_it_is() {
        let unnamed =
            collapse_backtrace("x\n  0: 0x1 - m!<wasm function 7>\n  1: 0x2 - m!<wasm function 8>");
        assert_eq!(
            render_backtrace(&unnamed),
            "\nwasm backtrace: 2 frames without function names (the component was built \
             without its name section)"
        );
        let interpreter =
            collapse_backtrace("x\n  0: 0x1 - m!_PyEval_EvalFrameDefault\n  1: 0x2 - m!main");
        assert_eq!(
            render_backtrace(&interpreter),
            "\nwasm backtrace (innermost first):\n  m!_PyEval_EvalFrameDefault\n  m!main"
        );
    }

    #[test]
    fn the_panic_message_leaves_out_the_runtimes_notes() {
        let output = "working\nthread '<unnamed>' panicked at src/lib.rs:12:9:\nindex out of bounds\n\
                      note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(output).unwrap(),
            "index out of bounds (at src/lib.rs:12:9)"
        );
    }
}

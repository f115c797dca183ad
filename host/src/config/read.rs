//! Reading files named by a team (the team file itself, components) safely:
//! only regular files, never more than a cap, and never blocking on a FIFO
//! or reading a device forever. `check` runs on files from strangers.

use std::io::Read;
use std::path::Path;

/// The largest team file read (a real one is a few KiB).
pub const MAX_TEAM_FILE: u64 = 1 << 20;

/// The largest component file read (interpreted-language guests that bundle
/// their runtime are tens of MiB).
pub const MAX_COMPONENT_FILE: u64 = 256 << 20;

/// The deepest nesting of maps and lists a team file may use (a real one
/// needs about six levels).
pub const MAX_NESTING: usize = 64;

/// How a read went wrong.
#[derive(Debug)]
pub enum ReadError {
    NotFound,
    /// A directory, FIFO, socket or device (after following symlinks).
    NotRegular(&'static str),
    /// Bigger than the cap (the size, or `None` if it grew while read).
    TooBig(Option<u64>),
    Io(std::io::Error),
}

impl ReadError {
    /// The problem as the end of a sentence starting with the file's name,
    /// e.g. "is a FIFO, not a regular file".
    pub fn describe(&self, cap: u64) -> String {
        let cap = super::units::format_size(cap);
        match self {
            ReadError::NotFound => "does not exist".to_string(),
            ReadError::NotRegular(kind) => format!("is {kind}, not a regular file"),
            ReadError::TooBig(Some(size)) => format!(
                "is {} — more than the {cap} bgagents reads",
                super::units::format_size(*size)
            ),
            ReadError::TooBig(None) => format!("grew past the {cap} bgagents reads"),
            ReadError::Io(error) => format!("cannot be read: {error}"),
        }
    }
}

/// Reads the regular file at `path` (symlinks followed), refusing anything
/// else and anything larger than `cap` bytes before reading it.
pub fn read_regular_file(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let metadata = std::fs::metadata(path).map_err(io_error)?;
    check_regular(&metadata, cap)?;
    // Non-blocking, so that a file swapped for a FIFO after the check above
    // cannot hang the open; the second check below sees what was opened.
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(O_NONBLOCK);
    }
    let file = options.open(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    check_regular(&metadata, cap)?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooBig(None));
    }
    Ok(bytes)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const O_NONBLOCK: i32 = 0o4000;
#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
const O_NONBLOCK: i32 = 0x0004;

fn io_error(error: std::io::Error) -> ReadError {
    match error.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound,
        _ => ReadError::Io(error),
    }
}

fn check_regular(metadata: &std::fs::Metadata, cap: u64) -> Result<(), ReadError> {
    let kind = metadata.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotRegular(describe_kind(&kind)));
    }
    if metadata.len() > cap {
        return Err(ReadError::TooBig(Some(metadata.len())));
    }
    Ok(())
}

fn describe_kind(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
    }
    "not a regular file"
}

/// The first line whose nesting of maps and lists goes deeper than
/// [`MAX_NESTING`], found by a linear scan before the YAML parser (whose
/// work grows much faster than the file on pathological nesting) sees it.
///
/// Depth is estimated generously: open flow brackets, plus `- `/`? ` block
/// indicators at the start of a line, plus one level per indentation step.
/// Quoted text and comments are skipped.
pub fn too_deep(text: &str) -> Option<usize> {
    let mut flow = 0usize;
    // Indentation columns of the enclosing block levels.
    let mut indents: Vec<usize> = Vec::new();
    let mut quote: Option<char> = None;
    for (index, line) in text.lines().enumerate() {
        let mut chars = line.char_indices().peekable();
        let mut block_indicators = 0usize;
        if quote.is_none() && flow == 0 {
            let indent = line.len() - line.trim_start_matches(' ').len();
            let rest = line[indent..].trim_start();
            if !rest.is_empty() && !rest.starts_with('#') {
                while indents.last().is_some_and(|&last| last >= indent) {
                    indents.pop();
                }
                indents.push(indent);
                // Compact nested sequences: `- - - x`.
                let mut compact = rest;
                while let Some(after) = compact
                    .strip_prefix("- ")
                    .or_else(|| compact.strip_prefix("? "))
                {
                    block_indicators += 1;
                    compact = after.trim_start();
                }
            }
        }
        // The last character outside quotes: a quote opens a quoted scalar
        // only where a scalar can start, and `#` starts a comment only after
        // a space (otherwise both are part of a plain scalar).
        let mut previous = ' ';
        while let Some((_, c)) = chars.next() {
            match quote {
                Some('\'') if c == '\'' => quote = None,
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some('"') if c == '"' => quote = None,
                Some(_) => {}
                None => match c {
                    '\'' | '"'
                        if matches!(previous, ' ' | '\t' | ':' | '-' | '?' | '[' | '{' | ',') =>
                    {
                        quote = Some(c)
                    }
                    '#' if matches!(previous, ' ' | '\t') => break,
                    '[' | '{' => flow += 1,
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            previous = c;
            let depth = indents.len() + block_indicators + flow;
            if depth > MAX_NESTING {
                return Some(index + 1);
            }
        }
    }
    None
}

const WASM_MAGIC: &[u8] = b"\0asm";
/// Version/layer bytes of a core module (`01 00 00 00`).
const CORE_MODULE_VERSION: &[u8] = &[1, 0, 0, 0];

/// The example plugins that `cargo build-plugins` (the repository's cargo
/// alias) builds into `target/wasm32-wasip2/release/`.
const EXAMPLE_PLUGINS: &[&str] = &["coordinator", "wordstats", "calculator", "spinner"];

/// Reads the component file at `path` for compiling: a regular file of at
/// most [`MAX_COMPONENT_FILE`] bytes that looks like a component. The error
/// is a sentence naming the file and what to do.
pub fn read_component(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = read_regular_file(path, MAX_COMPONENT_FILE)
        .map_err(|error| component_read_problem(path, &error))?;
    check_component_header(path, &bytes)?;
    Ok(bytes)
}

/// The checks of [`read_component`] that need no more than the file's
/// first bytes: exists, is a regular file, not too big, is a component.
pub fn check_component_file(path: &Path) -> Result<(), String> {
    let metadata =
        std::fs::metadata(path).map_err(|error| component_read_problem(path, &io_error(error)))?;
    check_regular(&metadata, MAX_COMPONENT_FILE)
        .map_err(|error| component_read_problem(path, &error))?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(O_NONBLOCK);
    }
    let mut header = Vec::with_capacity(8);
    options
        .open(path)
        .and_then(|file| {
            check_regular(&file.metadata()?, MAX_COMPONENT_FILE)
                .map_err(|_| std::io::Error::other("changed while being checked"))?;
            file.take(8).read_to_end(&mut header)
        })
        .map_err(|error| component_read_problem(path, &ReadError::Io(error)))?;
    check_component_header(path, &header)
}

fn component_read_problem(path: &Path, error: &ReadError) -> String {
    let shown = path.display();
    match error {
        ReadError::NotFound => format!(
            "component file {shown} does not exist; build the plugin ({}) or fix the \
             `component:` path",
            build_hint(path)
        ),
        ReadError::NotRegular(_) | ReadError::TooBig(_) => format!(
            "component file {shown} {}; point `component:` at the .wasm your plugin build \
             produces",
            error.describe(MAX_COMPONENT_FILE)
        ),
        ReadError::Io(error) => format!("cannot read component file {shown}: {error}"),
    }
}

/// How to build the component at `path`: the repository's alias for its
/// example plugins, plain cargo otherwise.
fn build_hint(path: &Path) -> String {
    let stem = path.file_stem().and_then(|stem| stem.to_str());
    let in_release_dir = path.parent().is_some_and(|dir| {
        dir.ends_with(Path::new("target").join("wasm32-wasip2").join("release"))
    });
    match stem {
        Some(plugin)
            if in_release_dir
                && path.extension().is_some_and(|ext| ext == "wasm")
                && EXAMPLE_PLUGINS.contains(&plugin) =>
        {
            "run `cargo build-plugins` in the bgagents repository".to_string()
        }
        _ => "`cargo build --release --target wasm32-wasip2` in the plugin's crate \
              writes target/wasm32-wasip2/release/<crate>.wasm"
            .to_string(),
    }
}

fn check_component_header(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let shown = path.display();
    if !bytes.starts_with(WASM_MAGIC) {
        return Err(format!(
            "{shown} is not a WebAssembly file (it does not start with `\\0asm`); \
             point `component:` at the .wasm your plugin build produces"
        ));
    }
    if bytes.get(4..8) == Some(CORE_MODULE_VERSION) {
        return Err(format!(
            "{shown} is a core WebAssembly module, not a component; build for \
             --target wasm32-wasip2 (which emits a component) or wrap it with \
             `wasm-tools component new`"
        ));
    }
    Ok(())
}

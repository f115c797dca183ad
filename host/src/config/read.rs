//! Reading files named by a team (the team file itself, components) safely:
//! only regular files, never more than a cap, and never blocking on a FIFO
//! or reading a device forever. `check` runs on files from strangers.

use std::io::Read;
use std::path::{Path, PathBuf};

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
/// The scan splits the text into tokens the way the YAML parser does, as
/// far as nesting depends on it: flow brackets count only outside quoted,
/// plain and block scalars and comments, and a quote opens a quoted scalar
/// only where a token starts (so the `'` in `a: b-'c` or `a: it's` is plain
/// text, as for the parser). Block nesting is the parser's stack of
/// indentation columns: one per `- `, `? ` and `key:` that starts a deeper
/// column. Files the parser refuses may be scanned loosely: the parser
/// stops at their first error anyway.
pub fn too_deep(text: &str) -> Option<usize> {
    let mut scan = NestingScan::default();
    for (index, line) in text.lines().enumerate() {
        if scan.line(line.as_bytes()) > MAX_NESTING {
            return Some(index + 1);
        }
    }
    None
}

/// Where a line of the scan starts.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Carry {
    /// Between tokens.
    #[default]
    Tokens,
    /// Inside a quoted scalar opened by this quote.
    Quoted(u8),
    /// Inside a plain scalar, which may go on on this line.
    Plain,
    /// Inside a block scalar (`|`, `>`) of a node at `parent`'s column
    /// (`None` at the top level): its content lines are indented to
    /// `content`, once known.
    Block {
        parent: Option<usize>,
        content: Option<usize>,
    },
}

#[derive(Default)]
struct NestingScan {
    /// Open flow collections (`[`, `{`).
    flow: usize,
    /// Columns of the open block collections, innermost last.
    indents: Vec<usize>,
    carry: Carry,
}

fn is_blank(c: Option<&u8>) -> bool {
    matches!(c, None | Some(b' ' | b'\t'))
}

impl NestingScan {
    fn depth(&self) -> usize {
        self.indents.len() + self.flow
    }

    /// A block collection at `column`, if deeper than the innermost one.
    fn roll(&mut self, column: usize) {
        if self.flow == 0 && self.indents.last().is_none_or(|&last| last < column) {
            self.indents.push(column);
        }
    }

    /// Scans one line; returns the deepest nesting it reached.
    fn line(&mut self, line: &[u8]) -> usize {
        let indent = line.iter().take_while(|&&c| c == b' ').count();
        let first = line.iter().position(|&c| c != b' ' && c != b'\t');
        if let Carry::Block { parent, content } = self.carry {
            if first.is_none() {
                // Blank lines belong to the scalar, whatever their indentation.
                return self.depth();
            }
            // Content is indented deeper than the parent node, as deep as
            // its first line (or as the header said).
            let least = parent.map_or(1, |parent| parent + 1);
            let content = content.unwrap_or(indent.max(least));
            if indent >= content {
                self.carry = Carry::Block {
                    parent,
                    content: Some(content),
                };
                return self.depth();
            }
            self.carry = Carry::Tokens;
        }
        let mut at = 0;
        let mut plain = false;
        match self.carry {
            Carry::Quoted(quote) => match self.quoted(line, 0, quote) {
                Some(end) => {
                    self.carry = Carry::Tokens;
                    at = end;
                }
                None => return self.depth(),
            },
            Carry::Plain => {
                self.carry = Carry::Tokens;
                let Some(first) = first else {
                    // A blank line inside a plain scalar: it may go on.
                    self.carry = Carry::Plain;
                    return self.depth();
                };
                let document_marker =
                    (line.starts_with(b"---") || line.starts_with(b"...")) && is_blank(line.get(3));
                let goes_on = line[first] != b'#'
                    && !document_marker
                    && (self.flow > 0 || self.indents.last().is_none_or(|&last| first > last));
                if goes_on {
                    plain = true;
                    at = first;
                }
            }
            _ => {}
        }
        let mut deepest = self.depth();
        if !plain && self.carry == Carry::Tokens && at == 0 {
            // The first token of a line closes the block collections
            // indented deeper than it.
            if let Some(first) = first
                && self.flow == 0
                && line[first] != b'#'
            {
                while self.indents.last().is_some_and(|&last| last > first) {
                    self.indents.pop();
                }
                if first == 0
                    && (line.starts_with(b"---") || line.starts_with(b"..."))
                    && is_blank(line.get(3))
                {
                    self.indents.clear();
                    at = 3;
                }
            }
        }
        // Whether a node may start here and be a `key:` of a new mapping.
        let mut key_column: Option<usize> = None;
        let mut node_may_start = true;
        while at < line.len() {
            if plain {
                // Inside a plain scalar: it ends at `: `, ` #` and (in a
                // flow collection) at `,[]{}`.
                let c = line[at];
                let ends = (c == b':' && is_blank(line.get(at + 1)))
                    || (self.flow > 0 && matches!(c, b',' | b'[' | b']' | b'{' | b'}'))
                    || (c == b'#' && at > 0 && is_blank(line.get(at - 1)));
                if !ends {
                    at += 1;
                    continue;
                }
                plain = false;
            }
            let c = line[at];
            if c == b' ' || c == b'\t' {
                at += 1;
                continue;
            }
            let column = at;
            match c {
                b'#' => break,
                b'[' | b'{' => {
                    if node_may_start {
                        key_column.get_or_insert(column);
                        node_may_start = false;
                    }
                    self.flow += 1;
                    at += 1;
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    at += 1;
                }
                b',' => at += 1,
                b'-' if is_blank(line.get(at + 1)) => {
                    self.roll(column);
                    key_column = None;
                    node_may_start = true;
                    at += 1;
                }
                b'?' if self.flow > 0 || is_blank(line.get(at + 1)) => {
                    self.roll(column);
                    key_column = None;
                    node_may_start = true;
                    at += 1;
                }
                b':' if self.flow > 0 || is_blank(line.get(at + 1)) => {
                    if let Some(key) = key_column.take() {
                        self.roll(key);
                    }
                    node_may_start = true;
                    at += 1;
                }
                b'*' | b'&' => {
                    if node_may_start {
                        key_column.get_or_insert(column);
                        node_may_start = c == b'&';
                    }
                    // An anchor or alias name: letters, digits, `-`, `_`.
                    at += 1;
                    while line
                        .get(at)
                        .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
                    {
                        at += 1;
                    }
                }
                b'!' => {
                    if node_may_start {
                        key_column.get_or_insert(column);
                    }
                    // A tag runs to the next blank (brackets in it are part
                    // of its URI; anything else the parser refuses).
                    while !is_blank(line.get(at)) {
                        at += 1;
                    }
                }
                b'|' | b'>' if self.flow == 0 => {
                    let explicit = line[at + 1..]
                        .iter()
                        .take_while(|&&c| !is_blank(Some(&c)))
                        .find(|c| c.is_ascii_digit())
                        .map(|digit| usize::from(digit - b'0'));
                    let parent = self.indents.last().copied();
                    self.carry = Carry::Block {
                        parent,
                        content: explicit.map(|step| parent.map_or(step, |parent| parent + step)),
                    };
                    break;
                }
                b'\'' | b'"' => {
                    if node_may_start {
                        key_column.get_or_insert(column);
                        node_may_start = false;
                    }
                    match self.quoted(line, at + 1, c) {
                        Some(end) => at = end,
                        None => {
                            self.carry = Carry::Quoted(c);
                            break;
                        }
                    }
                }
                b'%' if column == 0 => break,
                _ => {
                    if node_may_start {
                        key_column.get_or_insert(column);
                        node_may_start = false;
                    }
                    plain = true;
                    at += 1;
                }
            }
            deepest = deepest.max(self.depth());
        }
        if plain {
            self.carry = Carry::Plain;
        }
        deepest.max(self.depth())
    }

    /// The index just past the quote closing a quoted scalar whose text
    /// starts at `from`, or `None` if it goes on past this line.
    fn quoted(&self, line: &[u8], from: usize, quote: u8) -> Option<usize> {
        let mut at = from;
        while at < line.len() {
            match line[at] {
                b'\\' if quote == b'"' => at += 2,
                b'\'' if quote == b'\'' && line.get(at + 1) == Some(&b'\'') => at += 2,
                c if c == quote => return Some(at + 1),
                _ => at += 1,
            }
        }
        None
    }
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
    let path = &tidy(path);
    let bytes = read_regular_file(path, MAX_COMPONENT_FILE)
        .map_err(|error| component_read_problem(path, &error))?;
    check_component_header(path, &bytes)?;
    Ok(bytes)
}

/// The checks of [`read_component`] that need no more than the file's
/// first bytes: exists, is a regular file, not too big, is a component.
pub fn check_component_file(path: &Path) -> Result<(), String> {
    let path = &tidy(path);
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

/// `path` without `.` components, so that `dir/./agent.wasm` is named as
/// `dir/agent.wasm` (the same file).
fn tidy(path: &Path) -> PathBuf {
    let tidy: PathBuf = path
        .components()
        .filter(|part| *part != std::path::Component::CurDir)
        .collect();
    if tidy.as_os_str().is_empty() {
        return path.to_path_buf();
    }
    tidy
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

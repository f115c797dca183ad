//! Finding a harness CLI on the host and what it needs to run, so that the
//! sandbox shows it (read-only) and nothing else of the host's: the
//! program itself — for an npm package, the `node_modules` directory it
//! lives in, so its platform binaries and vendored files are there, or a
//! package directory whose `package.json` `bin` names the CLI; else only
//! the CLI's file (never a directory showing the user's home or bgagents'
//! state or cache, whatever `package.json` lies around) — and
//! the interpreter its `#!` line names (e.g. `node`) when that is not a
//! system program.

use crate::config::HarnessKind;
use std::path::{Path, PathBuf};

/// A located CLI.
#[derive(Debug, Clone)]
pub struct Program {
    /// What is run: the CLI's real file (symlinks resolved), so that an
    /// npm script finds its package beside it.
    pub exe: PathBuf,
    /// Where it was found, for messages.
    pub found: PathBuf,
    /// Host paths the sandbox binds read-only at the same place.
    pub binds: Vec<PathBuf>,
    /// Directories put in front of the sandbox's `PATH` (the
    /// interpreter's, so `#!/usr/bin/env node` finds it).
    pub path: Vec<PathBuf>,
}

/// Directories every sandbox shows already (read-only).
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

fn is_system(path: &Path) -> bool {
    SYSTEM.iter().any(|dir| path.starts_with(dir))
}

/// `name` on the host's `PATH`, or `None`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Finds `command` (a name on `PATH` or an absolute path) for a harness of
/// `kind`; the error names the binary and how to install it.
pub fn locate(kind: HarnessKind, command: &str) -> Result<Program, String> {
    let install = || {
        format!(
            "install it with `{}`, or name the program with `harness.command`",
            kind.install_hint()
        )
    };
    let found = match command.starts_with('/') {
        true => {
            let path = PathBuf::from(command);
            if !path.exists() {
                return Err(format!(
                    "harness binary {command} (for a {} harness) does not exist; {}",
                    kind.name(),
                    install()
                ));
            }
            if !is_executable(&path) {
                return Err(format!(
                    "harness binary {command} (for a {} harness) is not an executable file",
                    kind.name()
                ));
            }
            path
        }
        false => on_path(command).ok_or_else(|| {
            format!(
                "harness binary \"{command}\" (for a {} harness) is not on PATH; {}",
                kind.name(),
                install()
            )
        })?,
    };
    let exe = found
        .canonicalize()
        .map_err(|error| format!("cannot resolve harness binary {}: {error}", found.display()))?;
    let mut program = Program {
        exe: exe.clone(),
        found,
        binds: Vec::new(),
        path: Vec::new(),
    };
    if !is_system(&exe) {
        let bind = package_dir(&exe, &program.found).unwrap_or_else(|| exe.clone());
        tracing::debug!(program = %exe.display(), bind = %bind.display(), "harness: program bind");
        program.binds.push(bind);
    }
    if let Some(interpreter) = interpreter(&exe) {
        let interpreter = interpreter.canonicalize().unwrap_or(interpreter);
        if !is_system(&interpreter) {
            if let Some(dir) = interpreter.parent() {
                program.path.push(dir.to_path_buf());
            }
            program.binds.push(interpreter);
        }
    }
    program.binds.dedup();
    Ok(program)
}

/// The directory to show for the CLI `exe` (its real file; `found` is where
/// it was found): the `node_modules` directory holding the npm package it
/// belongs to (its sibling packages hold platform binaries), else the
/// package's own directory when its `package.json` `bin` names the CLI;
/// `None` (bind only the file) when `exe` is in no such package or the
/// directory would show the user's home or bgagents' own state.
fn package_dir(exe: &Path, found: &Path) -> Option<PathBuf> {
    let package = exe
        .ancestors()
        .skip(1)
        .take(6)
        .find(|dir| dir.join("package.json").is_file())?;
    let modules = package
        .ancestors()
        .skip(1)
        .take(2)
        .find(|dir| dir.file_name().is_some_and(|name| name == "node_modules"));
    let dir = match modules {
        Some(modules) => modules,
        None if bin_names(package, &[exe, found]) => package,
        None => return None,
    };
    (!is_home_like(dir)).then(|| dir.to_path_buf())
}

/// Whether the `package.json` in `package` has a `bin` (a path, or an
/// object of paths) that resolves to one of `files`.
fn bin_names(package: &Path, files: &[&Path]) -> bool {
    let Ok(text) = std::fs::read_to_string(package.join("package.json")) else {
        return false;
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let bins: Vec<&str> = match json.get("bin") {
        Some(serde_json::Value::String(bin)) => vec![bin.as_str()],
        Some(serde_json::Value::Object(bins)) => bins
            .values()
            .filter_map(serde_json::Value::as_str)
            .collect(),
        _ => return false,
    };
    bins.iter().any(|bin| {
        let path = package.join(bin);
        let real = path.canonicalize().unwrap_or(path.clone());
        files.iter().any(|file| *file == path || *file == real)
    })
}

/// Directories a program bind must never show nor contain: the user's
/// home, bgagents' state and cache directories.
fn protected() -> Vec<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let home = var("HOME");
    let mut dirs: Vec<PathBuf> = Vec::new();
    dirs.extend(home.clone());
    dirs.extend(var("XDG_STATE_HOME").map(|dir| dir.join("bgagents")));
    dirs.extend(var("XDG_CACHE_HOME").map(|dir| dir.join("bgagents")));
    dirs.extend(var("BGAGENTS_CACHE_DIR"));
    if let Some(home) = &home {
        dirs.push(home.join(".local/state/bgagents"));
        dirs.push(home.join(".cache/bgagents"));
    }
    let resolved: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|dir| dir.canonicalize().ok())
        .collect();
    dirs.extend(resolved);
    dirs
}

/// Whether binding `dir` would show `/`, the user's home or a directory
/// holding it, or bgagents' state or cache.
fn is_home_like(dir: &Path) -> bool {
    dir == Path::new("/")
        || protected()
            .iter()
            .any(|protected| protected.starts_with(dir))
}

/// The program `exe`'s `#!` line runs it with: the named path, or for
/// `#!/usr/bin/env NAME`, `NAME` on the host's `PATH`.
fn interpreter(exe: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0; 256];
    let read = std::fs::File::open(exe).ok()?.read(&mut head).ok()?;
    let line = head[..read].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let first = words.next()?;
    if Path::new(first)
        .file_name()
        .is_some_and(|name| name == "env")
    {
        let name = words.find(|word| !word.starts_with('-'))?;
        return on_path(name);
    }
    Some(PathBuf::from(first))
}

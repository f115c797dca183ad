//! Finding a harness CLI on the host and what it needs to run, so that the
//! sandbox shows it (read-only) and nothing else of the host's: the
//! program itself — for an npm package, the `node_modules` directory it
//! lives in, so its platform binaries and vendored files are there — and
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
        program
            .binds
            .push(package_dir(&exe).unwrap_or_else(|| exe.clone()));
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

/// The `node_modules` directory holding the npm package `exe` belongs to
/// (its sibling packages hold platform binaries), else the package's own
/// directory; `None` if `exe` is not in a package.
fn package_dir(exe: &Path) -> Option<PathBuf> {
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
    Some(modules.unwrap_or(package).to_path_buf())
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

//! From a path the model wrote to a granted directory and a path inside it.
//!
//! The path is matched against the granted directories' guest paths (the
//! paths a component sees them at); everything after that is resolved by
//! the directory's capability ([`cap_std::fs::Dir`]), the same mechanism
//! the WebAssembly sandbox's preopens use: `..` past the grant, absolute
//! paths and symlinks leading out of it are refused by the kernel-facing
//! layer, not by a second checker here.

use crate::config::DirGrant;
use cap_std::fs::Dir;
use std::io;
use std::path::{Path, PathBuf};

/// Opens `rel` under `dir` to read, refusing anything but a regular file.
/// The open does not block: a FIFO planted in a grant (by the agent's own
/// shell) would otherwise hold the thread until a writer came.
pub(super) fn open_regular(dir: &Dir, rel: &Path) -> io::Result<cap_std::fs::File> {
    use cap_std::fs::OpenOptionsExt;
    let file = dir.open_with(
        rel,
        cap_std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK),
    )?;
    match file.metadata()?.is_file() {
        true => Ok(file),
        false => Err(io::Error::other("not a regular file")),
    }
}

/// One granted directory, opened.
pub(super) struct Root {
    /// Where the agent sees it (`/work`).
    pub guest: String,
    pub writable: bool,
    /// The opened directory, or why it could not be opened.
    dir: Result<Dir, String>,
}

impl Root {
    pub fn open(grant: &DirGrant) -> Root {
        let dir =
            Dir::open_ambient_dir(&grant.host, cap_std::ambient_authority()).map_err(|error| {
                format!(
                    "the granted directory {} cannot be opened ({error})",
                    grant.guest
                )
            });
        Root {
            guest: grant.guest.trim_end_matches('/').to_string(),
            writable: grant.writable,
            dir,
        }
    }
}

/// A path resolved to its granted directory.
pub(super) struct Target<'a> {
    pub root: &'a Root,
    pub dir: &'a Dir,
    /// Relative to the granted directory (`.` for the directory itself).
    pub rel: PathBuf,
    /// As the agent wrote it, for messages.
    pub shown: String,
}

impl Target<'_> {
    /// Refuses a change under a read-only grant.
    pub fn writable(&self) -> Result<(), String> {
        match self.root.writable {
            true => Ok(()),
            false => Err(format!(
                "{}: {} is granted read-only; nothing was changed (the team file's \
                 grants.files entry sets `mode: read-write` to allow changes)",
                self.shown,
                shown_root(self.root)
            )),
        }
    }

    /// Whether this is the granted directory itself.
    pub fn is_root(&self) -> bool {
        self.rel
            .components()
            .all(|part| part == std::path::Component::CurDir)
    }

    /// An I/O error on this path as a sentence for the model.
    pub fn explain(&self, error: io::Error) -> String {
        explain(&self.shown, self.root, error)
    }
}

/// The error every tool gives when the agent has no granted directory.
pub(super) const NO_GRANTS: &str = "this agent has no granted directories, so the filesystem \
     tools cannot reach any file; the team file grants directories with the agent's \
     `grants.files`";

/// Resolves `path`: an absolute path must lie in a granted directory
/// (matched by its guest path, the longest first); a relative path starts
/// at the first granted directory, the agent's working directory.
pub(super) fn resolve<'a>(roots: &'a [Root], path: &str) -> Result<Target<'a>, String> {
    let first = roots.first().ok_or(NO_GRANTS)?;
    let shown = if path.is_empty() {
        ".".to_string()
    } else {
        path.to_string()
    };
    let (root, rest) = if path.starts_with('/') {
        roots
            .iter()
            .filter_map(|root| within(path, &root.guest).map(|rest| (root, rest)))
            .max_by_key(|(root, _)| root.guest.len())
            .ok_or_else(|| {
                format!(
                    "{shown} is outside the granted directories ({}); use a path inside one \
                     of them, or a relative path (it starts at {})",
                    list_roots(roots),
                    display_guest(&first.guest)
                )
            })?
    } else {
        (first, path)
    };
    let dir = root.dir.as_ref().map_err(Clone::clone)?;
    let rel = match rest.trim_start_matches('/') {
        "" => PathBuf::from("."),
        rest => PathBuf::from(rest),
    };
    Ok(Target {
        root,
        dir,
        rel,
        shown,
    })
}

/// The part of `path` under `guest`, if it is under it.
fn within<'p>(path: &'p str, guest: &str) -> Option<&'p str> {
    if guest.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(guest)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn display_guest(guest: &str) -> &str {
    if guest.is_empty() { "/" } else { guest }
}

fn shown_root(root: &Root) -> String {
    display_guest(&root.guest).to_string()
}

/// `/work (read-write), /docs (read-only)`.
pub(super) fn list_roots(roots: &[Root]) -> String {
    let listed: Vec<String> = roots
        .iter()
        .map(|root| {
            let mode = if root.writable {
                "read-write"
            } else {
                "read-only"
            };
            format!("{} ({mode})", display_guest(&root.guest))
        })
        .collect();
    listed.join(", ")
}

/// `rel` joined under the root's guest path, for listings.
pub(super) fn guest_path(root: &Root, rel: &Path) -> String {
    let rel = rel.to_string_lossy();
    let rel = rel.trim_start_matches("./");
    match rel {
        "" | "." => display_guest(&root.guest).to_string(),
        rel => format!("{}/{rel}", root.guest),
    }
}

fn explain(shown: &str, root: &Root, error: io::Error) -> String {
    // cap-std reports a path that would leave the directory (through `..`,
    // an absolute path or a symlink) as permission denied with this text.
    let escaped = error.to_string().contains("outside of the filesystem");
    // A FIFO opened for writing without a reader, without blocking.
    let not_regular = error.raw_os_error() == Some(libc::ENXIO);
    match error.kind() {
        _ if not_regular => format!("{shown}: not a regular file"),
        _ if escaped => format!(
            "{shown} leads outside the granted directory {} (through `..` or a symbolic \
             link); only files inside the granted directories can be used",
            shown_root(root)
        ),
        io::ErrorKind::NotFound => format!("{shown}: not found"),
        io::ErrorKind::AlreadyExists => format!("{shown}: already exists"),
        io::ErrorKind::PermissionDenied => format!("{shown}: permission denied"),
        io::ErrorKind::NotADirectory => format!("{shown}: not a directory"),
        io::ErrorKind::IsADirectory => format!("{shown}: is a directory"),
        io::ErrorKind::DirectoryNotEmpty => format!("{shown}: the directory is not empty"),
        io::ErrorKind::StorageFull => format!("{shown}: no space left on the device"),
        _ => format!("{shown}: {error}"),
    }
}

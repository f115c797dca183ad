//! Why a store could not be opened or written, in words that name the file
//! and the fix.

use redb::DatabaseError;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a store could not be opened or written.
#[derive(Debug)]
pub enum StoreError {
    /// The state directory cannot be created or written.
    Directory { dir: PathBuf, error: std::io::Error },
    /// The file is not a bgagents task store (another program's file or
    /// another redb database). It is left as it is.
    Foreign { path: PathBuf, what: String },
    /// The file is a task store, but damaged beyond what redb repairs.
    Damaged { path: PathBuf, detail: String },
    /// Another process holds the store.
    Locked { path: PathBuf },
    /// The file or its directory is read-only.
    ReadOnly {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Any other failure reading or writing the file.
    Io { path: PathBuf, detail: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            StoreError::Directory { dir, error } => write!(
                f,
                "task store: cannot use the state directory {}: {error}; choose a writable \
                 directory with --state",
                dir.display()
            ),
            StoreError::Foreign { path, what } => write!(
                f,
                "task store {}: {what}, not a bgagents task store; it was left unchanged — \
                 move it away or choose another state directory with --state",
                path.display()
            ),
            StoreError::Damaged { path, detail } => write!(
                f,
                "task store {} is damaged ({detail}); it was left unchanged — move it away \
                 to start with an empty store (its tasks are then forgotten)",
                path.display()
            ),
            StoreError::Locked { path } => write!(
                f,
                "task store {} is in use by another bgagents process; stop that process or \
                 choose another state directory with --state",
                path.display()
            ),
            StoreError::ReadOnly { path, error } => write!(
                f,
                "task store {} cannot be written ({error}); the state directory must be on a \
                 writable filesystem: choose another with --state",
                path.display()
            ),
            StoreError::Io { path, detail } => {
                write!(f, "task store {}: {detail}", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {}

pub(super) fn open_error(path: &Path, error: DatabaseError) -> StoreError {
    classify(path, error.into())
}

pub(super) fn classify(path: &Path, error: redb::Error) -> StoreError {
    let path = path.to_path_buf();
    match error {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreError::Locked { path }
        }
        redb::Error::Corrupted(detail) => StoreError::Damaged { path, detail },
        redb::Error::UpgradeRequired(version) => StoreError::Foreign {
            path,
            what: format!("it is in redb's old file format {version}"),
        },
        // redb's signature with too little behind it: cut short.
        redb::Error::Io(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            StoreError::Damaged {
                path,
                detail: format!("it ends too early: {error}"),
            }
        }
        redb::Error::Io(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            StoreError::ReadOnly { path, error }
        }
        other => StoreError::Io {
            path,
            detail: other.to_string(),
        },
    }
}

//! A daemon's state directory: where it is by default, the lock that keeps
//! one daemon per directory (and names the process holding it), and the
//! Unix socket clients connect to, created mode 0600 before anyone can
//! reach it.

use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The socket's name in the state directory.
pub const SOCKET: &str = "bgagents.sock";

/// The lock file's name: held (flock) by the daemon, holding its pid and
/// its team file's path.
const LOCK: &str = "lock";

/// The longest path a Unix socket address holds (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Where the state of `team`'s daemon lives unless `--state` says:
/// `$XDG_STATE_HOME/bgagents/<hash>` (or `~/.local/state/bgagents/<hash>`),
/// the hash being of the team file's absolute path.
pub fn default_dir(team: &Path) -> Result<PathBuf, String> {
    let absolute = absolute(team)?;
    let hash = blake3::hash(absolute.as_os_str().as_bytes()).to_hex();
    Ok(state_root()?.join(&hash.as_str()[..16]))
}

/// The directory holding every team's default state directory.
pub fn state_root() -> Result<PathBuf, String> {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    if let Some(state) = from_env("XDG_STATE_HOME") {
        return Ok(state.join("bgagents"));
    }
    match from_env("HOME") {
        Some(home) => Ok(home.join(".local/state/bgagents")),
        None => Err(
            "neither XDG_STATE_HOME nor HOME is set to an absolute path, so there is \
             no default state directory; give one with --state DIR"
                .to_string(),
        ),
    }
}

/// `path` made absolute (symbolic links resolved when it exists), so that
/// one team file always maps to one state directory.
pub fn absolute(path: &Path) -> Result<PathBuf, String> {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .map_err(|error| format!("{}: cannot resolve the path: {error}", path.display()))
}

/// Creates `dir` (and its parents) readable by its owner only, if missing.
pub fn create(dir: &Path) -> Result<(), String> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| {
            format!(
                "cannot create the state directory {}: {error}{}",
                dir.display(),
                unwritable(dir, &error)
            )
        })
}

/// What to do when the daemon cannot write in state directory `dir`:
/// appended to the error that says so (empty for other errors).
fn unwritable(dir: &Path, error: &std::io::Error) -> String {
    let what = match error.kind() {
        ErrorKind::ReadOnlyFilesystem => "is on a read-only filesystem",
        ErrorKind::PermissionDenied => "is not writable by this user",
        _ => return String::new(),
    };
    format!(
        "\nthe state directory {} {what}, and the daemon must write there (its lock, \
         socket and task store); give a writable one with --state DIR",
        dir.display()
    )
}

/// The socket clients connect to in state directory `dir`.
pub fn socket(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// Who holds (or last held) the lock of `dir`: the team file the daemon
/// wrote there (after its pid).
pub struct Holder {
    pub team: Option<PathBuf>,
}

/// Reads what the last daemon of `dir` wrote in its lock file.
pub fn holder(dir: &Path) -> Holder {
    let text = std::fs::read_to_string(dir.join(LOCK)).unwrap_or_default();
    let team = text.lines().nth(1).filter(|line| !line.is_empty());
    Holder {
        team: team.map(PathBuf::from),
    }
}

/// The daemon's hold on its state directory, released when the process
/// ends (however it ends).
pub struct Lock {
    _file: File,
}

/// Takes the lock of state directory `dir` for the daemon of `team`, or
/// says which process holds it.
pub fn lock(dir: &Path, team: &Path) -> Result<Lock, String> {
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|error| {
            format!(
                "cannot open the lock file {}: {error}{}",
                path.display(),
                unwritable(dir, &error)
            )
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text.lines().next().unwrap_or("").trim();
            let who = match pid.parse::<u32>() {
                Ok(pid) => format!("process {pid}"),
                Err(_) => "another process".to_string(),
            };
            return Err(format!(
                "another `bgagents serve` ({who}) already serves the state directory {}; stop \
                 it first (kill -TERM {}), or give this one another --state DIR",
                dir.display(),
                if pid.is_empty() { "PID" } else { pid }
            ));
        }
        Err(TryLockError::Error(error)) => {
            return Err(format!("cannot lock {}: {error}", path.display()));
        }
    }
    let written = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| {
        let contents = format!("{}\n{}\n", std::process::id(), team.display());
        file.write_all(contents.as_bytes())
    });
    written.map_err(|error| {
        format!(
            "cannot write the lock file {}: {error}{}",
            path.display(),
            unwritable(dir, &error)
        )
    })?;
    Ok(Lock { _file: file })
}

/// Listens on the socket of state directory `dir` (whose lock the caller
/// holds), mode 0600 from the start: it is bound inside a fresh private
/// directory, restricted, then moved into place. A socket left by a daemon
/// that died is removed first; anything else in its place is refused.
pub fn bind(dir: &Path) -> Result<std::os::unix::net::UnixListener, String> {
    let path = socket(dir);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(format!(
            "the socket path {} is longer than the {MAX_SOCKET_PATH} bytes a Unix socket \
             address holds; give a shorter --state DIR",
            path.display()
        ));
    }
    remove_stale(&path)?;
    let private = dir.join(format!(".bind-{}", std::process::id()));
    // Left by an earlier process that had this pid and died mid-bind.
    let _ = std::fs::remove_file(private.join("s"));
    let _ = std::fs::remove_dir(&private);
    DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|error| {
            format!(
                "cannot create {}: {error}{}",
                private.display(),
                unwritable(dir, &error)
            )
        })?;
    let temporary = private.join("s");
    let bound = std::os::unix::net::UnixListener::bind(&temporary)
        .and_then(|listener| {
            std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&temporary, &path)?;
            Ok(listener)
        })
        .map_err(|error| format!("cannot listen on {}: {error}", path.display()));
    let _ = std::fs::remove_file(&temporary);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// Removes the socket at `path` if no process listens on it.
fn remove_stale(path: &Path) -> Result<(), String> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(format!("cannot inspect {}: {error}", path.display())),
    };
    if !metadata.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket; move it away or give another --state DIR",
            path.display()
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(format!(
            "a process already listens on {} without holding the state directory's lock; \
             stop it or give another --state DIR",
            path.display()
        )),
        Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|error| {
                format!("cannot remove the stale socket {}: {error}", path.display())
            })?;
            tracing::warn!(socket = %path.display(), "removed a stale socket left by a daemon that is no longer running");
            eprintln!(
                "bgagents: removed the stale socket {} (its daemon is no longer running)",
                path.display()
            );
            Ok(())
        }
        Err(error) => Err(format!(
            "cannot check the socket {}: {error}",
            path.display()
        )),
    }
}

//! The network egress gate: how a sandboxed OS process (a shell command,
//! an external coding CLI) reaches exactly the hosts its agent's grants
//! allow, although the kernel sandbox cannot filter by host name.
//!
//! Two halves:
//!
//! - **Host side**, [`Gate`]: a proxy started per sandboxed process (or per
//!   task), listening on a Unix socket in a private directory (mode 0700)
//!   under `$XDG_RUNTIME_DIR` where there is one, else the temporary
//!   directory. Every connection must first send the gate's random 32-byte
//!   key ([`Gate::relay_env`]), or it is closed unanswered: another
//!   process of the user that reaches the socket (through a grant of
//!   `/tmp`, say) reaches nothing. It speaks HTTP/1.1 `CONNECT host:port` (what
//!   `HTTPS_PROXY` clients — curl, Python, Node/undici, Go — send for
//!   HTTPS) and absolute-form plain HTTP (`GET http://host/…`, for
//!   `HTTP_PROXY`). It lets a request through only if its `host:port`
//!   matches a grant ([`policy`]): an `https://host[:port]` origin in
//!   `grants.http` allows `CONNECT` to it, an `http://…` origin plain HTTP
//!   to it, and a `grants.network.connect` endpoint either. It resolves
//!   names itself (the sandbox needs no DNS) and connects only to public
//!   addresses, unless the grant names an address or `localhost` ([`dial`]).
//!   A refusal is answered `403` with a one-line reason naming the grant to
//!   add, logged (rate-limited, host and port only) and kept for
//!   [`Gate::take_refusals`]. Bounded: at most [`Limits::max_connections`]
//!   at once, connect, head and idle timeouts. Dropping the gate stops it:
//!   its listener and every connection through it close, and its directory
//!   is removed.
//! - **Sandbox side**: the hidden `bgagents __egress-relay` command, run
//!   inside bubblewrap's new network namespace (where only loopback
//!   exists), given the key in [`KEY_VAR`] (set through bubblewrap's
//!   `--args` memfd, never on a command line; its command does not inherit
//!   it). It listens on [`RELAY_LISTEN`] (127.0.0.1:3128), starts the
//!   command with `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` (and their
//!   lower-case forms) set to `http://127.0.0.1:3128`, `NO_PROXY` empty
//!   and `NODE_USE_ENV_PROXY=1` (Node's own `fetch` follows them then),
//!   relays each connection byte for byte to the gate's socket, and exits
//!   with the command's status (128 + N if signal N killed it). Signals it
//!   gets are passed on to the command, and the command is killed if the
//!   relay dies.
//!
//! The process sandbox (`sandbox::process`, shell commands and harness
//! agents) uses it through `Network::Gated`: a gate per process, started
//! in `Sandbox::spawn`/`spawn_program`, its refusals in
//! `Running::limit_notes`, stopped when the `Running` is dropped. Using it
//! from another bubblewrap sandbox (under a Tokio runtime):
//!
//! ```ignore
//! let gate = egress::Gate::start(agent, &grants)?;   // Err: why, with the fix
//! bwrap.args(gate.bwrap_args());        // --ro-bind SOCKET … --setenv KEY …, via --args FD
//! bwrap.arg("--unshare-net");           // (or --unshare-all without --share-net)
//! bwrap.arg("--").args(gate.command_prefix()).arg(program).args(args);
//! // … run it; keep `gate` alive as long as the process runs …
//! let notes = gate.take_refusals();     // "CONNECT to x:443 refused: …; add …"
//! drop(gate);                           // stops the proxy
//! ```
//!
//! The sandbox must not share the host's network (`--share-net`), or the
//! command could bypass the gate; it needs no `/etc/resolv.conf`. The relay
//! is one more process in the sandbox (count it in a pids cap). Whether a
//! gate is wanted at all is [`wanted`]: grants that name a host or
//! endpoint, and not `grants.network.shell` (the whole network).
//!
//! The relay's executable is this very program (`bgagents`, bound
//! read-only at [`RELAY_EXE`]): the command line registers itself with
//! [`relay_is_current_exe`]; a host embedding the library names a
//! `bgagents` binary with [`set_relay_program`]. Without either,
//! [`Gate::start`] fails saying so.
//!
//! What the gate does not do: look inside a tunnel. A `CONNECT` to a
//! granted `host:443` carries whatever the client sends, so a server at a
//! granted address that serves other names too (a CDN) may be asked for
//! them; grants are per host and port, not per URL.

pub mod dial;
pub mod policy;
pub mod proxy;
pub mod refusals;
pub mod request;

pub use proxy::Limits;

use crate::config::Grants;
use policy::Policy;
use proxy::{Counters, Shared};
use refusals::Refusals;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Where the gate's socket appears in the sandbox.
pub const RELAY_SOCKET: &str = "/run/bgagents/egress.sock";
/// Where the relay's executable (this program) appears in the sandbox.
pub const RELAY_EXE: &str = "/run/bgagents/bgagents";
/// Where the relay listens in the sandbox, and so the proxy URL.
pub const RELAY_LISTEN: &str = "127.0.0.1:3128";
/// The hidden subcommand that runs the relay.
pub const RELAY_COMMAND: &str = "__egress-relay";

/// Whether a sandboxed process of an agent with `grants` goes through a
/// gate: it has an `http` or `connect` grant, and is not granted the
/// whole network (`grants.network.shell`).
pub fn wanted(grants: &Grants) -> bool {
    !grants.shell_network && (!grants.http.is_empty() || !grants.connect.is_empty())
}

/// The relay program: set explicitly, or this process's executable once
/// the command line said it is `bgagents`.
static RELAY_PROGRAM: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Registers this process's executable as the relay program; the
/// `bgagents` command line calls it first thing. The path is read when
/// called, before anything could replace the file.
pub fn relay_is_current_exe() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| match std::env::current_exe() {
        Ok(exe) => set_relay_program(exe),
        Err(error) => {
            tracing::warn!(%error, "cannot find this program's path for the egress relay")
        }
    });
}

/// Names the `bgagents` binary whose hidden `__egress-relay` command runs
/// in sandboxes, for a host that embeds the library.
pub fn set_relay_program(path: impl Into<PathBuf>) {
    *RELAY_PROGRAM.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.into());
}

fn relay_program() -> Result<PathBuf, String> {
    let set = RELAY_PROGRAM
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let program = set.ok_or_else(|| {
        "this host does not know its `bgagents` binary, whose hidden `__egress-relay` \
         command carries the network of sandboxed processes (shell commands and harness CLIs \
         of an agent with grants.http or grants.network.connect); a program embedding the \
         bgagents library must call `bgagents::set_egress_relay_program(PATH_OF_BGAGENTS)` \
         once before running such agents (the `bgagents` command does it itself)"
            .to_string()
    })?;
    match program.is_file() {
        true => Ok(program),
        false => Err(format!(
            "the egress relay program {} is gone (was bgagents replaced while running?); \
             restart the host",
            program.display()
        )),
    }
}

/// Bytes and connections through a gate so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// From the sandbox to the targets.
    pub bytes_up: u64,
    /// From the targets to the sandbox.
    pub bytes_down: u64,
    /// Connections opened to targets.
    pub connections: u64,
    /// Requests refused by the grants.
    pub refused: u64,
}

/// One running gate. Dropping it stops the proxy and removes its socket.
pub struct Gate {
    /// First, so the proxy stops before its directory goes.
    _stop: DropGuard,
    dir: PrivateDir,
    socket: PathBuf,
    exe: PathBuf,
    shared: Arc<Shared>,
}

/// The environment variable that hands the relay its gate's key (64 hex
/// digits). The relay removes it before starting its command.
pub const KEY_VAR: &str = "BGAGENTS_EGRESS_KEY";

/// Bytes of a gate's key.
pub const KEY_LEN: usize = 32;

/// A new random key.
fn new_key() -> Result<[u8; KEY_LEN], String> {
    let mut key = [0u8; KEY_LEN];
    let mut filled = 0;
    while filled < KEY_LEN {
        // SAFETY: getrandom writes at most the given length into the buffer.
        let got =
            unsafe { libc::getrandom(key[filled..].as_mut_ptr().cast(), KEY_LEN - filled, 0) };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("cannot make the network gate's key: {error}"));
        }
        filled += got as usize;
    }
    Ok(key)
}

/// `key` in hex, as [`KEY_VAR`] holds it.
fn hex(key: &[u8; KEY_LEN]) -> String {
    key.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The key [`KEY_VAR`]'s value `text` holds, or `None`.
pub fn parse_key(text: &str) -> Option<[u8; KEY_LEN]> {
    let text = text.as_bytes();
    if text.len() != 2 * KEY_LEN {
        return None;
    }
    let mut key = [0u8; KEY_LEN];
    for (byte, pair) in key.iter_mut().zip(text.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(key)
}

impl Gate {
    /// Starts a gate for a sandboxed process of `agent` (named in refusal
    /// reasons as `agents.NAME.grants.http`; `""`: `grants.http`) allowed
    /// to `grants`, with the default [`Limits`]. Needs a
    /// Tokio runtime. The error says what is wrong and how to fix it.
    pub fn start(agent: &str, grants: &Grants) -> Result<Gate, String> {
        Gate::start_with(agent, grants, Limits::default())
    }

    /// [`Gate::start`] with other limits.
    pub fn start_with(agent: &str, grants: &Grants, limits: Limits) -> Result<Gate, String> {
        let exe = relay_program()?;
        let dir = PrivateDir::create()
            .map_err(|error| format!("cannot make the network gate's directory: {error}"))?;
        let socket = dir.path.join("egress.sock");
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("the network gate needs a Tokio runtime to run on".to_string());
        }
        let listener = tokio::net::UnixListener::bind(&socket)
            .map_err(|error| format!("cannot listen on {}: {error}", socket.display()))?;
        let shared = Arc::new(Shared {
            key: new_key()?,
            policy: Policy::new(agent, grants),
            limits,
            refusals: Refusals::new(agent),
            counters: Counters::default(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(proxy::serve(listener, shared.clone(), stop.clone()));
        tracing::debug!(%agent, socket = %socket.display(), "egress: gate started");
        Ok(Gate {
            _stop: stop.drop_guard(),
            dir,
            socket,
            exe,
            shared,
        })
    }

    /// The gate's socket on the host (what [`Gate::bwrap_args`] binds to
    /// `/run/bgagents/egress.sock` in the sandbox).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The variable (name, value) handing the relay the gate's key: the
    /// relay sends the key first on every connection, and the gate serves
    /// no connection without it, so another process that reaches the
    /// socket reaches nothing. Never put it on a command line.
    pub fn relay_env(&self) -> (&'static str, String) {
        (KEY_VAR, hex(&self.shared.key))
    }

    /// bubblewrap options that put the gate's socket at
    /// `/run/bgagents/egress.sock` and the relay's executable (the
    /// `bgagents` binary) at `/run/bgagents/bgagents`, both read-only, and
    /// set [`Gate::relay_env`] (so give them after any `--clearenv`, and
    /// before any `--remount-ro /`). They hold the gate's key: pass them to
    /// bubblewrap through `--args FD`, not on its command line.
    pub fn bwrap_args(&self) -> Vec<OsString> {
        let (name, key) = self.relay_env();
        vec![
            "--ro-bind".into(),
            self.socket.clone().into(),
            RELAY_SOCKET.into(),
            "--ro-bind".into(),
            self.exe.clone().into(),
            RELAY_EXE.into(),
            "--setenv".into(),
            name.into(),
            key.into(),
        ]
    }

    /// What goes before the command inside the sandbox:
    /// `/run/bgagents/bgagents __egress-relay --socket
    /// /run/bgagents/egress.sock --listen 127.0.0.1:3128 --`.
    pub fn command_prefix(&self) -> Vec<OsString> {
        [
            RELAY_EXE,
            RELAY_COMMAND,
            "--socket",
            RELAY_SOCKET,
            "--listen",
            RELAY_LISTEN,
            "--",
        ]
        .map(OsString::from)
        .to_vec()
    }

    /// The distinct refusal reasons since the last call (at most 20 over
    /// the gate's life), to show with the process's result.
    pub fn take_refusals(&self) -> Vec<String> {
        self.shared.refusals.take()
    }

    /// Bytes and connections through the gate so far.
    pub fn traffic(&self) -> Traffic {
        let counters = &self.shared.counters;
        Traffic {
            bytes_up: counters.up.load(Ordering::Relaxed),
            bytes_down: counters.down.load(Ordering::Relaxed),
            connections: counters.connections.load(Ordering::Relaxed),
            refused: self.shared.refusals.total(),
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let traffic = self.traffic();
        tracing::debug!(
            agent = %self.shared.policy.agent,
            bytes_up = traffic.bytes_up,
            bytes_down = traffic.bytes_down,
            connections = traffic.connections,
            refused = traffic.refused,
            dir = %self.dir.path.display(),
            "egress: gate stopped"
        );
    }
}

/// A directory only this user can enter, removed when dropped.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn create() -> std::io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        // Out of the way of grants where the session has a runtime
        // directory (/run/user/UID), else the temporary directory. A Unix
        // socket's path holds at most 107 bytes: a long one gives way to
        // /tmp.
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute() && dir.is_dir());
        let mut base = runtime.unwrap_or_else(std::env::temp_dir);
        if base.as_os_str().len() > 40 {
            base = PathBuf::from("/tmp");
        }
        let path = base.join(format!("bgagents-egress-{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir { path })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests;

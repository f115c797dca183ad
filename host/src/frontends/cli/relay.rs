//! `bgagents __egress-relay --socket PATH --listen ADDR -- COMMAND [ARGS…]`
//! (hidden): the sandbox side of the network egress gate (see
//! `sandbox::egress`). Run inside a sandbox whose network namespace holds
//! only loopback, it listens on ADDR, starts COMMAND with the proxy
//! variables pointing there (and `NODE_USE_ENV_PROXY=1`), and relays every connection byte for byte to
//! the gate's Unix socket at PATH, until COMMAND exits.
//!
//! Exit status: COMMAND's own, or 128 + N if signal N killed it; 125 when
//! the relay itself cannot start (it says why on stderr), 126 when COMMAND
//! cannot be executed, 127 when it is not found. SIGTERM, SIGINT, SIGHUP,
//! SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH are passed on to COMMAND, and
//! COMMAND is killed (`PR_SET_PDEATHSIG`) if the relay dies.
//!
//! The gate's key comes in the environment variable `BGAGENTS_EGRESS_KEY`
//! (never on a command line); the relay sends it first on every
//! connection to the gate, and COMMAND's environment does not have it.
//!
//! One thread, no logging: it is one more process in the sandbox, counted
//! against the command's caps.

use crate::sandbox::egress;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};

const RELAY_FAILED: u8 = 125;
const CANNOT_EXECUTE: u8 = 126;
const NOT_FOUND: u8 = 127;

/// Signals passed on to the command.
const FORWARDED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

pub fn main(socket: PathBuf, listen: SocketAddr, command: Vec<OsString>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return failed(&format!("cannot start the async runtime: {error}")),
    };
    runtime.block_on(run(&socket, listen, command))
}

fn failed(why: &str) -> ExitCode {
    eprintln!("bgagents egress relay: {why}");
    ExitCode::from(RELAY_FAILED)
}

async fn run(socket: &Path, listen: SocketAddr, command: Vec<OsString>) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        return failed("no command to run after --");
    };
    let key = std::env::var(egress::KEY_VAR).ok();
    let Some(key) = key.as_deref().and_then(egress::parse_key) else {
        return failed(&format!(
            "no gate key in {} (64 hex digits); the relay runs only as its gate starts it",
            egress::KEY_VAR
        ));
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => return failed(&format!("cannot listen on {listen}: {error}")),
    };
    let proxy = format!("http://{listen}");
    let mut child = std::process::Command::new(program);
    child.args(args).env_remove(egress::KEY_VAR);
    for name in [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "https_proxy",
        "http_proxy",
        "all_proxy",
    ] {
        child.env(name, &proxy);
    }
    child.env("NO_PROXY", "").env("no_proxy", "");
    // Node's own fetch follows the variables only when asked (Node 22.21+).
    child.env("NODE_USE_ENV_PROXY", "1");
    // SAFETY: getpid cannot fail.
    let relay = unsafe { libc::getpid() };
    // SAFETY: between fork and exec only prctl, getppid and kill, which
    // are async-signal-safe.
    unsafe {
        child.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The relay died before the line above took effect.
            if libc::getppid() != relay {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            Ok(())
        });
    }
    // Caught from here on (exec resets them to the default in the
    // command), and passed on once the command runs.
    let signals: Vec<_> = (FORWARDED.iter())
        .filter_map(|&number| Some((number, signal(SignalKind::from_raw(number)).ok()?)))
        .collect();
    let mut child = match tokio::process::Command::from(child).spawn() {
        Ok(child) => child,
        Err(error) => {
            let shown = program.to_string_lossy();
            eprintln!("bgagents egress relay: cannot run {shown}: {error}");
            return ExitCode::from(match error.kind() {
                std::io::ErrorKind::NotFound => NOT_FOUND,
                _ => CANNOT_EXECUTE,
            });
        }
    };
    if let Some(pid) = child.id() {
        forward(signals, pid as libc::pid_t);
    }
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => match (status.code(), status.signal()) {
                        (Some(code), _) => ExitCode::from(code as u8),
                        (None, Some(signal)) => ExitCode::from(128 + signal as u8),
                        (None, None) => ExitCode::FAILURE,
                    },
                    Err(error) => failed(&format!("lost track of the command: {error}")),
                };
            }
            accepted = listener.accept() => {
                let Ok((mut client, _)) = accepted else {
                    // Out of descriptors, say: wait instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let socket = socket.to_path_buf();
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    if let Ok(mut gate) = UnixStream::connect(&socket).await
                        && gate.write_all(&key).await.is_ok()
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut gate).await;
                    }
                });
            }
        }
    }
}

/// Passes each signal of `signals` the relay gets on to `pid`.
fn forward(signals: Vec<(libc::c_int, tokio::signal::unix::Signal)>, pid: libc::pid_t) {
    for (number, mut signals) in signals {
        tokio::spawn(async move {
            while signals.recv().await.is_some() {
                // SAFETY: kill(2) of our own child, which is not yet reaped
                // while this runtime runs.
                unsafe { libc::kill(pid, number) };
            }
        });
    }
}

//! `bgagents serve`: a long-lived daemon that owns a team's toolset and
//! serves it on a Unix socket in its state directory, so that tasks outlive
//! the terminal that started them.
//!
//! The protocol on the socket is MCP — the server of `bgagents mcp`, each
//! connection a session of the operator, plus the daemon's own tools
//! ([`connection`]). The `bgagents start`/`ps`/`logs`/`view`/`stop`/`wait`
//! commands are thin MCP clients of it. `state` places the state directory,
//! holds its lock (one daemon per directory) and creates the socket.

pub mod connection;
pub mod sessions;
pub mod state;

use crate::frontends::http::HttpListener;
use crate::toolset::Toolset;
use sessions::Sessions;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Serves `toolset` on `listener` (bound at `socket`) until SIGINT or
/// SIGTERM, then removes the socket and stops every task.
pub async fn run(
    toolset: Toolset,
    listener: UnixListener,
    socket: &Path,
    http: Option<HttpListener>,
) -> Result<(), String> {
    let cannot = |what: &str, error: std::io::Error| format!("cannot {what}: {error}");
    listener
        .set_nonblocking(true)
        .map_err(|error| cannot("set up the socket", error))?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|error| cannot("set up the socket", error))?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|error| cannot("handle SIGTERM", error))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|error| cannot("handle SIGINT", error))?;
    let sessions = Arc::new(Sessions::new(toolset.clone()));
    let http_stop = CancellationToken::new();
    let mut http = http.map(|http| tokio::spawn(http.serve(sessions.clone(), http_stop.clone())));
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut connections = JoinSet::new();
    let why = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // The socket's mode keeps other users out; this says so
                    // in the log if one gets through (root).
                    match stream.peer_cred() {
                        Ok(peer) if peer.uid() == uid => {}
                        Ok(peer) => {
                            tracing::warn!(uid = peer.uid(), "refused a client of another user");
                            continue;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "refused a client whose user is unknown");
                            continue;
                        }
                    }
                    let number = sessions.next_number();
                    connections.spawn(connection::serve(sessions.clone(), stream, number));
                }
                Err(error) => {
                    // Out of descriptors, most likely: let some close.
                    tracing::warn!(%error, "cannot accept a client");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = terminate.recv() => break "SIGTERM",
            Some(ended) = async { Some(http.as_mut()?.await) }, if http.is_some() => {
                let why = match ended {
                    Ok(Ok(())) => "the HTTP listener ended".to_string(),
                    Ok(Err(error)) => error,
                    Err(error) => format!("the HTTP listener failed: {error}"),
                };
                http = None;
                eprintln!("bgagents: {why}; the Unix socket still serves");
            }
            _ = interrupt.recv() => break "SIGINT",
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    };
    // New clients are told no daemon runs rather than left waiting.
    drop(listener);
    let _ = std::fs::remove_file(socket);
    eprintln!("bgagents: {why}: stopping every task…");
    toolset.shutdown().await;
    // The stops on disk before the state directory's lock is let go.
    if let Err(error) = toolset.settled().await {
        eprintln!("bgagents: {error}");
    }
    // HTTP event streams have told the shutdown's stops by now (each is
    // told once on disk): they end, and the listener with them.
    http_stop.cancel();
    if let Some(http) = http {
        let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    }
    connections.abort_all();
    eprintln!("bgagents: stopped");
    Ok(())
}

//! The gate's proxy: accepts connections on its Unix socket, reads one
//! proxy request from each ([`super::request`]), checks it against the
//! grants ([`super::policy`]), connects ([`super::dial`]) and then copies
//! bytes both ways until either side is done, the connection idles past
//! its limit, or the gate stops.
//!
//! Answers: `200 Connection established` opens a tunnel; `403` (refused by
//! the grants), `400` (not a proxy request), `408` (no request head in
//! time), `502`/`504` (the target could not be reached) and `503` (too
//! many connections at once) carry a
//! one-line reason, in the status line (which clients such as Python's
//! show for a failed tunnel) and as the body.

use super::dial::{DialError, dial};
use super::policy::{Policy, Via};
use super::refusals::Refusals;
use super::request::{self, HeadError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// A gate's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open through the gate at once; more are answered `503`.
    pub max_connections: usize,
    /// For reading a request's head.
    pub head_timeout: Duration,
    /// For resolving and connecting to the target.
    pub connect_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            head_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            // A model's answer may take minutes to start.
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Bytes and connections through one gate.
#[derive(Debug, Default)]
pub struct Counters {
    pub up: AtomicU64,
    pub down: AtomicU64,
    pub connections: AtomicU64,
}

/// What every connection of one gate shares.
pub struct Shared {
    /// What the relay sends first on each connection.
    pub key: [u8; super::KEY_LEN],
    pub policy: Policy,
    pub limits: Limits,
    pub refusals: Refusals,
    pub counters: Counters,
}

/// Refusals answered beyond the connection cap at once; past this the
/// connection is closed without an answer.
const MAX_OVERFLOW_ANSWERS: usize = 16;

/// Serves `listener` until `stop` is cancelled.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>, stop: CancellationToken) {
    let open = Arc::new(Semaphore::new(shared.limits.max_connections));
    let overflow = Arc::new(Semaphore::new(MAX_OVERFLOW_ANSWERS));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let mut client = match accepted {
            Ok((client, _)) => client,
            Err(error) => {
                tracing::debug!(%error, "egress: accept failed");
                // Out of descriptors, say: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let stop = stop.child_token();
        let shared = shared.clone();
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = handle(&mut client, &shared) => {}
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                let Ok(permit) = overflow.clone().try_acquire_owned() else {
                    continue;
                };
                let reason = format!(
                    "too many connections through the network gate at once (at most {}); \
                     retry when some have closed",
                    shared.limits.max_connections
                );
                tokio::spawn(async move {
                    let answer = answer(&mut client, 503, &reason);
                    let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Whether `a` and `b` are equal, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Serves one client connection: the gate's key first, then a request.
async fn handle(client: &mut UnixStream, shared: &Shared) {
    let limits = &shared.limits;
    let mut key = [0u8; super::KEY_LEN];
    match tokio::time::timeout(limits.head_timeout, client.read_exact(&mut key)).await {
        Ok(Ok(_)) if same(&key, &shared.key) => {}
        _ => {
            tracing::warn!(
                agent = %shared.policy.agent,
                "egress: a connection to the gate without its key closed (not its relay)"
            );
            return;
        }
    }
    let request = match tokio::time::timeout(limits.head_timeout, request::read(client)).await {
        Err(_) => {
            let reason = format!("no request head within {}s", limits.head_timeout.as_secs());
            return answer(client, 408, &reason).await;
        }
        Ok(Err(HeadError::Closed)) => return,
        Ok(Err(HeadError::Bad(reason))) => return answer(client, 400, &reason).await,
        Ok(Ok(request)) => request,
    };
    let target = request.target.to_string();
    let reach = match shared.policy.decide(request.via, &request.target) {
        Ok(reach) => reach,
        Err(reason) => {
            shared.refusals.refused(&target, &reason);
            return answer(client, 403, &reason).await;
        }
    };
    let agent = &shared.policy.agent;
    let (mut upstream, addr) =
        match dial(&request.target, &reach, limits.connect_timeout, agent).await {
            Ok(connected) => connected,
            Err(DialError::Refused(reason)) => {
                shared.refusals.refused(&target, &reason);
                return answer(client, 403, &reason).await;
            }
            Err(DialError::Failed(reason)) => {
                tracing::debug!(%agent, %target, %reason, "egress: target unreachable");
                return answer(client, 502, &reason).await;
            }
            Err(DialError::TimedOut(reason)) => {
                tracing::debug!(%agent, %target, %reason, "egress: target unreachable");
                return answer(client, 504, &reason).await;
            }
        };
    let opened = match request.via {
        Via::Tunnel => {
            let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
            client.write_all(established).await.is_ok()
                && upstream.write_all(&request.rest).await.is_ok()
        }
        Via::PlainHttp => {
            let head = request.upstream_head.unwrap_or_default();
            upstream.write_all(&head).await.is_ok()
                && upstream.write_all(&request.rest).await.is_ok()
        }
    };
    if !opened {
        return;
    }
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%agent, %target, %addr, via = ?request.via, "egress: connection opened");
    let started = Instant::now();
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let (up, down) = relay(
        (client_read, client_write),
        (upstream_read, upstream_write),
        limits.idle_timeout,
    )
    .await;
    shared.counters.up.fetch_add(up, Ordering::Relaxed);
    shared.counters.down.fetch_add(down, Ordering::Relaxed);
    tracing::debug!(
        %agent,
        %target,
        bytes_up = up,
        bytes_down = down,
        seconds = started.elapsed().as_secs(),
        "egress: connection closed"
    );
}

/// Copies both ways between the client and the upstream until both
/// directions are done or nothing moves for `idle`: bytes up and down.
async fn relay(
    client: (impl AsyncRead + Unpin, impl AsyncWrite + Unpin),
    upstream: (impl AsyncRead + Unpin, impl AsyncWrite + Unpin),
    idle: Duration,
) -> (u64, u64) {
    let (client_read, client_write) = client;
    let (upstream_read, upstream_write) = upstream;
    let start = Instant::now();
    // Milliseconds since `start` of the last byte moved either way.
    let last = AtomicU64::new(0);
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let touch = || last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let both = async {
        tokio::join!(
            copy(client_read, upstream_write, &up, &touch),
            copy(upstream_read, client_write, &down, &touch)
        )
    };
    let watchdog = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let quiet = start.elapsed().saturating_sub(since);
            if quiet >= idle {
                break;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        _ = both => {}
        _ = watchdog => {}
    }
    (up.into_inner(), down.into_inner())
}

/// Copies `from` to `to` until `from` ends (then ends `to`'s writing side)
/// or either fails, counting into `moved`.
async fn copy(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    moved: &AtomicU64,
    touch: &impl Fn(),
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        touch();
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        moved.fetch_add(read as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

/// Answers `status` with `reason` as a one-line body (and in the status
/// line), then closes.
async fn answer(client: &mut UnixStream, status: u16, reason: &str) {
    let phrase = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Gateway Timeout",
    };
    // Printable ASCII only in the status line.
    let shown: String = (reason.chars())
        .map(|c| match c.is_ascii_graphic() || c == ' ' {
            true => c,
            false => '?',
        })
        .collect();
    let body = format!("bgagents network gate: {shown}\n");
    let head = format!(
        "HTTP/1.1 {status} {phrase} (bgagents network gate: {shown})\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = client.write_all(head.as_bytes()).await;
    let _ = client.write_all(body.as_bytes()).await;
    let _ = client.shutdown().await;
}

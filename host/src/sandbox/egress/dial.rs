//! Opening the gate's outgoing connection for an allowed target: names are
//! resolved here, on the host (the sandbox has no resolver), and the
//! connection goes to one of exactly the addresses that were checked, so a
//! name that changes its answer between the check and the connection (DNS
//! rebinding) cannot lead anywhere unchecked. A name that resolves only to
//! loopback, private, link-local or other non-public addresses is refused:
//! only a grant that names such an address (or `localhost`) reaches it.

use super::policy::{Reach, Target, grant_key, is_public};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Why no connection was made: refused by policy (`403`), or failed
/// (`502`, `504` on a timeout), each with its one-line reason.
#[derive(Debug, PartialEq, Eq)]
pub enum DialError {
    Refused(String),
    Failed(String),
    TimedOut(String),
}

/// At most this many of a name's addresses are tried, in the resolver's
/// order.
const MAX_ATTEMPTS: usize = 4;

/// Connects to `target` as `reach` says, within `timeout` (resolution and
/// every attempt together). `agent` names the grant keys in refusals.
pub async fn dial(
    target: &Target,
    reach: &Reach,
    timeout: Duration,
    agent: &str,
) -> Result<(TcpStream, SocketAddr), DialError> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<IpAddr> = match reach {
        Reach::Fixed(addrs) => addrs.clone(),
        Reach::Resolve => resolve_public(target, deadline, agent).await?,
    };
    let mut last_error = None;
    for ip in addrs.into_iter().take(MAX_ATTEMPTS) {
        let addr = SocketAddr::new(ip, target.port);
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Ok(Err(error)) => last_error = Some(format!("{addr}: {error}")),
            Err(_) => break,
        }
    }
    match last_error {
        Some(error) if Instant::now() < deadline => Err(DialError::Failed(format!(
            "cannot connect to {target} ({error})"
        ))),
        _ => Err(DialError::TimedOut(format!(
            "cannot connect to {target}: no answer within {}s",
            timeout.as_secs()
        ))),
    }
}

/// The public addresses `target`'s name resolves to; refused when it
/// resolves only to others.
async fn resolve_public(
    target: &Target,
    deadline: Instant,
    agent: &str,
) -> Result<Vec<IpAddr>, DialError> {
    let name = target.host.to_string();
    let left = deadline.saturating_duration_since(Instant::now());
    let found = tokio::time::timeout(left, tokio::net::lookup_host((name.as_str(), target.port)))
        .await
        .map_err(|_| DialError::TimedOut(format!("cannot resolve {name}: no answer in time")))?
        .map_err(|error| DialError::Failed(format!("cannot resolve {name}: {error}")))?;
    let mut public = Vec::new();
    let mut other = Vec::new();
    for addr in found {
        let ip = addr.ip();
        let list = if is_public(ip) {
            &mut public
        } else {
            &mut other
        };
        if !list.contains(&ip) {
            list.push(ip);
        }
    }
    match (public.is_empty(), other.first()) {
        (false, _) => Ok(public),
        (true, None) => Err(DialError::Failed(format!(
            "cannot resolve {name}: no address"
        ))),
        (true, Some(ip)) => {
            let shown = SocketAddr::new(*ip, target.port);
            Err(DialError::Refused(format!(
                "connection to {target} refused: {name} resolves to {ip}, a loopback, private \
                 or otherwise non-public address, which a grant naming a host never reaches; \
                 to reach it, connect to the address itself and grant that: add {shown} to \
                 {}",
                grant_key(agent, "grants.network.connect")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_an_address_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // The policy reaches `localhost` at loopback without a lookup; looked
        // up instead, it stands for any name that resolves to loopback (a
        // rebinding name), without needing a resolver that answers so.
        let target = Target::parse_authority(&format!("localhost:{port}")).unwrap();
        let refused = dial(&target, &Reach::Resolve, Duration::from_secs(10), "worker")
            .await
            .unwrap_err();
        match refused {
            DialError::Refused(reason) => {
                assert!(
                    reason.contains("resolves to 127.0.0.1") || reason.contains("resolves to ::1"),
                    "{reason}"
                );
                assert!(
                    reason.ends_with(&format!(":{port} to agents.worker.grants.network.connect")),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        let fixed = Reach::Fixed(vec!["127.0.0.1".parse().unwrap()]);
        let (_stream, addr) = dial(&target, &fixed, Duration::from_secs(10), "worker")
            .await
            .unwrap();
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], port)));
    }

    #[tokio::test]
    async fn a_closed_port_fails_naming_the_target() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let target = Target::parse_authority(&format!("127.0.0.1:{port}")).unwrap();
        let fixed = Reach::Fixed(vec!["127.0.0.1".parse().unwrap()]);
        match dial(&target, &fixed, Duration::from_secs(10), "worker").await {
            Err(DialError::Failed(reason)) => {
                assert!(
                    reason.starts_with(&format!("cannot connect to 127.0.0.1:{port}")),
                    "{reason}"
                );
                assert!(reason.contains("refused"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}

//! Which `host:port` a sandboxed process may reach through the gate, and
//! how: the grant that allows it, or the one-line reason (naming the grant
//! to add) why not.
//!
//! - `CONNECT host:port` (a tunnel, what HTTPS clients send) is allowed by
//!   an `https://host[:port]` origin in `grants.http` (port 443 unless it
//!   names one) or by `host:port` in `grants.network.connect`.
//! - A plain-HTTP request (`GET http://host[:port]/…`) is allowed by an
//!   `http://host[:port]` origin in `grants.http` (port 80 unless it names
//!   one), or by `host:port` in `grants.network.connect`.
//!
//! Host names compare without case and without a trailing dot; IP
//! addresses compare as addresses (`[::1]` and `::1` are one). A grant that
//! names an IP address, or `localhost`, is reached at exactly that address
//! (loopback for `localhost`), private or not; a grant that names any
//! other host is resolved by the gate at each connection, and only to
//! public addresses (see [`super::dial`]).

use crate::config::Grants;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How the sandboxed process asked to reach its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `CONNECT host:port`: a byte tunnel (HTTPS through `HTTPS_PROXY`).
    Tunnel,
    /// An absolute-form plain-HTTP request (`HTTP_PROXY`).
    PlainHttp,
}

/// A host as a request names it, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Lower-case, without a trailing dot.
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// Reads a host as a request or grant writes it (`Example.COM.`,
    /// `10.0.0.1`, `[::1]`, `::1`); `None` when it is neither a host name
    /// (letters, digits, `-`, `_` and dots, at most 253 characters) nor an
    /// IP address.
    pub fn parse(text: &str) -> Option<Host> {
        let bare = text
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(Host::Ip(ip));
        }
        if bare.len() != text.len() {
            return None;
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|label| !label.is_empty() && label.len() <= 63)
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        valid.then_some(Host::Name(name))
    }

    /// The addresses a grant naming this host reaches without a lookup:
    /// the address itself, or loopback for `localhost`; `None` for a name
    /// to resolve.
    pub fn fixed_addresses(&self) -> Option<Vec<IpAddr>> {
        match self {
            Host::Ip(ip) => Some(vec![*ip]),
            Host::Name(name) if name == "localhost" => Some(vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]),
            Host::Name(_) => None,
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Where a request wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl Target {
    /// Reads `host:port` (`[v6]:port` for IPv6), as `CONNECT` names its
    /// target.
    pub fn parse_authority(text: &str) -> Option<Target> {
        let (host, port) = text.rsplit_once(':')?;
        let port = port.parse::<u16>().ok().filter(|&port| port > 0)?;
        if host.contains(':') && !host.starts_with('[') {
            return None;
        }
        Some(Target {
            host: Host::parse(host)?,
            port,
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// How an allowed target is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// At exactly these addresses, which the grant names (an IP address,
    /// or loopback for `localhost`), private ones included.
    Fixed(Vec<IpAddr>),
    /// By looking the name up, and only at the public addresses found.
    Resolve,
}

/// The grants one gate applies, for one agent.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The agent's name, for the grant keys refusals point to (none:
    /// `grants.http` without `agents.NAME.`).
    pub agent: String,
    /// `grants.http` origins: scheme (`http`/`https`), host, port.
    http: Vec<(String, Host, u16)>,
    /// `grants.network.connect` endpoints.
    connect: Vec<Target>,
}

impl Policy {
    pub fn new(agent: &str, grants: &Grants) -> Policy {
        let http = (grants.http.iter())
            .filter_map(|grant| {
                let host = Host::parse(&grant.host)?;
                Some((grant.scheme.clone(), host, grant.port))
            })
            .collect();
        let connect = (grants.connect.iter())
            .filter_map(|grant| Target::parse_authority(&grant.endpoint))
            .collect();
        Policy {
            agent: agent.to_string(),
            http,
            connect,
        }
    }

    /// How `target` may be reached `via` a tunnel or plain HTTP, or the
    /// one-line reason it may not, naming the grant that would allow it.
    pub fn decide(&self, via: Via, target: &Target) -> Result<Reach, String> {
        let scheme = match via {
            Via::Tunnel => "https",
            Via::PlainHttp => "http",
        };
        let by_origin = (self.http.iter()).any(|(granted_scheme, host, port)| {
            granted_scheme == scheme && *host == target.host && *port == target.port
        });
        let by_endpoint = self.connect.contains(target);
        if !by_origin && !by_endpoint {
            return Err(self.not_granted(via, target));
        }
        Ok(match target.host.fixed_addresses() {
            Some(addrs) => Reach::Fixed(addrs),
            None => Reach::Resolve,
        })
    }

    fn not_granted(&self, via: Via, target: &Target) -> String {
        let http = grant_key(&self.agent, "grants.http");
        let connect = grant_key(&self.agent, "grants.network.connect");
        let (what, scheme, default_port) = match via {
            Via::Tunnel => ("CONNECT to", "https", 443),
            Via::PlainHttp => ("HTTP request to", "http", 80),
        };
        let origin = match target.port == default_port {
            true => format!("{scheme}://{}", target.host),
            false => format!("{scheme}://{target}"),
        };
        let mut reason = format!("{what} {target} refused: not granted; add {origin} to {http}");
        if via == Via::Tunnel && target.port != 443 {
            reason.push_str(&format!(" (or {target} to {connect} for any TCP protocol)"));
        }
        reason
    }
}

/// The team-file key `key` (`grants.http`) of `agent`:
/// `agents.NAME.grants.http`, or `key` alone when the agent is not named.
pub fn grant_key(agent: &str, key: &str) -> String {
    match agent.is_empty() {
        true => key.to_string(),
        false => format!("agents.{agent}.{key}"),
    }
}

/// Whether `ip` is an address a grant naming a host may reach: a public
/// unicast address, not loopback, private (RFC 1918, unique local),
/// link-local, shared (carrier-grade NAT), unspecified, multicast,
/// broadcast, documentation, benchmarking or reserved — nor such an IPv4
/// address inside an IPv6 one (mapped, compatible, 6to4, NAT64).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => is_public_v6(ip),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        // 6to4 relay anycast: reaches whatever the relay forwards to.
        || (a == 192 && b == 88 && c == 99)
        || (a == 198 && (b == 18 || b == 19)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded_v4 = |high: usize| {
        let octets = ip.octets();
        Ipv4Addr::new(
            octets[high],
            octets[high + 1],
            octets[high + 2],
            octets[high + 3],
        )
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96).
    if segments[..6] == [0; 6] || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return !ip.is_unspecified() && !ip.is_loopback() && is_public_v4(embedded_v4(12));
    }
    // 6to4 (2002::/16) carries an IPv4 address in its next 32 bits.
    if segments[0] == 0x2002 {
        return is_public_v4(embedded_v4(2));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Translated addresses reach an IPv4 address chosen by a
        // translator: local-use NAT64 (64:ff9b:1::/48), SIIT
        // (::ffff:0:0/96) and Teredo (2001::/32).
        || segments[..3] == [0x64, 0xff9b, 1]
        || segments[..6] == [0, 0, 0, 0, 0xffff, 0]
        || (segments[0] == 0x2001 && segments[1] == 0)
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
        || (segments[0] & 0xffc0) == 0xfec0
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConnectGrant, HttpGrant};

    fn policy(http: &[&str], connect: &[&str]) -> Policy {
        let grants = Grants {
            http: http.iter().map(|o| HttpGrant::parse(o).unwrap()).collect(),
            connect: (connect.iter())
                .map(|endpoint| ConnectGrant {
                    endpoint: endpoint.to_string(),
                    addrs: Vec::new(),
                })
                .collect(),
            ..Grants::default()
        };
        Policy::new("worker", &grants)
    }

    fn target(text: &str) -> Target {
        Target::parse_authority(text).unwrap_or_else(|| panic!("{text} does not parse"))
    }

    #[test]
    fn an_https_origin_allows_connect_to_its_port_only() {
        let policy = policy(
            &["https://API.example.com", "https://other.example:8443"],
            &[],
        );
        let allowed = |via, text: &str| policy.decide(via, &target(text)).is_ok();
        assert!(allowed(Via::Tunnel, "api.example.com:443"));
        assert!(allowed(Via::Tunnel, "API.Example.COM:443"));
        assert!(allowed(Via::Tunnel, "api.example.com.:443"));
        assert!(allowed(Via::Tunnel, "other.example:8443"));
        assert!(!allowed(Via::Tunnel, "api.example.com:8443"));
        assert!(!allowed(Via::Tunnel, "other.example:443"));
        assert!(!allowed(Via::Tunnel, "x.api.example.com:443"));
        assert!(!allowed(Via::Tunnel, "example.com:443"));
        // https does not allow plain HTTP, even on its port.
        assert!(!allowed(Via::PlainHttp, "api.example.com:443"));
        assert!(!allowed(Via::PlainHttp, "api.example.com:80"));
        assert_eq!(
            policy.decide(Via::Tunnel, &target("api.example.com:443")),
            Ok(Reach::Resolve)
        );
    }

    #[test]
    fn an_http_origin_allows_plain_http_only() {
        let policy = policy(&["http://plain.example", "http://127.0.0.1:8080"], &[]);
        let allowed = |via, text: &str| policy.decide(via, &target(text)).is_ok();
        assert!(allowed(Via::PlainHttp, "plain.example:80"));
        assert!(allowed(Via::PlainHttp, "127.0.0.1:8080"));
        assert!(!allowed(Via::Tunnel, "plain.example:80"));
        assert!(!allowed(Via::Tunnel, "127.0.0.1:8080"));
        assert!(!allowed(Via::PlainHttp, "127.0.0.1:8081"));
        assert!(!allowed(Via::PlainHttp, "127.0.0.2:8080"));
        // A name is not its address, nor the other way round.
        assert!(!allowed(Via::PlainHttp, "localhost:8080"));
    }

    #[test]
    fn connect_endpoints_allow_tunnels_and_plain_http_to_them() {
        let policy = policy(&[], &["db.example:5432", "[::1]:9000", "LocalHost:7000"]);
        let decide = |via, text: &str| policy.decide(via, &target(text));
        assert_eq!(decide(Via::Tunnel, "db.example:5432"), Ok(Reach::Resolve));
        assert!(decide(Via::PlainHttp, "DB.example:5432").is_ok());
        assert!(decide(Via::Tunnel, "db.example:5433").is_err());
        assert_eq!(
            decide(Via::Tunnel, "[::1]:9000"),
            Ok(Reach::Fixed(vec!["::1".parse().unwrap()]))
        );
        assert!(decide(Via::Tunnel, "[0:0::1]:9000").is_ok());
        assert!(decide(Via::Tunnel, "127.0.0.1:9000").is_err());
        assert_eq!(
            decide(Via::Tunnel, "localhost:7000"),
            Ok(Reach::Fixed(vec![
                "127.0.0.1".parse().unwrap(),
                "::1".parse().unwrap()
            ]))
        );
    }

    #[test]
    fn ip_literals_are_reached_as_written() {
        let policy = policy(&["https://10.1.2.3", "https://[fd00::1]:8443"], &[]);
        assert_eq!(
            policy.decide(Via::Tunnel, &target("10.1.2.3:443")),
            Ok(Reach::Fixed(vec!["10.1.2.3".parse().unwrap()]))
        );
        assert_eq!(
            policy.decide(Via::Tunnel, &target("[fd00:0::1]:8443")),
            Ok(Reach::Fixed(vec!["fd00::1".parse().unwrap()]))
        );
    }

    #[test]
    fn refusals_name_the_grant_to_add() {
        let policy = policy(&[], &[]);
        let refuse = |via, text: &str| policy.decide(via, &target(text)).unwrap_err();
        assert_eq!(
            refuse(Via::Tunnel, "Evil.example:443"),
            "CONNECT to evil.example:443 refused: not granted; add https://evil.example to \
             agents.worker.grants.http"
        );
        assert_eq!(
            refuse(Via::Tunnel, "evil.example:22"),
            "CONNECT to evil.example:22 refused: not granted; add https://evil.example:22 to \
             agents.worker.grants.http (or evil.example:22 to \
             agents.worker.grants.network.connect for any TCP protocol)"
        );
        assert_eq!(
            refuse(Via::PlainHttp, "[::1]:80"),
            "HTTP request to [::1]:80 refused: not granted; add http://[::1] to \
             agents.worker.grants.http"
        );
        assert_eq!(
            refuse(Via::PlainHttp, "plain.example:8080"),
            "HTTP request to plain.example:8080 refused: not granted; add \
             http://plain.example:8080 to agents.worker.grants.http"
        );
    }

    #[test]
    fn without_an_agent_name_refusals_name_the_key_alone() {
        let policy = Policy::new("", &Grants::default());
        assert_eq!(
            policy.decide(Via::Tunnel, &target("x.example:443")),
            Err(
                "CONNECT to x.example:443 refused: not granted; add https://x.example to \
                 grants.http"
                    .to_string()
            )
        );
    }

    #[test]
    fn authorities_and_hosts_parse_strictly() {
        for bad in [
            "example.com",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "::1:80",
            "[::1:80",
            "exa mple.com:80",
            "a..b:80",
            ":80",
            "[example.com]:80",
            "ex%41mple.com:80",
            "user@example.com:80",
        ] {
            assert_eq!(Target::parse_authority(bad), None, "{bad}");
        }
        assert_eq!(target("EXAMPLE.com.:80").to_string(), "example.com:80");
        assert_eq!(
            target("[::FFFF:1.2.3.4]:1").to_string(),
            "[::ffff:1.2.3.4]:1"
        );
    }

    #[test]
    fn only_public_addresses_count_as_public() {
        for private in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "192.0.2.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "100::1",
            "64:ff9b:1::808:808",
            "::ffff:0:808:808",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "192.88.99.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}

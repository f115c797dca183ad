//! Sandbox grants: the only files, environment variables and network
//! endpoints an agent's tasks may reach. Resolved once at load time —
//! directories checked, host values read, `host:port` names resolved — so a
//! task only has to apply them.

use super::file::{DirMode, GrantsFile};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// What one agent's tasks may touch. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    /// Variables the guest sees, with their values.
    pub env: Vec<(String, String)>,
    /// Variables asked for from the host that the host does not have.
    pub env_unset: Vec<String>,
    pub connect: Vec<ConnectGrant>,
    /// Name lookups allowed.
    pub dns: bool,
    /// Origins HTTP requests may go to: a component's `wasi:http` requests
    /// and the `fetch` tool's (`grants.http`).
    pub http: Vec<HttpGrant>,
    /// Whether `shell` commands share the host's network
    /// (`grants.network.shell`); all hosts, since the OS sandbox cannot
    /// filter by host. Without it commands reach only the hosts `http` and
    /// `connect` name, through the egress gate (`sandbox::egress`), or no
    /// network at all when those are empty.
    pub shell_network: bool,
    /// Whether a harness agent's CLI runs without bubblewrap
    /// (`grants.unconfined`), with the host's whole file system and network.
    pub unconfined: bool,
}

/// An origin HTTP requests may go to: scheme, host and port must all match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl HttpGrant {
    /// Reads `https://host[:port]`; the error says what to write instead.
    pub fn parse(text: &str) -> Result<HttpGrant, String> {
        let example = "write it as scheme://host[:port], e.g. https://api.example.com";
        let url = reqwest::Url::parse(text).map_err(|error| format!("{error}; {example}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("the scheme must be http or https; {example}"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("an allowed origin carries no credentials; remove them".to_string());
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!("an allowed origin has no path or query; {example}"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) if name.contains('*') => {
                return Err("wildcards are not supported; list each host".to_string());
            }
            Some(url::Host::Ipv6(addr)) => addr.to_string(),
            Some(host) => host.to_string().to_ascii_lowercase(),
            None => return Err(format!("no host; {example}")),
        };
        Ok(HttpGrant {
            scheme: url.scheme().to_string(),
            host,
            port: url.port_or_known_default().unwrap_or(443),
        })
    }

    /// Whether a request to `url` is within this grant.
    pub fn allows(&self, url: &reqwest::Url) -> bool {
        let host = match url.host() {
            Some(url::Host::Ipv6(addr)) => addr.to_string(),
            Some(host) => host.to_string().to_ascii_lowercase(),
            None => return false,
        };
        url.scheme() == self.scheme
            && url.port_or_known_default() == Some(self.port)
            && host == self.host
    }
}

impl std::fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "{}://[{}]:{}", self.scheme, self.host, self.port),
            false => write!(f, "{}://{}:{}", self.scheme, self.host, self.port),
        }
    }
}

/// A host directory mapped into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// Absolute host path.
    pub host: PathBuf,
    /// Absolute guest path.
    pub guest: String,
    pub writable: bool,
}

/// A TCP endpoint the guest may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectGrant {
    /// As written: `host:port`.
    pub endpoint: String,
    /// What it resolved to at load time.
    pub addrs: Vec<SocketAddr>,
}

impl Grants {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
            && self.env.is_empty()
            && self.connect.is_empty()
            && !self.dns
            && self.http.is_empty()
            && !self.shell_network
            && !self.unconfined
    }

    /// Whether an HTTP request to `url` is allowed (`grants.http`).
    pub fn allows_http(&self, url: &reqwest::Url) -> bool {
        self.http.iter().any(|grant| grant.allows(url))
    }

    /// Whether the guest may open a TCP connection to `addr`.
    pub fn allows_connect(&self, addr: SocketAddr) -> bool {
        self.connect.iter().any(|grant| grant.addrs.contains(&addr))
    }

    /// One line per grant, for `bgagents check`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for dir in &self.dirs {
            let mode = if dir.writable {
                "read-write"
            } else {
                "read-only"
            };
            lines.push(format!(
                "files: {} at {} ({mode})",
                dir.host.display(),
                dir.guest
            ));
        }
        for (name, _) in &self.env {
            lines.push(format!("env: {name}"));
        }
        for name in &self.env_unset {
            lines.push(format!("env: {name} (not set on this host, so not passed)"));
        }
        for grant in &self.connect {
            let addrs: Vec<String> = grant.addrs.iter().map(ToString::to_string).collect();
            lines.push(format!(
                "network: TCP to {} ({})",
                grant.endpoint,
                addrs.join(", ")
            ));
        }
        if self.dns {
            lines.push("network: name lookups".to_string());
        }
        for grant in &self.http {
            lines.push(format!("http: {grant}"));
        }
        if self.shell_network {
            lines.push("network: shell commands share the host's network (all hosts)".to_string());
        }
        if self.unconfined {
            lines.push(
                "unconfined: the harness runs WITHOUT bubblewrap — the host's whole file system                  and network, as the user running bgagents"
                    .to_string(),
            );
        }
        lines
    }
}

/// Checks and resolves `file` for the agent at `at` (e.g. `agents.reader`).
pub(super) fn resolve(
    file: &GrantsFile,
    at: &str,
    base_dir: &Path,
    problems: &mut Vec<String>,
) -> Grants {
    let mut grants = Grants {
        dns: file.network.dns,
        shell_network: file.network.shell,
        unconfined: file.unconfined,
        ..Grants::default()
    };
    for (index, origin) in file.http.iter().enumerate() {
        match HttpGrant::parse(origin) {
            Ok(grant) => grants.http.push(grant),
            Err(why) => problems.push(format!(
                "{at}.grants.http[{index}]: `{}`: {why}",
                super::file::shorten(origin)
            )),
        }
    }
    for (index, dir) in file.files.iter().enumerate() {
        let at = format!("{at}.grants.files[{index}]");
        let host = base_dir.join(&dir.host);
        if !host.is_dir() {
            problems.push(format!(
                "{at}.host: {} is not an existing directory; create it or fix the path \
                 (relative paths start at the team file's directory)",
                host.display()
            ));
            continue;
        }
        let host = host.canonicalize().unwrap_or(host);
        if !dir.guest.starts_with('/') {
            problems.push(format!(
                "{at}.guest: `{}` must be an absolute guest path such as /data",
                dir.guest
            ));
            continue;
        }
        if grants.dirs.iter().any(|other| other.guest == dir.guest) {
            problems.push(format!("{at}.guest: `{}` is granted twice", dir.guest));
            continue;
        }
        grants.dirs.push(DirGrant {
            host,
            guest: dir.guest.clone(),
            writable: dir.mode == DirMode::ReadWrite,
        });
    }
    refuse_mixed_nesting(&grants.dirs, at, problems);
    for (index, entry) in file.env.iter().enumerate() {
        let (name, value) = match entry.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (entry.as_str(), None),
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            problems.push(format!(
                "{at}.grants.env[{index}]: `{entry}` is not `NAME` or `NAME=value` \
                 (names are letters, digits and _)"
            ));
            continue;
        }
        match value.or_else(|| std::env::var(name).ok()) {
            Some(value) => grants.env.push((name.to_string(), value)),
            None => grants.env_unset.push(name.to_string()),
        }
    }
    for (index, endpoint) in file.network.connect.iter().enumerate() {
        let at = format!("{at}.grants.network.connect[{index}]");
        let resolved = match endpoint.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                endpoint
                    .to_socket_addrs()
                    .map_err(|error| error.to_string())
            }
            _ => Err("write it as host:port, e.g. 127.0.0.1:8080".to_string()),
        };
        match resolved {
            Ok(addrs) => grants.connect.push(ConnectGrant {
                endpoint: endpoint.clone(),
                addrs: addrs.collect(),
            }),
            Err(why) => problems.push(format!("{at}: cannot use `{endpoint}`: {why}")),
        }
    }
    grants
}

/// A read-only directory inside a read-write one cannot stay read-only:
/// whatever can write the outer one can reach the inner one through it
/// (another path to the same place, a link made there). Such grants are
/// refused. A read-write directory inside a read-only one is fine (through
/// the outer path it is only read), as are nested grants of one mode.
fn refuse_mixed_nesting(dirs: &[DirGrant], at: &str, problems: &mut Vec<String>) {
    for (index, inner) in dirs.iter().enumerate() {
        let outer = dirs.iter().enumerate().find(|(other, outer)| {
            *other != index
                && inner.host.starts_with(&outer.host)
                && (inner.host != outer.host || *other < index)
                && !inner.writable
                && outer.writable
        });
        if let Some((other, outer)) = outer {
            problems.push(format!(
                "{at}.grants.files[{index}]: {} (read-only) lies inside {} (read-write, \
                 files[{other}]), through which it could be changed; grant directories that do \
                 not overlap, or make both read-only",
                inner.host.display(),
                outer.host.display()
            ));
        }
    }
}

/// A host directory no grant may reach: what it is, why, and how to move
/// it out of the way.
pub struct Protected {
    pub what: &'static str,
    pub why: &'static str,
    pub fix: &'static str,
}

/// `dir` made absolute, with its existing part resolved (symlinks, `..`),
/// so that it can be compared with a grant's canonical path before it
/// exists. (A relative path would climb to "" and stay relative, and then
/// match no grant.)
pub fn resolved(dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    while let Some(parent) = existing.parent() {
        if existing.exists() {
            break;
        }
        rest.push(existing.file_name().unwrap_or_default());
        existing = parent;
    }
    let mut path = existing
        .canonicalize()
        .unwrap_or_else(|_| existing.to_path_buf());
    path.extend(rest.iter().rev());
    path
}

/// A problem for every `(agent, granted directory)` that contains `dir`
/// or lies inside it.
pub fn check_grants_avoid<'a>(
    dir: &Path,
    protected: &Protected,
    grants: impl IntoIterator<Item = (&'a str, &'a Path)>,
) -> Vec<String> {
    let dir = resolved(dir);
    grants
        .into_iter()
        .filter_map(|(agent, granted)| {
            let granted = resolved(granted);
            let relation = if dir.starts_with(&granted) {
                "contains"
            } else if granted.starts_with(&dir) {
                "lies inside"
            } else {
                return None;
            };
            Some(format!(
                "agents.{agent}.grants.files: {} {relation} {} {} ({}); grant a narrower \
                 directory, or {}",
                granted.display(),
                protected.what,
                dir.display(),
                protected.why,
                protected.fix,
            ))
        })
        .collect()
}

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
        self.dirs.is_empty() && self.env.is_empty() && self.connect.is_empty() && !self.dns
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
        ..Grants::default()
    };
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

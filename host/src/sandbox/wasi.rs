//! The WASI context of one task. Everything is denied unless the agent's
//! grants say otherwise: no directories, no environment, no sockets, no name
//! lookups, an empty stdin. Clocks and randomness are allowed; stdout and
//! stderr go to the task's output buffer.

use super::output::{OutputSink, SandboxOutput};
use crate::config::Grants;
use std::sync::Arc;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

/// Builds the context for a task of `agent` with `grants`, its stdout and
/// stderr feeding `output`. Fails only if a granted directory cannot be
/// opened any more.
pub fn task_context(
    agent: &str,
    grants: &Arc<Grants>,
    output: &Arc<SandboxOutput>,
) -> Result<WasiCtx, String> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .arg(agent)
        .stdout(OutputSink(output.clone()))
        .stderr(OutputSink(output.clone()));
    grant_files(&mut builder, grants)?;
    for (name, value) in &grants.env {
        builder.env(name, value);
    }
    grant_network(&mut builder, grants);
    Ok(builder.build())
}

/// Preopens each granted directory; the guest can reach nothing outside
/// them (`..`, absolute paths and symlinks are resolved inside the grant).
fn grant_files(builder: &mut WasiCtxBuilder, grants: &Grants) -> Result<(), String> {
    for dir in &grants.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|error| {
                format!(
                    "cannot open the granted directory {}: {error}",
                    dir.host.display()
                )
            })?;
    }
    Ok(())
}

/// TCP connects only to the granted endpoints; no listening, no UDP; name
/// lookups only when granted.
fn grant_network(builder: &mut WasiCtxBuilder, grants: &Arc<Grants>) {
    builder
        .allow_udp(false)
        .allow_tcp(!grants.connect.is_empty())
        .allow_ip_name_lookup(grants.dns);
    let grants = grants.clone();
    builder.socket_addr_check(move |addr, use_| {
        let allowed = match use_ {
            SocketAddrUse::TcpConnect => grants.allows_connect(addr),
            // The implicit bind of a connect is to the wildcard address.
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            _ => false,
        };
        Box::pin(async move { allowed })
    });
}

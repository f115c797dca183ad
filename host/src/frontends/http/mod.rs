//! MCP over Streamable HTTP: the daemon's MCP server (the same handler as
//! on its Unix socket, [`crate::frontends::serve::connection`]) behind an
//! HTTP listener at `/mcp`, for remote coordinators and clients that only
//! speak HTTP.
//!
//! A listener on anything but a loopback address needs a bearer token
//! ([`auth`]): every request must carry it, compared in constant time. TLS
//! is left to a reverse proxy in front. On loopback, `Host` is checked
//! against the loopback names (no DNS rebinding from a browser page).
//!
//! Sessions: a client of the 2025 revisions gets an MCP session
//! (`Mcp-Session-Id`) whose tasks it lists, kept across reconnects while
//! the session lives. The 2026-07-28 revision has no sessions: its
//! requests share one session of the daemon's (labelled `http`), as the
//! command line's do, and reach any task by id.

pub mod auth;

use crate::frontends::serve::connection::Connection;
use crate::frontends::serve::sessions::Sessions;
use auth::BearerToken;
use axum::Router;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The path MCP is served at.
pub const MCP_PATH: &str = "/mcp";

/// Where and how to listen for HTTP clients.
pub struct HttpOptions {
    pub addr: SocketAddr,
    pub token: Option<BearerToken>,
}

/// A bound HTTP listener with its options, ready to serve.
pub struct HttpListener {
    listener: TcpListener,
    addr: SocketAddr,
    token: Option<Arc<BearerToken>>,
}

impl HttpListener {
    /// Binds `options.addr`, refusing a non-loopback address without a
    /// token.
    pub async fn bind(options: HttpOptions) -> Result<HttpListener, String> {
        let HttpOptions { addr, token } = options;
        if !addr.ip().is_loopback() {
            if token.is_none() {
                return Err(format!(
                    "--http {addr}: only a loopback address (127.0.0.1, [::1]) may be served \
                     without a token; give --auth-token-file FILE (a file holding the bearer \
                     token clients must send), or bind 127.0.0.1"
                ));
            }
            eprintln!(
                "bgagents: warning: serving MCP on {addr}, reachable from other machines: \
                 every request must carry the bearer token; put a TLS reverse proxy in front \
                 of it, as this listener speaks plain HTTP"
            );
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| format!("--http {addr}: cannot listen there: {error}"))?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(HttpListener {
            listener,
            addr,
            token: token.map(Arc::new),
        })
    }

    /// The address it listens on (the port chosen when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves MCP at [`MCP_PATH`] for `sessions` until `shutdown`.
    pub async fn serve(
        self,
        sessions: Arc<Sessions>,
        shutdown: CancellationToken,
    ) -> Result<(), String> {
        let router = router(sessions, self.addr, self.token, shutdown.clone());
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|error| format!("HTTP listener on {}: {error}", self.addr))
    }
}

fn router(
    sessions: Arc<Sessions>,
    addr: SocketAddr,
    token: Option<Arc<BearerToken>>,
    shutdown: CancellationToken,
) -> Router {
    let mut config = StreamableHttpServerConfig::default().with_cancellation_token(shutdown);
    if !addr.ip().is_loopback() {
        // Reached by whatever name the proxy or the network gives it; the
        // token is what keeps strangers out.
        config = config.disable_allowed_hosts();
    }
    let mcp = StreamableHttpService::new(
        move || Ok(Connection::over_http(sessions.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = Router::new().route_service(MCP_PATH, mcp);
    match token {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        )),
        None => router,
    }
}

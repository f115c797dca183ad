//! The HTTP listener: MCP over Streamable HTTP at `/mcp` (the same handler
//! as on the daemon's Unix socket, [`crate::frontends::serve::connection`]),
//! for remote coordinators and clients that only speak HTTP; a JSON API
//! with a task event stream under `/api` ([`api`]); and the dashboard page
//! at `/` ([`dashboard`]), which holds no data and reads the API.
//!
//! Every MCP and API request must carry a bearer token ([`auth`]), compared in
//! constant time — on loopback too: other local users, and agents whose
//! shell commands have the network, reach 127.0.0.1 as well. TLS is left
//! to a reverse proxy in front; with a token required, `Host` is not
//! checked (a page rebinding its name cannot send the token, and a proxy
//! passes its own).
//!
//! Sessions: a client of the 2025 revisions gets an MCP session
//! (`Mcp-Session-Id`) whose tasks it lists, kept across reconnects while
//! the session lives. The 2026-07-28 revision has no sessions: its
//! requests share one session of the daemon's (labelled `http`), as the
//! command line's do, and reach any task by id (on `mcp --http`, only
//! their own).

pub mod api;
pub mod auth;
mod dashboard;

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
    pub token: BearerToken,
}

/// A bound HTTP listener with its options, ready to serve.
pub struct HttpListener {
    listener: TcpListener,
    addr: SocketAddr,
    token: Arc<BearerToken>,
}

impl HttpListener {
    /// Binds `options.addr`, warning when it is not a loopback address.
    pub async fn bind(options: HttpOptions) -> Result<HttpListener, String> {
        let HttpOptions { addr, token } = options;
        if !addr.ip().is_loopback() {
            eprintln!(
                "bgagents: warning: MCP served at {addr} is reachable from other machines: \
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
            token: Arc::new(token),
        })
    }

    /// The address it listens on (the port chosen when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves MCP at [`MCP_PATH`], the JSON API and the dashboard for
    /// `sessions` until `shutdown`.
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
    token: Arc<BearerToken>,
    shutdown: CancellationToken,
) -> Router {
    tracing::debug!(%addr, "serving MCP over HTTP");
    let (sessions_for_api, shutdown_for_api) = (sessions.clone(), shutdown.clone());
    // Reached by whatever name a proxy or the network gives it: the token
    // is what keeps others out.
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown)
        .disable_allowed_hosts();
    let mut sessions_kept = LocalSessionManager::default();
    // A client comes back to its tasks hours later: its session is kept
    // that long while idle (rmcp's default is five minutes).
    sessions_kept.session_config.keep_alive = Some(SESSION_IDLE);
    let mcp = StreamableHttpService::new(
        move || Ok(Connection::over_http(sessions.clone())),
        Arc::new(sessions_kept),
        config,
    );
    Router::new()
        .route_service(MCP_PATH, mcp)
        .merge(api::routes(sessions_for_api, shutdown_for_api))
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ))
        // Without the token: the page holds no data.
        .merge(dashboard::routes())
}

/// How long an idle MCP session over HTTP is kept.
pub const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

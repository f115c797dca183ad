//! The MCP front-end: `bgagents mcp` serves the toolset over the Model
//! Context Protocol on stdio, the client acting as one agent of the team.
//! It only adapts: `transport` checks each line and answers protocol
//! errors, `server` maps tool calls to the toolset's operations (with
//! `args` and `schemas`), and `notify` pushes task activity and wait
//! progress.

// Logging notifications are deprecated in the newest MCP revision but still
// what clients listen to.
#![allow(deprecated)]

pub(crate) mod notify;
mod schemas;
pub(crate) mod server;
pub(crate) mod tasks;
pub(crate) mod transport;

use crate::toolset::{ToolError, Toolset};
use notify::LogFilter;
use rmcp::ServiceExt;
use server::McpServer;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use transport::LineTransport;

/// Refuses an agent a client cannot act as: one the team lacks, or one
/// without the background_agents toolset.
fn check_agent(toolset: &Toolset, agent: &str) -> Result<(), String> {
    let spec = toolset
        .team()
        .agent(agent)
        .ok_or_else(|| format!("agent {agent:?} is not defined in the team"))?;
    if !spec.background_agents {
        return Err(ToolError::NoToolset {
            caller: agent.to_string(),
        }
        .to_string());
    }
    Ok(())
}

/// Serves `toolset` over Streamable HTTP on `listener`, each client acting
/// as agent `agent` in a session of its own, until SIGINT or SIGTERM; then
/// stops every task. Nothing is kept: this is `bgagents mcp` for clients
/// that speak HTTP (`bgagents serve --http` keeps its tasks).
pub async fn serve_http(
    toolset: Toolset,
    agent: &str,
    listener: crate::frontends::http::HttpListener,
) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    check_agent(&toolset, agent)?;
    let sessions = Arc::new(crate::frontends::serve::sessions::Sessions::acting_as(
        toolset.clone(),
        agent,
    )?);
    let cannot = |what: &str, error: std::io::Error| format!("cannot {what}: {error}");
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|error| cannot("handle SIGTERM", error))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|error| cannot("handle SIGINT", error))?;
    let stop = CancellationToken::new();
    let mut http = tokio::spawn(listener.serve(sessions, stop.clone()));
    let outcome = tokio::select! {
        _ = terminate.recv() => Ok(()),
        _ = interrupt.recv() => Ok(()),
        ended = &mut http => match ended {
            Ok(result) => result,
            Err(error) => Err(format!("the HTTP listener failed: {error}")),
        },
    };
    stop.cancel();
    toolset.shutdown().await;
    outcome
}

/// Serves `toolset` on stdin/stdout as agent `agent` until the client goes
/// away, then stops every task the client started.
pub async fn serve(toolset: Toolset, agent: &str) -> Result<(), String> {
    check_agent(&toolset, agent)?;
    let session = Arc::new(
        toolset
            .open_session(Some(agent))
            .map_err(|e| e.to_string())?,
    );
    let client_gone = CancellationToken::new();
    let server = McpServer {
        toolset: toolset.clone(),
        session: session.clone(),
        log_filter: Arc::new(LogFilter::default()),
        client_gone: client_gone.clone(),
    };
    let log_filter = server.log_filter.clone();
    // Subscribed before any request is served, so no task event is missed.
    let events = toolset.events().subscribe();
    let (input, output) = rmcp::transport::stdio_pipes();
    let running = server
        .serve(LineTransport::new(input, output, client_gone.clone()))
        .await
        .map_err(|error| format!("MCP handshake failed: {error}"))?;
    let peer = running.peer().clone();
    let notifier = tokio::spawn({
        let toolset = toolset.clone();
        let session = session.clone();
        async move { notify::forward_events(toolset, events, session, peer, &log_filter).await }
    });
    let finished = running.waiting();
    tokio::pin!(finished);
    tokio::select! {
        _ = &mut finished => {}
        // Stop the tasks while rmcp winds down, not after.
        _ = client_gone.cancelled() => {
            session.close().await;
            let _ = finished.await;
        }
    }
    notifier.abort();
    session.close().await;
    toolset.shutdown().await;
    Ok(())
}

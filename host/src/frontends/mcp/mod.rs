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
pub(crate) mod transport;

use crate::toolset::{ToolError, Toolset};
use notify::LogFilter;
use rmcp::ServiceExt;
use server::McpServer;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use transport::LineTransport;

/// Serves `toolset` on stdin/stdout as agent `agent` until the client goes
/// away, then stops every task the client started.
pub async fn serve(toolset: Toolset, agent: &str) -> Result<(), String> {
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
    let session_id = session.caller().session();
    let notifier = tokio::spawn({
        let toolset = toolset.clone();
        async move { notify::forward_events(toolset, events, session_id, peer, &log_filter).await }
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

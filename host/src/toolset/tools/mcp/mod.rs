//! `type: mcp` toolsets: tools served by MCP servers, which the host starts
//! (or reaches) once per team, on the first use by any of its agents.
//!
//! - `command:`/`args:`/`env:` — a local server over stdio. It is the
//!   operator's configuration, so it runs outside the WebAssembly sandbox,
//!   but it gets only the environment the file lists (plus PATH), starts in
//!   the team file's directory, and its stderr goes to the host log, never
//!   to a task's output.
//! - `remote: {url, headers}` — a server over Streamable HTTP.
//! - `ref: docker:NAME` — the catalog server NAME run by Docker's MCP
//!   gateway (`docker mcp gateway run`), which needs `docker` on PATH.
//!
//! Two toolsets naming the same server share it. A server that stops is
//! reported in the result of the call that finds it stopped, and one that
//! fails to start in the error of the `tools()` that tried; either way it
//! is started once more, on the next use. A server gets that one extra
//! start per run: a crash or a passing start failure does not cost a
//! long-running host the server for good, and a server that keeps failing
//! is not started in a loop. Servers end when the last clone of
//! [`McpServers`] is dropped (the toolset's end), and with the host even if
//! it is killed (see `launch`).

mod launch;
mod results;

use super::ToolSpec;
use super::args::Args;
use crate::config::{McpServerSpec, McpToolsetSpec, Team};
use launch::Connection;
use rmcp::ServiceError;
use rmcp::model::{CallToolRequestParams, Tool};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest one tool call may take before its result is an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The team's MCP servers, each started on first use and shut down when the
/// last clone is dropped. Cheap to clone.
#[derive(Clone, Default)]
pub struct McpServers(Arc<HashMap<McpServerSpec, Arc<Server>>>);

impl McpServers {
    /// The servers `team`'s agents name, none started yet.
    pub fn new(team: &Team) -> McpServers {
        let mut servers = HashMap::new();
        for toolset in team.agents.values().flat_map(|agent| &agent.mcp) {
            servers
                .entry(toolset.server.clone())
                .or_insert_with(|| Arc::new(Server::new(toolset.server.clone())));
        }
        McpServers(Arc::new(servers))
    }

    /// The tools `toolset` gives (after its `tools:` filter), starting its
    /// server if needed. A server that cannot start gives no tools; the
    /// error says why, for the task's output.
    pub async fn tools(&self, toolset: &McpToolsetSpec) -> Result<Vec<ToolSpec>, String> {
        let server = self.server(toolset)?;
        let connection = server.connection().await?;
        let tools = results::filtered(&connection.tools, toolset.tools.as_deref())?;
        Ok(tools.into_iter().map(results::spec).collect())
    }

    /// Calls tool `name` of `toolset`'s server; `None` if the toolset has no
    /// such tool.
    pub async fn call(
        &self,
        toolset: &McpToolsetSpec,
        name: &str,
        args: &Args,
    ) -> Option<Result<String, String>> {
        let server = self.server(toolset).ok()?;
        if !server.listed(toolset, name) {
            return None;
        }
        Some(server.call(toolset, name, args).await)
    }

    fn server(&self, toolset: &McpToolsetSpec) -> Result<&Arc<Server>, String> {
        self.0.get(&toolset.server).ok_or_else(|| {
            // Only a toolset from another team could get here.
            format!(
                "the server {} is not one of this team's",
                toolset.server.label()
            )
        })
    }
}

/// Whether `server` can be started on this host (its command, or `docker`,
/// on PATH), for `bgagents check`.
pub fn probe(server: &McpServerSpec) -> Result<(), String> {
    match server {
        McpServerSpec::Command { command, cwd, .. } => {
            launch::resolve_program(command, cwd).map(|_| ())
        }
        McpServerSpec::Docker { name } => match launch::find_on_path("docker") {
            Some(_) => Ok(()),
            None => Err(launch::docker_missing(name)),
        },
        McpServerSpec::Remote { url, .. } => match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
            _ => Err(format!(
                "{} is not an http:// or https:// URL",
                server.label()
            )),
        },
    }
}

/// One server and where it is in its life.
struct Server {
    spec: McpServerSpec,
    state: tokio::sync::Mutex<State>,
    /// The tools it listed when it last started, for telling which toolset a
    /// call belongs to while it is stopped.
    listed: std::sync::Mutex<Vec<Tool>>,
    /// Whether it has had its one extra start (after a failed start or a
    /// stop) already.
    restarted: AtomicBool,
}

enum State {
    NotStarted,
    Running(Arc<Connection>),
    /// It failed to start or stopped after running: `why`, for the next
    /// uses. `retry` if the next use starts it again.
    Down {
        why: String,
        retry: bool,
    },
}

impl Server {
    fn new(spec: McpServerSpec) -> Server {
        Server {
            spec,
            state: tokio::sync::Mutex::new(State::NotStarted),
            listed: Default::default(),
            restarted: AtomicBool::new(false),
        }
    }

    /// The running session, starting the server if it is not running yet
    /// (or once more after it failed to start or stopped). Concurrent
    /// first callers wait for one start.
    async fn connection(&self) -> Result<Arc<Connection>, String> {
        let mut state = self.state.lock().await;
        let restart = match &*state {
            State::Running(connection) => return Ok(connection.clone()),
            State::Down { why, retry: false } => return Err(why.clone()),
            State::Down { retry: true, .. } => true,
            State::NotStarted => false,
        };
        let label = self.spec.label();
        if restart {
            self.restarted.store(true, Ordering::Relaxed);
            tracing::info!(server = %label, "starting the MCP server once more");
        } else {
            tracing::info!(server = %label, "starting the MCP server");
        }
        match launch::connect(&self.spec).await {
            Ok(mut connection) => {
                connection.tools.retain(|tool| self.offerable(tool));
                tracing::info!(
                    server = %label,
                    tools = connection.tools.len(),
                    "MCP server ready"
                );
                *self.listed.lock().unwrap() = connection.tools.clone();
                let connection = Arc::new(connection);
                *state = State::Running(connection.clone());
                Ok(connection)
            }
            Err(why) => {
                let why = self.scrub(why);
                tracing::warn!(server = %label, "MCP server unavailable: {why}");
                let (why, retry) = match restart {
                    true => (
                        format!(
                            "it was started once more and that failed too: {why}; its tools \
                             are unavailable for the rest of this run"
                        ),
                        false,
                    ),
                    false => (
                        format!("{why}; it will be started once more on the next use"),
                        true,
                    ),
                };
                *state = State::Down {
                    why: why.clone(),
                    retry,
                };
                Err(why)
            }
        }
    }

    /// Whether `name` is one of `toolset`'s tools, as last listed.
    fn listed(&self, toolset: &McpToolsetSpec, name: &str) -> bool {
        let listed = self.listed.lock().unwrap();
        results::filtered(&listed, toolset.tools.as_deref())
            .is_ok_and(|tools| tools.iter().any(|tool| tool.name == name))
    }

    /// Whether the model APIs accept the tool's name (letters, digits, `_`
    /// and `-`, at most 64); a tool named otherwise would make every model
    /// call of the agent fail, so it is left out when the server starts (and
    /// logged).
    fn offerable(&self, tool: &Tool) -> bool {
        let name = tool.name.as_ref();
        let fine = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
        if !fine {
            tracing::warn!(
                server = %self.spec.label(),
                tool = name,
                "MCP tool left out: model APIs accept only letters, digits, _ and - (at most 64)"
            );
        }
        fine
    }

    async fn call(
        &self,
        toolset: &McpToolsetSpec,
        name: &str,
        args: &Args,
    ) -> Result<String, String> {
        let label = self.spec.label();
        let connection = self
            .connection()
            .await
            .map_err(|why| format!("MCP server {label}: {why}"))?;
        // A restarted server may list other tools.
        let still_there = results::filtered(&connection.tools, toolset.tools.as_deref())
            .is_ok_and(|tools| tools.iter().any(|tool| tool.name == name));
        if !still_there {
            return Err(format!(
                "MCP server {label} no longer has the tool {name:?} (it was restarted)"
            ));
        }
        let request =
            CallToolRequestParams::new(name.to_string()).with_arguments(args.as_map().clone());
        let answer = tokio::time::timeout(CALL_TIMEOUT, connection.client.call_tool(request)).await;
        match answer {
            Err(_) => Err(format!(
                "MCP server {label}: the tool {name:?} did not answer within {} s",
                CALL_TIMEOUT.as_secs()
            )),
            Ok(Ok(result)) => results::result_text(&result),
            Ok(Err(error)) if launch::session_lost(&error) => Err(self.lost(&connection).await),
            Ok(Err(ServiceError::McpError(error))) => Err(format!(
                "MCP server {label}: {} (JSON-RPC error {})",
                results::cut(self.scrub(error.message.to_string())),
                error.code.0
            )),
            Ok(Err(error)) => Err(format!(
                "MCP server {label}: the call failed: {}",
                self.scrub(launch::error_chain(&error))
            )),
        }
    }

    /// Records that `connection`'s session is gone and says so, with the
    /// process's exit status when it has one.
    async fn lost(&self, connection: &Arc<Connection>) -> String {
        let label = self.spec.label();
        let how = match &connection.process {
            Some(process) => match process.exit_status().await {
                Some(status) => format!("stopped ({status})"),
                None => "closed its connection".to_string(),
            },
            None => "closed the connection".to_string(),
        };
        let restart = !self.restarted.load(Ordering::Relaxed);
        let next = match restart {
            true => "it will be started again on the next call",
            false => {
                "it had been started once more already, so its tools are unavailable for the \
                      rest of this run"
            }
        };
        let why = format!("the server {how}");
        let mut state = self.state.lock().await;
        if let State::Running(current) = &*state
            && Arc::ptr_eq(current, connection)
        {
            tracing::warn!(server = %label, "MCP server {how}");
            *state = State::Down {
                why: format!("{why} and was already restarted once; its tools are unavailable"),
                retry: restart,
            };
        }
        format!("MCP server {label}: {why} during the call; {next}")
    }

    /// `text` from outside (a server's or the HTTP stack's message) with
    /// what of a remote server's settings can carry a key taken out: the
    /// URL, as configured and as the HTTP stack prints it (host in lower
    /// case, `/` before the query, escapes normalised), its path and query
    /// and their longer parts, and the header values.
    fn scrub(&self, mut text: String) -> String {
        for (secret, replacement) in remote_secrets(&self.spec) {
            text = text.replace(&secret, &replacement);
        }
        text
    }
}

/// What [`Server::scrub`] replaces in a remote server's messages, and by
/// what, longest first (so a URL goes whole before its parts).
fn remote_secrets(spec: &McpServerSpec) -> Vec<(String, String)> {
    /// Shorter path segments ("mcp", "sse", "v1") are left: they carry no
    /// key, and replacing them would garble the messages.
    const SHORTEST_PATH_SEGMENT: usize = 12;
    /// Shorter query or header values are left, as words of any message.
    const SHORTEST_VALUE: usize = 4;
    let McpServerSpec::Remote { url, headers } = spec else {
        return Vec::new();
    };
    let label = spec.label();
    let mut secrets = vec![(url.clone(), label.clone())];
    let mut parts = Vec::new();
    // The query and path as written, before the URL parser normalises them.
    let written = url.split('#').next().unwrap_or_default();
    let (before_query, query) = written.split_once('?').unwrap_or((written, ""));
    parts.push(query.to_string());
    if let Some((_, after_scheme)) = before_query.split_once("://")
        && let Some((_, path)) = after_scheme.split_once('/')
    {
        parts.push(format!("/{path}"));
    }
    if let Ok(parsed) = reqwest::Url::parse(url) {
        secrets.push((parsed.to_string(), label.clone()));
        parts.push(parsed.query().unwrap_or_default().to_string());
        parts.extend(parsed.query_pairs().map(|(_, value)| value.into_owned()));
        if parsed.path() != "/" {
            parts.push(parsed.path().to_string());
        }
        let segments = parsed.path_segments().into_iter().flatten();
        parts.extend(
            segments
                .filter(|segment| segment.len() >= SHORTEST_PATH_SEGMENT)
                .map(str::to_string),
        );
    }
    let values = parts
        .into_iter()
        .filter(|part| part.len() >= SHORTEST_VALUE);
    secrets.extend(values.map(|part| (part, "[url part]".to_string())));
    secrets.extend(
        (headers.iter())
            .filter(|(_, value)| value.len() >= SHORTEST_VALUE)
            .map(|(_, value)| (value.clone(), "[header value]".to_string())),
    );
    secrets.sort_by_key(|(secret, _)| std::cmp::Reverse(secret.len()));
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(url: &str, headers: &[(&str, &str)]) -> Server {
        Server::new(McpServerSpec::Remote {
            url: url.to_string(),
            headers: (headers.iter())
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        })
    }

    #[test]
    fn scrub_takes_out_the_url_in_any_form_its_keys_and_the_header_values() {
        let server = remote(
            "https://Mcp.Example.com/mcp/PathKey0123456789/sse?key=Query%20Key&v=1",
            &[("Authorization", "Bearer header-key")],
        );
        let said = [
            "https://Mcp.Example.com/mcp/PathKey0123456789/sse?key=Query%20Key&v=1",
            "https://mcp.example.com/mcp/PathKey0123456789/sse?key=Query%20Key&v=1",
            "the server said: bad key PathKey0123456789",
            "GET /mcp/PathKey0123456789/sse refused",
            "query key=Query%20Key&v=1 refused; key \"Query Key\" unknown",
            "token Bearer header-key expired",
        ]
        .join("\n");

        let scrubbed = server.scrub(said);

        for secret in ["PathKey", "Query%20Key", "Query Key", "header-key"] {
            assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
        }
        assert!(
            scrubbed.starts_with("https://mcp.example.com\nhttps://mcp.example.com\n"),
            "{scrubbed}"
        );
    }

    #[test]
    fn scrub_leaves_short_path_segments_and_other_servers_alone() {
        let server = remote("http://127.0.0.1:8080/mcp", &[]);
        let said = "the mcp session ended".to_string();
        assert_eq!(server.scrub(said.clone()), said);
        let command = Server::new(McpServerSpec::Command {
            command: "server".to_string(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: Default::default(),
        });
        assert_eq!(command.scrub(said.clone()), said);
    }

    #[test]
    fn a_remote_servers_label_is_its_scheme_host_and_port() {
        let label = |url: &str| remote(url, &[]).spec.label();
        assert_eq!(
            label("https://Mcp.Example.com/mcp/KEY/sse?key=K#f"),
            "https://mcp.example.com"
        );
        assert_eq!(label("http://user:pw@[::1]:8080/x"), "http://[::1]:8080");
        assert_eq!(label("https://example.com:443/x"), "https://example.com");
        assert_eq!(label("not a url KEY"), "remote server");
    }
}

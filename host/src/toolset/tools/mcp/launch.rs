//! Starting and reaching one MCP server: a local process over stdio
//! (`command:`, or Docker's MCP gateway for `ref: docker:NAME`) or a
//! remote one over Streamable HTTP (`remote:`), up to the end of the
//! handshake and the listing of its tools.
//!
//! A local server does not outlive the host, even one killed outright: it
//! gets SIGKILL when the host goes (`PR_SET_PDEATHSIG`), and a small guard
//! process in its group ends the rest of the group (whatever the server
//! started) once the server is gone.

use crate::config::McpServerSpec;
use rmcp::model::{ClientConfig, Implementation, PaginatedRequestParams, ProtocolVersion, Tool};
use rmcp::service::{ClientInitializeError, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::{ServiceError, ServiceExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};

/// Longest a server may take to start, answer the handshake and list its
/// tools.
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Most tools one server may list: far more than a model can choose among.
const MAX_TOOLS: usize = 1000;

/// The catalog Docker's MCP gateway resolves `ref: docker:NAME` in — the
/// one docker-agent names, so a team file means the same server in both.
const DOCKER_CATALOG_URL: &str = "https://desktop.docker.com/mcp/catalog/v3/catalog.yaml";

/// Host variables the `docker` CLI needs to find its daemon, context and
/// plugins. The gateway is Docker's own program, configured by the
/// operator's Docker setup; nothing else of the host's environment reaches
/// it.
const DOCKER_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "XDG_RUNTIME_DIR",
];

/// Bytes of a server's stderr copied to the host log; the rest is read and
/// dropped, so a chatty server neither blocks nor floods the log.
const STDERR_LOG_LIMIT: usize = 64 << 10;

/// Longest stderr line logged; longer ones are cut.
const STDERR_LINE_LIMIT: usize = 1000;

/// Seconds the processes a server started get between SIGTERM and SIGKILL
/// once the server is gone (a gateway stopping its containers).
const GROUP_GRACE_SECS: libc::time_t = 10;

/// A started server: the MCP session and, for a local server, its process.
pub(super) struct Connection {
    pub(super) client: RunningService<RoleClient, ClientConfig>,
    /// Every tool the server listed, in its order.
    pub(super) tools: Vec<Tool>,
    pub(super) process: Option<ServerProcess>,
}

/// A local server's process, the leader of its own process group. Dropping
/// it ends the group: SIGTERM to every process the server started (so a
/// gateway can stop its containers) and SIGKILL to the server itself; the
/// group's guard ([`guard_group`]) gives what is left SIGKILL
/// [`GROUP_GRACE_SECS`] later.
pub(super) struct ServerProcess(tokio::sync::Mutex<Leader>);

struct Leader {
    child: Child,
    /// The group's id (the leader's pid) while the leader is not reaped:
    /// until then the id cannot name anyone else's group.
    group: Option<i32>,
}

impl ServerProcess {
    /// How the process ended, waiting a moment for an exit that is under
    /// way (the session usually notices a closed pipe before the exit is
    /// reaped); `None` if it is still running.
    pub(super) async fn exit_status(&self) -> Option<ExitStatus> {
        let mut leader = self.0.lock().await;
        let status = tokio::time::timeout(Duration::from_secs(2), leader.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        if status.is_some() {
            leader.group = None;
        }
        status
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let leader = self.0.get_mut();
        if let Some(group) = leader.group {
            // SAFETY: kill(2) with plain integers; the group is the one the
            // server was started in, its leader not yet reaped.
            unsafe {
                libc::kill(-group, libc::SIGTERM);
            }
        }
        // The `Child` is dropped next, and `kill_on_drop` kills the leader.
    }
}

/// Starts (or reaches) `server` and lists its tools, within
/// [`START_TIMEOUT`].
pub(super) async fn connect(server: &McpServerSpec) -> Result<Connection, String> {
    let (transport, process) = match server {
        McpServerSpec::Command {
            command,
            args,
            env,
            cwd,
        } => {
            let program = resolve_program(command, cwd)?;
            let mut cmd = Command::new(&program);
            cmd.args(args).env_clear();
            // PATH is the one host variable a local server gets unasked:
            // without it an interpreter named by a script's `#!` (or a
            // `python3` it starts itself) is not found. Everything else
            // — API keys above all — stays in the host unless listed.
            if let Some(path) = std::env::var_os("PATH") {
                cmd.env("PATH", path);
            }
            cmd.envs(env.iter().map(|(name, value)| (name, value)));
            if !cwd.as_os_str().is_empty() {
                cmd.current_dir(cwd);
            }
            spawn(cmd, server)?
        }
        McpServerSpec::Docker { name } => {
            let docker = find_on_path("docker").ok_or_else(|| docker_missing(name))?;
            let mut cmd = Command::new(docker);
            cmd.args(docker_gateway_args(name)).env_clear();
            for variable in DOCKER_ENV {
                if let Some(value) = std::env::var_os(variable) {
                    cmd.env(variable, value);
                }
            }
            spawn(cmd, server)?
        }
        McpServerSpec::Remote { url, headers } => {
            let client = http_client(headers)?;
            let config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            let transport = StreamableHttpClientTransport::with_client(client, config);
            let started = tokio::time::timeout(START_TIMEOUT, handshake(transport)).await;
            let connection = match started {
                Ok(result) => result.map_err(|why| format!("cannot connect: {why}"))?,
                Err(_) => return Err(start_timeout()),
            };
            return Ok(connection);
        }
    };
    let started = tokio::time::timeout(START_TIMEOUT, handshake(transport)).await;
    let failure = match started {
        Ok(Ok(mut connection)) => {
            connection.process = Some(process);
            return Ok(connection);
        }
        Ok(Err(why)) => why,
        Err(_) => return Err(start_timeout()),
    };
    // A server that exits at once usually explains itself on stderr, which
    // goes to the host log.
    Err(match process.exit_status().await {
        Some(status) => format!(
            "the server exited during its start ({status}); its stderr is in the host log \
             (RUST_LOG=bgagents=debug)"
        ),
        None => format!("the server did not complete the MCP handshake: {failure}"),
    })
}

fn start_timeout() -> String {
    format!(
        "the server did not answer the MCP handshake and list its tools within {} s",
        START_TIMEOUT.as_secs()
    )
}

/// The handshake and the full tool list (every page).
async fn handshake<T, E, A>(transport: T) -> Result<Connection, String>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let config = ClientConfig::new(
        Default::default(),
        Implementation::new("bgagents", env!("CARGO_PKG_VERSION")),
    )
    // The newest version that still has the `initialize` handshake, which
    // every server deployed today answers.
    .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE);
    let client = config.serve(transport).await.map_err(init_error)?;
    let mut tools = Vec::new();
    let mut cursor = None;
    loop {
        let page = PaginatedRequestParams::default().with_cursor(cursor);
        let listed = (client.list_tools(Some(page)).await)
            .map_err(|error| format!("tools/list failed: {}", error_chain(&error)))?;
        tools.extend(listed.tools);
        // A server whose cursor never ends would otherwise fill the memory
        // until the start's timeout.
        if tools.len() > MAX_TOOLS {
            return Err(format!(
                "the server lists more than {MAX_TOOLS} tools, more than the host takes from one \
                 server (is its tools/list paging in a loop?)"
            ));
        }
        cursor = listed.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    Ok(Connection {
        client,
        tools,
        process: None,
    })
}

/// A failed handshake in words: the transport's own error and its causes
/// (not the transport's type name).
fn init_error(error: ClientInitializeError) -> String {
    match error {
        ClientInitializeError::TransportError { error, context } => {
            // The HTTP transport's error does not chain to the HTTP client's
            // cause ("connection refused"), which is what an operator needs.
            let cause = match error
                .error
                .downcast::<StreamableHttpError<reqwest::Error>>()
            {
                Ok(http) => match *http {
                    StreamableHttpError::Client(http) => error_chain(&http.without_url()),
                    other => error_chain(&other),
                },
                Err(other) => error_chain(&*other),
            };
            format!("{cause} (while trying to {context})")
        }
        ClientInitializeError::ConnectionClosed(during) => {
            format!("the server closed the connection before answering ({during})")
        }
        other => error_chain(&other),
    }
}

/// `error` and each of its causes, joined by `: ` (a cause already quoted
/// by the one before is not repeated), without the URL of any HTTP client
/// error among them: the HTTP client prints the whole request URL, whose
/// path or query can carry a key.
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut urls: Vec<String> = http_url(error).into_iter().collect();
    let mut cause = error.source();
    while let Some(next) = cause {
        let line = next.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        urls.extend(http_url(next));
        cause = next.source();
    }
    for url in urls {
        // How the HTTP client words it: "error sending request for url (URL)".
        text = text.replace(&format!(" for url ({url})"), "");
        text = text.replace(&url, "[url]");
    }
    text
}

/// The request URL an HTTP client error names, if `error` is one.
fn http_url(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let url = error.downcast_ref::<reqwest::Error>()?.url()?;
    Some(url.to_string())
}

/// Spawns a local server in its own process group, stdio piped, stderr
/// copied to the host log, bound to the host's life (see
/// [`die_with_host`]).
///
/// Call it from a runtime worker thread (an async fn), never from
/// `spawn_blocking`: the kernel sends the parent-death signal when the
/// *thread* that forked the server exits, and the blocking pool ends idle
/// threads, which would kill a healthy server.
fn spawn(
    mut cmd: Command,
    server: &McpServerSpec,
) -> Result<
    (
        (tokio::process::ChildStdout, tokio::process::ChildStdin),
        ServerProcess,
    ),
    String,
> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own group: a Ctrl-C at the terminal reaches the host, which
        // ends its servers itself, and ending the group reaches whatever
        // the server started.
        .process_group(0);
    let host = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs in the forked child before exec, and
    // `die_with_host` makes only async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || die_with_host(host));
    }
    let mut child = cmd
        .spawn()
        .map_err(|error| format!("cannot start the server: {error}"))?;
    let group = child.id().and_then(|pid| i32::try_from(pid).ok());
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        return Err("cannot start the server: its stdio could not be piped".to_string());
    };
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(log_stderr(stderr, server.label()));
    }
    tracing::info!(server = %server.label(), pid = ?child.id(), "MCP server started");
    let process = ServerProcess(tokio::sync::Mutex::new(Leader { child, group }));
    Ok(((stdout, stdin), process))
}

/// Runs in the forked server process just before exec (so only
/// async-signal-safe calls): asks for SIGKILL when the host's forking
/// thread ends, so a host killed outright (SIGKILL, a crash) does not leave
/// the server running, and forks the group's guard ([`guard_group`]) for
/// the processes the server will start, which that signal does not reach.
fn die_with_host(host: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: prctl, getppid, getpid and clone (as fork) with plain integers.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The host may have gone between the fork and the prctl.
        if libc::getppid() != host {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        let server = libc::getpid();
        // A plain fork by system call: libc's `fork` would run at-fork
        // handlers, which are not safe in a child of a threaded process.
        match libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) {
            -1 => Err(std::io::Error::last_os_error()),
            0 => guard_group(server),
            _ => Ok(()),
        }
    }
}

/// The body of the group's guard, a child of the server in the server's
/// process group that holds no descriptor and waits, all signals blocked,
/// until the server is gone (its parent-death signal, SIGUSR1) or the host
/// ends the group (SIGTERM to the group). Then it gives the group SIGTERM
/// (unless the host just did), and SIGKILL after [`GROUP_GRACE_SECS`],
/// itself included. Async-signal-safe calls only: it is a fork of the
/// host's forking thread and never execs.
fn guard_group(server: libc::pid_t) -> ! {
    // SAFETY: system calls with plain integers and stack-local signal sets.
    unsafe {
        // None of the host's descriptors, above all not the server's stdio
        // pipes, whose end the host must see when the server goes.
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..4096 {
                libc::close(fd);
            }
        }
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR1 as libc::c_ulong);
        let mut woken_by = libc::SIGUSR1;
        // The server may have gone before the prctl.
        if libc::getppid() == server {
            let mut wanted: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut wanted);
            libc::sigaddset(&mut wanted, libc::SIGUSR1);
            libc::sigaddset(&mut wanted, libc::SIGTERM);
            woken_by = loop {
                let signal = libc::sigwaitinfo(&wanted, std::ptr::null_mut());
                if signal > 0 {
                    break signal;
                }
            };
        }
        if woken_by != libc::SIGTERM {
            libc::kill(0, libc::SIGTERM);
        }
        let grace = libc::timespec {
            tv_sec: GROUP_GRACE_SECS,
            tv_nsec: 0,
        };
        libc::nanosleep(&grace, std::ptr::null_mut());
        libc::kill(0, libc::SIGKILL);
        libc::_exit(0)
    }
}

/// Copies a server's stderr to the host log line by line (debug level),
/// bounded, and drains the rest.
async fn log_stderr(mut stderr: ChildStderr, label: String) {
    let mut logged = 0usize;
    let mut line: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let emit = |line: &mut Vec<u8>, logged: &mut usize| {
        if *logged < STDERR_LOG_LIMIT {
            let shown = &line[..line.len().min(STDERR_LINE_LIMIT)];
            *logged += shown.len();
            tracing::debug!(server = %label, "stderr: {}", String::from_utf8_lossy(shown));
            if *logged >= STDERR_LOG_LIMIT {
                tracing::debug!(server = %label, "further stderr is not logged");
            }
        }
        line.clear();
    };
    loop {
        let read = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for &byte in &chunk[..read] {
            if byte == b'\n' {
                emit(&mut line, &mut logged);
            } else if line.len() <= STDERR_LINE_LIMIT {
                line.push(byte);
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line, &mut logged);
    }
}

/// `docker`'s arguments for `ref: docker:NAME`: the gateway running that
/// one server from Docker's catalog, as docker-agent starts it. (docker-agent
/// also passes per-run `--secrets` and `--config` files built from the
/// toolset's `env:`/`config:`, which a `ref:` toolset here does not have;
/// the gateway then uses the operator's own Docker MCP secrets and
/// configuration.)
pub(super) fn docker_gateway_args(name: &str) -> Vec<String> {
    ["mcp", "gateway", "run", "--servers", name, "--catalog"]
        .iter()
        .map(|arg| arg.to_string())
        .chain([DOCKER_CATALOG_URL.to_string()])
        .collect()
}

pub(super) fn docker_missing(name: &str) -> String {
    format!(
        "`docker` is not on PATH; ref: docker:{name} needs Docker's MCP gateway (install \
         Docker Desktop or the docker mcp plugin) or use `command:`"
    )
}

/// The program a `command:` names: a bare name is looked up on PATH, a
/// relative path is taken from the team file's directory.
pub(super) fn resolve_program(command: &str, cwd: &Path) -> Result<PathBuf, String> {
    if command.contains('/') {
        let path = cwd.join(command);
        return match path.is_file() {
            true => Ok(path),
            false => Err(format!(
                "command {command:?} not found (looked for {})",
                path.display()
            )),
        };
    }
    find_on_path(command).ok_or_else(|| {
        format!("command {command:?} is not on PATH; install it or give its path in `command:`")
    })
}

/// The first executable file `name` in the host's PATH.
pub(super) fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// The HTTP client of one remote server: its `headers:` on every request,
/// no redirects (they would carry the headers elsewhere).
fn http_client(headers: &[(String, String)]) -> Result<reqwest::Client, String> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is not a valid HTTP header name"))?;
        let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
            format!("the value of header {name:?} is not a valid HTTP header value")
        })?;
        value.set_sensitive(true);
        map.insert(header, value);
    }
    // Fails only if a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        // An idle pooled connection whose last answer was not read to the
        // end can stall the next request; the session is one connection's
        // worth of traffic anyway.
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("bgagents/", env!("CARGO_PKG_VERSION")))
        .default_headers(map)
        .build()
        .map_err(|error| format!("cannot set up the HTTP client: {error}"))
}

/// Whether `error` means the session is gone (the server exited, the
/// connection closed) rather than one request failing.
pub(super) fn session_lost(error: &ServiceError) -> bool {
    matches!(
        error,
        ServiceError::TransportClosed | ServiceError::TransportSend(_)
    )
}

//! The network egress gate end to end: a real bubblewrap sandbox with no
//! network of its own, the `bgagents __egress-relay` command inside it,
//! and the gate (`bgagents::EgressGate`) on the host, with real servers on
//! 127.0.0.1. A granted server is reached through the proxy variables; any
//! other target is refused with `403` and the grant to add; nothing is
//! reached without the proxy; the command's exit status passes through;
//! signals reach the command and a killed relay takes it along. Then the
//! same through the `shell` toolset, whose commands get the gate when
//! their agent has `http` or `connect` grants.
//!
//! Skipped (saying why) where bubblewrap cannot create a sandbox.

use bgagents::{EgressGate, Grants};
use bgagents_testkit::{HANG, Scratch, holds_within, host_has_process};
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const RELAY: &str = env!("CARGO_BIN_EXE_bgagents");

/// The body the granted HTTP server answers with.
const GREETING: &str = "hello from the granted server";

/// Grants allowing plain HTTP to `http` and any TCP to `connect`.
fn grants(http: &[String], connect: &[String]) -> Grants {
    Grants {
        http: (http.iter())
            .map(|origin| bgagents::HttpGrant::parse(origin).unwrap())
            .collect(),
        connect: (connect.iter())
            .map(|endpoint| bgagents::ConnectGrant {
                endpoint: endpoint.clone(),
                addrs: Vec::new(),
            })
            .collect(),
        ..Grants::default()
    }
}

/// A plain HTTP server on 127.0.0.1 answering every request with
/// [`GREETING`]; its port.
async fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut chunk = [0u8; 1024];
                while !seen.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => seen.extend_from_slice(&chunk[..read]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{GREETING}",
                    GREETING.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

/// A TCP server on 127.0.0.1 that echoes each connection (no TLS, no
/// HTTP); its port.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    port
}

/// bubblewrap options for a minimal sandbox with a network namespace of
/// its own (loopback only): the system's programs, /proc, /dev, /tmp.
fn bwrap_base() -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
    ]
    .map(OsString::from)
    .to_vec();
    for top in ["bin", "sbin", "lib", "lib32", "lib64"] {
        let host = Path::new("/").join(top);
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&host).unwrap();
                args.extend(["--symlink".into(), target.into(), host.into()]);
            }
            Ok(meta) if meta.is_dir() => {
                args.extend(["--ro-bind".into(), host.clone().into(), host.into()]);
            }
            _ => {}
        }
    }
    args
}

/// Runs `program args` in a bubblewrap sandbox through `gate`, to its end.
async fn run_through(gate: &EgressGate, program: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new("bwrap");
    command
        .args(bwrap_base())
        .args(gate.bwrap_args())
        .arg("--")
        .args(gate.command_prefix())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(HANG, command.output())
        .await
        .expect("the sandboxed command hung")
        .unwrap()
}

/// Whether bubblewrap can create a sandbox here; says why not.
fn sandboxes_work() -> bool {
    let tried = Command::new("bwrap")
        .args(bwrap_base())
        .arg("--")
        .arg("true")
        .output();
    match tried {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "skipped: bubblewrap cannot sandbox here: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            false
        }
        Err(error) => {
            eprintln!("skipped: no bubblewrap: {error}");
            false
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The Python the sandboxed command runs: each check prints one line.
const PROBE: &str = r#"
import os, socket, sys, urllib.error, urllib.request
http_port, echo_port, other_port = (int(arg) for arg in sys.argv[1:4])
print("proxy:", os.environ["HTTPS_PROXY"], os.environ["http_proxy"], repr(os.environ["NO_PROXY"]))
# Plain HTTP to the granted origin, through HTTP_PROXY.
print("granted:", urllib.request.urlopen(f"http://127.0.0.1:{http_port}/hi", timeout=30).read().decode())
# Plain HTTP to a port no grant names: refused.
try:
    urllib.request.urlopen(f"http://127.0.0.1:{other_port}/", timeout=30)
    print("other: reached")
except urllib.error.HTTPError as error:
    print("other:", error.code, error.read().decode().strip())
# HTTPS to the granted origin's host and port: that grant is for http only.
try:
    urllib.request.urlopen(f"https://127.0.0.1:{http_port}/", timeout=30)
    print("https: reached")
except urllib.error.URLError as error:
    print("https:", error.reason)
# A raw tunnel to the granted endpoint carries bytes both ways.
proxy = socket.create_connection(("127.0.0.1", 3128), timeout=30)
proxy.sendall(f"CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\n\r\n".encode())
head = b""
while not head.endswith(b"\r\n\r\n"):
    head += proxy.recv(1)
proxy.sendall(b"ping through the tunnel")
echoed = b""
while len(echoed) < 23:
    echoed += proxy.recv(100)
print("tunnel:", head.split(b"\r\n")[0].decode(), echoed.decode())
# Without the proxy nothing is there: the sandbox has only its own loopback.
for port in (http_port, echo_port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=10)
        print("direct: reached", port)
    except OSError as error:
        print("direct:", type(error).__name__)
sys.exit(7)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_process_reaches_only_its_granted_servers_through_the_gate() {
    if !sandboxes_work() {
        return;
    }
    bgagents::set_egress_relay_program(RELAY);
    let http_port = http_server().await;
    let echo_port = echo_server().await;
    let other_port = http_server().await;
    let grants = grants(
        &[format!("http://127.0.0.1:{http_port}")],
        &[format!("127.0.0.1:{echo_port}")],
    );
    let gate = EgressGate::start("worker", &grants).unwrap();

    let out = run_through(
        &gate,
        "python3",
        &[
            "-c",
            PROBE,
            &http_port.to_string(),
            &echo_port.to_string(),
            &other_port.to_string(),
        ],
    )
    .await;

    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "proxy: http://127.0.0.1:3128 http://127.0.0.1:3128 ''".to_string(),
            format!("granted: {GREETING}"),
            format!(
                "other: 403 bgagents network gate: HTTP request to 127.0.0.1:{other_port} \
                 refused: not granted; add http://127.0.0.1:{other_port} to \
                 agents.worker.grants.http"
            ),
            format!(
                "https: Tunnel connection failed: 403 Forbidden (bgagents network gate: \
                 CONNECT to 127.0.0.1:{http_port} refused: not granted; add \
                 https://127.0.0.1:{http_port} to agents.worker.grants.http (or \
                 127.0.0.1:{http_port} to agents.worker.grants.network.connect for any TCP \
                 protocol))"
            ),
            "tunnel: HTTP/1.1 200 Connection established ping through the tunnel".to_string(),
            "direct: ConnectionRefusedError".to_string(),
            "direct: ConnectionRefusedError".to_string(),
        ],
        "{stderr}"
    );
    let traffic = gate.traffic();
    assert_eq!(traffic.connections, 2, "{traffic:?}");
    assert_eq!(traffic.refused, 2, "{traffic:?}");
    assert!(
        traffic.bytes_up >= 23 && traffic.bytes_down >= 23 + GREETING.len() as u64,
        "{traffic:?}"
    );
    assert_eq!(gate.take_refusals().len(), 2);
}

/// A Python probe given a socket path and a port: connects to the socket
/// as a relay would, asks for `http://127.0.0.1:PORT/` and prints the
/// answer (empty when closed unanswered); also prints whether its
/// environment holds the gate's key.
const INTRUDER: &str = r#"
import os, socket, sys
print("key in env:", "BGAGENTS_EGRESS_KEY" in os.environ)
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
s.sendall(("GET http://127.0.0.1:%s/ HTTP/1.1\r\nHost: x\r\n\r\n" % sys.argv[2]).encode())
got = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
except OSError as error:
    got += type(error).__name__.encode()
print("answer:", got.decode(errors="replace").replace("\r\n", " "))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn another_sandbox_reaching_a_gates_socket_through_a_grant_is_refused() {
    if !sandboxes_work() {
        return;
    }
    bgagents::set_egress_relay_program(RELAY);
    let http_port = http_server().await;
    let gate = EgressGate::start(
        "worker",
        &grants(&[format!("http://127.0.0.1:{http_port}")], &[]),
    )
    .unwrap();
    // The gate's own sandbox gets through, without the key in its
    // command's environment.
    let own = run_through(
        &gate,
        "python3",
        &[
            "-c",
            "import os, urllib.request, sys\n\
             print('key in env:', 'BGAGENTS_EGRESS_KEY' in os.environ)\n\
             print(urllib.request.urlopen('http://127.0.0.1:%s/' % sys.argv[1]).read().decode())",
            &http_port.to_string(),
        ],
    )
    .await;
    assert_eq!(
        text(&own.stdout),
        format!("key in env: False\n{GREETING}\n"),
        "{}",
        text(&own.stderr)
    );
    // Another agent granted the directory holding the gate's directory
    // (as a grant of /tmp would) finds the socket and connects to it.
    let socket = gate.socket();
    let holder = socket.parent().unwrap().parent().unwrap();
    let mut command = tokio::process::Command::new("bwrap");
    command
        .args(bwrap_base())
        .arg("--ro-bind")
        .arg(holder)
        .arg(holder)
        .arg("--")
        .args(["python3", "-c", INTRUDER])
        .arg(socket)
        .arg(http_port.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(HANG, command.output())
        .await
        .expect("the intruder hung")
        .unwrap();

    let stdout = text(&out.stdout);
    // Closed unanswered (a reset, as the request was not read).
    assert!(
        stdout == "key in env: False\nanswer: \n"
            || stdout == "key in env: False\nanswer: ConnectionResetError\n",
        "{stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(gate.traffic().connections, 1, "only the gate's own sandbox");
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_uses_the_gate_and_shows_its_refusals() {
    if !sandboxes_work() || !Path::new("/usr/bin/curl").exists() {
        return eprintln!("skipped: no bubblewrap sandbox or no /usr/bin/curl");
    }
    bgagents::set_egress_relay_program(RELAY);
    let http_port = http_server().await;
    let gate = EgressGate::start(
        "worker",
        &grants(&[format!("http://127.0.0.1:{http_port}")], &[]),
    )
    .unwrap();
    let script = format!(
        "curl -sS http://127.0.0.1:{http_port}/; echo; \
         curl -sS http://127.0.0.1:{other}/; \
         curl -sS https://example.com/ 2>&1; \
         curl -sS --noproxy '*' http://127.0.0.1:{http_port}/ 2>&1; exit 3",
        other = http_port.wrapping_sub(1)
    );
    let out = run_through(&gate, "sh", &["-c", &script]).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], GREETING, "{stdout}");
    assert!(
        lines[1].ends_with(&format!(
            "add http://127.0.0.1:{} to agents.worker.grants.http",
            http_port.wrapping_sub(1)
        )),
        "{stdout}"
    );
    assert!(
        lines[2].contains("CONNECT tunnel failed, response 403"),
        "{stdout}"
    );
    assert!(lines[3].contains("Failed to connect"), "{stdout}");
    assert_eq!(
        gate.take_refusals(),
        [
            format!(
                "HTTP request to 127.0.0.1:{0} refused: not granted; add \
                 http://127.0.0.1:{0} to agents.worker.grants.http",
                http_port.wrapping_sub(1)
            ),
            "CONNECT to example.com:443 refused: not granted; add https://example.com to \
             agents.worker.grants.http"
                .to_string()
        ]
    );
}

/// The relay run directly on the host (no sandbox), so the test sees its
/// process and its command's.
fn relay_on_host(gate: &EgressGate, port: u16, command: &[&str]) -> std::process::Child {
    let (name, key) = gate.relay_env();
    Command::new(RELAY)
        .env(name, key)
        .arg("__egress-relay")
        .arg("--socket")
        .arg(gate.socket())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_passes_signals_on_and_its_command_dies_with_it() {
    bgagents::set_egress_relay_program(RELAY);
    let gate = EgressGate::start("worker", &Grants::default()).unwrap();

    // SIGTERM reaches the command, whose death by it is the relay's status.
    let mut relay = relay_on_host(&gate, free_port(), &["sleep", "1047"]);
    assert!(holds_within(HANG, || host_has_process(&["sleep", "1047"])).await);
    let sent = Command::new("kill")
        .args(["-TERM", &relay.id().to_string()])
        .status();
    assert!(sent.unwrap().success());
    let status = relay.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15));

    // A relay killed outright takes its command along.
    let mut relay = relay_on_host(&gate, free_port(), &["sleep", "1048"]);
    assert!(holds_within(HANG, || host_has_process(&["sleep", "1048"])).await);
    relay.kill().unwrap();
    relay.wait().unwrap();
    assert!(
        holds_within(HANG, || !host_has_process(&["sleep", "1048"])).await,
        "the command outlived its killed relay"
    );

    // Exit statuses pass through; a missing command is 127, a port in use
    // the relay's own 125, each saying why.
    let relay = relay_on_host(&gate, free_port(), &["sh", "-c", "exit 42"]);
    assert_eq!(relay.wait_with_output().unwrap().status.code(), Some(42));
    let relay = relay_on_host(&gate, free_port(), &["no-such-program-here"]);
    let out = relay.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("cannot run no-such-program-here"),
        "{}",
        text(&out.stderr)
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = relay_on_host(&gate, port, &["true"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_gate_closes_the_sandboxes_connections() {
    if !sandboxes_work() {
        return;
    }
    bgagents::set_egress_relay_program(RELAY);
    let echo_port = echo_server().await;
    let gate =
        EgressGate::start("worker", &grants(&[], &[format!("127.0.0.1:{echo_port}")])).unwrap();
    let scratch = Scratch::new();
    let marker = scratch.dir.join("tunnel-open");
    // The command opens a tunnel, says so, then waits for the tunnel to end.
    let script = format!(
        r#"
import socket, time
proxy = socket.create_connection(("127.0.0.1", 3128), timeout=120)
proxy.sendall(b"CONNECT 127.0.0.1:{echo_port} HTTP/1.1\r\n\r\n")
head = b""
while not head.endswith(b"\r\n\r\n"):
    head += proxy.recv(1)
open("/out/tunnel-open", "w").close()
print("closed" if proxy.recv(10) == b"" else "data")
"#
    );
    let mut command = tokio::process::Command::new("bwrap");
    command
        .args(bwrap_base())
        .arg("--bind")
        .arg(&scratch.dir)
        .arg("/out")
        .args(gate.bwrap_args())
        .arg("--")
        .args(gate.command_prefix())
        .args(["python3", "-c", &script])
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap();
    assert!(
        holds_within(HANG, || marker.exists()).await,
        "the tunnel never opened"
    );
    drop(gate);
    let out = tokio::time::timeout(HANG, child.wait_with_output())
        .await
        .expect("the tunnel outlived its gate")
        .unwrap();
    assert_eq!(text(&out.stdout), "closed\n");
    assert!(out.status.success());
}

/// A team of one LLM agent `root` with the shell toolset and `grants`
/// (YAML under `grants:`), its model served at `model_url`.
fn shell_team(model_url: &str, grants: &str) -> String {
    format!(
        "agents:\n  root:\n    model: m\n    instruction: Use the shell.\n    toolsets:\n      - type: shell\n    grants:\n{grants}\n\
         models:\n  m:\n    provider: ollama\n    model: m\n    base_url: {model_url}\n"
    )
}

fn shell(cmd: &str) -> (&'static str, String) {
    ("shell", serde_json::json!({ "cmd": cmd }).to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_commands_of_an_agent_granted_hosts_reach_those_hosts_only() {
    use bgagents_testkit::model_server::{ModelServer, Script, Turn};
    if !sandboxes_work() || !Path::new("/usr/bin/curl").exists() {
        return eprintln!("skipped: no bubblewrap sandbox or no /usr/bin/curl");
    }
    // The in-process toolset's relay is the bgagents binary (the command
    // line registers itself; this test binary is not one).
    bgagents::set_egress_relay_program(RELAY);
    let port = http_server().await;
    let other = http_server().await;
    let calls = [
        shell(&format!("curl -sS http://127.0.0.1:{port}/")),
        shell(&format!("curl -sS http://127.0.0.1:{other}/")),
        shell("curl -sS https://example.com/"),
        shell(&format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected"
        )),
    ];
    let server = ModelServer::start(Script::new([
        Turn::tool_calls(calls.clone()),
        Turn::text("done"),
    ]))
    .await;
    let grants = format!("      http: [\"http://127.0.0.1:{port}\"]");
    let toolset = bgagents_testkit::toolset(&shell_team(&server.base_url(), &grants));

    let view = bgagents_testkit::run_to_end(&toolset, "root", "go").await;

    assert_eq!(view.result.as_deref(), Some("done"), "{view:?}");
    let results = server.requests()[1].tool_results();
    assert_eq!(results.len(), 4, "{results:#?}");
    assert_eq!(results[0], GREETING);
    let refused = format!(
        "HTTP request to 127.0.0.1:{other} refused: not granted; add http://127.0.0.1:{other} \
         to grants.http"
    );
    assert_eq!(
        results[1],
        format!("bgagents network gate: {refused}\n[network: {refused}]")
    );
    assert!(
        results[2].contains("CONNECT tunnel failed, response 403")
            && results[2].ends_with(
                "[network: CONNECT to example.com:443 refused: not granted; add \
                 https://example.com to grants.http]"
            ),
        "{}",
        results[2]
    );
    assert!(results[3].contains("Connection refused"), "{}", results[3]);

    // Without host grants there is no gate and no proxy: no network at all.
    let server = ModelServer::start(Script::new([
        Turn::tool_calls([shell(
            "echo \"[$HTTPS_PROXY]\"; ls /run/bgagents 2>&1; true",
        )]),
        Turn::text("done"),
    ]))
    .await;
    let toolset = bgagents_testkit::toolset(&shell_team(&server.base_url(), "      env: []"));
    let view = bgagents_testkit::run_to_end(&toolset, "root", "go").await;
    assert_eq!(view.result.as_deref(), Some("done"), "{view:?}");
    let results = server.requests()[1].tool_results();
    assert!(results[0].starts_with("[]\n"), "{}", results[0]);
    assert!(
        results[0].contains("No such file or directory"),
        "{}",
        results[0]
    );
}

/// Throughput and connection cost through the gate (debug or release, as
/// built): `cargo test --test all -- --ignored egress::measure --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn measure() {
    if !sandboxes_work() {
        return;
    }
    bgagents::set_egress_relay_program(RELAY);
    const SIZE: usize = 256 << 20;
    // A server that sends SIZE bytes to each connection, then closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![7u8; 1 << 16];
                let mut first = [0u8; 1];
                if stream.read(&mut first).await.unwrap_or(0) == 0 {
                    return;
                }
                if first[0] == b'b' {
                    for _ in 0..SIZE / chunk.len() {
                        if stream.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                } else {
                    let _ = stream.write_all(b"x").await;
                }
            });
        }
    });
    let gate = EgressGate::start("worker", &grants(&[], &[format!("127.0.0.1:{port}")])).unwrap();
    let script = format!(
        r#"
import socket, time
def tunnel():
    proxy = socket.create_connection(("127.0.0.1", 3128))
    proxy.sendall(b"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += proxy.recv(1)
    return proxy
start = time.monotonic()
for _ in range(200):
    t = tunnel(); t.sendall(b"s"); assert t.recv(1) == b"x"; t.close()
per = (time.monotonic() - start) / 200
t = tunnel(); t.sendall(b"b")
start = time.monotonic(); got = 0
while True:
    data = t.recv(1 << 20)
    if not data: break
    got += len(data)
took = time.monotonic() - start
print(f"connect+exchange: {{per * 1000:.2f}} ms each; {{got >> 20}} MiB down in {{took:.2f}} s = {{got / took / (1 << 20):.0f}} MiB/s")
"#
    );
    let out = run_through(&gate, "python3", &["-c", &script]).await;
    eprintln!("{}{}", text(&out.stdout), text(&out.stderr));
    eprintln!("{:?}", gate.traffic());
    assert!(out.status.success());
}

#[test]
fn check_says_which_hosts_shell_commands_reach_through_the_gate() {
    let scratch = Scratch::new();
    let team =
        |grants: &str| scratch.write("team.yaml", shell_team("http://127.0.0.1:9/v1", grants));
    let check = |team: &Path| {
        let out = Command::new(RELAY).arg("check").arg(team).output().unwrap();
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };
    let gated = check(&team(
        "      http: [\"http://127.0.0.1:8080\", \"https://api.example.com\"]\n      \
         network: {connect: [\"127.0.0.1:5432\"]}",
    ));
    if !gated.contains("commands run in bubblewrap") {
        return eprintln!("skipped: bubblewrap cannot sandbox commands here:\n{gated}");
    }
    assert!(
        gated.contains(
            "network only to http://127.0.0.1:8080, https://api.example.com:443, \
             127.0.0.1:5432, through the egress gate"
        ),
        "{gated}"
    );
    let whole = check(&team(
        "      http: [\"https://api.example.com\"]\n      network: {shell: true}",
    ));
    assert!(whole.contains("; the host's network"), "{whole}");
    let none = check(&team("      env: []"));
    assert!(none.contains("; no network"), "{none}");
}

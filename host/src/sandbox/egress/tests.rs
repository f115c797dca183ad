//! The gate's proxy spoken to directly on its Unix socket (the sandbox and
//! its relay are tested end to end in tests/all/egress.rs).

use super::*;
use crate::config::{ConnectGrant, HttpGrant};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};

const HANG: Duration = Duration::from_secs(60);

fn grants(http: &[String], connect: &[String]) -> Grants {
    Grants {
        http: http.iter().map(|o| HttpGrant::parse(o).unwrap()).collect(),
        connect: (connect.iter())
            .map(|endpoint| ConnectGrant {
                endpoint: endpoint.clone(),
                addrs: Vec::new(),
            })
            .collect(),
        ..Grants::default()
    }
}

fn start(grants: &Grants, limits: Limits) -> Gate {
    set_relay_program(std::env::current_exe().unwrap());
    Gate::start_with("worker", grants, limits).unwrap()
}

/// A TCP server on 127.0.0.1 that echoes each connection; its port.
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

/// Sends the gate's key and `head` to the gate, as its relay does, and
/// reads the answer's head (to the blank line).
async fn ask(gate: &Gate, head: &str) -> (UnixStream, String) {
    let key = super::parse_key(&gate.relay_env().1).unwrap();
    ask_with(gate, &key, head).await
}

/// [`ask`] sending `key` first.
async fn ask_with(gate: &Gate, key: &[u8], head: &str) -> (UnixStream, String) {
    let mut stream = UnixStream::connect(gate.socket()).await.unwrap();
    stream.write_all(key).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(HANG, stream.read(&mut byte))
            .await
            .expect("no answer: hang")
            // A reset (closed with the request unread) ends it too.
            .unwrap_or(0);
        if read == 0 {
            break;
        }
        answer.push(byte[0]);
    }
    (stream, String::from_utf8(answer).unwrap())
}

async fn rest(stream: &mut UnixStream) -> String {
    let mut text = String::new();
    tokio::time::timeout(HANG, stream.read_to_string(&mut text))
        .await
        .expect("no end: hang")
        .unwrap();
    text
}

#[tokio::test]
async fn a_granted_tunnel_carries_bytes_and_others_are_refused_naming_the_grant() {
    let port = echo_server().await;
    let gate = start(
        &grants(&[], &[format!("127.0.0.1:{port}")]),
        Limits::default(),
    );
    let (mut stream, head) =
        ask(&gate, &format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n")).await;
    assert_eq!(head, "HTTP/1.1 200 Connection established\r\n\r\n");
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    drop(stream);

    let other = port.wrapping_add(1).max(1);
    let (mut stream, head) = ask(
        &gate,
        &format!("CONNECT 127.0.0.1:{other} HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 403 Forbidden (bgagents network gate: CONNECT to"),
        "{head}"
    );
    let body = rest(&mut stream).await;
    assert_eq!(
        body,
        format!(
            "bgagents network gate: CONNECT to 127.0.0.1:{other} refused: not granted; add \
             https://127.0.0.1:{other} to agents.worker.grants.http (or 127.0.0.1:{other} to \
             agents.worker.grants.network.connect for any TCP protocol)\n"
        )
    );
    assert_eq!(
        gate.take_refusals(),
        [body
            .trim_start_matches("bgagents network gate: ")
            .trim_end()]
    );
    let traffic = gate.traffic();
    assert_eq!((traffic.connections, traffic.refused), (1, 1));
    assert_eq!((traffic.bytes_up, traffic.bytes_down), (4, 4));
}

#[tokio::test]
async fn plain_http_reaches_a_granted_origin_rewritten_and_a_named_loopback_host_does_not() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut chunk = [0u8; 1024];
        while !seen.ends_with(b"\r\n\r\n") {
            let read = stream.read(&mut chunk).await.unwrap();
            assert_ne!(read, 0);
            seen.extend_from_slice(&chunk[..read]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
            .await
            .unwrap();
        String::from_utf8(seen).unwrap()
    });
    let gate = start(
        &grants(
            &[
                format!("http://127.0.0.1:{port}"),
                "http://loopback.test".into(),
            ],
            &[],
        ),
        Limits::default(),
    );
    let (mut stream, head) = ask(
        &gate,
        &format!(
            "GET http://127.0.0.1:{port}/x?y=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Proxy-Authorization: Basic c2VjcmV0\r\n\r\n"
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(rest(&mut stream).await, "hi");
    assert_eq!(
        server.await.unwrap(),
        format!("GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
    );
    // The same origin by https is another grant.
    let (_, head) = ask(&gate, &format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[tokio::test]
async fn a_name_is_reached_only_at_public_addresses_and_localhost_at_loopback() {
    let port = echo_server().await;
    // This machine's own name usually resolves to loopback or a private
    // address: a stand-in for a name rebound to one.
    let mut name = [0u8; 256];
    // SAFETY: gethostname writes at most `name.len()` bytes.
    unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
    let name = String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(0)])
        .to_ascii_lowercase();
    let resolved: Vec<std::net::IpAddr> = tokio::net::lookup_host((name.as_str(), port))
        .await
        .map(|found| found.map(|addr| addr.ip()).collect())
        .unwrap_or_default();
    let grants = grants(
        &[format!("https://{name}:{port}")],
        &[format!("localhost:{port}")],
    );
    let gate = start(&grants, Limits::default());
    if !resolved.is_empty() && !resolved.iter().any(|ip| policy::is_public(*ip)) {
        let (mut stream, head) =
            ask(&gate, &format!("CONNECT {name}:{port} HTTP/1.1\r\n\r\n")).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        let body = rest(&mut stream).await;
        assert!(body.contains(&format!("{name} resolves to")), "{body}");
        assert!(body.contains("add "), "{body}");
    } else {
        eprintln!("skipped the private-name half: {name} resolves to {resolved:?}");
    }
    // A grant naming localhost reaches loopback, whatever the case or a
    // final dot.
    let (_, head) = ask(
        &gate,
        &format!("CONNECT LOCALHOST.:{port} HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert_eq!(head, "HTTP/1.1 200 Connection established\r\n\r\n");
}

#[tokio::test]
async fn connections_past_the_cap_are_answered_503_and_a_dropped_gate_closes_them() {
    let port = echo_server().await;
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let gate = start(&grants(&[], &[format!("127.0.0.1:{port}")]), limits);
    let connect = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n");
    let (mut first, _) = ask(&gate, &connect).await;
    let (_second, _) = ask(&gate, &connect).await;
    let (_, head) = ask(&gate, &connect).await;
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable (bgagents network gate: too many"),
        "{head}"
    );
    let socket = gate.socket().to_path_buf();
    drop(gate);
    let mut buffer = [0u8; 8];
    let read = tokio::time::timeout(HANG, first.read(&mut buffer))
        .await
        .expect("a connection outlived its gate");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(!socket.exists());
    assert!(!socket.parent().unwrap().exists());
}

#[tokio::test]
async fn a_connection_without_the_gates_key_is_closed_unanswered() {
    let port = echo_server().await;
    let gate = start(
        &grants(&[], &[format!("127.0.0.1:{port}")]),
        Limits::default(),
    );
    let connect = format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n");
    let mut wrong = super::parse_key(&gate.relay_env().1).unwrap();
    wrong[31] ^= 1;
    let (_, head) = ask_with(&gate, &wrong, &connect).await;
    assert_eq!(head, "");
    let (_, head) = ask_with(&gate, b"", &connect).await;
    assert_eq!(head, "");
    let (_, head) = ask(&gate, &connect).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(gate.traffic().connections, 1);
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_idle_limit() {
    let port = echo_server().await;
    let limits = Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let gate = start(&grants(&[], &[format!("127.0.0.1:{port}")]), limits);
    let (mut stream, head) =
        ask(&gate, &format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut buffer = [0u8; 8];
    let read = tokio::time::timeout(HANG, stream.read(&mut buffer))
        .await
        .expect("an idle connection stayed open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn the_gates_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let gate = start(
        &grants(&["https://example.com".into()], &[]),
        Limits::default(),
    );
    let mode = std::fs::metadata(gate.socket().parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let args: Vec<String> = (gate.bwrap_args().iter())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    assert_eq!(args[0], "--ro-bind");
    assert_eq!(args[2], RELAY_SOCKET);
    assert_eq!(args[5], RELAY_EXE);
    assert_eq!(
        gate.command_prefix()
            .last()
            .map(|arg| arg.to_string_lossy().into_owned()),
        Some("--".to_string())
    );
}

#[test]
fn a_gate_is_wanted_for_host_grants_without_the_whole_network() {
    assert!(!wanted(&Grants::default()));
    let mut with_http = grants(&["https://example.com".into()], &[]);
    assert!(wanted(&with_http));
    with_http.shell_network = true;
    assert!(!wanted(&with_http));
    assert!(wanted(&grants(&[], &["example.com:22".into()])));
}

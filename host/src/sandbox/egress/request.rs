//! Reading what a sandboxed client asks the gate for: the head of one
//! HTTP/1.x proxy request — `CONNECT host:port` or an absolute-form
//! plain-HTTP request (`GET http://host/path`) — and rewriting the latter
//! for the origin server (origin-form target, `Host` from the URL, no
//! proxy or hop-by-hop headers, `Connection: close`). Nothing of the
//! request but its target's host and port is ever logged.

use super::policy::{Host, Target, Via};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest request head read; longer ones are refused.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most header lines a head may have.
const MAX_HEADERS: usize = 100;

/// A request the gate understood.
#[derive(Debug)]
pub struct Request {
    pub via: Via,
    pub target: Target,
    /// For plain HTTP: the head to send the origin server.
    pub upstream_head: Option<Vec<u8>>,
    /// Bytes the client sent after the head (a body's start, or a TLS
    /// hello sent before the tunnel was confirmed).
    pub rest: Vec<u8>,
}

/// Why a head was not understood: `400` with this reason, or the client
/// left before sending one.
#[derive(Debug)]
pub enum HeadError {
    Bad(String),
    Closed,
}

/// Reads one request head from `client` (at most [`MAX_HEAD`] bytes).
pub async fn read(client: &mut (impl AsyncRead + Unpin)) -> Result<Request, HeadError> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        let read = client
            .read(&mut chunk)
            .await
            .map_err(|_| HeadError::Closed)?;
        if read == 0 {
            return Err(match buffer.is_empty() {
                true => HeadError::Closed,
                false => HeadError::Bad("the request head ended early".to_string()),
            });
        }
        let searched_from = buffer.len().saturating_sub(3);
        buffer.extend_from_slice(&chunk[..read]);
        let found = find(&buffer[searched_from..], b"\r\n\r\n").map(|at| searched_from + at + 4);
        if found.unwrap_or(buffer.len()) > MAX_HEAD {
            return Err(HeadError::Bad(format!(
                "the request head is over {MAX_HEAD} bytes"
            )));
        }
        if let Some(end) = found {
            break end;
        }
    };
    let rest = buffer.split_off(end);
    parse(&buffer[..end - 4], rest)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Parses a head (without its final blank line).
fn parse(head: &[u8], rest: Vec<u8>) -> Result<Request, HeadError> {
    let bad = |why: &str| HeadError::Bad(why.to_string());
    let head = std::str::from_utf8(head).map_err(|_| bad("the request head is not text"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("the request line is not `METHOD TARGET HTTP/1.1`"));
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(bad("only HTTP/1.0 and HTTP/1.1 proxy requests are served"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("the request method is not a method name"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("a header line has no `:`"));
        };
        let valid_name = !name.is_empty()
            && (name.bytes()).all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(bad("a header line is malformed"));
        }
        headers.push((name, value.trim()));
        if headers.len() > MAX_HEADERS {
            return Err(bad("the request has too many header lines"));
        }
    }
    if method == "CONNECT" {
        let target = Target::parse_authority(target).ok_or_else(|| {
            bad("CONNECT names no `host:port`; write it as CONNECT example.com:443 HTTP/1.1")
        })?;
        return Ok(Request {
            via: Via::Tunnel,
            target,
            upstream_head: None,
            rest,
        });
    }
    if target.len() > 8 && target[..8].eq_ignore_ascii_case("https://") {
        return Err(bad(
            "HTTPS goes through CONNECT (HTTPS_PROXY), not as a plain request to an https:// URL",
        ));
    }
    if !(target.len() > 7 && target[..7].eq_ignore_ascii_case("http://")) {
        return Err(bad(
            "this is a proxy: send CONNECT host:port, or a request with a full http:// URL",
        ));
    }
    let url = url::Url::parse(target).map_err(|_| bad("the request's URL does not parse"))?;
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => Host::Ip(ip.into()),
        Some(url::Host::Ipv4(ip)) => Host::Ip(ip.into()),
        Some(url::Host::Domain(name)) => {
            Host::parse(name).ok_or_else(|| bad("the request's URL names no valid host"))?
        }
        None => return Err(bad("the request's URL names no host")),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let target = Target { host, port };
    let upstream_head = upstream_head(method, &url, version, &target, &headers);
    Ok(Request {
        via: Via::PlainHttp,
        target,
        upstream_head: Some(upstream_head),
        rest,
    })
}

/// The head the origin server gets: origin-form target, `Host` naming
/// the URL's host, the client's headers without the proxy's and
/// hop-by-hop ones, and `Connection: close` (one request per connection,
/// so a client that reuses it for another host cannot reach this one).
fn upstream_head(
    method: &str,
    url: &url::Url,
    version: &str,
    target: &Target,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut path = url.path().to_string();
    if let Some(query) = url.query() {
        path.push('?');
        path.push_str(query);
    }
    let host = match target.port {
        80 => target.host.to_string(),
        _ => target.to_string(),
    };
    // Headers the client's `Connection` names are hop-by-hop too.
    let named: Vec<String> = (headers.iter())
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut head = format!("{method} {path} {version}\r\nHost: {host}\r\n");
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let dropped = matches!(
            lower.as_str(),
            "host"
                | "connection"
                | "proxy-connection"
                | "proxy-authorization"
                | "proxy-authenticate"
                | "keep-alive"
                | "te"
                | "trailer"
                | "upgrade"
        ) || named.contains(&lower);
        if !dropped {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    head.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_text(text: &str) -> Result<Request, HeadError> {
        read(&mut text.as_bytes()).await
    }

    #[tokio::test]
    async fn connect_keeps_what_follows_the_head() {
        let request = read_text("CONNECT Example.com:443 HTTP/1.1\r\nHost: x\r\n\r\nhello")
            .await
            .unwrap();
        assert_eq!(request.via, Via::Tunnel);
        assert_eq!(request.target.to_string(), "example.com:443");
        assert_eq!(request.rest, b"hello");
        assert!(request.upstream_head.is_none());
    }

    #[tokio::test]
    async fn plain_http_is_rewritten_for_the_origin() {
        let request = read_text(
            "POST http://Plain.example:8080/a/b?c=d HTTP/1.1\r\nHost: elsewhere\r\n\
             Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n\
             Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nContent-Length: 4\r\n\
             Authorization: Bearer origin-token\r\n\r\nbody",
        )
        .await
        .unwrap();
        assert_eq!(request.via, Via::PlainHttp);
        assert_eq!(request.target.to_string(), "plain.example:8080");
        assert_eq!(request.rest, b"body");
        assert_eq!(
            String::from_utf8(request.upstream_head.unwrap()).unwrap(),
            "POST /a/b?c=d HTTP/1.1\r\nHost: plain.example:8080\r\nContent-Length: 4\r\n\
             Authorization: Bearer origin-token\r\nConnection: close\r\n\r\n"
        );
        let request = read_text("GET http://[::1]/ HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(request.target.to_string(), "[::1]:80");
        assert_eq!(
            String::from_utf8(request.upstream_head.unwrap()).unwrap(),
            "GET / HTTP/1.0\r\nHost: [::1]\r\nConnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn bad_heads_are_refused_saying_why() {
        let bad = |result: Result<Request, HeadError>| match result {
            Err(HeadError::Bad(why)) => why,
            other => panic!("{other:?}"),
        };
        assert!(
            bad(read_text("GET / HTTP/1.1\r\nHost: x\r\n\r\n").await).contains("this is a proxy")
        );
        assert!(bad(read_text("GET https://x/ HTTP/1.1\r\n\r\n").await).contains("CONNECT"));
        assert!(bad(read_text("CONNECT x HTTP/1.1\r\n\r\n").await).contains("host:port"));
        assert!(bad(read_text("CONNECT x:1 HTTP/2\r\n\r\n").await).contains("HTTP/1.1"));
        assert!(bad(read_text("CONNECT x:1 HTTP/1.1\r\nbad\r\n\r\n").await).contains(":"));
        assert!(bad(read_text("CONNECT x:1 HTTP/1.1\r\n").await).contains("ended early"));
        let huge = format!(
            "CONNECT x:1 HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert!(bad(read_text(&huge).await).contains("over"));
        assert!(matches!(read_text("").await, Err(HeadError::Closed)));
    }
}

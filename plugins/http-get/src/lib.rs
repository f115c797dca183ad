//! Test and example guest: its task is a URL (`http://host:port/path`),
//! which it GETs through `wasi:http` — the host sends the request, and only
//! to an origin the agent's `grants.http` allows. The result is
//! `status CODE` and the body on the lines after it; a refused or failed
//! request fails the task with the guest's view of why.

use bgagents_guest::{Agent, Request};
use std::io::Read;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};

/// Bytes of a body kept; the guest's memory limit would end it anyway.
const MAX_BODY: u64 = 1 << 20;

struct HttpGet;

impl Agent for HttpGet {
    fn run(request: Request) -> Result<String, String> {
        let url = request.task.trim();
        let (status, body) = get(url).map_err(|why| format!("GET {url}: {why}"))?;
        Ok(format!("status {status}\n{body}"))
    }
}

/// GETs `url` and returns its status and body.
fn get(url: &str) -> Result<(u16, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or("write the URL as scheme://host[:port]/path")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };

    let path = if path.is_empty() { "/" } else { path };
    let request = OutgoingRequest::new(Fields::new());
    (request.set_method(&Method::Get))
        .and(request.set_scheme(Some(&scheme)))
        .and(request.set_authority(Some(authority)))
        .and(request.set_path_with_query(Some(path)))
        .map_err(|()| "not a valid URL")?;

    // To an origin outside `grants.http` the host connects nowhere; the
    // response below is then `error-code.http-request-denied`.
    let pending = outgoing_handler::handle(request, None).map_err(|code| code.to_string())?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "the response was taken already")?
        .map_err(|code| code.to_string())?;

    let status = response.status();
    let body = response.consume().map_err(|()| "no body")?;
    let mut stream = body.stream().map_err(|()| "no body stream")?;
    let mut bytes = Vec::new();
    (&mut stream)
        .take(MAX_BODY)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("reading the body: {error}"))?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

bgagents_guest::export_agent!(HttpGet);

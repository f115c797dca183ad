//! The `fetch` toolset: docker-agent's `fetch` tool (HTTP(S) GET of one or
//! more URLs, the body returned as text, markdown or HTML), sent by the host
//! with its own TLS and only to the origins the agent's `grants.http` lists.
//! A URL elsewhere — another host, another port of the same host, the other
//! scheme — is refused before any connection, and so is a redirect to one
//! (each hop is checked, at most [`MAX_REDIRECTS`]). Every fetch is bounded
//! by the toolset's `timeout:` and reads at most its body cap; what is not
//! text is described, not returned.

use super::ToolSpec;
use super::args::Args;
use crate::config::units::format_size;
use crate::config::{FetchSettings, Grants};
use crate::sandbox::http::origin;
use crate::text::cut;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub const FETCH: &str = "fetch";

/// Redirects followed for one URL, each to a granted origin.
pub const MAX_REDIRECTS: usize = 5;
/// URLs one call may fetch (one after the other).
const MAX_URLS: usize = 10;
/// The largest `timeout` argument the schema offers, in seconds; the
/// toolset's own `timeout:` caps it further.
const MAX_TIMEOUT_ARG: u64 = 300;

pub fn specs() -> Vec<ToolSpec> {
    vec![ToolSpec {
        name: FETCH.into(),
        description: "Fetch one or more URLs over HTTP or HTTPS (GET) and return each \
            response's status, content type and body. Only the origins (scheme, host and port) \
            the team file grants this agent can be reached; any other URL, and any redirect to \
            another origin, is refused. Bodies are cut at the toolset's size limit, and content \
            that is not text is described instead of returned."
            .into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "urls": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "maxItems": MAX_URLS,
                    "description": "The URLs to fetch, each on a granted origin."
                },
                "format": {
                    "type": "string",
                    "enum": ["text", "markdown", "html"],
                    "description": "How to return an HTML page: as plain text, as markdown, or \
                        as the HTML itself. Other content is returned as it is."
                },
                "timeout": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_TIMEOUT_ARG,
                    "description": "Seconds each URL may take; never more than the toolset's \
                        timeout (30 by default)."
                }
            },
            "required": ["urls", "format"],
            "additionalProperties": false
        }),
        read_only: true,
    }]
}

/// One agent's fetcher.
pub struct Fetcher {
    /// The agent's name, for the key its errors point to.
    agent: String,
    settings: FetchSettings,
    grants: Arc<Grants>,
    client: reqwest::Client,
}

/// How a page is returned (`format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Markdown,
    Html,
    /// No `format` given: the body as it came.
    AsIs,
}

impl Format {
    fn parse(text: Option<&str>) -> Result<Format, String> {
        match text {
            None => Ok(Format::AsIs),
            Some("text") => Ok(Format::Text),
            Some("markdown") => Ok(Format::Markdown),
            Some("html") => Ok(Format::Html),
            Some(other) => Err(format!(
                "format must be text, markdown or html, not {:?}",
                cut(other, 40)
            )),
        }
    }

    /// The `Accept` header: what the caller would rather have.
    fn accept(self) -> &'static str {
        match self {
            Format::Text => "text/plain;q=1.0, text/markdown;q=0.9, text/html;q=0.8, */*;q=0.1",
            Format::Markdown => "text/markdown;q=1.0, text/plain;q=0.9, text/html;q=0.7, */*;q=0.1",
            Format::Html => "text/html;q=1.0, text/plain;q=0.8, */*;q=0.1",
            Format::AsIs => "text/plain;q=1.0, */*;q=0.1",
        }
    }
}

/// What one URL gave, in docker-agent's result shape (several URLs are
/// answered with a JSON list of these).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct FetchResult {
    url: String,
    status_code: u16,
    status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    content_type: String,
    /// Bytes of `body`, as returned.
    content_length: usize,
    #[serde(skip_serializing_if = "String::is_empty")]
    body: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

impl Fetcher {
    /// The fetcher of agent `agent`, reaching the origins in `grants.http`.
    pub fn new(
        agent: &str,
        settings: &FetchSettings,
        grants: Arc<Grants>,
    ) -> Result<Fetcher, String> {
        Ok(Fetcher {
            agent: agent.to_string(),
            settings: settings.clone(),
            grants,
            client: crate::model::http_client()?,
        })
    }

    /// Runs tool `name`; `None` if it is not one of this toolset's.
    pub async fn call(&self, name: &str, args: &Args) -> Option<Result<String, String>> {
        if name != FETCH {
            return None;
        }
        Some(self.fetch(args).await)
    }

    async fn fetch(&self, args: &Args) -> Result<String, String> {
        args.only(&["urls", "format", "timeout"])?;
        let urls = args.strings("urls", "URL")?;
        if urls.is_empty() {
            return Err(
                "urls must list at least one URL, e.g. [\"https://api.example.com/page\"]".into(),
            );
        }
        if urls.len() > MAX_URLS {
            return Err(format!(
                "urls lists {} URLs; fetch at most {MAX_URLS} per call",
                urls.len()
            ));
        }
        let format = Format::parse(args.string("format")?.as_deref())?;
        let timeout = self.timeout(args.raw("timeout"))?;
        if self.grants.http.is_empty() {
            return Err(format!(
                "this agent may fetch from no origin: agents.{}.grants.http is empty; grant \
                 the origins it may reach there, e.g. `http: [https://api.example.com]`",
                self.agent
            ));
        }
        let mut results = Vec::with_capacity(urls.len());
        for url in &urls {
            let result = match tokio::time::timeout(timeout, self.fetch_url(url, format)).await {
                Ok(result) => result,
                Err(_) => FetchResult {
                    url: url.clone(),
                    error: format!(
                        "timed out after {} s; the fetch toolset's `timeout:` bounds each URL",
                        timeout.as_secs()
                    ),
                    ..FetchResult::default()
                },
            };
            results.push(result);
        }
        if let [result] = results.as_slice() {
            if !result.error.is_empty() {
                return Err(format!("Error fetching {}: {}", result.url, result.error));
            }
            return Ok(format!(
                "Successfully fetched {} (Status: {}, Length: {} bytes):\n\n{}",
                result.url, result.status_code, result.content_length, result.body
            ));
        }
        serde_json::to_string(&results).map_err(|error| error.to_string())
    }

    /// The `timeout` argument, capped at the toolset's; the toolset's when
    /// it is not given.
    fn timeout(&self, given: Option<&Value>) -> Result<Duration, String> {
        let seconds = match given {
            None | Some(Value::Null) => return Ok(self.settings.timeout),
            Some(value) => value.as_u64().filter(|s| (1..=MAX_TIMEOUT_ARG).contains(s)),
        };
        let seconds = seconds.ok_or_else(|| {
            format!("timeout must be a whole number of seconds from 1 to {MAX_TIMEOUT_ARG}")
        })?;
        Ok(Duration::from_secs(seconds).min(self.settings.timeout))
    }

    /// GETs `text`, following redirects within the granted origins.
    async fn fetch_url(&self, text: &str, format: Format) -> FetchResult {
        let mut result = FetchResult {
            url: text.to_string(),
            ..FetchResult::default()
        };
        match self.get(text, format).await {
            Ok(response) => {
                result.status_code = response.status().as_u16();
                result.status = format!(
                    "{} {}",
                    response.status().as_u16(),
                    response.status().canonical_reason().unwrap_or("")
                )
                .trim_end()
                .to_string();
                result.content_type = header(&response, CONTENT_TYPE);
                match self.read_body(response, format).await {
                    Ok(body) => {
                        result.content_length = body.len();
                        result.body = body;
                    }
                    Err(error) => result.error = error,
                }
            }
            Err(error) => result.error = error,
        }
        result
    }

    /// The final response for `text`: each redirect is followed only to a
    /// granted origin, at most [`MAX_REDIRECTS`] times.
    async fn get(&self, text: &str, format: Format) -> Result<reqwest::Response, String> {
        let mut url = reqwest::Url::parse(text).map_err(|error| format!("invalid URL: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("only HTTP and HTTPS URLs are supported".into());
        }
        if url.host().is_none() {
            return Err("invalid URL: it has no host".into());
        }
        self.check_origin(&url, "")?;
        let mut hops = 0;
        loop {
            tracing::debug!(agent = %self.agent, origin = %origin(&url), "fetch");
            let response = self
                .client
                .get(url.clone())
                .header(ACCEPT, format.accept())
                .send()
                .await
                .map_err(|error| format!("request failed: {}", describe(error)))?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let Some(location) = response.headers().get(LOCATION) else {
                return Ok(response);
            };
            if hops == MAX_REDIRECTS {
                return Err(format!(
                    "more than {MAX_REDIRECTS} redirects; fetch the last address directly"
                ));
            }
            let location = location
                .to_str()
                .ok()
                .and_then(|location| url.join(location).ok())
                .ok_or("the server redirected to an address that is not a valid URL")?;
            self.check_origin(&location, "redirected to ")?;
            url = location;
            hops += 1;
        }
    }

    /// Refuses `url` unless `grants.http` allows its origin; the error names
    /// the origin, the allowed ones and the key to change.
    fn check_origin(&self, url: &reqwest::Url, how: &str) -> Result<(), String> {
        if self.grants.allows_http(url) {
            return Ok(());
        }
        let refused = origin(url);
        tracing::info!(agent = %self.agent, origin = ?refused, "fetch refused: origin not granted");
        let allowed: Vec<String> = self.grants.http.iter().map(ToString::to_string).collect();
        Err(format!(
            "refused: {how}{refused}, an origin this agent may not fetch from (it may reach {}); \
             to allow it, add {refused} to agents.{}.grants.http",
            allowed.join(", "),
            self.agent
        ))
    }

    /// The body as the tool returns it: text cut at the size cap (with a
    /// note), HTML converted as `format` asks, anything else described.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        format: Format,
    ) -> Result<String, String> {
        let content_type = header(&response, CONTENT_TYPE).to_ascii_lowercase();
        if !content_type.is_empty() && !is_text(&content_type) {
            let size = match header(&response, CONTENT_LENGTH).parse::<u64>() {
                Ok(bytes) => format_size(bytes),
                Err(_) => "size not given".to_string(),
            };
            return Ok(format!(
                "[not shown: {content_type} content ({size}); fetch returns text content only]"
            ));
        }
        let limit = self.settings.max_body;
        let mut body = Vec::new();
        let mut was_cut = false;
        while let Some(chunk) = (response.chunk().await)
            .map_err(|error| format!("failed to read the response body: {}", describe(error)))?
        {
            let room = limit - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                was_cut = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        if content_type.is_empty() && body.contains(&0) {
            return Ok(format!(
                "[not shown: binary content without a content type ({} read); fetch returns \
                 text content only]",
                format_size(body.len() as u64)
            ));
        }
        let markdown = format == Format::Markdown;
        let convert =
            matches!(format, Format::Text | Format::Markdown) && content_type.contains("html");
        let mut text = if convert {
            // Converting a page of up to the body cap is CPU work: it runs
            // off the runtime's threads, so it holds up no other task and
            // the timeout around this fetch can still end the wait for it.
            tokio::task::spawn_blocking(move || {
                html::to_text(&String::from_utf8_lossy(&body), markdown)
            })
            .await
            .map_err(|error| format!("converting the page failed: {error}"))?
        } else {
            String::from_utf8_lossy(&body).into_owned()
        };
        if was_cut {
            text.push_str(&format!(
                "\n\n[cut: the body is larger than {}, the most the fetch toolset reads; the \
                 rest was not read]",
                format_size(limit as u64)
            ));
        }
        Ok(text)
    }
}

/// A response header as text; empty when absent or not text.
fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    (response.headers().get(name))
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Whether a (lower-case) content type is text a model can read.
fn is_text(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence,
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/ecmascript"
                | "application/yaml"
                | "application/x-yaml"
                | "application/toml"
                | "application/x-www-form-urlencoded"
                | "application/x-ndjson"
        )
}

/// A request error with its causes (reqwest's own text stops at the
/// outermost one, "error sending request").
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A small HTML-to-text conversion: tags dropped (the contents of scripts,
/// styles and the like with them), blocks on lines of their own, entities
/// decoded, white space collapsed. As markdown, headings get `#`, list items
/// `- ` and links their address. Pages are hostile input: the conversion
/// reads each byte a bounded number of times, whatever the markup.
mod html {
    /// Elements whose content is not text a reader sees.
    const HIDDEN: &[&str] = &["script", "style", "noscript", "template", "svg"];
    /// Elements that start a line of their own.
    const BLOCKS: &[&str] = &[
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "tr",
        "table",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "main",
        "aside",
        "pre",
        "blockquote",
        "hr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "title",
        "dt",
        "dd",
        "figure",
        "form",
    ];

    pub fn to_text(html: &str, markdown: bool) -> String {
        let mut out = String::new();
        // The address of the link being written, for markdown.
        let mut link: Option<(usize, String)> = None;
        // Where each markdown link's `[` goes in `out`, in order: all added
        // in one pass at the end rather than each inserted in place.
        let mut link_starts = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find('<') {
            push_text(&mut out, &rest[..start]);
            rest = &rest[start..];
            if let Some(comment) = rest.strip_prefix("<!--") {
                rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
                continue;
            }
            // A `<` that starts no tag (`a < b`) is text.
            if !rest[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '!') {
                out.push('<');
                rest = &rest[1..];
                continue;
            }
            let end = tag_end(rest);
            let tag = rest[1..end].strip_suffix('>').unwrap_or(&rest[1..end]);
            rest = &rest[end..];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            if !closing && HIDDEN.contains(&name.as_str()) {
                // Skip to the element's end tag (or the end of the page).
                rest = match find_end_tag(rest, &name) {
                    Some(at) => &rest[at + tag_end(&rest[at..])..],
                    None => "",
                };
                continue;
            }
            if BLOCKS.contains(&name.as_str()) {
                new_line(&mut out);
                if markdown && !closing {
                    match name.as_str() {
                        "li" => out.push_str("- "),
                        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                            let level = usize::from(name.as_bytes()[1] - b'0');
                            out.push_str(&"#".repeat(level));
                            out.push(' ');
                        }
                        _ => {}
                    }
                }
            }
            if markdown && name == "a" {
                if !closing {
                    if let Some(href) = attribute(tag, "href") {
                        link = Some((out.len(), decode(&href)));
                    }
                } else if let Some((at, href)) = link.take() {
                    // `at` may be stale if a block inside the link trimmed
                    // the text before it; the brackets are then left out.
                    if out.len() > at && out.is_char_boundary(at) {
                        link_starts.push(at);
                        out.push_str("](");
                        out.push_str(&href);
                        out.push(')');
                    }
                }
            }
        }
        push_text(&mut out, rest);
        tidy(&with_link_starts(&out, &link_starts))
    }

    /// Where the end tag `</name` (any case) starts in `text`.
    fn find_end_tag(text: &str, name: &str) -> Option<usize> {
        let mut from = 0;
        while let Some(found) = text[from..].find("</") {
            let at = from + found;
            let after = &text.as_bytes()[at + 2..];
            if after.len() >= name.len()
                && after[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            {
                return Some(at);
            }
            from = at + 2;
        }
        None
    }

    /// `text` with a `[` at each of `starts` (ascending byte offsets).
    fn with_link_starts(text: &str, starts: &[usize]) -> String {
        let mut out = String::with_capacity(text.len() + starts.len());
        let mut from = 0;
        for &at in starts {
            // Each link ends with `)`, which nothing trims, before the next
            // one starts: the offsets only grow. Should one not, its `[` is
            // left out rather than put in the wrong place.
            if at < from {
                continue;
            }
            out.push_str(&text[from..at]);
            out.push('[');
            from = at;
        }
        out.push_str(&text[from..]);
        out
    }

    /// The index just past the `>` that ends the tag at the start of
    /// `text` (quoted attribute values may hold `>`); the end of `text` if
    /// it never ends.
    fn tag_end(text: &str) -> usize {
        let mut quote = None;
        for (at, c) in text.char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(open), _) if c == open => quote = None,
                (None, '>') => return at + 1,
                _ => {}
            }
        }
        text.len()
    }

    /// The value of attribute `name` in a tag's text.
    fn attribute(tag: &str, name: &str) -> Option<String> {
        let lower = tag.to_ascii_lowercase();
        let mut from = 0;
        while let Some(found) = lower[from..].find(name) {
            let at = from + found;
            from = at + name.len();
            let before = lower[..at].chars().next_back();
            if !before.is_some_and(char::is_whitespace) {
                continue;
            }
            let after = tag[from..].trim_start();
            let Some(value) = after.strip_prefix('=') else {
                continue;
            };
            let value = value.trim_start();
            return Some(match value.chars().next() {
                Some(quote @ ('"' | '\'')) => {
                    value[1..].split(quote).next().unwrap_or("").to_string()
                }
                _ => value
                    .split(|c: char| c.is_whitespace() || c == '>')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            });
        }
        None
    }

    fn push_text(out: &mut String, text: &str) {
        let text = decode(text);
        for c in text.chars() {
            if c.is_whitespace() {
                if !out.ends_with([' ', '\n']) && !out.is_empty() {
                    out.push(' ');
                }
            } else {
                out.push(c);
            }
        }
    }

    fn new_line(out: &mut String) {
        while out.ends_with(' ') {
            out.pop();
        }
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    }

    /// Lines trimmed, at most one empty line in a row.
    fn tidy(text: &str) -> String {
        let mut out = String::new();
        let mut blank = false;
        for line in text.lines().map(str::trim) {
            if line.is_empty() {
                blank = !out.is_empty();
                continue;
            }
            if blank {
                out.push('\n');
                blank = false;
            }
            out.push_str(line);
            out.push('\n');
        }
        out.trim_end().to_string()
    }

    /// Decodes the common named entities and numeric ones.
    pub fn decode(text: &str) -> String {
        if !text.contains('&') {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(at) = rest.find('&') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            // An entity is at most ten bytes before its `;`: looking no
            // further keeps a page of `&` without `;` linear.
            let entity = (rest.as_bytes()[1..].iter().take(11))
                .position(|&byte| byte == b';')
                .map(|end| &rest[1..=end]);
            let decoded = entity.and_then(|entity| match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => {
                    let number = entity.strip_prefix('#')?;
                    let code = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => number.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            });
            match (entity, decoded) {
                (Some(entity), Some(c)) => {
                    out.push(c);
                    rest = &rest[entity.len() + 2..];
                }
                _ => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server on 127.0.0.1 answering every request with `response`; its
    /// port.
    async fn serve(response: String) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        port
    }

    fn ok(content_type: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn fetcher(origins: &[String], max_body: usize) -> Fetcher {
        let grants = Grants {
            http: origins
                .iter()
                .map(|origin| crate::config::HttpGrant::parse(origin).unwrap())
                .collect(),
            ..Grants::default()
        };
        let settings = FetchSettings {
            max_body,
            ..FetchSettings::default()
        };
        Fetcher::new("reader", &settings, Arc::new(grants)).unwrap()
    }

    async fn call(fetcher: &Fetcher, args: Value) -> Result<String, String> {
        let args = Args::parse(&args.to_string()).unwrap();
        fetcher.call(FETCH, &args).await.unwrap()
    }

    #[tokio::test]
    async fn a_granted_origin_is_fetched_and_others_are_refused() {
        let port = serve(ok("text/plain", "hello from the origin")).await;
        let other = serve(ok("text/plain", "secret")).await;
        let fetcher = fetcher(&[format!("http://127.0.0.1:{port}")], 1 << 20);

        let answer = call(
            &fetcher,
            json!({"urls": [format!("http://127.0.0.1:{port}/a")], "format": "text"}),
        )
        .await
        .unwrap();
        assert!(answer.starts_with("Successfully fetched"), "{answer}");
        assert!(answer.contains("Status: 200"), "{answer}");
        assert!(answer.ends_with("hello from the origin"), "{answer}");

        let refused = call(
            &fetcher,
            json!({"urls": [format!("http://127.0.0.1:{other}/")], "format": "text"}),
        )
        .await
        .unwrap_err();
        assert!(!refused.contains("secret"), "{refused}");
        assert!(
            refused.contains(&format!("http://127.0.0.1:{other}")),
            "{refused}"
        );
        assert!(refused.contains("agents.reader.grants.http"), "{refused}");
    }

    #[tokio::test]
    async fn without_grants_nothing_is_fetched() {
        let fetcher = fetcher(&[], 1 << 20);
        let error = call(
            &fetcher,
            json!({"urls": ["https://example.com/"], "format": "text"}),
        )
        .await
        .unwrap_err();
        assert!(error.contains("may fetch from no origin"), "{error}");
        assert!(error.contains("agents.reader.grants.http"), "{error}");
    }

    #[tokio::test]
    async fn redirects_are_followed_only_within_the_grants() {
        let target = serve(ok("text/plain", "landed")).await;
        let outside = serve(ok("text/plain", "outside")).await;
        let redirect = |port: u16| {
            format!(
                "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{port}/x\r\n\
                 content-length: 0\r\nconnection: close\r\n\r\n"
            )
        };
        let inside = serve(redirect(target)).await;
        let away = serve(redirect(outside)).await;
        let fetcher = fetcher(
            &[
                format!("http://127.0.0.1:{inside}"),
                format!("http://127.0.0.1:{away}"),
                format!("http://127.0.0.1:{target}"),
            ],
            1 << 20,
        );

        let answer = call(
            &fetcher,
            json!({"urls": [format!("http://127.0.0.1:{inside}/")], "format": "text"}),
        )
        .await
        .unwrap();
        assert!(answer.ends_with("landed"), "{answer}");

        let refused = call(
            &fetcher,
            json!({"urls": [format!("http://127.0.0.1:{away}/")], "format": "text"}),
        )
        .await
        .unwrap_err();
        assert!(
            refused.contains(&format!("redirected to http://127.0.0.1:{outside}")),
            "{refused}"
        );
        assert!(!refused.contains("outside\n"), "{refused}");
    }

    #[tokio::test]
    async fn bodies_are_cut_html_converted_and_binary_described() {
        let big = serve(ok("text/plain", &"x".repeat(5000))).await;
        let page = serve(ok(
            "text/html; charset=utf-8",
            "<html><head><title>T</title><style>p{}</style></head><body><h1>Title</h1>\
             <p>One &amp; <a href=\"/two\">two</a> &lt; 3 < 4</p><script>alert(1)</script>\
             <ul><li>a</li><li>b</li></ul></body></html>",
        ))
        .await;
        let image = serve(ok("image/png", "\u{1}PNG")).await;
        let fetcher = fetcher(
            &[big, page, image].map(|port| format!("http://127.0.0.1:{port}")),
            1000,
        );
        let get = |port: u16, format: &str| {
            call(
                &fetcher,
                json!({"urls": [format!("http://127.0.0.1:{port}/")], "format": format}),
            )
        };

        let cut = get(big, "text").await.unwrap();
        assert!(
            cut.contains(&format!("{}\n\n[cut: ", "x".repeat(1000))),
            "{cut}"
        );
        assert!(!cut.contains(&"x".repeat(1001)), "{cut}");

        let text = get(page, "text").await.unwrap();
        assert!(
            text.ends_with("T\nTitle\nOne & two < 3 < 4\na\nb"),
            "{text}"
        );
        let markdown = get(page, "markdown").await.unwrap();
        assert!(
            markdown.ends_with("T\n# Title\nOne & [two](/two) < 3 < 4\n- a\n- b"),
            "{markdown}"
        );
        let html = get(page, "html").await.unwrap();
        assert!(html.contains("<script>alert(1)</script>"), "{html}");

        let described = get(image, "text").await.unwrap();
        assert!(
            described.contains("[not shown: image/png content (4 B)"),
            "{described}"
        );
    }

    #[tokio::test]
    async fn several_urls_are_answered_as_a_json_list() {
        let port = serve(ok("text/plain", "one")).await;
        let fetcher = fetcher(&[format!("http://127.0.0.1:{port}")], 1 << 20);
        let answer = call(
            &fetcher,
            json!({"urls": [format!("http://127.0.0.1:{port}/"), "http://127.0.0.1:9/"], "format": "text"}),
        )
        .await
        .unwrap();
        let results: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(results[0]["body"], "one");
        assert_eq!(results[0]["statusCode"], 200);
        assert!(
            results[1]["error"].as_str().unwrap().contains("refused"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn arguments_are_checked() {
        let fetcher = fetcher(&["http://127.0.0.1:9".to_string()], 1 << 20);
        for (args, expected) in [
            (json!({"format": "text"}), "at least one URL"),
            (
                json!({"urls": ["http://127.0.0.1:9/"], "format": "pdf"}),
                "format must be",
            ),
            (
                json!({"urls": ["ftp://127.0.0.1:9/"], "format": "text"}),
                "only HTTP and HTTPS",
            ),
            (
                json!({"urls": ["nonsense"], "format": "text"}),
                "invalid URL",
            ),
            (
                json!({"urls": ["http://127.0.0.1:9/"], "timeout": 0}),
                "timeout must be",
            ),
            (
                json!({"urls": ["http://127.0.0.1:9/"], "method": "POST"}),
                "unknown argument",
            ),
        ] {
            let error = call(&fetcher, args.clone()).await.unwrap_err();
            assert!(error.contains(expected), "{args}: {error}");
        }
    }

    /// A page of about 1 MiB built to make a careless conversion quadratic:
    /// `block` repeated, and how many times.
    fn hostile_page(block: &str) -> (String, usize) {
        let blocks = (1 << 20) / block.len();
        (block.repeat(blocks), blocks)
    }

    #[test]
    fn hostile_pages_convert_in_linear_time() {
        // Each block with its text and its markdown: scripts and styles
        // (each once copied the rest of the page), links (each once
        // inserted its `[`) and `&`s (each once searched the rest of the
        // text for a `;`).
        let cases = [
            ("<script>var a = 1;</script><STYLE>p{}</sTyLe>x", "x", "x"),
            ("<a href=/p>t</a>", "t", "[t](/p)"),
            ("&", "&", "&"),
        ];
        for (block, text, markdown) in cases {
            let (page, blocks) = hostile_page(block);
            for (as_markdown, expected) in [(false, text), (true, markdown)] {
                let started = std::time::Instant::now();
                let converted = html::to_text(&page, as_markdown);
                let took = started.elapsed();
                // Under a second when linear, even unoptimised; a minute
                // and more for the scripts and `&`s when not.
                assert!(took < Duration::from_secs(5), "{block}: took {took:?}");
                assert!(converted == expected.repeat(blocks), "{block}");
            }
        }
    }

    #[test]
    fn end_tags_are_found_in_any_case_and_links_keep_their_text() {
        assert_eq!(
            html::to_text("a<SCRIPT>x</Script >b<style>y</STYLE>c", false),
            "abc"
        );
        assert_eq!(
            html::to_text(
                "<p>see <a href='/x'>this</a>, <a href=/y>that</a> and <a \
                 href=/z></a>none</p>",
                true
            ),
            "see [this](/x), [that](/y) and none"
        );
        assert_eq!(html::to_text("<script>never closed", false), "");
    }

    #[test]
    fn entities_decode() {
        assert_eq!(
            html::decode("a &lt;b&gt; &#65;&#x42; &bogus; &"),
            "a <b> AB &bogus; &"
        );
    }
}

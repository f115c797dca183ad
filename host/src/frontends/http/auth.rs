//! The bearer token an HTTP listener requires: read from a file (never from
//! the command line, where other users could see it), never logged or
//! shown, and compared in constant time.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The shortest token accepted: guessing must be out of the question.
const MIN_TOKEN_LEN: usize = 16;

/// A secret clients present as `Authorization: Bearer TOKEN`.
pub struct BearerToken(Vec<u8>);

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("BearerToken(<hidden>)")
    }
}

impl BearerToken {
    /// The token in `path`: its one line, without surrounding whitespace.
    /// The file must be readable by its owner only.
    pub fn from_file(path: &Path) -> Result<BearerToken, String> {
        let shown = path.display();
        let mode = std::fs::metadata(path)
            .map_err(|error| format!("--auth-token-file {shown}: cannot read it: {error}"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "--auth-token-file {shown}: other users may read it (mode {:o}); make it the \
                 owner's only: chmod 600 {shown}",
                mode & 0o777
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("--auth-token-file {shown}: cannot read it: {error}"))?;
        let token = text.trim();
        if token.len() < MIN_TOKEN_LEN || token.contains(char::is_whitespace) {
            return Err(format!(
                "--auth-token-file {shown}: the file must hold one token of at least \
                 {MIN_TOKEN_LEN} characters without spaces (for example the output of \
                 `openssl rand -hex 32`)"
            ));
        }
        Ok(BearerToken(token.as_bytes().to_vec()))
    }

    /// The token in `path`, made there (64 random hex digits, mode 0600)
    /// when the file does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<BearerToken, String> {
        let mut random = [0u8; 32];
        // SAFETY: the buffer is valid for its length; getrandom has no
        // other preconditions.
        let filled = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
        if filled != random.len() as isize {
            return Err("cannot draw a random token from the system".to_string());
        }
        let token: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(mut file) => file
                .write_all(format!("{token}\n").as_bytes())
                .map_err(|error| {
                    format!("cannot write the token file {}: {error}", path.display())
                })?,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(format!(
                    "cannot create the token file {}: {error}",
                    path.display()
                ));
            }
        }
        BearerToken::from_file(path)
    }

    /// Whether `presented` is the token, in time that depends only on the
    /// lengths.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let mut difference = self.0.len() ^ presented.len();
        for (index, expected) in self.0.iter().enumerate() {
            let got = presented.get(index).copied().unwrap_or(0);
            difference |= usize::from(expected ^ got);
        }
        difference == 0
    }
}

/// Refused requests, logged at most once a second with how many were not
/// logged since: a client hammering the listener cannot flood the log.
struct RefusalLog {
    /// The second (since the process started) of the last logged refusal,
    /// plus one; 0 before any.
    last_logged: AtomicU64,
    unlogged: AtomicU64,
}

static REFUSALS: RefusalLog = RefusalLog {
    last_logged: AtomicU64::new(0),
    unlogged: AtomicU64::new(0),
};

impl RefusalLog {
    fn log(&self, reason: &str) {
        static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let second = STARTED
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs()
            + 1;
        let last = self.last_logged.load(Ordering::Relaxed);
        let due = last < second
            && (self.last_logged)
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if !due {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.unlogged.swap(0, Ordering::Relaxed) {
            0 => tracing::warn!(reason, "HTTP request refused"),
            more => tracing::warn!(reason, more, "HTTP request refused (and {more} more since)"),
        }
    }
}

/// Refuses a request without the token (401, saying how to send it).
pub async fn require_token(
    State(token): State<Arc<BearerToken>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| {
            // The scheme's name is case-insensitive (RFC 9110).
            let value = value.as_bytes();
            let scheme = value.get(..7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then(|| &value[7..])
        });
    match presented {
        Some(presented) if token.matches(presented) => next.run(request).await,
        presented => {
            let why = match presented {
                None => {
                    "this server needs `Authorization: Bearer TOKEN`, with the token from its \
                     --auth-token-file, or from STATE/http-token when `bgagents serve` made it"
                }
                Some(_) => "the bearer token is wrong",
            };
            REFUSALS.log(why);
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                why,
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = BearerToken(b"0123456789abcdef".to_vec());
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcde"));
        assert!(!token.matches(b"0123456789abcdef0"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "BearerToken(<hidden>)");
    }
}

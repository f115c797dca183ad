//! `bgagents serve`: resolve and lock the state directory, open its task
//! store, load the team, and run the daemon in the foreground.

use super::sanitise::{Keep, printable, shown_path};
use super::{EXIT_BAD_INPUT, HOST};
use crate::frontends::http::auth::BearerToken;
use crate::frontends::http::{HttpListener, HttpOptions, MCP_PATH};
use crate::frontends::serve::{self, state};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The token HTTP clients send, made in the state directory when no
/// `--auth-token-file` is given.
pub const HTTP_TOKEN_FILE: &str = "http-token";

/// Binds `--http ADDR` with the token in `token_file` (made there when
/// `made` and missing), and says where.
pub async fn http_listener(
    addr: SocketAddr,
    token_file: &Path,
    made: bool,
) -> Result<HttpListener, String> {
    let token = match made {
        true => BearerToken::load_or_create(token_file)?,
        false => BearerToken::from_file(token_file)?,
    };
    if made {
        eprintln!(
            "{HOST} HTTP clients send the bearer token in {}",
            token_file.display()
        );
    }
    let listener = HttpListener::bind(HttpOptions { addr, token }).await?;
    let addr = listener.addr();
    eprintln!("{HOST} serving MCP over HTTP at http://{addr}{MCP_PATH}");
    eprintln!(
        "{HOST} dashboard at http://{addr}/ (it asks for the token; or open \
         http://{addr}/#token=TOKEN)"
    );
    Ok(listener)
}

pub async fn serve_team(
    team: &Path,
    state_dir: Option<PathBuf>,
    http: Option<SocketAddr>,
    token_file: Option<&Path>,
    nats: Option<crate::cluster::NatsOptions>,
) -> ExitCode {
    let fail = |error: String| {
        eprintln!("error: {}", printable(&error, Keep::Lines));
        ExitCode::from(EXIT_BAD_INPUT)
    };
    let absolute = match state::absolute(team) {
        Ok(absolute) => absolute,
        Err(error) => return fail(error),
    };
    let dir = match state_dir.map_or_else(|| state::default_dir(team), Ok) {
        Ok(dir) => dir,
        Err(error) => return fail(error),
    };
    if let Err(error) = state::create(&dir) {
        return fail(error);
    }
    // Before loading: a second daemon is refused at once.
    let _lock = match state::lock(&dir, &absolute) {
        Ok(lock) => lock,
        Err(error) => return fail(error),
    };
    // Before anything is loaded or bound: a bad token file or a port in
    // use leaves nothing behind.
    let http = match http {
        None => None,
        Some(addr) => {
            let (file, made) = match token_file {
                Some(file) => (file.to_path_buf(), false),
                None => (dir.join(HTTP_TOKEN_FILE), true),
            };
            match http_listener(addr, &file, made).await {
                Ok(listener) => Some(listener),
                Err(error) => return fail(error),
            }
        }
    };
    // Tasks of earlier daemons come back: finished ones as they were,
    // those left queued or running interrupted.
    let store = match crate::store::Store::open(&dir) {
        Ok(store) => store,
        Err(error) => return fail(error.to_string()),
    };
    let toolset = match super::load_into(team, true, Some(store), nats.is_some()) {
        Ok(toolset) => toolset,
        Err(code) => return code,
    };
    let cluster = match &nats {
        Some(nats) => match super::worker::coordinate(&toolset, nats).await {
            Ok(cluster) => Some(cluster),
            Err(error) => return fail(error),
        },
        None => None,
    };
    let listener = match state::bind(&dir) {
        Ok(listener) => listener,
        Err(error) => return fail(error),
    };
    let socket = state::socket(&dir);
    eprintln!(
        "{HOST} serving {} on {} (pid {}); stop with Ctrl-C or `kill -TERM {}`",
        shown_path(team),
        socket.display(),
        std::process::id(),
        std::process::id()
    );
    let served = serve::run(toolset, listener, &socket, http).await;
    if let Some(cluster) = cluster {
        // The tasks the shutdown stopped are stopped on their workers too.
        cluster
            .settle_stops(std::time::Duration::from_secs(10))
            .await;
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(error),
    }
}

//! The JSON API beside MCP on the HTTP listener, for the dashboard and for
//! scripts: the toolset's operations as plain requests, and its task events
//! as a server-sent-events stream. Only adapts: every operation is the
//! toolset's, under the same sessions and scoping as MCP over HTTP (the
//! operator's on `serve`, the agent's on `mcp --http`), and every answer
//! is given once what it tells is on disk.
//!
//! | Request                          | Answer                                   |
//! |----------------------------------|------------------------------------------|
//! | `GET /api/agents`                | the agents that may be started           |
//! | `GET /api/tasks`                 | every task, oldest first                 |
//! | `POST /api/tasks`                | starts `{agent, task, expected_output?}` |
//! | `GET /api/tasks/{id}`            | one task in full                         |
//! | `GET /api/tasks/{id}/output`     | output from `?offset=`, `&wait=` seconds |
//! | `POST /api/tasks/{id}/stop`      | stops the task and its children         |
//! | `GET /api/events?output=1`       | task events (`text/event-stream`)        |
//!
//! Errors are `{"error": "..."}` with a status that says whose fault it is.

use crate::frontends::serve::sessions::{HTTP_LABEL, Sessions};
use crate::tasks::{EventKind, TaskEvent};
use crate::toolset::tools::args::Args;
use crate::toolset::tools::background::{self, RunArgs};
use crate::toolset::{READ_MAX_WAIT_SECS, Told, ToolError, read_wait, render};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Largest request body accepted (a task text is at most 1 MiB).
const MAX_BODY_BYTES: usize = 2 << 20;

/// Event streams and waiting output reads open at once: each holds a
/// connection and a task on the daemon for as long as it lasts, so a
/// client looping on them cannot take the daemon's memory or descriptors.
pub const MAX_OPEN_WAITS: usize = 64;

#[derive(Clone)]
struct Api {
    sessions: Arc<Sessions>,
    /// Ends the event streams when the daemon shuts down.
    shutdown: CancellationToken,
    /// One permit per open event stream or waiting output read.
    waits: Arc<Semaphore>,
}

impl Api {
    /// A permit for one more event stream or waiting read; `None` when
    /// [`MAX_OPEN_WAITS`] are open.
    fn open_wait(&self) -> Option<OwnedSemaphorePermit> {
        self.waits.clone().try_acquire_owned().ok()
    }
}

/// The answer refusing `what` (an event stream or a waiting read) because
/// [`MAX_OPEN_WAITS`] are open.
fn too_many_waits(what: &str) -> Response {
    // Debug: a client retrying in a loop would flood the log.
    tracing::debug!(
        limit = MAX_OPEN_WAITS,
        "{what} refused: too many event streams and waiting reads open"
    );
    error(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "{what} refused: {MAX_OPEN_WAITS} event streams and waiting output reads are \
             open already; close one, or read output without wait"
        ),
    )
}

/// The API's routes, under `/api`.
pub fn routes(sessions: Arc<Sessions>, shutdown: CancellationToken) -> Router {
    Router::new()
        .route("/api/agents", get(agents))
        .route("/api/tasks", get(list).post(start))
        .route("/api/tasks/{id}", get(view))
        .route("/api/tasks/{id}/output", get(output))
        .route("/api/tasks/{id}/stop", post(stop))
        .route("/api/events", get(events))
        .route("/api", axum::routing::any(not_found))
        .route("/api/{*rest}", axum::routing::any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Api {
            sessions,
            shutdown,
            waits: Arc::new(Semaphore::new(MAX_OPEN_WAITS)),
        })
}

fn answer(status: StatusCode, body: Value) -> Response {
    let headers = [
        (header::CONTENT_TYPE, "application/json"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    (status, headers, body.to_string()).into_response()
}

fn error(status: StatusCode, text: impl Into<String>) -> Response {
    answer(status, json!({"error": text.into()}))
}

/// Whose fault a refused operation is.
fn status_of(refusal: &ToolError) -> StatusCode {
    match refusal {
        ToolError::NotFound { .. } => StatusCode::NOT_FOUND,
        ToolError::NotRunning { .. } => StatusCode::CONFLICT,
        ToolError::SpawnLimit { .. }
        | ToolError::ConcurrentSpawnLimit { .. }
        | ToolError::RetainedFull { .. } => StatusCode::TOO_MANY_REQUESTS,
        ToolError::StoreFailing { .. } | ToolError::ShuttingDown | ToolError::SessionClosed => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

impl Api {
    /// Answers `status`/`body` once the toolset has on disk what it tells;
    /// if it cannot be saved, says so instead.
    async fn settled(&self, status: StatusCode, body: Value) -> Response {
        match self.sessions.toolset().settled().await {
            Ok(()) => answer(status, body),
            Err(reason) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the daemon cannot save its tasks: {reason}"),
            ),
        }
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such API path; see /api/tasks, /api/agents and /api/events",
    )
}

async fn method_not_allowed(method: axum::http::Method) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here; see the API's paths and methods in docs/serve.md"),
    )
}

async fn agents(State(api): State<Api>) -> Response {
    let every = api.sessions.every();
    let agents: Vec<Value> = background::startable(api.sessions.toolset(), every.caller())
        .into_iter()
        .map(|spec| json!({"name": spec.name, "description": spec.description}))
        .collect();
    answer(StatusCode::OK, json!({"agents": agents}))
}

async fn list(State(api): State<Api>) -> Response {
    let tasks: Vec<Value> = (api.sessions.list_visible().iter())
        .map(|(info, session)| render::info_record(info, Some(session)))
        .collect();
    api.settled(StatusCode::OK, json!({"tasks": tasks})).await
}

async fn start(State(api): State<Api>, body: Bytes) -> Response {
    let arguments = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(arguments)) => arguments,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
        Err(problem) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {problem}"),
            );
        }
    };
    let run = match RunArgs::parse(&Args::new(Some(arguments))) {
        Ok(run) => run,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };
    let session = api.sessions.http();
    match run.start(api.sessions.toolset(), session.caller()) {
        Ok(info) => {
            let record = render::info_record(&info, Some(HTTP_LABEL));
            api.settled(StatusCode::CREATED, record).await
        }
        Err(refusal) => error(status_of(&refusal), refusal.to_string()),
    }
}

async fn view(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let every = api.sessions.every();
    match api
        .sessions
        .toolset()
        .view_background_agent(every.caller(), &id)
    {
        Ok(view) => {
            api.settled(StatusCode::OK, render::view_record(&view))
                .await
        }
        Err(refusal) => error(status_of(&refusal), refusal.to_string()),
    }
}

async fn output(
    State(api): State<Api>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let (mut offset, mut wait) = (0usize, Duration::ZERO);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let number = value.parse::<u64>();
        match (key.as_ref(), number) {
            ("offset", Ok(number)) => offset = usize::try_from(number).unwrap_or(usize::MAX),
            ("wait", Ok(number)) => match read_wait(number) {
                Ok(duration) => wait = duration,
                Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
            },
            ("wait", Err(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("wait must be 0 to {READ_MAX_WAIT_SECS} seconds"),
                );
            }
            ("offset", Err(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "offset must be a whole number of bytes",
                );
            }
            (other, _) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter {other:?}; use offset and wait"),
                );
            }
        }
    }
    // Held while the read waits.
    let _permit = match wait.is_zero() {
        true => None,
        false => match api.open_wait() {
            Some(permit) => Some(permit),
            None => return too_many_waits("a waiting output read"),
        },
    };
    let every = api.sessions.every();
    let toolset = api.sessions.toolset();
    let read = tokio::select! {
        read = toolset.read_output(every.caller(), &id, offset, wait) => read,
        _ = api.shutdown.cancelled() => {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon is shutting down");
        }
    };
    match read {
        Ok(read) => {
            api.settled(StatusCode::OK, render::output_record(&read))
                .await
        }
        Err(refusal) => error(status_of(&refusal), refusal.to_string()),
    }
}

async fn stop(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let every = api.sessions.every();
    let toolset = api.sessions.toolset();
    match toolset.stop_background_agent(every.caller(), &id).await {
        Ok(info) => {
            api.settled(StatusCode::OK, render::info_record(&info, None))
                .await
        }
        Err(refusal) => error(status_of(&refusal), refusal.to_string()),
    }
}

/// Every task event the API's scope may see, as it happens: `queued`,
/// `started` and `finished` (with `output` too when asked, `?output=1`),
/// each a JSON object with the task's id, agent and depth. A status is
/// sent once it is on disk. A client that falls behind gets a `lagged`
/// event and should read `/api/tasks` again. The stream ends when the
/// daemon shuts down, once the stops of its shutdown are told.
async fn events(
    State(api): State<Api>,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Response> {
    let mut with_output = false;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match (key.as_ref(), value.as_ref()) {
            ("output", "1" | "true") => with_output = true,
            ("output", "0" | "false") => with_output = false,
            (other, _) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter {other:?}; use output=1 for output events"),
                ));
            }
        }
    }
    // Held while the stream is open (it goes with the stream's state).
    let permit = api
        .open_wait()
        .ok_or_else(|| too_many_waits("an event stream"))?;
    let receiver = api.sessions.toolset().events().subscribe();
    let stream = futures_util::stream::unfold(
        (api, receiver, permit),
        move |(api, mut receiver, permit)| async move {
            let wanted = |event: &TaskEvent| {
                api.sessions.may_see(event)
                    && (with_output || !matches!(event.kind, EventKind::Output(_)))
            };
            // Events already told go out before the stream ends.
            let told = tokio::select! {
                biased;
                told = api.sessions.toolset().next_told(&mut receiver, wanted) => told?,
                _ = api.shutdown.cancelled() => return None,
            };
            let event = match told {
                Told::Event(event) => sse_event(&event),
                Told::Missed(missed) => Event::default()
                    .event("lagged")
                    .data(json!({"missed_events": missed}).to_string()),
            };
            Some((Ok(event), (api, receiver, permit)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn sse_event(event: &TaskEvent) -> Event {
    let record = render::event_record(event);
    let name = record["event"].as_str().unwrap_or("task").to_string();
    Event::default().event(name).data(record.to_string())
}

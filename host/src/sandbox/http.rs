//! Outgoing `wasi:http` requests of one task. The host sends them (its TCP,
//! its TLS), and only to the origins the agent's `grants.http` lists —
//! scheme, host and port all matching, as [`Grants::allows_http`] checks.
//! A request to any other origin is refused before anything is resolved or
//! connected: the guest's response future ends in
//! `error-code.http-request-denied`, and the task's output and the log say
//! which origin was refused and which key would allow it. A redirect is the
//! guest's to follow, as a new request, so every hop is checked again.

use super::output::SandboxOutput;
use crate::config::Grants;
use crate::text::cut;
use std::sync::{Arc, Once};
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};

/// How long a request waits for its connection (TCP and TLS) when the guest
/// sets no timeout of its own.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request waits for the response's head, then between two
/// pieces of its body, when the guest sets no timeout of its own. The task's
/// own timeout bounds the whole exchange in any case.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The `wasi:http` state of one task's Store.
pub struct TaskHttp {
    ctx: WasiHttpCtx,
    gate: OriginGate,
}

impl TaskHttp {
    /// Requests of a task of `agent`, allowed to `grants.http`; refusals
    /// are noted in `output`.
    pub fn new(agent: &str, grants: &Arc<Grants>, output: &Arc<SandboxOutput>) -> TaskHttp {
        TaskHttp {
            ctx: WasiHttpCtx::new(),
            gate: OriginGate {
                agent: agent.to_string(),
                grants: grants.clone(),
                output: output.clone(),
            },
        }
    }

    /// The view wasmtime-wasi-http's imports work on, over the task's
    /// resource table (whose cap also caps open requests and bodies).
    pub fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.ctx,
            table,
            hooks: &mut self.gate,
        }
    }
}

/// Lets a request through to the host's sender only if its origin is
/// granted.
struct OriginGate {
    agent: String,
    grants: Arc<Grants>,
    output: Arc<SandboxOutput>,
}

/// What [`WasiHttpHooks::send_request`] returns.
type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OriginGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let url = reqwest::Url::parse(&request.uri().to_string()).ok();
        let shown = match &url {
            Some(url) => origin(url),
            // Guest-chosen text: shown escaped and short.
            None => format!("{:?}", cut(&request.uri().to_string(), 200)),
        };
        if !url.is_some_and(|url| self.grants.allows_http(&url)) {
            tracing::info!(agent = %self.agent, origin = ?shown, "outgoing HTTP request refused");
            self.output.append_line(&format!(
                "[http: request to {shown} refused: that origin is not in \
                 agents.{}.grants.http; add it there to allow it]",
                self.agent
            ));
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        tracing::debug!(agent = %self.agent, origin = ?shown, "outgoing HTTP request");
        install_crypto_provider();
        let options = options.unwrap_or_default();
        let options = RequestOptions {
            connect_timeout: options.connect_timeout.or(Some(CONNECT_TIMEOUT)),
            first_byte_timeout: options.first_byte_timeout.or(Some(READ_TIMEOUT)),
            between_bytes_timeout: options.between_bytes_timeout.or(Some(READ_TIMEOUT)),
        };
        wasmtime_wasi_http::default_hooks().send_request(request, Some(options), fut)
    }
}

/// `scheme://host:port` of `url`, the form `grants.http` compares.
pub fn origin(url: &reqwest::Url) -> String {
    let host = match url.host() {
        Some(url::Host::Ipv6(addr)) => format!("[{addr}]"),
        Some(host) => host.to_string(),
        None => String::new(),
    };
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// The host's TLS uses rustls with the ring provider, as the model client
/// does; whichever comes first installs it for the process.
fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Fails only if a provider is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins_show_scheme_host_and_port() {
        let url = |text: &str| reqwest::Url::parse(text).unwrap();
        assert_eq!(
            origin(&url("https://API.example.com/v1?q=1")),
            "https://api.example.com:443"
        );
        assert_eq!(
            origin(&url("http://127.0.0.1:8080/")),
            "http://127.0.0.1:8080"
        );
        assert_eq!(origin(&url("http://[::1]/x")), "http://[::1]:80");
    }
}

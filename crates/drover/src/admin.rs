//! `drover serve`'s admin listener (`--admin ADDR`, loopback by default):
//! a small HTTP/1.1 server on serve's tokio runtime, and its router.
//!
//! It serves `GET /metrics` (Prometheus, in the OpenMetrics text format
//! `prometheus-client` writes, without a token: scrapers rarely carry
//! one, and the default address is loopback) and the HTTP API under
//! `/api/v1/` ([`crate::api`], bearer tokens), and the web dashboard at
//! `/` and `/ui/…` ([`crate::dashboard`]: public assets that call the API
//! with the token a person pastes). With `--admin-cert` and
//! `--admin-key` it speaks TLS only.
//!
//! **Binding, and handovers.** The admin socket is handed over to a
//! successor (`serve --takeover`) with the proxies' ([`HANDOVER_NAME`]):
//! both serves accept on it while the old one drains, so no scrape or API
//! call is refused across a restart. A successor started with another
//! `--admin` address binds its own. A port that cannot be bound (taken by
//! something else) is said once, and retried: serve carries on without
//! metrics rather than refusing to run its services.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use drover_core::metrics::{self, Metrics};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_rustls::TlsAcceptor;

use crate::api::{self, Api, Body};

/// The default admin address: loopback only; 9465 is free in Prometheus'
/// list of default exporter ports, next to the proxies' usual ones.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9465";

/// How long between attempts to bind a taken admin port.
const RETRY: Duration = Duration::from_secs(1);

/// What the handlers read.
pub struct State {
    pub metrics: Arc<Metrics>,
    pub api: Arc<Api>,
    /// Set: every connection is TLS.
    pub tls: Option<TlsAcceptor>,
}

/// A TLS acceptor from a PEM certificate chain and private key (what
/// `--admin-cert` and `--admin-key` name); HTTP/1.1 by ALPN.
pub fn tls(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate chain {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no PEM certificate in it", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the certificate and the key do not make a TLS identity")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The admin listening socket, once bound: a duplicate a successor
/// (`serve --takeover`) is handed, so the admin port, like the proxies',
/// never refuses a connection across a restart.
pub type Handed = Arc<std::sync::Mutex<Option<std::net::TcpListener>>>;

/// The name the admin socket goes by in a handover (a proxy's is
/// `service/port`; a service name has no `@`).
pub const HANDOVER_NAME: &str = "@admin";

/// Listen on `addr` — on `inherited` if it is a socket listening there
/// (the one the serve taken over from handed over), else a new one,
/// retrying while the address is taken — and answer there until the
/// runtime stops. `handed` gets a duplicate of the socket once it listens.
pub fn spawn(
    rt: &Handle,
    addr: SocketAddr,
    state: Arc<State>,
    inherited: Option<std::net::TcpListener>,
    handed: Handed,
) {
    rt.spawn(async move {
        let mut told = false;
        let mut inherited = inherited.filter(|l| l.local_addr().is_ok_and(|a| a == addr));
        let listener = loop {
            let bound = match inherited.take() {
                Some(l) => Ok(l),
                None => std::net::TcpListener::bind(addr),
            };
            let listening = bound.and_then(|l| {
                l.set_nonblocking(true)?;
                let dup = l.try_clone()?;
                Ok((TcpListener::from_std(l)?, dup))
            });
            match listening {
                Ok((l, dup)) => {
                    *handed.lock().unwrap_or_else(|e| e.into_inner()) = Some(dup);
                    break l;
                }
                Err(e) => {
                    if !told {
                        tracing::warn!(
                            %addr,
                            error = %e,
                            "admin: cannot listen on {addr}; retrying every second \
                             (metrics are unavailable until then)"
                        );
                        told = true;
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        let scheme = if state.tls.is_some() { "https" } else { "http" };
        tracing::info!(
            %addr,
            "admin: metrics on {scheme}://{addr}/metrics, API on {scheme}://{addr}/api/v1/, \
             dashboard on {scheme}://{addr}/"
        );
        accept(listener, state).await;
    });
}

/// The most connections the admin listener holds open at once (event
/// streams included); one more is closed at once.
const MAX_CONNECTIONS: usize = 512;

async fn accept(listener: TcpListener, state: Arc<State>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            // Out of descriptors, say: give closing ones a moment.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(sock);
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match state.tls.clone() {
                None => serve_connection(TokioIo::new(sock), state).await,
                Some(tls) => {
                    // A handshake that stalls must not hold a task forever.
                    let accepted =
                        tokio::time::timeout(Duration::from_secs(10), tls.accept(sock)).await;
                    if let Ok(Ok(stream)) = accepted {
                        serve_connection(TokioIo::new(stream), state).await;
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(io: I, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(req, &state).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(io, service)
        .await;
}

/// The router: one arm per path (the API's own are in [`api::ROUTES`]).
pub async fn route<B>(req: Request<B>, state: &State) -> Response<Body>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path();
    if path == "/api/v1" || path.starts_with("/api/v1/") {
        let (method, route) = (req.method().clone(), api::pattern(path));
        let r = api::handle(req, state.api.clone()).await;
        state
            .metrics
            .api_request(method.as_str(), route, r.status().as_u16());
        return r;
    }
    match path {
        "/metrics" => match *req.method() {
            Method::GET | Method::HEAD => text(
                StatusCode::OK,
                metrics::CONTENT_TYPE,
                state.metrics.encode(),
            ),
            _ => {
                let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed here\n");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                r
            }
        },
        p if p == "/" || p == "/ui" || p.starts_with("/ui/") => {
            crate::dashboard::response(req.method(), p).map(|b| b.map_err(|e| match e {}).boxed())
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found; drover serve's admin listener serves /metrics, /api/v1/ and the dashboard at /\n",
        ),
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Body> {
    text(status, "text/plain; charset=utf-8", body.to_string())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state with no store: the API answers only what needs none.
    fn state() -> State {
        let metrics = Arc::new(Metrics::new(None));
        State {
            api: Arc::new(Api::new("/nonexistent".into(), metrics.clone())),
            metrics,
            tls: None,
        }
    }

    async fn get(path: &str, method: Method) -> Response<Body> {
        let state = state();
        state
            .metrics
            .proxy_request("web", 200, Duration::from_millis(2));
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::new()))
            .unwrap();
        route(req, &state).await
    }

    #[tokio::test]
    async fn metrics_are_served_and_the_api_needs_a_token() {
        let r = get("/metrics", Method::GET).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], metrics::CONTENT_TYPE);
        assert_eq!(get("/", Method::GET).await.status(), StatusCode::OK); // the dashboard
        let r = get("/api/v1/services", Method::GET).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"drover\""
        );
        let r = get("/metrics", Method::POST).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        // Requests to the API are counted by route, not by path.
        let state = state();
        for path in ["/api/v1/services/a", "/api/v1/services/b", "/api/v1/x"] {
            let req = Request::get(path).body(Full::new(Bytes::new())).unwrap();
            route(req, &state).await;
        }
        let text = state.metrics.encode();
        assert!(
            text.contains(
                r#"drover_api_requests_total{method="GET",route="/api/v1/services/{name}",code="401"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"drover_api_requests_total{method="GET",route="other",code="404"} 1"#),
            "{text}"
        );
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
    }
}

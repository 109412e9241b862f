//! `drover serve`'s admin listener (`--admin ADDR`, loopback by default):
//! a small HTTP/1.1 server on serve's tokio runtime, and its router.
//!
//! Today it serves `GET /metrics` (Prometheus, in the OpenMetrics text
//! format `prometheus-client` writes); everything else is a 404, and other
//! methods on a known path a 405. New endpoints (the `/api/v1` of issue
//! 21) are new arms of [`route`].
//!
//! **Binding, and handovers.** The admin socket is not handed over to a
//! successor (`serve --takeover`) as the proxies' are: the successor binds
//! it itself, retrying every second while the serve it takes over from
//! still holds it; so for the second or so a handover takes, scrapes go to
//! the old serve, then to the new one. A port that cannot be bound (taken
//! by something else) is said once, and retried: serve carries on without
//! metrics rather than refusing to run its services.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use drover_core::metrics::{self, Metrics};
use drover_core::supervisor::Say;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::runtime::Handle;

/// The default admin address: loopback only; 9465 is free in Prometheus'
/// list of default exporter ports, next to the proxies' usual ones.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9465";

/// How long between attempts to bind a taken admin port.
const RETRY: Duration = Duration::from_secs(1);

/// What the handlers read.
pub struct State {
    pub metrics: Arc<Metrics>,
}

/// Listen on `addr` (retrying while it is taken) and answer there until
/// the runtime stops.
pub fn spawn(rt: &Handle, addr: SocketAddr, state: Arc<State>, say: Say) {
    rt.spawn(async move {
        let mut told = false;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) => {
                    if !told {
                        say(format_args!(
                            "admin: cannot listen on {addr}: {e}; retrying every second \
                             (metrics are unavailable until then)"
                        ));
                        told = true;
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        say(format_args!("admin: metrics on http://{addr}/metrics"));
        accept(listener, state).await;
    });
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            // Out of descriptors, say: give closing ones a moment.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&req, &state)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), service)
                .await;
        });
    }
}

/// The router: one arm per path.
pub fn route<B>(req: &Request<B>, state: &State) -> Response<Full<Bytes>> {
    match req.uri().path() {
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
            crate::dashboard::response(req.method(), p)
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found; drover serve's admin listener serves /metrics\n",
        ),
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    text(status, "text/plain; charset=utf-8", body.to_string())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, method: Method) -> Response<Full<Bytes>> {
        let state = State {
            metrics: Arc::new(Metrics::new(None)),
        };
        state
            .metrics
            .proxy_request("web", 200, Duration::from_millis(2));
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        route(&req, &state)
    }

    #[test]
    fn metrics_are_served_and_nothing_else_yet() {
        let r = get("/metrics", Method::GET);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], metrics::CONTENT_TYPE);
        assert_eq!(get("/", Method::GET).status(), StatusCode::OK); // the dashboard
        assert_eq!(
            get("/api/v1/services", Method::GET).status(),
            StatusCode::NOT_FOUND
        );
        let r = get("/metrics", Method::POST);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
    }
}

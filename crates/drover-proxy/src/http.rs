//! HTTP: HTTP/1.1 and h2c from clients, HTTP/1.1 to backends on a
//! keep-alive pool; hop-by-hop headers dropped, `X-Forwarded-*` set;
//! retries only where nothing can have reached a backend; the proxy's own
//! error responses (`reply`, the one place errors become statuses).

use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{self, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;

use tracing::{debug, warn};

use crate::routes::{InFlight, Routes, Target};
use crate::{Chain, Config};

/// Idle pooled connections to backends are closed after this long: shorter
/// than the keep-alive timeouts of common servers (Node.js: 5 s), so the
/// proxy closes an idle connection before the backend does and never sends
/// a request down one the backend is closing.
const POOL_IDLE: Duration = Duration::from_secs(4);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Headers that describe one hop, never forwarded (RFC 9110 7.6.1), besides
/// those the `Connection` header names.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let header::Entry::Occupied(connection) = headers.entry(header::CONNECTION) {
        let (_, listed) = connection.remove_entry_mult();
        let listed: Vec<HeaderValue> = listed.collect();
        for value in &listed {
            let Ok(value) = value.to_str() else { continue };
            for name in value.split(',') {
                if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                    headers.remove(name);
                }
            }
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

pub(crate) struct HttpProxy {
    routes: Routes,
    client: Client<HttpConnector, Outgoing>,
    request_timeout: Duration,
}

impl HttpProxy {
    pub(crate) fn new(routes: Routes, config: &Config) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Self {
            routes,
            client,
            request_timeout: config.request_timeout,
        }
    }

    /// One request from a client, whose address is `client_ip`: the
    /// backend's response, or the proxy's own error response.
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        client_ip: HeaderValue,
    ) -> Response<RespBody> {
        self.routes.count(|s| &s.requests);
        let began = Instant::now();
        let (parts, body) = req.into_parts();
        let mut head = Head {
            method: parts.method,
            path: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            headers: parts.headers,
        };
        let h = &mut head.headers;
        if !h.contains_key(header::HOST) {
            // HTTP/2 carries the host in the URI (:authority).
            if let Some(host) = parts.uri.authority().and_then(|a| a.as_str().parse().ok()) {
                h.insert(header::HOST, host);
            }
        }
        strip_hop_by_hop(h);
        match h.entry(X_FORWARDED_FOR) {
            header::Entry::Vacant(e) => {
                e.insert(client_ip);
            }
            header::Entry::Occupied(mut e) => {
                let mut chain = e.get().as_bytes().to_vec();
                chain.extend_from_slice(b", ");
                chain.extend_from_slice(client_ip.as_bytes());
                if let Ok(v) = HeaderValue::from_bytes(&chain) {
                    e.insert(v);
                }
            }
        }
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));

        let resp = match tokio::time::timeout(self.request_timeout, self.dispatch(head, body)).await
        {
            Ok(Ok(resp)) => resp,
            Ok(Err(status)) => reply(&self.routes, status),
            Err(_) => {
                warn!(
                    service = %self.routes.service(),
                    timeout = ?self.request_timeout,
                    "no instance answered in time; answering 504"
                );
                self.observe_error("timeout");
                reply(&self.routes, StatusCode::GATEWAY_TIMEOUT)
            }
        };
        if let Some((service, o)) = self.routes.observer() {
            o.request(service, resp.status().as_u16(), began.elapsed());
        }
        resp
    }

    fn observe_error(&self, kind: &'static str) {
        if let Some((service, o)) = self.routes.observer() {
            o.upstream_error(service, kind);
        }
    }

    /// Send the request to backends until one answers or none is left to
    /// try; `Err` is the status to answer with.
    async fn dispatch(
        &self,
        mut head: Head,
        body: Incoming,
    ) -> Result<Response<RespBody>, StatusCode> {
        let mut body = (!body.is_end_stream()).then_some(body);
        let mut tried: Vec<Arc<Target>> = Vec::new();
        loop {
            let Some((guard, more)) = self.routes.pick(&tried) else {
                return Err(if tried.is_empty() {
                    debug!(
                        service = %self.routes.service(),
                        "no instance is routable; answering 503"
                    );
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::BAD_GATEWAY
                });
            };
            // Keep what a retry needs only if there is somewhere to retry.
            let (outgoing, returned) = match body.take() {
                None => (Outgoing::empty(), None),
                Some(b) if more => {
                    let (tx, rx) = oneshot::channel();
                    (Outgoing::lent(b, tx), Some(rx))
                }
                Some(b) => (Outgoing::given(b), None),
            };
            let req = head.request(&guard.0, outgoing, more);
            match self.client.request(req).await {
                Ok(resp) => {
                    guard.0.served.fetch_add(1, Ordering::Relaxed);
                    let (mut parts, body) = resp.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    return Ok(Response::from_parts(parts, RespBody::relay(body, guard)));
                }
                Err(e) if e.is_connect() => {
                    let (service, t) = (self.routes.service(), &guard.0);
                    self.routes.cool_down(t);
                    self.observe_error("connect");
                    if !more {
                        warn!(
                            %service, instance = %t.id, addr = %t.addr, error = %Chain(&e),
                            "cannot connect to the instance, and none is left to try; answering 502"
                        );
                        return Err(StatusCode::BAD_GATEWAY);
                    }
                    debug!(
                        %service, instance = %t.id, addr = %t.addr, error = %Chain(&e),
                        "cannot connect to the instance; trying the next"
                    );
                    if let Some((service, o)) = self.routes.observer() {
                        o.retry(service);
                    }
                    // The body was never polled: the pool hands it back when it
                    // drops the request, before the error comes out.
                    if let Some(mut rx) = returned {
                        match rx.try_recv() {
                            Ok(b) => body = Some(b),
                            Err(_) => return Err(StatusCode::BAD_GATEWAY),
                        }
                    }
                    tried.push(Arc::clone(&guard.0));
                }
                Err(e) => {
                    warn!(
                        service = %self.routes.service(),
                        instance = %guard.0.id,
                        addr = %guard.0.addr,
                        error = %Chain(&e),
                        "the instance failed after the request was sent; answering 502"
                    );
                    self.observe_error("response");
                    return Err(StatusCode::BAD_GATEWAY);
                }
            }
        }
    }
}

/// The proxy's own answers; the one place errors become statuses.
fn reply(routes: &Routes, status: StatusCode) -> Response<RespBody> {
    let text = match status {
        StatusCode::SERVICE_UNAVAILABLE => {
            routes.count(|s| &s.unavailable);
            "no instance of this service is available\n"
        }
        StatusCode::GATEWAY_TIMEOUT => {
            routes.count(|s| &s.failures);
            "the instance did not answer in time\n"
        }
        _ => {
            routes.count(|s| &s.failures);
            "the instance failed to answer\n"
        }
    };
    let mut resp = Response::new(RespBody::text(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The parts of a request that every attempt sends.
struct Head {
    method: Method,
    path: PathAndQuery,
    headers: HeaderMap,
}

impl Head {
    /// The request for target `to`; copies the head if `keep` (a retry may
    /// follow), else moves it out.
    fn request(&mut self, to: &Target, body: Outgoing, keep: bool) -> Request<Outgoing> {
        let mut uri = uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(to.authority.clone());
        uri.path_and_query = Some(self.path.clone());
        let mut req = Request::new(body);
        *req.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        if keep {
            *req.method_mut() = self.method.clone();
            *req.headers_mut() = self.headers.clone();
        } else {
            *req.method_mut() = mem::take(&mut self.method);
            *req.headers_mut() = mem::take(&mut self.headers);
        }
        req
    }
}

/// The body of a request to a backend: the client's, streamed. If it is
/// dropped unpolled (the connection could not be made), it goes back
/// through `back` for the next attempt.
struct Outgoing {
    body: Option<Incoming>,
    back: Option<oneshot::Sender<Incoming>>,
}

impl Outgoing {
    fn empty() -> Self {
        Self {
            body: None,
            back: None,
        }
    }
    fn given(body: Incoming) -> Self {
        Self {
            body: Some(body),
            back: None,
        }
    }
    fn lent(body: Incoming, back: oneshot::Sender<Incoming>) -> Self {
        Self {
            body: Some(body),
            back: Some(back),
        }
    }
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // Polled once, it is the backend's: no retry can have it back.
        this.back = None;
        match &mut this.body {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        if let (Some(body), Some(back)) = (self.body.take(), self.back.take()) {
            let _ = back.send(body);
        }
    }
}

/// The body of a response to a client: a backend's, streamed, with the
/// request counted in flight until it has all been passed on (or the
/// client is gone and hyper drops it); or a short text of the proxy's own.
pub(crate) struct RespBody {
    inner: Inner,
    guard: Option<InFlight>,
}

enum Inner {
    Relay(Incoming),
    Text(Option<Bytes>),
}

impl RespBody {
    fn relay(body: Incoming, guard: InFlight) -> Self {
        Self {
            inner: Inner::Relay(body),
            guard: Some(guard),
        }
    }
    fn text(text: &'static str) -> Self {
        Self {
            inner: Inner::Text(Some(Bytes::from_static(text.as_bytes()))),
            guard: None,
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::Relay(b) => {
                let frame = ready!(Pin::new(b).poll_frame(cx));
                if !matches!(frame, Some(Ok(_))) {
                    this.guard = None; // the backend is done with it
                }
                Poll::Ready(frame)
            }
            Inner::Text(t) => Poll::Ready(t.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Relay(b) => b.is_end_stream(),
            Inner::Text(t) => t.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Relay(b) => b.size_hint(),
            Inner::Text(t) => SizeHint::with_exact(t.as_ref().map_or(0, |t| t.len() as u64)),
        }
    }
}

//! drover-proxy: the reverse proxy of `drover serve`, a library of its own
//! because of its dependencies (hyper's server and client, h2, tokio), which
//! drover's domain logic (drover-core) does without. It knows nothing of
//! stores or releases: it is given backends as plain data.
//!
//! [`serve`] runs one listener; [`Proxies`] keeps many services' listeners
//! and routes on a runtime, for a caller on a plain thread.
//!
//! The reverse proxy in front of a service: one listener, a set of routable
//! backends that the reconciler replaces whenever it likes ([`Routes::set`]),
//! and exact in-flight counts per backend ([`Routes::in_flight`]) so that an
//! instance is stopped only once the proxy has nothing left running on it.
//!
//! - **HTTP** ([`Mode::Http`]): HTTP/1.1 and HTTP/2 with prior knowledge (h2c)
//!   on the same plaintext port. Requests go to the backends over HTTP/1.1 on
//!   a keep-alive pool (hyper-util's legacy `Client`), bodies streamed both
//!   ways. Hop-by-hop headers are dropped in both directions; the client's
//!   `Host` is kept (from `:authority` for HTTP/2); `X-Forwarded-For` gets the
//!   client's address appended and `X-Forwarded-Proto` is set to `http`.
//! - **TCP** ([`Mode::Tcp`]): each connection is joined to one backend
//!   connection, bytes copied both ways.
//!
//! **Balancing** is round-robin over the routable set (an atomic counter).
//! A backend that refused a connection is skipped for [`COOL_DOWN`] unless
//! every backend is, so a crashed instance costs one refused connect, not one
//! per request, until the reconciler takes it out.
//!
//! **Retries** happen only when nothing of the request can have reached a
//! backend: the connection to it could not be made (refused, reset, timed
//! out). The request then goes to the next backend it has not tried, each
//! routable backend at most once, body included (a body is never polled
//! before the connection exists, so it is handed back intact). Anything that
//! fails after the request was sent is a 502: it may have had effects.
//! A stale pooled connection (closed by the backend while idle) is retried by
//! the pool itself when hyper knows the request was not written.
//!
//! **Draining**: [`Routes::set`] swaps the routable set under a write lock;
//! a request takes its backend and counts itself in flight under the read
//! lock, so once `set` returns no request can start on a removed backend,
//! and `in_flight` already counts every request that did. An HTTP request
//! counts from dispatch until its response body has been passed on in full
//! (or the client went away); a TCP connection while it is open.
//!
//! **Errors** become statuses in one place ([`reply`]): 503 when nothing is
//! routable, 502 when the backends failed, 504 after
//! [`Config::request_timeout`] without a response head.

use std::convert::Infallible;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{self, Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

mod proxies;

pub use proxies::{Listen, Proxies, Say};

/// How long a backend that refused a connection is passed over.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// Idle pooled connections to backends are closed after this long: shorter
/// than the keep-alive timeouts of common servers (Node.js: 5 s), so the
/// proxy closes an idle connection before the backend does and never sends
/// a request down one the backend is closing.
const POOL_IDLE: Duration = Duration::from_secs(4);

/// What a listener speaks (a service's `proxy` setting in its fleet file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/1.1 and HTTP/2, request by request.
    #[default]
    Http,
    /// Plain TCP, connection by connection.
    Tcp,
}

/// One place traffic can go: an instance, by id, and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
}

/// Tunables of one listener. The defaults suit `drover serve`.
#[derive(Clone, Debug)]
pub struct Config {
    /// From receiving a request to the backend's response head, retries
    /// included; then 504. The body is not timed (it may stream for hours).
    pub request_timeout: Duration,
    /// Per connection attempt to a backend; a backend that has not accepted
    /// by then counts as refused, and the request moves on. Over 3 s on
    /// purpose: a backend whose accept queue is full drops the SYN, and
    /// Linux sends it again after 1 s, then 2 s more (busybox httpd's queue
    /// holds 9 connections: under load, 1 s here turned into 502s).
    pub connect_timeout: Duration,
    /// After shutdown, how long in-flight requests and connections get to
    /// finish before they are cut.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Counters of one listener since its [`Routes`] was made. For TCP, a
/// "request" is a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received.
    pub requests: u64,
    /// 502 and 504 the proxy produced (TCP: connections closed because no
    /// backend could be reached).
    pub failures: u64,
    /// 503 because nothing was routable (TCP: connections closed for it).
    pub unavailable: u64,
    /// Connection attempts to backends that failed (the request or
    /// connection then moved on to the next backend, if one was left).
    pub connect_errors: u64,
    /// The routable backends, then the removed ones still busy.
    pub backends: Vec<BackendStats>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStats {
    pub id: String,
    pub addr: SocketAddr,
    pub routable: bool,
    pub in_flight: usize,
    /// Responses (TCP: connections) this backend produced. A backend's
    /// counters go once it is removed and idle.
    pub served: u64,
}

/// Shared routing state for one listener; cheap to clone.
#[derive(Clone)]
pub struct Routes(Arc<Shared>);

struct Shared {
    /// The routable set. Read (briefly) by every request, written by `set`.
    live: RwLock<Vec<Arc<Target>>>,
    /// Every target a request may still be using: the live ones and the
    /// removed ones with requests in flight. Only `set`, `in_flight` and
    /// `stats` take this lock.
    known: Mutex<Vec<Arc<Target>>>,
    next: AtomicUsize,
    epoch: Instant,
    requests: AtomicU64,
    failures: AtomicU64,
    unavailable: AtomicU64,
    connect_errors: AtomicU64,
}

struct Target {
    id: String,
    addr: SocketAddr,
    /// `addr` as a URI authority, made once.
    authority: Authority,
    in_flight: AtomicUsize,
    served: AtomicU64,
    /// Pass this backend over until then (ms since `Shared::epoch`); 0 = no.
    cool_until: AtomicU64,
}

impl Target {
    fn new(b: Backend) -> Self {
        let authority = Authority::try_from(b.addr.to_string())
            .expect("a socket address is a valid URI authority");
        Self {
            id: b.id,
            addr: b.addr,
            authority,
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            cool_until: AtomicU64::new(0),
        }
    }
}

/// One request (or TCP connection) in flight to a target; counted from
/// creation to drop.
struct InFlight(Arc<Target>);

impl InFlight {
    fn enter(t: &Arc<Target>) -> Self {
        t.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(t))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    pub fn new() -> Self {
        Self(Arc::new(Shared {
            live: RwLock::new(Vec::new()),
            known: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
        }))
    }

    /// Replace the routable set. Backends not in the new set get no new
    /// requests or connections from the moment this returns; those in flight
    /// finish. A backend keeps its counters as long as its id and address
    /// stay the same. Duplicate ids: the first wins.
    pub fn set(&self, backends: Vec<Backend>) {
        let s = &self.0;
        let mut known = s.known.lock().unwrap_or_else(PoisonError::into_inner);
        let mut live: Vec<Arc<Target>> = Vec::with_capacity(backends.len());
        for b in backends {
            if live.iter().any(|t| t.id == b.id) {
                continue;
            }
            let t = known
                .iter()
                .find(|t| t.id == b.id && t.addr == b.addr)
                .cloned()
                .unwrap_or_else(|| Arc::new(Target::new(b)));
            live.push(t);
        }
        // Once the write lock is ours, no pick is running on the old set:
        // every request it let through is already counted in flight.
        *s.live.write().unwrap_or_else(PoisonError::into_inner) = live.clone();
        known.retain(|t| {
            !live.iter().any(|l| Arc::ptr_eq(l, t)) && t.in_flight.load(Ordering::SeqCst) > 0
        });
        live.append(&mut known);
        *known = live;
    }

    /// Requests (HTTP) or connections (TCP) in flight to backend `id` right
    /// now; 0 if unknown.
    pub fn in_flight(&self, id: &str) -> usize {
        let known = self.0.known.lock().unwrap_or_else(PoisonError::into_inner);
        known
            .iter()
            .filter(|t| t.id == id)
            .map(|t| t.in_flight.load(Ordering::SeqCst))
            .sum()
    }

    pub fn stats(&self) -> Stats {
        let s = &self.0;
        let known = s.known.lock().unwrap_or_else(PoisonError::into_inner);
        let live = s.live.read().unwrap_or_else(PoisonError::into_inner);
        Stats {
            requests: s.requests.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            unavailable: s.unavailable.load(Ordering::Relaxed),
            connect_errors: s.connect_errors.load(Ordering::Relaxed),
            backends: known
                .iter()
                .map(|t| BackendStats {
                    id: t.id.clone(),
                    addr: t.addr,
                    routable: live.iter().any(|l| Arc::ptr_eq(l, t)),
                    in_flight: t.in_flight.load(Ordering::SeqCst),
                    served: t.served.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// The next backend for a request that has already failed on `tried`,
    /// counted in flight, and whether another untried one was left besides
    /// it. Round-robin, passing over backends that are cooling down unless
    /// nothing else is left.
    fn pick(&self, tried: &[Arc<Target>]) -> Option<(InFlight, bool)> {
        let s = &self.0;
        let live = s.live.read().unwrap_or_else(PoisonError::into_inner);
        let n = live.len();
        if n == 0 {
            return None;
        }
        let base = s.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut now = None;
        let (mut chosen, mut fallback, mut candidates) = (None, None, 0);
        for k in 0..n {
            let t = &live[(base + k) % n];
            if tried.iter().any(|x| Arc::ptr_eq(x, t)) {
                continue;
            }
            candidates += 1;
            if chosen.is_none() {
                if self.cooling(t, &mut now) {
                    fallback.get_or_insert(t);
                } else {
                    chosen = Some(t);
                }
            }
            if chosen.is_some() && candidates > 1 {
                break;
            }
        }
        let t = chosen.or(fallback)?;
        // Counted while the read lock is held: see `set`.
        Some((InFlight::enter(t), candidates > 1))
    }

    fn now_ms(&self) -> u64 {
        self.0.epoch.elapsed().as_millis() as u64 + 1
    }

    fn cooling(&self, t: &Target, now: &mut Option<u64>) -> bool {
        let until = t.cool_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        let now = *now.get_or_insert_with(|| self.now_ms());
        if now < until {
            return true;
        }
        // Expired: clear it, so picks stop reading the clock for it.
        let _ = t
            .cool_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        false
    }

    /// `t` refused a connection: pass it over for a while.
    fn cool_down(&self, t: &Target) {
        let until = self.now_ms() + COOL_DOWN.as_millis() as u64;
        t.cool_until.store(until, Ordering::Relaxed);
        self.0.connect_errors.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self, counter: fn(&Shared) -> &AtomicU64) {
        counter(&self.0).fetch_add(1, Ordering::Relaxed);
    }
}

/// Serve `listener` until `shutdown` turns true (or its sender goes away);
/// then stop accepting and let in-flight requests and connections finish,
/// for at most the default [`Config::shutdown_grace`].
pub async fn serve(
    listener: TcpListener,
    mode: Mode,
    routes: Routes,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    serve_with(listener, mode, routes, Config::default(), shutdown).await
}

/// [`serve`] with explicit tunables.
pub async fn serve_with(
    listener: TcpListener,
    mode: Mode,
    routes: Routes,
    config: Config,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let conns = Conns::new();
    let accepted = match mode {
        Mode::Http => {
            let proxy = Arc::new(HttpProxy::new(routes, &config));
            let mut server = auto::Builder::new(TokioExecutor::new());
            server.http1().timer(TokioTimer::new());
            server.http2().timer(TokioTimer::new());
            accept(listener, shutdown, |sock, peer| {
                conns.spawn_http(&server, sock, peer, &proxy)
            })
            .await
        }
        Mode::Tcp => {
            let proxy = Arc::new(TcpProxy {
                routes,
                connect_timeout: config.connect_timeout,
            });
            accept(listener, shutdown, |sock, _| conns.spawn_tcp(sock, &proxy)).await
        }
    };
    conns.drain(config.shutdown_grace).await;
    accepted
}

/// Accept until `shutdown`; the listener is closed on return.
async fn accept(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    mut on_conn: impl FnMut(TcpStream, SocketAddr),
) -> io::Result<()> {
    let stop = async move {
        // An error means the sender is gone: nobody can keep us running.
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    on_conn(sock, peer);
                }
                Err(e) => match e.raw_os_error() {
                    // The listener itself is broken: nothing will get better.
                    Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP) => {
                        return Err(e);
                    }
                    // Out of descriptors or memory: give closing ones a moment.
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    // Errors of one connection (aborted, reset): next.
                    _ => {}
                },
            },
        }
    }
}

/// Where the open connections of a listener are in its shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Run,
    /// Finish what is in flight, take nothing new.
    Drain,
    /// Grace is over: cut.
    Close,
}

/// The connection tasks of one listener: tells them the phase, and knows
/// when the last one has ended (every task holds a clone of `alive`).
struct Conns {
    phase: watch::Sender<Phase>,
    alive: mpsc::Sender<()>,
    ended: mpsc::Receiver<()>,
}

impl Conns {
    fn new() -> Self {
        let (alive, ended) = mpsc::channel(1);
        Self {
            phase: watch::Sender::new(Phase::Run),
            alive,
            ended,
        }
    }

    fn spawn_http(
        &self,
        server: &auto::Builder<TokioExecutor>,
        sock: TcpStream,
        peer: SocketAddr,
        proxy: &Arc<HttpProxy>,
    ) {
        let proxy = Arc::clone(proxy);
        let client_ip = HeaderValue::try_from(peer.ip().to_canonical().to_string())
            .expect("an IP address is a valid header value");
        let service = hyper::service::service_fn(move |req| {
            let proxy = Arc::clone(&proxy);
            let client_ip = client_ip.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, client_ip).await) }
        });
        let conn = server
            .serve_connection(TokioIo::new(sock), service)
            .into_owned();
        let mut phase = self.phase.subscribe();
        let alive = self.alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            tokio::pin!(conn);
            loop {
                tokio::select! {
                    _ = conn.as_mut() => return,
                    changed = phase.changed() => {
                        if changed.is_err() {
                            return; // serve() is gone
                        }
                        match *phase.borrow_and_update() {
                            Phase::Run => {}
                            // h1: finish the request in progress, then close;
                            // h2: GOAWAY, finish the open streams.
                            Phase::Drain => conn.as_mut().graceful_shutdown(),
                            Phase::Close => return,
                        }
                    }
                }
            }
        });
    }

    fn spawn_tcp(&self, sock: TcpStream, proxy: &Arc<TcpProxy>) {
        let proxy = Arc::clone(proxy);
        let mut phase = self.phase.subscribe();
        let alive = self.alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            // A byte stream cannot be asked to finish early: it runs until
            // either side closes it, or the grace period ends.
            tokio::select! {
                () = proxy.handle(sock) => {}
                _ = phase.wait_for(|p| *p == Phase::Close) => {}
            }
        });
    }

    /// Ask every connection to finish, wait for them, cut them after `grace`.
    async fn drain(self, grace: Duration) {
        let Self {
            phase,
            alive,
            mut ended,
        } = self;
        drop(alive);
        phase.send_replace(Phase::Drain);
        if tokio::time::timeout(grace, ended.recv()).await.is_err() {
            phase.send_replace(Phase::Close);
            ended.recv().await;
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP

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

struct HttpProxy {
    routes: Routes,
    client: Client<HttpConnector, Outgoing>,
    request_timeout: Duration,
}

impl HttpProxy {
    fn new(routes: Routes, config: &Config) -> Self {
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
    async fn handle(&self, req: Request<Incoming>, client_ip: HeaderValue) -> Response<RespBody> {
        self.routes.count(|s| &s.requests);
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

        match tokio::time::timeout(self.request_timeout, self.dispatch(head, body)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(status)) => reply(&self.routes, status),
            Err(_) => reply(&self.routes, StatusCode::GATEWAY_TIMEOUT),
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
                    self.routes.cool_down(&guard.0);
                    if !more {
                        return Err(StatusCode::BAD_GATEWAY);
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
                Err(_) => return Err(StatusCode::BAD_GATEWAY),
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
struct RespBody {
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

// ---------------------------------------------------------------------------
// TCP

struct TcpProxy {
    routes: Routes,
    connect_timeout: Duration,
}

impl TcpProxy {
    /// Join one client connection to a backend until either side closes.
    async fn handle(&self, mut client: TcpStream) {
        let routes = &self.routes;
        routes.count(|s| &s.requests);
        let mut tried: Vec<Arc<Target>> = Vec::new();
        loop {
            let Some((guard, _)) = routes.pick(&tried) else {
                // Closing the connection is all TCP can say.
                routes.count(if tried.is_empty() {
                    |s| &s.unavailable
                } else {
                    |s| &s.failures
                });
                return;
            };
            let connect = TcpStream::connect(guard.0.addr);
            match tokio::time::timeout(self.connect_timeout, connect).await {
                Ok(Ok(mut backend)) => {
                    guard.0.served.fetch_add(1, Ordering::Relaxed);
                    let _ = backend.set_nodelay(true);
                    // Errors are either side going away: nothing to report.
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                    return;
                }
                Ok(Err(_)) | Err(_) => {
                    routes.cool_down(&guard.0);
                    tried.push(Arc::clone(&guard.0));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::{BodyExt, Channel, Either, Full};
    use hyper::server::conn::http1;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;
    use tokio::task::JoinHandle;

    use super::*;

    type TestClient = Client<HttpConnector, Full<Bytes>>;

    fn h1_client() -> TestClient {
        Client::builder(TokioExecutor::new()).build_http()
    }

    fn h2_client() -> TestClient {
        Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http()
    }

    /// An HTTP/1.1 backend on 127.0.0.1 that answers, by path:
    /// `/slow/<ms>` after that many milliseconds; `/stream` with "first\n",
    /// then "last\n" once `release` is notified; anything else with what it
    /// received (request line, headers sorted, blank line, body). Every
    /// answer has `x-backend: <name>` and a few hop-by-hop headers.
    struct TestBackend {
        id: &'static str,
        addr: SocketAddr,
        release: Arc<Notify>,
    }

    impl TestBackend {
        fn route(&self) -> Backend {
            Backend {
                id: self.id.to_string(),
                addr: self.addr,
            }
        }
    }

    async fn backend(id: &'static str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(Notify::new());
        let rel = Arc::clone(&release);
        tokio::spawn(async move {
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                let rel = Arc::clone(&rel);
                let service =
                    hyper::service::service_fn(move |req| answer(id, req, Arc::clone(&rel)));
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(sock), service));
            }
        });
        TestBackend { id, addr, release }
    }

    type TestBody = Either<Full<Bytes>, Channel<Bytes>>;

    async fn answer(
        id: &'static str,
        req: Request<Incoming>,
        release: Arc<Notify>,
    ) -> Result<Response<TestBody>, hyper::Error> {
        let path = req.uri().path().to_string();
        let body = if let Some(ms) = path.strip_prefix("/slow/") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            Either::Left(Full::from(id))
        } else if path == "/stream" {
            let (mut tx, body) = Channel::new(1);
            tokio::spawn(async move {
                tx.send_data(Bytes::from_static(b"first\n")).await.unwrap();
                release.notified().await;
                tx.send_data(Bytes::from_static(b"last\n")).await.unwrap();
            });
            Either::Right(body)
        } else {
            let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
            let mut lines: Vec<String> = req
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap()))
                .collect();
            lines.sort();
            text.extend(lines);
            text.push('\n');
            let body = req.into_body().collect().await?.to_bytes();
            text.push_str(std::str::from_utf8(&body).unwrap());
            Either::Left(Full::from(text))
        };
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert("x-backend", HeaderValue::from_static(id));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("connection", HeaderValue::from_static("x-hop"));
        Ok(resp)
    }

    /// A TCP echo server on 127.0.0.1.
    async fn echo_backend(id: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = sock.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Backend {
            id: id.to_string(),
            addr,
        }
    }

    /// A backend that was just here: an address nothing listens on.
    async fn dead(id: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        Backend {
            id: id.to_string(),
            addr,
        }
    }

    struct TestProxy {
        addr: SocketAddr,
        routes: Routes,
        stop: watch::Sender<bool>,
        task: JoinHandle<io::Result<()>>,
    }

    impl TestProxy {
        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }
    }

    async fn proxy(mode: Mode, backends: Vec<Backend>, config: Config) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = Routes::new();
        routes.set(backends);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve_with(listener, mode, routes.clone(), config, stopped));
        TestProxy {
            addr,
            routes,
            stop,
            task,
        }
    }

    async fn send(
        client: &TestClient,
        req: Request<Full<Bytes>>,
    ) -> (StatusCode, HeaderMap, String) {
        let resp = client.request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    async fn get(client: &TestClient, url: &str) -> (StatusCode, HeaderMap, String) {
        send(client, Request::get(url).body(Full::default()).unwrap()).await
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..400 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("not within 2 s: {what}");
    }

    fn served(routes: &Routes, id: &str) -> u64 {
        routes
            .stats()
            .backends
            .iter()
            .filter(|b| b.id == id)
            .map(|b| b.served)
            .sum()
    }

    #[tokio::test]
    async fn h1_request_is_forwarded_without_hop_by_hop_headers() {
        let a = backend("a").await;
        let p = proxy(Mode::Http, vec![a.route()], Config::default()).await;
        let req = Request::post(p.url("/echo?x=1&y=two"))
            .header("host", "example.test")
            .header("x-custom", "yes")
            .header("connection", "x-drop")
            .header("x-drop", "1")
            .header("keep-alive", "300")
            .header("proxy-connection", "keep-alive")
            .header("te", "trailers")
            .header("x-forwarded-for", "10.0.0.1")
            .body(Full::from("hello body"))
            .unwrap();
        let (status, headers, echo) = send(&h1_client(), req).await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-backend"], "a");
        for hop in ["keep-alive", "x-hop", "connection"] {
            assert!(
                !headers.contains_key(hop),
                "{hop} reached the client: {headers:?}"
            );
        }
        let (head, body) = echo.split_once("\n\n").unwrap();
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("POST /echo?x=1&y=two HTTP/1.1"));
        let headers: Vec<&str> = lines.collect();
        for want in [
            "host: example.test",
            "x-custom: yes",
            "x-forwarded-for: 10.0.0.1, 127.0.0.1",
            "x-forwarded-proto: http",
            "content-length: 10",
        ] {
            assert!(headers.contains(&want), "{want:?} missing from {headers:?}");
        }
        for gone in [
            "connection:",
            "x-drop:",
            "keep-alive:",
            "proxy-connection:",
            "te:",
        ] {
            assert!(
                !headers.iter().any(|h| h.starts_with(gone)),
                "{gone} reached the backend: {headers:?}"
            );
        }
        assert_eq!(body, "hello body");
        assert_eq!(p.routes.in_flight("a"), 0);
        let stats = p.routes.stats();
        assert_eq!((stats.requests, stats.failures), (1, 0));
    }

    #[tokio::test]
    async fn h2_prior_knowledge_request_is_forwarded_over_h1() {
        let a = backend("a").await;
        let p = proxy(Mode::Http, vec![a.route()], Config::default()).await;
        let client = h2_client();

        let resp = client.get(p.url("/q?k=v").parse().unwrap()).await.unwrap();
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.status(), StatusCode::OK);
        let echo = resp.into_body().collect().await.unwrap().to_bytes();
        let echo = std::str::from_utf8(&echo).unwrap();
        assert!(echo.starts_with("GET /q?k=v HTTP/1.1\n"), "{echo}");
        // The client's authority, not the backend's address.
        assert!(echo.contains(&format!("\nhost: {}\n", p.addr)), "{echo}");
        assert!(echo.contains("\nx-forwarded-for: 127.0.0.1\n"), "{echo}");

        let req = Request::put(p.url("/upload"))
            .body(Full::from("over h2"))
            .unwrap();
        let (status, _, echo) = send(&client, req).await;
        assert_eq!(status, StatusCode::OK);
        assert!(echo.starts_with("PUT /upload HTTP/1.1\n"), "{echo}");
        assert!(echo.ends_with("\n\nover h2"), "{echo}");
    }

    #[tokio::test]
    async fn streaming_response_counts_in_flight_until_its_end() {
        let a = backend("a").await;
        let p = proxy(Mode::Http, vec![a.route()], Config::default()).await;
        let resp = h1_client()
            .get(p.url("/stream").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "first\n");
        assert_eq!(p.routes.in_flight("a"), 1);

        a.release.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "last\n");
        eventually("in_flight(a) == 0", || p.routes.in_flight("a") == 0).await;
    }

    #[tokio::test]
    async fn streaming_response_stops_counting_when_the_client_goes_away() {
        let a = backend("a").await;
        let p = proxy(Mode::Http, vec![a.route()], Config::default()).await;
        let resp = h1_client()
            .get(p.url("/stream").parse().unwrap())
            .await
            .unwrap();
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        assert_eq!(p.routes.in_flight("a"), 1);
        drop(body); // the client hangs up mid-stream
        eventually("in_flight(a) == 0", || p.routes.in_flight("a") == 0).await;
    }

    #[tokio::test]
    async fn removed_backend_gets_nothing_new_and_finishes_what_it_has() {
        let (a, b) = (backend("a").await, backend("b").await);
        let p = proxy(Mode::Http, vec![a.route()], Config::default()).await;
        let client = h1_client();
        let slow = tokio::spawn({
            let (client, url) = (client.clone(), p.url("/slow/300"));
            async move { get(&client, &url).await }
        });
        eventually("in_flight(a) == 1", || p.routes.in_flight("a") == 1).await;

        p.routes.set(vec![b.route()]);
        for _ in 0..10 {
            let (status, headers, _) = get(&client, &p.url("/")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers["x-backend"], "b");
        }
        assert_eq!(
            p.routes.in_flight("a"),
            1,
            "the slow request is still running"
        );

        let (status, headers, body) = slow.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
        assert_eq!(headers["x-backend"], "a");
        eventually("in_flight(a) == 0", || p.routes.in_flight("a") == 0).await;
        assert_eq!((served(&p.routes, "a"), served(&p.routes, "b")), (1, 10));
        assert_eq!(p.routes.stats().failures, 0);
    }

    #[tokio::test]
    async fn dead_backend_in_the_set_costs_no_request() {
        let a = backend("a").await;
        let gone = dead("gone").await;
        // The dead one first, so that round-robin tries it first.
        let p = proxy(Mode::Http, vec![gone, a.route()], Config::default()).await;
        let client = h1_client();
        for i in 0..100 {
            // With a body: a retried request must still carry it.
            let req = Request::post(p.url("/"))
                .body(Full::from(format!("n={i}")))
                .unwrap();
            let (status, _, echo) = send(&client, req).await;
            assert_eq!(status, StatusCode::OK, "request {i}: {echo}");
            assert!(echo.ends_with(&format!("\n\nn={i}")), "request {i}: {echo}");
        }
        let stats = p.routes.stats();
        assert_eq!((stats.requests, stats.failures), (100, 0));
        assert!(
            stats.connect_errors >= 1,
            "the dead backend was never tried: {stats:?}"
        );
        assert_eq!(served(&p.routes, "a"), 100);
        assert_eq!(p.routes.in_flight("gone"), 0);
    }

    #[tokio::test]
    async fn no_reachable_backend_is_502_and_no_backend_is_503() {
        let gone = dead("gone").await;
        let p = proxy(Mode::Http, vec![gone], Config::default()).await;
        let client = h1_client();
        let (status, _, _) = get(&client, &p.url("/")).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);

        p.routes.set(Vec::new());
        let (status, headers, body) = get(&client, &p.url("/")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(body, "no instance of this service is available\n");

        let stats = p.routes.stats();
        assert_eq!(
            (stats.requests, stats.failures, stats.unavailable),
            (2, 1, 1)
        );
    }

    #[tokio::test]
    async fn slow_backend_is_504_after_the_request_timeout() {
        let a = backend("a").await;
        let config = Config {
            request_timeout: Duration::from_millis(100),
            ..Config::default()
        };
        let p = proxy(Mode::Http, vec![a.route()], config).await;
        let (status, _, _) = get(&h1_client(), &p.url("/slow/2000")).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(p.routes.in_flight("a"), 0);
        assert_eq!(p.routes.stats().failures, 1);
    }

    #[tokio::test]
    async fn tcp_mode_joins_connections_and_counts_them() {
        let e = echo_backend("e").await;
        let gone = dead("gone").await;
        let p = proxy(Mode::Tcp, vec![gone, e], Config::default()).await;

        let mut c1 = TcpStream::connect(p.addr).await.unwrap();
        let mut c2 = TcpStream::connect(p.addr).await.unwrap();
        for (c, msg) in [(&mut c1, b"ping"), (&mut c2, b"pong")] {
            c.write_all(msg).await.unwrap();
            let mut buf = [0; 4];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, msg);
        }
        assert_eq!(p.routes.in_flight("e"), 2);
        drop(c1);
        eventually("in_flight(e) == 1", || p.routes.in_flight("e") == 1).await;
        drop(c2);
        eventually("in_flight(e) == 0", || p.routes.in_flight("e") == 0).await;

        let stats = p.routes.stats();
        assert_eq!((stats.requests, stats.failures), (2, 0));
        assert!(stats.connect_errors >= 1, "{stats:?}");
        assert_eq!(served(&p.routes, "e"), 2);
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_lets_in_flight_requests_finish() {
        let a = backend("a").await;
        let p = proxy(Mode::Http, vec![a.route()], Config::default()).await;
        let slow = tokio::spawn({
            let (client, url) = (h1_client(), p.url("/slow/300"));
            async move { get(&client, &url).await }
        });
        eventually("in_flight(a) == 1", || p.routes.in_flight("a") == 1).await;

        p.stop.send_replace(true);
        let mut refused = false;
        for _ in 0..100 {
            if TcpStream::connect(p.addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(refused, "still accepting after shutdown");

        let (status, _, body) = slow.await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
        tokio::time::timeout(Duration::from_secs(2), p.task)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
        assert_eq!(p.routes.in_flight("a"), 0);
    }

    #[tokio::test]
    async fn shutdown_cuts_what_is_left_after_the_grace_period() {
        let a = backend("a").await;
        let config = Config {
            shutdown_grace: Duration::from_millis(100),
            ..Config::default()
        };
        let p = proxy(Mode::Http, vec![a.route()], config).await;
        let slow = tokio::spawn({
            let (client, url) = (h1_client(), p.url("/slow/5000"));
            async move { client.get(url.parse().unwrap()).await }
        });
        eventually("in_flight(a) == 1", || p.routes.in_flight("a") == 1).await;

        p.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(2), p.task)
            .await
            .expect("serve returned after the grace period")
            .unwrap()
            .unwrap();
        assert!(
            slow.await.unwrap().is_err(),
            "the cut request has no response"
        );
        assert_eq!(p.routes.in_flight("a"), 0);
    }

    #[test]
    fn set_drains_removed_backends_and_forgets_them_once_idle() {
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (a, b) = (
            Backend {
                id: "a".into(),
                addr: addr(1),
            },
            Backend {
                id: "b".into(),
                addr: addr(2),
            },
        );
        let routes = Routes::new();
        routes.set(vec![a.clone(), b.clone()]);
        let (on_a, more) = routes.pick(&[]).unwrap();
        assert_eq!((on_a.0.id.as_str(), more), ("a", true));
        assert_eq!(routes.in_flight("a"), 1);

        routes.set(vec![b.clone()]);
        for _ in 0..4 {
            let (g, more) = routes.pick(&[]).unwrap();
            assert_eq!((g.0.id.as_str(), more), ("b", false));
        }
        assert_eq!(routes.in_flight("a"), 1, "a's request still counts");
        let names = |r: &Routes| -> Vec<(String, bool)> {
            r.stats()
                .backends
                .into_iter()
                .map(|b| (b.id, b.routable))
                .collect()
        };
        assert_eq!(names(&routes), [("b".into(), true), ("a".into(), false)]);

        drop(on_a);
        assert_eq!(routes.in_flight("a"), 0);
        routes.set(vec![b.clone()]);
        assert_eq!(names(&routes), [("b".into(), true)]);

        // Back again: a fresh start, b's counters kept.
        routes.set(vec![a, b]);
        let g = routes.pick(&[]).unwrap().0;
        assert_eq!(routes.in_flight(&g.0.id), 1);
        drop(g);
        assert_eq!(routes.in_flight("a") + routes.in_flight("b"), 0);
    }

    #[test]
    fn pick_passes_over_a_cooling_backend_unless_it_is_the_last() {
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let routes = Routes::new();
        routes.set(vec![
            Backend {
                id: "a".into(),
                addr: addr(1),
            },
            Backend {
                id: "b".into(),
                addr: addr(2),
            },
        ]);
        let (a, _) = routes.pick(&[]).unwrap();
        assert_eq!(a.0.id, "a");
        routes.cool_down(&a.0);
        for _ in 0..4 {
            assert_eq!(routes.pick(&[]).unwrap().0.0.id, "b");
        }
        // b failed too: a is all that is left, cooling or not.
        let (b, _) = routes.pick(&[]).unwrap();
        let (last, more) = routes.pick(&[Arc::clone(&b.0)]).unwrap();
        assert_eq!((last.0.id.as_str(), more), ("a", false));
    }
}

//! drover-proxy: the reverse proxy of `drover serve`, a library of its own
//! because of its dependencies (hyper's server and client, h2, tokio), which
//! drover's domain logic (drover-core) does without. It knows nothing of
//! stores or releases: it is given backends as plain data.
//!
//! | module | owns |
//! |--------|------|
//! | here | [`Mode`], [`Config`], [`serve`]: one listener, accepting, and the shutdown of its connections |
//! | `routes` | [`Routes`]: the routable set, picks, cool-down, in-flight counts, [`Stats`] |
//! | `http` | HTTP/1.1 and h2c: forwarding, retries, the proxy's own error responses |
//! | `tcp` | TCP: connections joined to backends |
//! | `proxies` | [`Proxies`]: many services' listeners and routes on a runtime, driven from a plain thread |
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
//! **Balancing** is round-robin over the routable set (an atomic counter),
//! by tier: each [`Backend`] has one (`drover serve`: 0 for an instance on
//! this host, 1 for one on another host of the fleet), and a request goes to
//! the lowest tier that has a backend it has not tried yet and that is not
//! cooling down, round-robin within it. So while a service has a ready
//! instance on this host, its new requests stay on this host; with none (or
//! all of them refusing), they go to the other hosts' instances.
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
//! **Observing**: a [`Routes`] made with [`Routes::observed`] (as
//! [`Proxies`] makes them once given an [`Observe`]) reports each HTTP
//! request's status and latency (TCP: each connection, joined or not),
//! upstream errors and retries.
//!
//! **Errors** become statuses in one place (`http::reply`): 503 when
//! nothing is routable, 502 when the backends failed, 504 after
//! [`Config::request_timeout`] without a response head.
//!
//! **Logs**: `tracing` events with the service (and the instance, its
//! address and the error) as fields: a request answered 502 or 504, or a
//! listener that stopped, at warn; a connect error that was retried, a 503,
//! a client connection that ended in an error, at debug. The binary decides
//! where they go and which are kept.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

mod http;
mod proxies;
mod routes;
mod tcp;
#[cfg(test)]
mod tests;

use http::HttpProxy;
pub use proxies::{Listen, Proxies, Sockets};

/// An error and its sources, joined by ": " (hyper's own message is often
/// only "client error (Connect)"; the cause is in its sources).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

/// Where the proxies tell what became of each HTTP request (`drover
/// serve`: its Prometheus metrics). Called on the request's task: keep it
/// to a few atomics.
pub trait Observe: Send + Sync {
    /// `service`'s proxy answered a request with `status` (the backend's,
    /// or its own 502/503/504), `elapsed` after receiving it (to the
    /// response head; the body may stream on).
    fn request(&self, service: &str, status: u16, elapsed: Duration);
    /// An attempt to reach an instance failed: `connect` (refused, reset
    /// or timed out before anything was sent), `response` (failed after
    /// the request was sent), `timeout` (no response head in time).
    fn upstream_error(&self, service: &str, kind: &'static str);
    /// A request (TCP: a connection) went on to another instance after a
    /// connect error.
    fn retry(&self, service: &str);
    /// `service`'s TCP proxy joined a client connection to an instance
    /// (`true`), or had none to join it to (`false`: closed).
    fn connection(&self, service: &str, joined: bool);
}
pub use routes::{Backend, BackendStats, COOL_DOWN, Routes, Stats};
use tcp::TcpProxy;

/// What a listener speaks (a service's `proxy` setting in its fleet file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/1.1 and HTTP/2, request by request.
    #[default]
    Http,
    /// Plain TCP, connection by connection.
    Tcp,
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
                        warn!(error = %e, "cannot accept a connection; retrying in 50 ms");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    // Errors of one connection (aborted, reset): next.
                    _ => debug!(error = %e, "a connection failed before it was accepted"),
                },
            },
        }
    }
}

/// How long a draining HTTP connection may stay open idle, waiting for a
/// request to answer with `Connection: close`, before it is shut down.
const IDLE_CLOSE: Duration = Duration::from_millis(300);

fn self_closing(closing: &std::sync::atomic::AtomicBool) {
    closing.store(true, std::sync::atomic::Ordering::SeqCst);
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
    /// Set at [`Phase::Drain`]: every HTTP/1 response from here on says
    /// `Connection: close`, so a busy keep-alive client (wrk, a pool)
    /// learns it must reconnect — to a successor accepting on the same
    /// socket after a handover — instead of sending its next request on a
    /// connection about to close under it (a read error on its side).
    closing: Arc<std::sync::atomic::AtomicBool>,
    alive: mpsc::Sender<()>,
    ended: mpsc::Receiver<()>,
}

impl Conns {
    fn new() -> Self {
        let (alive, ended) = mpsc::channel(1);
        Self {
            phase: watch::Sender::new(Phase::Run),
            closing: Arc::default(),
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
        let closing = Arc::clone(&self.closing);
        let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
            let proxy = Arc::clone(&proxy);
            let client_ip = client_ip.clone();
            let closing = Arc::clone(&closing);
            async move {
                let h1 = req.version() < hyper::Version::HTTP_2;
                let mut resp = proxy.handle(req, client_ip).await;
                if h1 && closing.load(std::sync::atomic::Ordering::SeqCst) {
                    resp.headers_mut()
                        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = server
            .serve_connection(TokioIo::new(sock), service)
            .into_owned();
        let mut phase = self.phase.subscribe();
        let alive = self.alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            tokio::pin!(conn);
            // Drain: a busy HTTP/1 connection closes after its next
            // response (`Connection: close`); what is still open after
            // IDLE_CLOSE is idle, and is shut down gracefully.
            let later = tokio::time::sleep(Duration::MAX);
            tokio::pin!(later);
            let mut draining = false;
            loop {
                tokio::select! {
                    ended = conn.as_mut() => {
                        if let Err(e) = ended {
                            debug!(%peer, error = %Chain(e.as_ref()), "a client connection ended in an error");
                        }
                        return;
                    }
                    () = &mut later, if draining => {
                        draining = false;
                        conn.as_mut().graceful_shutdown();
                    }
                    changed = phase.changed() => {
                        if changed.is_err() {
                            return; // serve() is gone
                        }
                        match *phase.borrow_and_update() {
                            Phase::Run => {}
                            // h1: finish the request in progress, then close;
                            // h2: GOAWAY, finish the open streams.
                            Phase::Drain => {
                                draining = true;
                                later.as_mut().reset(tokio::time::Instant::now() + IDLE_CLOSE);
                            }
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
            closing,
            alive,
            mut ended,
        } = self;
        drop(alive);
        self_closing(&closing);
        phase.send_replace(Phase::Drain);
        if tokio::time::timeout(grace, ended.recv()).await.is_err() {
            phase.send_replace(Phase::Close);
            ended.recv().await;
        }
    }
}

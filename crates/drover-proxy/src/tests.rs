use std::sync::Arc;

use http_body_util::{BodyExt, Channel, Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
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
            tier: 0,
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
            let service = hyper::service::service_fn(move |req| answer(id, req, Arc::clone(&rel)));
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
        tier: 0,
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
        tier: 0,
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

async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, String) {
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
            tier: 0,
        },
        Backend {
            id: "b".into(),
            addr: addr(2),
            tier: 0,
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
            tier: 0,
        },
        Backend {
            id: "b".into(),
            addr: addr(2),
            tier: 0,
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

/// Local first: while a tier-0 backend is routable and not cooling down,
/// every request goes to tier 0 (round-robin within it); tier 1 takes them
/// when tier 0 is empty, cooling down, or already tried by the request.
#[test]
fn pick_prefers_the_lowest_tier_and_falls_back_to_the_next() {
    let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let b = |id: &str, port, tier| Backend {
        id: id.into(),
        addr: addr(port),
        tier,
    };
    let routes = Routes::new();
    // Given remote first: the order given does not beat the tier.
    routes.set(vec![
        b("r1", 3, 1),
        b("l1", 1, 0),
        b("r2", 4, 1),
        b("l2", 2, 0),
    ]);
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..8 {
        let (g, more) = routes.pick(&[]).unwrap();
        assert!(more, "others are left to retry on");
        *seen.entry(g.0.id.clone()).or_insert(0) += 1;
    }
    assert_eq!(
        seen,
        [("l1".to_string(), 4), ("l2".to_string(), 4)].into(),
        "only the local tier, round-robin"
    );
    let tiers: Vec<(String, u8)> = routes
        .stats()
        .backends
        .into_iter()
        .map(|s| (s.id, s.tier))
        .collect();
    assert_eq!(tiers[0].1, 0, "{tiers:?}");

    // A retry after both locals failed goes remote.
    let (l, _) = routes.pick(&[]).unwrap();
    let (l2, _) = routes.pick(&[Arc::clone(&l.0)]).unwrap();
    assert_eq!(l2.0.tier, 0);
    let (r, more) = routes.pick(&[Arc::clone(&l.0), Arc::clone(&l2.0)]).unwrap();
    assert_eq!((r.0.tier, more), (1, true));

    // Both locals cooling down: remote, until they are done cooling.
    routes.cool_down(&l.0);
    routes.cool_down(&l2.0);
    for _ in 0..4 {
        assert_eq!(routes.pick(&[]).unwrap().0.0.tier, 1);
    }

    // No local instance at all: remote ones, round-robin.
    routes.set(vec![b("r1", 3, 1), b("r2", 4, 1)]);
    let ids: std::collections::BTreeSet<String> = (0..4)
        .map(|_| routes.pick(&[]).unwrap().0.0.id.clone())
        .collect();
    assert_eq!(ids, ["r1".to_string(), "r2".to_string()].into());

    // Everything cooling: the lowest tier's, rather than nothing.
    routes.set(vec![b("l3", 5, 0), b("r3", 6, 1)]);
    let (l, _) = routes.pick(&[]).unwrap();
    assert_eq!(l.0.id, "l3");
    routes.cool_down(&l.0);
    let (r, _) = routes.pick(&[]).unwrap();
    assert_eq!(r.0.id, "r3");
    routes.cool_down(&r.0);
    assert_eq!(routes.pick(&[]).unwrap().0.0.id, "l3");
}

/// A backend moving to another tier (its host became this one, say) is a
/// new target: the pick follows the new tier at once.
#[test]
fn set_follows_a_tier_change() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    let routes = Routes::new();
    let b = |id: &str, tier| Backend {
        id: id.into(),
        addr,
        tier,
    };
    routes.set(vec![b("a", 1), b("b", 0)]);
    assert_eq!(routes.pick(&[]).unwrap().0.0.id, "b");
    routes.set(vec![b("a", 0), b("b", 1)]);
    assert_eq!(routes.pick(&[]).unwrap().0.0.id, "a");
}

/// From a plain thread: connect to 127.0.0.1:`port`, send `request`, and
/// read until the other side closes; `None` if the connection was refused.
fn exchange(port: u16, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    Some(resp)
}

/// An HTTP/1.1 GET of `/` on 127.0.0.1:`port`, as [`exchange`].
fn get_blocking(port: u16) -> Option<String> {
    exchange(
        port,
        "GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n",
    )
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// How `drover serve`'s traffic thread uses [`Proxies`]: from a plain
/// thread, with the wanted listeners and the routes as data.
#[test]
fn proxies_open_route_and_close_listeners_as_told() {
    use std::collections::BTreeMap;
    use std::net::IpAddr;
    use std::sync::Mutex;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let a = rt.block_on(backend("a"));
    let said = Arc::new(Mutex::new(Vec::<String>::new()));
    // `listen` logs on the calling thread: this one.
    let _events = tracing::subscriber::set_default(Events(Arc::clone(&said)));
    let mut proxies = Proxies::new(rt.handle().clone(), IpAddr::from([127, 0, 0, 1]));
    let told = |what: &str| {
        said.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    };
    let web = |ports: Vec<u16>, mode| BTreeMap::from([("web".to_string(), Listen { ports, mode })]);

    let port = free_port();
    proxies.listen(&web(vec![port], Mode::Http));
    assert_eq!(proxies.listening(), ["web"]);
    assert_eq!(
        told(&format!(
            "INFO listening service=web addr=127.0.0.1:{port} protocols=http/1.1, h2c"
        )),
        1,
        "{:?}",
        said.lock().unwrap()
    );
    let resp = get_blocking(port).unwrap();
    assert!(resp.starts_with("HTTP/1.1 503"), "no routes yet: {resp}");

    // Routes of a service without ports are no business of the proxies.
    proxies.route(BTreeMap::from([
        ("web".to_string(), vec![a.route()]),
        ("batch".to_string(), vec![a.route()]),
    ]));
    let resp = get_blocking(port).unwrap();
    assert!(resp.contains("x-backend: a"), "{resp}");
    assert_eq!(proxies.in_flight("web", "a"), 0);
    assert_eq!(proxies.in_flight("batch", "a"), 0);
    assert!(!proxies.busy());

    // A port someone else holds: told once, however often it is asked for.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = taken.local_addr().unwrap().port();
    for _ in 0..3 {
        proxies.listen(&web(vec![port, other], Mode::Http));
    }
    let refused = format!(
        "WARN cannot listen on 127.0.0.1:{other} service=web addr=127.0.0.1:{other} error="
    );
    assert_eq!(told(&refused), 1, "{:?}", said.lock().unwrap());
    assert_eq!(told("INFO listening "), 1, "{:?}", said.lock().unwrap());

    // Another mode: new listeners, with the routes last given (none now).
    proxies.route(BTreeMap::new());
    proxies.listen(&web(vec![port], Mode::Tcp));
    let resp = (0..100)
        .find_map(|_| {
            if told(&format!(
                "listening service=web addr=127.0.0.1:{port} protocols=tcp"
            )) == 0
            {
                // The old listener had the port still: tried again next time.
                std::thread::sleep(Duration::from_millis(10));
                proxies.listen(&web(vec![port], Mode::Tcp));
                return None;
            }
            // Nothing sent: closing a socket with unread bytes resets it.
            exchange(port, "")
        })
        .expect("listening in tcp mode");
    assert_eq!(resp, "", "no routes: the connection is closed");

    // Gone from the wanted set: closed.
    proxies.listen(&BTreeMap::new());
    assert!(proxies.listening().is_empty());
    let closed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        get_blocking(port).is_none()
    });
    assert!(closed, "still accepting on {port}");
}

/// A `tracing` subscriber that keeps each event as a line: its level, its
/// message, then its other fields as `name=value`.
struct Events(Arc<std::sync::Mutex<Vec<String>>>);

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Line(String, String);
        impl tracing::field::Visit for Line {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                } else {
                    self.1.push_str(&format!(" {}={v:?}", f.name()));
                }
            }
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                self.record_debug(f, &format_args!("{v}"));
            }
        }
        let mut line = Line(String::new(), String::new());
        event.record(&mut line);
        let level = event.metadata().level();
        self.0
            .lock()
            .unwrap()
            .push(format!("{level} {}{}", line.0, line.1));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// An observer that keeps a diary.
#[derive(Default)]
struct Diary(std::sync::Mutex<Vec<String>>);

impl Observe for Diary {
    fn request(&self, service: &str, status: u16, elapsed: Duration) {
        assert!(elapsed < Duration::from_secs(5));
        self.0.lock().unwrap().push(format!("{service} {status}"));
    }
    fn upstream_error(&self, service: &str, kind: &'static str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{service} error {kind}"));
    }
    fn retry(&self, service: &str) {
        self.0.lock().unwrap().push(format!("{service} retry"));
    }
    fn connection(&self, service: &str, joined: bool) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{service} tcp {joined}"));
    }
}

/// ... and the log hears of the errors, with the service and instance
/// (a current-thread runtime: every task logs on this thread).
#[tokio::test]
async fn an_observer_hears_of_each_request_its_errors_and_retries() {
    let logged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let _events = tracing::subscriber::set_default(Events(Arc::clone(&logged)));
    let a = backend("a").await;
    let gone = dead("gone").await;
    let diary = Arc::new(Diary::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = Routes::observed("web", diary.clone());
    routes.set(vec![gone.clone(), a.route()]);
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(serve_with(
        listener,
        Mode::Http,
        routes.clone(),
        Config::default(),
        stopped,
    ));
    let client = h1_client();
    let url = format!("http://{addr}/");
    // Round-robin: one of two requests goes to the dead one first.
    for _ in 0..2 {
        assert_eq!(get(&client, &url).await.0, StatusCode::OK);
    }
    routes.set(vec![gone.clone()]);
    assert_eq!(get(&client, &url).await.0, StatusCode::BAD_GATEWAY);
    routes.set(Vec::new());
    assert_eq!(get(&client, &url).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let mut diary = diary.0.lock().unwrap().clone();
    assert_eq!(
        diary.split_off(diary.len() - 3),
        ["web error connect", "web 502", "web 503"]
    );
    diary.sort();
    assert_eq!(
        diary,
        ["web 200", "web 200", "web error connect", "web retry"]
    );
    let logged = logged.lock().unwrap();
    let at = |level: &str, what: &str| {
        logged
            .iter()
            .filter(|l| l.starts_with(level) && l.contains(what))
            .count()
    };
    let gone_at = format!("service=web instance=gone addr={}", gone.addr);
    assert_eq!(
        at(
            "DEBUG cannot connect to the instance; trying the next",
            &gone_at
        ),
        1,
        "{logged:?}"
    );
    assert_eq!(
        at(
            "WARN cannot connect to the instance, and none is left",
            &gone_at
        ),
        1,
        "{logged:?}"
    );
    assert_eq!(
        at(
            "DEBUG no instance is routable; answering 503",
            "service=web"
        ),
        1,
        "{logged:?}"
    );
    // hyper's "client error (Connect)", and why.
    assert_eq!(at("WARN", "Connection refused"), 1, "{logged:?}");
}

#[tokio::test]
async fn an_observer_hears_of_each_tcp_connection() {
    let e = echo_backend("e").await;
    let gone = dead("gone").await;
    let diary = Arc::new(Diary::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = Routes::observed("db", diary.clone());
    routes.set(vec![gone, e]);
    let (_stop, stopped) = watch::channel(false);
    tokio::spawn(serve_with(
        listener,
        Mode::Tcp,
        routes.clone(),
        Config::default(),
        stopped,
    ));
    for msg in [b"ping", b"pong"] {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(msg).await.unwrap();
        let mut buf = [0; 4];
        c.read_exact(&mut buf).await.unwrap();
    }
    routes.set(Vec::new());
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).await.unwrap();
    let mut diary = diary.0.lock().unwrap().clone();
    assert_eq!(diary.pop().as_deref(), Some("db tcp false"));
    diary.sort();
    assert_eq!(
        diary,
        ["db error connect", "db retry", "db tcp true", "db tcp true"]
    );
}

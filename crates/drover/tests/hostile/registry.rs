//! Hostile registries: endless manifests and blobs, stalls, image indexes, hostile repository names.
//!
//! Each test runs the real `drover` against a fake registry written here: a
//! loopback HTTP/1.1 server that serves a real image (built by drover into
//! a store of its own) and answers one request however the attack needs.
//! The drover under attack is watched: a test fails, rather than hangs,
//! if it runs past a deadline, and its peak memory is measured.

use crate::common::*;

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn sha256(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn blob_file(store: &Path, digest: &str) -> std::path::PathBuf {
    store
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// What the fake registry serves: manifests (and indexes) by tag or
/// digest, blobs by digest.
#[derive(Clone, Default)]
struct Content {
    manifests: HashMap<String, (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
}

impl Content {
    /// The image `digest` of `env`'s store, served as `tag` too.
    fn image(env: &Env, digest: &str, tag: &str) -> Content {
        let mut c = Content::default();
        c.add_image(env, digest, tag);
        c
    }

    fn add_image(&mut self, env: &Env, digest: &str, tag: &str) {
        let bytes = fs::read(blob_file(&env.store(), digest)).unwrap();
        let m: Value = serde_json::from_slice(&bytes).unwrap();
        for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
            let d = d["digest"].as_str().unwrap();
            self.blobs
                .insert(d.into(), fs::read(blob_file(&env.store(), d)).unwrap());
        }
        self.add_manifest(MANIFEST, bytes, tag);
    }

    /// Serve `bytes` by its digest and as `tag`; returns the digest.
    fn add_manifest(&mut self, media_type: &str, bytes: Vec<u8>, tag: &str) -> String {
        let digest = sha256(&bytes);
        self.manifests
            .insert(digest.clone(), (media_type.into(), bytes.clone()));
        self.manifests
            .insert(tag.into(), (media_type.into(), bytes));
        digest
    }

    fn manifest(&self, tag: &str) -> Value {
        serde_json::from_slice(&self.manifests[tag].1).unwrap()
    }
}

/// One request: its method, path and `Authorization` header.
struct Req {
    method: String,
    path: String,
    authorization: Option<String>,
}

/// What an attack does with a request: `true` if it answered (or stalled
/// or streamed), `false` to let the honest registry answer.
type Attack = dyn Fn(&Req, &mut TcpStream) -> bool + Send + Sync;

/// A fake registry on a loopback port. Its threads end with the test
/// process; a connection ends when drover closes it.
struct Fake {
    addr: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn start(
        content: Content,
        attack: impl Fn(&Req, &mut TcpStream) -> bool + Send + Sync + 'static,
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let content = Arc::new(content);
        let attack: Arc<Attack> = Arc::new(attack);
        let log = seen.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (content, attack, log) = (content.clone(), attack.clone(), log.clone());
                thread::spawn(move || {
                    let Some(req) = read_request(&conn) else {
                        return;
                    };
                    log.lock()
                        .unwrap()
                        .push(format!("{} {}", req.method, req.path));
                    if !attack(&req, &mut conn) {
                        honest(&content, &req, &mut conn);
                    }
                });
            }
        });
        Fake { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn url(&self, repo_and_ref: &str) -> String {
        format!("{}/{repo_and_ref}", self.addr)
    }
}

fn read_request(conn: &TcpStream) -> Option<Req> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_string());
        }
    }
    Some(Req {
        method,
        path,
        authorization,
    })
}

/// The honest answer: `/v2/`, manifests and blobs from `content`, 404 else.
fn honest(content: &Content, req: &Req, conn: &mut TcpStream) {
    let path = req.path.as_str();
    let found = if path == "/v2/" {
        Some(("application/json".to_string(), b"{}".to_vec()))
    } else if let Some((_, r)) = path.split_once("/manifests/") {
        content.manifests.get(r).cloned()
    } else if let Some((_, d)) = path.split_once("/blobs/") {
        content
            .blobs
            .get(d)
            .map(|b| ("application/octet-stream".to_string(), b.clone()))
    } else {
        None
    };
    let _ = match found {
        Some((t, body)) => respond(conn, "200 OK", &t, &body, req.method == "HEAD"),
        None => respond(
            conn,
            "404 Not Found",
            "application/json",
            b"{\"errors\":[]}",
            false,
        ),
    };
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if !head {
        conn.write_all(body)?;
    }
    conn.flush()
}

/// Answer with `head` (a status line and headers, `Transfer-Encoding:
/// chunked` unless it has a `Content-Length`), then `prefix`, then bytes
/// forever, until drover hangs up.
fn endless(conn: &mut TcpStream, content_length: Option<u64>, prefix: &[u8]) {
    let chunked = content_length.is_none();
    let len = content_length.map_or("Transfer-Encoding: chunked".into(), |n| {
        format!("Content-Length: {n}")
    });
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{len}\r\n\r\n"
    );
    let junk = vec![b'x'; 64 << 10];
    let mut send = |bytes: &[u8]| -> std::io::Result<()> {
        if chunked {
            write!(conn, "{:x}\r\n", bytes.len())?;
            conn.write_all(bytes)?;
            conn.write_all(b"\r\n")
        } else {
            conn.write_all(bytes)
        }
    };
    if !prefix.is_empty() && send(prefix).is_err() {
        return;
    }
    while send(&junk).is_ok() {}
}

/// Send a status line, headers and `sent` bytes of a body that declares
/// more, then nothing at all for a minute.
fn stall(conn: &mut TcpStream, declared: usize, sent: &[u8]) {
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: {MANIFEST}\r\nContent-Length: {declared}\r\n\r\n"
    );
    let _ = conn.write_all(sent);
    let _ = conn.flush();
    thread::sleep(Duration::from_secs(60));
}

/// How a watched drover run went.
struct Run {
    out: Output,
    took: Duration,
    /// Peak resident memory seen, in bytes.
    peak_rss: u64,
}

impl Run {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

/// The resident memory past which a watched drover is killed.
const RSS_KILL: u64 = 1 << 30;

/// Run `cmd`, sampling its memory; kill it (and fail) past `deadline` or
/// past `RSS_KILL` bytes resident.
fn watch(mut cmd: Command, deadline: Duration) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let mut peak_rss = 0;
    loop {
        if let Some(rss) = fs::read_to_string(&status).ok().and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        }) {
            peak_rss = peak_rss.max(rss << 10);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        // A drover that reads without bound is stopped long before it takes
        // the machine's memory (it reached 10 GB in 22 s).
        if start.elapsed() > deadline || peak_rss > RSS_KILL {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "drover still ran after {:?} (deadline {deadline:?}, peak RSS {} MiB, killed past {} MiB):\n{}",
                start.elapsed(),
                peak_rss >> 20,
                RSS_KILL >> 20,
                show(&out)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        out,
        took: start.elapsed(),
        peak_rss,
    }
}

/// `drover pull --insecure <remote> [extra]` against `env`'s store, with
/// `vars` set (short time-outs), watched.
fn pull(env: &Env, remote: &str, extra: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut cmd = env.cmd();
    cmd.args(["pull", "--insecure", remote]).args(extra);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    watch(cmd, Duration::from_secs(60))
}

/// A store with the sample image built in it: (env, digest).
fn built() -> (Env, String) {
    let env = sample_env();
    let digest = env.build(&[]);
    (env, digest)
}

/// Nothing half-made: no temp files, no tag `hostile/app:1`.
fn assert_nothing_left(env: &Env, run: &Run) {
    let tmp = env.store().join("tmp");
    let left: Vec<_> = fs::read_dir(&tmp)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "left in {}: {left:?}\n{}",
        tmp.display(),
        show(&run.out)
    );
    let images = env.ok(&["images"]);
    assert!(!images.contains("hostile/app"), "{images}");
}

const MIB: u64 = 1 << 20;

#[test]
fn an_endless_manifest_is_refused_at_manifest_bytes_with_memory_bounded() {
    let (src, digest) = built();
    let content = Content::image(&src, &digest, "1");
    for declared in [Some(100_000_000_000u64), None] {
        let fake = Fake::start(content.clone(), move |req, conn| {
            if req.path.contains("/manifests/") {
                endless(conn, declared, b"{\"schemaVersion\":2,");
                return true;
            }
            false
        });
        let env = Env::new();
        let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
        let err = run.stderr();
        assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
        assert!(
            err.contains("manifest_bytes") && err.contains("DROVER_LIMIT_MANIFEST_BYTES"),
            "{err}"
        );
        assert!(
            err.contains("/v2/hostile/app/manifests/1"),
            "names the URL: {err}"
        );
        assert!(
            run.peak_rss < 200 * MIB,
            "peak RSS {} MiB",
            run.peak_rss >> 20
        );
        assert!(run.took < Duration::from_secs(30), "{:?}", run.took);
        assert_nothing_left(&env, &run);
    }
}

#[test]
fn a_config_past_config_bytes_is_refused_before_it_is_fetched() {
    let (src, digest) = built();
    let mut content = Content::image(&src, &digest, "honest");
    let mut m = content.manifest("honest");
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    m["config"]["size"] = json!(100_000_000_000u64);
    content.add_manifest(MANIFEST, serde_json::to_vec(&m).unwrap(), "1");
    let fake = Fake::start(content, |_, _| false);
    let env = Env::new();
    let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
    assert!(
        err.contains("config_bytes") && err.contains(&config),
        "{err}"
    );
    assert!(
        !fake.seen().iter().any(|r| r.contains(&config)),
        "the config was fetched: {:?}",
        fake.seen()
    );
    assert_nothing_left(&env, &run);
}

#[test]
fn an_endless_blob_is_refused_past_its_declared_size_and_leaves_nothing() {
    let (src, digest) = built();
    let content = Content::image(&src, &digest, "1");
    let layer = content.manifest("1")["layers"][0].clone();
    let (ldigest, lsize) = (
        layer["digest"].as_str().unwrap().to_string(),
        layer["size"].as_u64().unwrap(),
    );
    let real = content.blobs[&ldigest].clone();
    // Chunked, the real bytes then more forever; and a Content-Length that
    // says so up front.
    for declared in [None, Some(100_000_000_000u64)] {
        let (ld, real) = (ldigest.clone(), real.clone());
        let fake = Fake::start(content.clone(), move |req, conn| {
            if req.path.ends_with(&ld) {
                endless(conn, declared, &real);
                return true;
            }
            false
        });
        let env = Env::new();
        let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
        let err = run.stderr();
        assert_eq!(run.out.status.code(), Some(3), "{}", show(&run.out));
        assert!(
            err.contains(&ldigest) && err.contains(&format!("declared size {lsize}")),
            "{err}"
        );
        assert!(run.took < Duration::from_secs(30), "{:?}", run.took);
        assert!(
            run.peak_rss < 200 * MIB,
            "peak RSS {} MiB",
            run.peak_rss >> 20
        );
        assert_nothing_left(&env, &run);
        assert!(!blob_file(&env.store(), &ldigest).exists());
    }
}

#[test]
fn a_short_blob_or_one_with_the_wrong_digest_leaves_nothing() {
    let (src, digest) = built();
    let content = Content::image(&src, &digest, "1");
    let ldigest = content.manifest("1")["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let real = content.blobs[&ldigest].clone();
    let mut flipped = real.clone();
    flipped[real.len() / 2] ^= 0xff;
    let cases: [(&str, Vec<u8>); 2] = [
        ("ended after", real[..real.len() / 2].to_vec()),
        ("hash to", flipped),
    ];
    for (says, body) in cases {
        let ld = ldigest.clone();
        let fake = Fake::start(content.clone(), move |req, conn| {
            if req.path.ends_with(&ld) {
                let _ = respond(conn, "200 OK", "application/octet-stream", &body, false);
                return true;
            }
            false
        });
        let env = Env::new();
        let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
        let err = run.stderr();
        assert_eq!(run.out.status.code(), Some(3), "{}", show(&run.out));
        assert!(
            err.contains(&ldigest) && err.contains(says),
            "{says}: {err}"
        );
        assert_nothing_left(&env, &run);
        assert!(!blob_file(&env.store(), &ldigest).exists());
    }
    // The honest registry's image then pulls into a store the attacks left clean.
    let fake = Fake::start(content, |_, _| false);
    let env = Env::new();
    let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
    assert!(run.out.status.success(), "{}", show(&run.out));
    assert_eq!(last_line(&String::from_utf8_lossy(&run.out.stdout)), digest);
    env.ok(&["verify"]);
}

const IDLE_2S: (&str, &str) = ("DROVER_LIMIT_REGISTRY_IDLE", "2s");

#[test]
fn a_registry_that_stalls_mid_manifest_or_mid_blob_times_out_and_frees_the_store() {
    let (src, digest) = built();
    let content = Content::image(&src, &digest, "1");
    let ldigest = content.manifest("1")["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = content.manifests["1"].1.clone();
    let layer = content.blobs[&ldigest].clone();
    // Each answer declares its true size and stops halfway.
    for (target, body) in [
        ("/manifests/1".to_string(), manifest),
        (format!("/blobs/{ldigest}"), layer),
    ] {
        let t = target.clone();
        let fake = Fake::start(content.clone(), move |req, conn| {
            if req.path.ends_with(&t) {
                stall(conn, body.len(), &body[..body.len() / 2]);
                return true;
            }
            false
        });
        let env = Env::new();
        let run = pull(&env, &fake.url("hostile/app:1"), &[], &[IDLE_2S]);
        let err = run.stderr();
        assert_eq!(
            run.out.status.code(),
            Some(2),
            "{target}: {}",
            show(&run.out)
        );
        assert!(
            err.contains("registry_idle") && err.contains(&target),
            "{target}: {err}"
        );
        assert!(
            run.took < Duration::from_secs(20),
            "{target}: {:?}",
            run.took
        );
        assert_nothing_left(&env, &run);
        // The store is free: a command that takes its lock goes ahead.
        env.ok(&["gc"]);
    }
}

#[test]
fn a_blob_that_trickles_hits_the_total_time_out() {
    let (src, digest) = built();
    let content = Content::image(&src, &digest, "1");
    let ldigest = content.manifest("1")["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let ld = ldigest.clone();
    let fake = Fake::start(content, move |req, conn| {
        if req.path.ends_with(&ld) {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            // A byte a second: never idle for 2 s, never done.
            while write!(conn, "1\r\nx\r\n")
                .and_then(|_| conn.flush())
                .is_ok()
            {
                thread::sleep(Duration::from_millis(500));
            }
            return true;
        }
        false
    });
    let env = Env::new();
    let run = pull(
        &env,
        &fake.url("hostile/app:1"),
        &[],
        &[IDLE_2S, ("DROVER_LIMIT_REGISTRY_FLOOR", "3s")],
    );
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
    assert!(
        err.contains("registry_floor") && err.contains(&ldigest),
        "{err}"
    );
    assert!(run.took < Duration::from_secs(20), "{:?}", run.took);
    assert_nothing_left(&env, &run);
}

#[test]
fn a_token_service_that_stalls_times_out() {
    let (src, digest) = built();
    let content = Content::image(&src, &digest, "1");
    let addr = Arc::new(Mutex::new(String::new()));
    let a = addr.clone();
    let fake = Fake::start(content, move |req, conn| {
        if req.path == "/v2/" {
            let realm = format!("http://{}/token", a.lock().unwrap());
            let _ = write!(
                conn,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return true;
        }
        if req.path.starts_with("/token") {
            thread::sleep(Duration::from_secs(60));
            return true;
        }
        false
    });
    *addr.lock().unwrap() = fake.addr.clone();
    let env = Env::new();
    let run = pull(&env, &fake.url("hostile/app:1"), &[], &[IDLE_2S]);
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
    assert!(
        err.contains("registry_idle") && err.contains("/token"),
        "{err}"
    );
    assert!(run.took < Duration::from_secs(20), "{:?}", run.took);
}

#[test]
fn an_endless_token_answer_is_refused_at_manifest_bytes() {
    let (src, digest) = built();
    let content = Content::image(&src, &digest, "1");
    let addr = Arc::new(Mutex::new(String::new()));
    let a = addr.clone();
    let fake = Fake::start(content, move |req, conn| {
        if req.path == "/v2/" {
            let realm = format!("http://{}/token", a.lock().unwrap());
            let _ = write!(
                conn,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return true;
        }
        if req.path.starts_with("/token") {
            endless(conn, None, b"{\"token\":\"");
            return true;
        }
        false
    });
    *addr.lock().unwrap() = fake.addr.clone();
    let env = Env::new();
    let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
    assert!(
        err.contains("manifest_bytes") && err.contains("/token"),
        "{err}"
    );
    assert!(
        run.peak_rss < 200 * MIB,
        "peak RSS {} MiB",
        run.peak_rss >> 20
    );
    assert!(run.took < Duration::from_secs(30), "{:?}", run.took);
}

#[test]
fn a_bearer_token_that_expires_mid_pull_is_renewed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (src, digest) = built();
    let content = Content::image(&src, &digest, "1");
    let addr = Arc::new(Mutex::new(String::new()));
    let issued = Arc::new(AtomicUsize::new(0));
    let (a, n) = (addr.clone(), issued.clone());
    let fake = Fake::start(content, move |req, conn| {
        if req.path.starts_with("/token") {
            let token = format!("t{}", n.fetch_add(1, Ordering::SeqCst) + 1);
            let _ = respond(
                conn,
                "200 OK",
                "application/json",
                json!({"token": token}).to_string().as_bytes(),
                false,
            );
            return true;
        }
        // The first token is good for the manifest only: it "expires" then.
        let good = match req.authorization.as_deref() {
            Some("Bearer t1") => !req.path.contains("/blobs/"),
            Some(a) => a.starts_with("Bearer t"),
            None => false,
        };
        if !good {
            let realm = format!("http://{}/token", a.lock().unwrap());
            let _ = write!(
                conn,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            return true;
        }
        false
    });
    *addr.lock().unwrap() = fake.addr.clone();
    let env = Env::new();
    let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
    assert!(run.out.status.success(), "{}", show(&run.out));
    assert_eq!(last_line(&String::from_utf8_lossy(&run.out.stdout)), digest);
    assert!(issued.load(Ordering::SeqCst) >= 2, "{:?}", fake.seen());
}

#[test]
fn connecting_to_a_registry_that_never_answers_times_out() {
    // A listener whose accept queue is full: the kernel drops further SYNs,
    // so a connect neither succeeds nor fails.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut filler = Vec::new();
    for _ in 0..4096 {
        let Ok(s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(200))
        else {
            break;
        };
        filler.push(s);
    }
    let env = Env::new();
    let run = pull(
        &env,
        &format!("{addr}/hostile/app:1"),
        &[],
        &[("DROVER_LIMIT_REGISTRY_CONNECT", "2s")],
    );
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
    assert!(
        err.contains("registry_connect") && err.contains(&addr),
        "{err}"
    );
    assert!(run.took < Duration::from_secs(20), "{:?}", run.took);
    drop(listener);
}

#[test]
fn a_push_to_a_registry_that_stalls_times_out() {
    let (env, digest) = built();
    let fake = Fake::start(Content::default(), |req, _| {
        if req.path.contains("/blobs/") {
            thread::sleep(Duration::from_secs(60));
            return true;
        }
        false
    });
    let mut cmd = env.cmd();
    cmd.args([
        "push",
        "--insecure",
        "sample:1.0",
        &fake.url("hostile/app:1"),
    ])
    .env(IDLE_2S.0, IDLE_2S.1);
    let run = watch(cmd, Duration::from_secs(60));
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
    assert!(
        err.contains("registry_idle") && err.contains("/blobs/"),
        "{err}"
    );
    assert!(run.took < Duration::from_secs(20), "{:?}", run.took);
    let _ = digest;
}

/// The host's platform, as an image index names it.
fn host_platform() -> Value {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    json!({"os": "linux", "architecture": arch})
}

#[test]
fn an_image_index_resolves_to_the_host_platform_or_the_one_asked_for() {
    let (src, host_digest) = built();
    // A second image, for another platform.
    src.write_def(
        "[image]\nname = \"other\"\ntag = \"1\"\n\n[[layer]]\nkind = \"file\"\ndest = \"/etc/other\"\ncontent = \"other\\n\"\n",
    );
    let other_digest = src.build(&[]);
    let mut content = Content::image(&src, &host_digest, "host");
    content.add_image(&src, &other_digest, "other");
    let other = if host_platform()["architecture"] == "ppc64le" {
        "s390x"
    } else {
        "ppc64le"
    };
    let size = |d: &str| content.manifests[d].1.len();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {"mediaType": MANIFEST, "digest": other_digest, "size": size(&other_digest),
             "platform": {"os": "linux", "architecture": other}},
            {"mediaType": MANIFEST, "digest": host_digest, "size": size(&host_digest),
             "platform": host_platform()},
        ]
    });
    let index_digest = content.add_manifest(INDEX, serde_json::to_vec(&index).unwrap(), "1");
    let fake = Fake::start(content, |_, _| false);

    let env = Env::new();
    let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
    assert!(run.out.status.success(), "{}", show(&run.out));
    let stdout = String::from_utf8_lossy(&run.out.stdout);
    assert_eq!(last_line(&stdout), host_digest, "{stdout}");
    assert!(
        stdout.contains(&index_digest) && stdout.contains("image index"),
        "says it chose from an index: {stdout}"
    );
    let inspect = env.ok(&["--json", "inspect", "hostile/app:1"]);
    assert!(inspect.contains(&host_digest), "{inspect}");

    // --platform chooses another.
    let env = Env::new();
    let run = pull(
        &env,
        &fake.url("hostile/app:1"),
        &["--platform", &format!("linux/{other}")],
        &[],
    );
    assert!(run.out.status.success(), "{}", show(&run.out));
    assert_eq!(
        last_line(&String::from_utf8_lossy(&run.out.stdout)),
        other_digest
    );

    // A platform the index does not offer: the error lists what it does.
    let run = pull(
        &env,
        &fake.url("hostile/app:1"),
        &["--platform", "linux/riscv64"],
        &[],
    );
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(4), "{}", show(&run.out));
    assert!(
        err.contains("linux/riscv64")
            && err.contains(&format!("linux/{other}"))
            && err.contains(&format!(
                "linux/{}",
                host_platform()["architecture"].as_str().unwrap()
            )),
        "{err}"
    );
    // A platform that is not one.
    let run = pull(
        &env,
        &fake.url("hostile/app:1"),
        &["--platform", "linux"],
        &[],
    );
    assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
}

#[test]
fn repository_names_outside_the_grammar_are_refused_at_parse_time() {
    let (env, digest) = built();
    let fake = Fake::start(Content::default(), |_, _| false);
    let bad_repos = [
        "a/../../good",
        "a/./good",
        "a//good",
        "../good",
        "a/Good",
        "a/.good",
    ];
    for repo in bad_repos {
        let remote = fake.url(&format!("{repo}:latest"));
        for args in [
            vec!["pull", "--insecure", remote.as_str()],
            vec!["push", "--insecure", "sample:1.0", remote.as_str()],
        ] {
            let out = env.run(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", show(&out));
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("not a repository name"),
                "{args:?}: {}",
                show(&out)
            );
        }
        let out = env.run(&["tag", "sample:1.0", &format!("{repo}:latest")]);
        assert_eq!(out.status.code(), Some(2), "tag {repo}: {}", show(&out));
        let fleet = env.ctx().join("fleet.toml");
        fs::write(
            &fleet,
            format!(
                "[service.web]\nimage = \"{}@{digest}\"\nreplicas = 1\n",
                fake.url(repo)
            ),
        )
        .unwrap();
        let out = env.run(&["plan", "-f", fleet.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "fleet {repo}: {}", show(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("fleet.toml:2:"),
            "fleet {repo}: {}",
            show(&out)
        );
    }
    assert!(
        fake.seen().is_empty(),
        "no request was made: {:?}",
        fake.seen()
    );
    let tags = env.ok(&["images"]);
    assert!(!tags.contains("good"), "{tags}");
}

/// Write `value` into `store` as a blob; returns its digest and size.
fn put_json(store: &Path, value: &Value) -> (String, u64) {
    let bytes = serde_json::to_vec(value).unwrap();
    let digest = sha256(&bytes);
    write(&blob_file(store, &digest), &bytes, 0o644);
    (digest, bytes.len() as u64)
}

/// A variant of `env`'s image `digest`, its manifest and config changed by
/// `f`, written into the same store; returns the new manifest's digest.
fn doctored(env: &Env, digest: &str, f: impl FnOnce(&mut Value, &mut Value)) -> String {
    let store = env.store();
    let mut m: Value =
        serde_json::from_slice(&fs::read(blob_file(&store, digest)).unwrap()).unwrap();
    let config_digest = m["config"]["digest"].as_str().unwrap().to_string();
    let mut config: Value =
        serde_json::from_slice(&fs::read(blob_file(&store, &config_digest)).unwrap()).unwrap();
    f(&mut m, &mut config);
    let (cd, cs) = put_json(&store, &config);
    m["config"]["digest"] = json!(cd);
    m["config"]["size"] = json!(cs);
    put_json(&store, &m).0
}

#[test]
fn a_base_with_wrong_diff_ids_sizes_or_media_types_is_refused_before_the_build() {
    let (src, digest) = built();
    let first_layer = |m: &Value| m["layers"][0]["digest"].as_str().unwrap().to_string();
    let m: Value =
        serde_json::from_slice(&fs::read(blob_file(&src.store(), &digest)).unwrap()).unwrap();
    let layer = first_layer(&m);
    let cases: Vec<(&str, String)> = vec![
        (
            "diff_id",
            doctored(&src, &digest, |_, c| {
                c["rootfs"]["diff_ids"][0] = json!(sha256(b"not this layer"));
            }),
        ),
        (
            "declares",
            doctored(&src, &digest, |m, _| {
                let size = m["layers"][0]["size"].as_u64().unwrap();
                m["layers"][0]["size"] = json!(size + 1);
            }),
        ),
        (
            "media type",
            doctored(&src, &digest, |m, _| {
                m["layers"][0]["mediaType"] = json!("application/x-not-a-layer");
            }),
        ),
    ];
    for (says, base) in cases {
        let env = Env::new();
        env.write_def(&format!(
            "[image]\nname = \"derived\"\ntag = \"1\"\nbase = {{ layout = \"{}\", digest = \"{base}\" }}\n\n[[layer]]\nkind = \"file\"\ndest = \"/etc/extra\"\ncontent = \"x\\n\"\n",
            src.store().display()
        ));
        let def = env.ctx().join("drover.toml");
        let out = env.run(&["build", "-f", def.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{says}: {}", show(&out));
        assert!(err.contains(&layer) && err.contains(says), "{says}: {err}");
        assert!(err.contains(&base), "names the base: {err}");
        let images = env.ok(&["images"]);
        assert!(!images.contains("derived"), "{says}: {images}");
    }
}

#[test]
fn a_pulled_image_with_wrong_diff_ids_or_media_types_is_refused_before_it_is_named() {
    let (src, digest) = built();
    let m: Value =
        serde_json::from_slice(&fs::read(blob_file(&src.store(), &digest)).unwrap()).unwrap();
    let layer = m["layers"][1]["digest"].as_str().unwrap().to_string();
    let wrong_diff_id = doctored(&src, &digest, |_, c| {
        c["rootfs"]["diff_ids"][1] = json!(sha256(b"not this layer"));
    });
    let wrong_type = doctored(&src, &digest, |m, _| {
        m["layers"][1]["mediaType"] = json!("application/x-not-a-layer");
    });
    for (says, image) in [("diff_id", wrong_diff_id), ("media type", wrong_type)] {
        let fake = Fake::start(Content::image(&src, &image, "1"), |_, _| false);
        let env = Env::new();
        let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
        let err = run.stderr();
        assert_eq!(run.out.status.code(), Some(3), "{says}: {}", show(&run.out));
        assert!(err.contains(&layer) && err.contains(says), "{says}: {err}");
        assert_nothing_left(&env, &run);
        assert!(
            !blob_file(&env.store(), &image).exists(),
            "{says}: the manifest was stored"
        );
    }
}

#[test]
fn verify_reports_an_image_stored_with_wrong_diff_ids() {
    let (env, digest) = built();
    env.ok(&["verify"]);
    let m: Value =
        serde_json::from_slice(&fs::read(blob_file(&env.store(), &digest)).unwrap()).unwrap();
    let layer = m["layers"][1]["digest"].as_str().unwrap().to_string();
    // As if stored before pulls and builds checked diff_ids.
    let bad = doctored(&env, &digest, |_, c| {
        c["rootfs"]["diff_ids"][1] = json!(sha256(b"not this layer"));
    });
    env.ok(&["tag", &bad, "bad:1"]);
    let out = env.run(&["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        stdout.contains(&format!("DIFF_ID {layer}")) && stdout.contains("bad:1"),
        "{stdout}"
    );
    // The honest image sharing that layer is not blamed for it.
    env.ok(&["rmi", "bad:1"]);
    env.ok(&["verify"]);
}

/// No request of a pull touches `digest` (a blob refused before its fetch).
fn assert_not_fetched(fake: &Fake, digest: &str) {
    let seen = fake.seen();
    assert!(
        !seen.iter().any(|r| r.contains(&format!("/blobs/{digest}"))),
        "{digest} was fetched: {seen:?}"
    );
}

#[test]
fn a_token_realm_only_oci_client_would_ask_is_never_asked() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // drover's own probe of /v2/ sees no challenge; any later probe (the
    // one oci-client made itself) gets a bearer challenge whose token
    // service streams forever, which oci-client would read whole. Without
    // credentials and with them (oci-client probes to use them).
    let (src, digest) = built();
    let content = Content::image(&src, &digest, "1");
    let anonymous: &[(&str, &str)] = &[];
    let basic: &[(&str, &str)] = &[
        ("DROVER_REGISTRY_USER", "u"),
        ("DROVER_REGISTRY_PASSWORD", "p"),
    ];
    for vars in [anonymous, basic] {
        let probes = Arc::new(AtomicUsize::new(0));
        let addr = Arc::new(Mutex::new(String::new()));
        let (p, a) = (probes.clone(), addr.clone());
        let fake = Fake::start(content.clone(), move |req, conn| {
            if req.path == "/v2/" && p.fetch_add(1, Ordering::SeqCst) > 0 {
                let realm = format!("http://{}/token", a.lock().unwrap());
                let _ = write!(
                    conn,
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                return true;
            }
            if req.path.starts_with("/token") {
                endless(conn, None, b"{\"token\":\"");
                return true;
            }
            false
        });
        *addr.lock().unwrap() = fake.addr.clone();
        let env = Env::new();
        let run = pull(&env, &fake.url("hostile/app:1"), &[], vars);
        assert!(run.out.status.success(), "{vars:?}: {}", show(&run.out));
        assert!(
            run.peak_rss < 200 * MIB,
            "{vars:?}: peak RSS {} MiB",
            run.peak_rss >> 20
        );
        let seen = fake.seen();
        assert!(
            !seen.iter().any(|r| r.contains("/token")),
            "{vars:?}: the token service was asked: {seen:?}"
        );
        assert_eq!(probes.load(Ordering::SeqCst), 1, "{vars:?}: {seen:?}");
    }
}

#[test]
fn a_layer_declared_past_layer_bytes_is_refused_before_any_blob_is_fetched() {
    let (src, digest) = built();
    let mut content = Content::image(&src, &digest, "honest");
    let mut m = content.manifest("honest");
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let config = m["config"]["digest"].as_str().unwrap().to_string();
    m["layers"][0]["size"] = json!(1_000_000_000_000u64);
    content.add_manifest(MANIFEST, serde_json::to_vec(&m).unwrap(), "1");
    // Were it fetched: chunked, forever.
    let l = layer.clone();
    let fake = Fake::start(content, move |req, conn| {
        if req.path.ends_with(&l) {
            endless(conn, None, b"");
            return true;
        }
        false
    });
    let env = Env::new();
    let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
    assert!(err.contains("layer_bytes") && err.contains(&layer), "{err}");
    assert_not_fetched(&fake, &layer);
    assert_not_fetched(&fake, &config);
    assert_nothing_left(&env, &run);

    // Each layer under layer_bytes, but all of them past image_bytes.
    let env = Env::new();
    let run = pull(
        &env,
        &fake.url("hostile/app:honest"),
        &[],
        &[("DROVER_LIMIT_IMAGE_BYTES", "1k")],
    );
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
    assert!(err.contains("image_bytes"), "{err}");
    assert_not_fetched(&fake, &config);
}

#[test]
fn a_config_whose_diff_ids_do_not_match_the_layers_is_refused_before_any_layer() {
    let (src, digest) = built();
    let m: Value =
        serde_json::from_slice(&fs::read(blob_file(&src.store(), &digest)).unwrap()).unwrap();
    let image = doctored(&src, &digest, |_, c| {
        c["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
    });
    let fake = Fake::start(Content::image(&src, &image, "1"), |_, _| false);
    let env = Env::new();
    let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(3), "{}", show(&run.out));
    assert!(err.contains("diff_ids"), "{err}");
    for l in m["layers"].as_array().unwrap() {
        assert_not_fetched(&fake, l["digest"].as_str().unwrap());
    }
    assert_nothing_left(&env, &run);
}

#[test]
fn a_referrer_past_artifact_bytes_or_too_many_referrers_are_refused() {
    let (src, digest) = built();
    let mut content = Content::image(&src, &digest, "1");
    let image = content.manifests["1"].1.clone();
    let subject = json!({"mediaType": MANIFEST, "digest": sha256(&image), "size": image.len()});
    let big = sha256(b"a signature that is not this big");
    let referrer = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": big, "size": 1_000_000_000u64}],
        "subject": subject,
    });
    let rbytes = serde_json::to_vec(&referrer).unwrap();
    let rdigest = content.add_manifest(MANIFEST, rbytes.clone(), "referrer");
    content.blobs.insert(sha256(b"{}"), b"{}".to_vec());
    let listing = |n: usize| {
        let entry = json!({"mediaType": MANIFEST, "digest": rdigest, "size": rbytes.len()});
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": vec![entry; n],
        }))
        .unwrap()
    };
    let tag = format!("sha256-{}", sha256(&image).trim_start_matches("sha256:"));
    let big2 = big.clone();
    let mut one = content.clone();
    one.add_manifest(INDEX, listing(1), &tag);
    let fake = Fake::start(one, move |req, conn| {
        if req.path.ends_with(&big2) {
            endless(conn, None, b"");
            return true;
        }
        false
    });
    let env = Env::new();
    let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
    assert!(
        err.contains("artifact_bytes") && err.contains(&big),
        "{err}"
    );
    assert_not_fetched(&fake, &big);

    let mut many = content;
    many.add_manifest(INDEX, listing(300), &tag);
    let fake = Fake::start(many, |_, _| false);
    let env = Env::new();
    let run = pull(&env, &fake.url("hostile/app:1"), &[], &[]);
    let err = run.stderr();
    assert_eq!(run.out.status.code(), Some(2), "{}", show(&run.out));
    assert!(err.contains("referrers") && err.contains("300"), "{err}");
    assert!(
        !fake.seen().iter().any(|r| r.contains(&rdigest)),
        "a referrer was fetched: {:?}",
        fake.seen()
    );
}

#[test]
fn a_push_whose_manifest_error_answer_is_endless_stays_bounded() {
    let (env, _digest) = built();
    let fake = Fake::start(Content::default(), |req, conn| {
        if req.method == "HEAD" && req.path.contains("/blobs/") {
            // Every blob is there already: straight to the manifest.
            let _ = respond(conn, "200 OK", "application/octet-stream", b"", true);
            return true;
        }
        if req.method == "PUT" && req.path.contains("/manifests/") {
            let _ = write!(
                conn,
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let junk = vec![b'x'; 64 << 10];
            while write!(conn, "{:x}\r\n", junk.len())
                .and_then(|_| conn.write_all(&junk))
                .and_then(|_| conn.write_all(b"\r\n"))
                .is_ok()
            {}
            return true;
        }
        false
    });
    let mut cmd = env.cmd();
    cmd.args([
        "push",
        "--insecure",
        "sample:1.0",
        &fake.url("hostile/app:1"),
    ]);
    let run = watch(cmd, Duration::from_secs(60));
    let err = run.stderr();
    assert!(!run.out.status.success(), "{}", show(&run.out));
    assert!(
        err.contains("PUT") && err.contains("/manifests/") && err.contains("400"),
        "{err}"
    );
    assert!(
        run.peak_rss < 200 * MIB,
        "peak RSS {} MiB",
        run.peak_rss >> 20
    );
    assert!(run.took < Duration::from_secs(20), "{:?}", run.took);
}

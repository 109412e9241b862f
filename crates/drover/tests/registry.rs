//! Push and pull against a real registry: Debian's `docker-registry` (the
//! CNCF distribution 2.8 server), started by each test on a free loopback
//! port with its storage in a temp dir, and killed when the test ends.
//! Distribution 2.8 has no referrers API, so referrers travel through the
//! referrers tag schema here.
use crate::common;
use common::*;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::Value;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running registry; killed on drop.
pub(crate) struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    pub(crate) addr: String,
}

impl Registry {
    /// `None` (after saying why) when docker-registry is not installed.
    pub(crate) fn start(htpasswd: Option<(&str, &str)>) -> Option<Registry> {
        if !require(REGISTRY_BIN) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut auth = String::new();
        if let Some((user, pass)) = htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success(), "{}", show(&out));
            let file = dir.path().join("htpasswd");
            fs::write(&file, &out.stdout).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: drover-test\n    path: {}\n",
                file.display()
            );
        }
        Some(Registry::launch(dir, &auth))
    }

    /// A registry that wants bearer tokens from `tokens`.
    fn start_with_tokens(tokens: &TokenServer) -> Option<Registry> {
        if !require(REGISTRY_BIN) {
            return None;
        }
        let auth = format!(
            "auth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            tokens.addr,
            tokens.cert.display()
        );
        Some(Registry::launch(tempfile::tempdir().unwrap(), &auth))
    }

    /// Serve from `dir` on a free loopback port, with `auth` (a YAML `auth:`
    /// section, or nothing).
    fn launch(dir: tempfile::TempDir, auth: &str) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let reg = Registry { child, dir, addr };
        reg.wait_ready();
        reg
    }

    /// A plain `GET`; the whole response, headers included ("" if refused).
    fn get(&self, path: &str) -> String {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return String::new();
        };
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    }

    /// Until `GET /v2/` answers (200, or 401 with auth on).
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let resp = self.get("/v2/");
            if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.1 401") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "registry at {} never came up",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `service` and `issuer` a token-auth registry and its token service
/// agree on.
const SERVICE: &str = "drover-test-registry";
const ISSUER: &str = "drover-test-issuer";

/// One request to a [`TokenServer`].
#[derive(Debug, Clone)]
struct Asked {
    /// The Basic user, or `-` for an anonymous request.
    user: String,
    scope: String,
    granted: bool,
}

/// The token service of a registry with `auth: token` (distribution's
/// bearer-token scheme), on a loopback port. It checks the Basic
/// credentials of `GET /token?service=…&scope=…` and answers with a JWT that
/// distribution verifies: ES256 over a P-256 key made by the `openssl` CLI,
/// the self-signed certificate of that key in the header's `x5c` (and in the
/// registry's `rootcertbundle`), claims `iss`, `sub`, `aud` (the service),
/// `exp`, `nbf`, `iat`, `jti` and the `access` asked for. It records every
/// request, so a test can tell the bearer flow really ran.
struct TokenServer {
    pub(crate) addr: String,
    cert: PathBuf,
    asked: Arc<Mutex<Vec<Asked>>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

/// Signs the token service's JWTs.
struct Signer {
    key: EcdsaKeyPair,
    /// The certificate, DER, base64 as `x5c` wants it.
    x5c: String,
    rng: SystemRandom,
    serial: AtomicU64,
}

impl Signer {
    fn jwt(&self, subject: &str, access: Value) -> String {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("drover-test-{}", self.serial.fetch_add(1, Ordering::SeqCst)),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        // FIXED signing: r||s, 64 bytes, as JWS ES256 wants (not ASN.1).
        let sig = self.key.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", show(&out));
}

impl TokenServer {
    /// Grants every scope asked for to `user` with `password`; refuses
    /// anyone else. `None` (after saying why) without `openssl`.
    fn start(user: &'static str, password: &'static str) -> Option<TokenServer> {
        if !require("openssl") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        let (ec, pkcs8, cert, der) = (
            path("ec.pem"),
            path("key.p8"),
            path("cert.pem"),
            path("cert.der"),
        );
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &ec,
        ]);
        // ring reads PKCS#8, not OpenSSL's own EC key format.
        openssl(&[
            "pkcs8", "-topk8", "-nocrypt", "-in", &ec, "-outform", "DER", "-out", &pkcs8,
        ]);
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &ec,
            "-subj",
            "/CN=drover test token service",
            "-days",
            "2",
            "-out",
            &cert,
        ]);
        openssl(&["x509", "-in", &cert, "-outform", "DER", "-out", &der]);
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &fs::read(&pkcs8).unwrap(),
            &rng,
        )
        .expect("openssl's P-256 key as PKCS#8");
        let signer = Signer {
            key,
            x5c: STANDARD.encode(fs::read(&der).unwrap()),
            rng,
            serial: AtomicU64::new(0),
        };

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (asked.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(mut conn) = conn {
                    let _ = serve_token(&mut conn, &signer, (user, password), &log);
                }
            }
        });
        Some(TokenServer {
            addr,
            cert: PathBuf::from(cert),
            asked,
            stop,
            _dir: dir,
        })
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Answer one token request (HTTP/1.1, one request per connection).
fn serve_token(
    conn: &mut TcpStream,
    signer: &Signer,
    (user, password): (&str, &str),
    log: &Mutex<Vec<Asked>>,
) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&req);
    let mut lines = text.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.strip_prefix("GET "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: Vec<(&str, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, percent_decode(v)))
        .collect();
    let param = |k: &str| params.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let credentials = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.trim().strip_prefix("Basic ").map(str::to_string))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let scope = param("scope").unwrap_or_default();
    let (status, body) = if path != "/token" || param("service").as_deref() != Some(SERVICE) {
        (
            "400 Bad Request",
            format!("unknown path or service: {target}"),
        )
    } else {
        match &credentials {
            Some((u, p)) if u == user && p == password => {
                // "repository:<name>:<action>,<action>"; all of it granted.
                let access: Vec<Value> = scope
                    .split(' ')
                    .filter_map(|s| {
                        let mut parts = s.splitn(3, ':');
                        let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        Some(serde_json::json!({
                            "type": kind,
                            "name": name,
                            "actions": actions.split(',').collect::<Vec<_>>(),
                        }))
                    })
                    .collect();
                let jwt = signer.jwt(u, Value::Array(access));
                (
                    "200 OK",
                    serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300})
                        .to_string(),
                )
            }
            Some((u, _)) => (
                "401 Unauthorized",
                format!(r#"{{"details":"wrong password for {u}"}}"#),
            ),
            None => (
                "401 Unauthorized",
                r#"{"details":"credentials required"}"#.to_string(),
            ),
        }
    };
    log.lock().unwrap().push(Asked {
        user: credentials.map_or_else(|| "-".to_string(), |(u, _)| u),
        scope,
        granted: status.starts_with("200"),
    });
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// drover with no credentials from the environment or the user's Docker config.
fn drover(env: &Env, docker_config: &Path, args: &[&str]) -> Output {
    env.cmd()
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("DROVER_REGISTRY_USER")
        .env_remove("DROVER_REGISTRY_PASSWORD")
        .args(args)
        .output()
        .expect("run drover")
}

fn ok(env: &Env, docker_config: &Path, args: &[&str]) -> String {
    let out = drover(env, docker_config, args);
    assert!(
        out.status.success(),
        "drover {args:?} failed:\n{}",
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn index(store: &Path) -> Value {
    serde_json::from_slice(&fs::read(store.join("index.json")).unwrap()).unwrap()
}

/// (digest, artifactType) of every artifact in a store's index.json.
fn artifacts(store: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = index(store)["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d.get("artifactType").is_some())
        .map(|d| {
            (
                d["digest"].as_str().unwrap().to_string(),
                d["artifactType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn manifest_layers(store: &Path, digest: &str) -> Vec<String> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let m: Value =
        serde_json::from_slice(&fs::read(store.join("blobs/sha256").join(hex)).unwrap()).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn push_then_pull_keeps_digest_and_baseline() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let src = sample_env();
    let digest = src.build(&[]);
    let remote = format!("{}/team/sample:1.0", reg.addr);
    let pushed = ok(
        &src,
        nocreds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );
    assert_eq!(last_line(&pushed), digest);
    let audit = ok(&src, nocreds.path(), &["audit", "--action", "image.push"]);
    assert!(audit.contains("team/sample"), "{audit}");
    let source_artifacts = artifacts(&src.store());
    // The baseline, the SBOM and the provenance.
    assert_eq!(source_artifacts.len(), 3, "{source_artifacts:?}");
    // distribution 2.8 has no referrers API: the artifacts are listed by the
    // referrers tag schema.
    let tags = reg.get("/v2/team/sample/tags/list");
    let schema_tag = format!("sha256-{}", &digest[7..]);
    assert!(tags.contains(&schema_tag), "{tags}");

    let dst = Env::new();
    let pulled = ok(&dst, nocreds.path(), &["pull", &remote, "--insecure"]);
    assert_eq!(last_line(&pulled), digest);
    assert_eq!(
        artifacts(&dst.store()),
        source_artifacts,
        "the baseline, SBOM and provenance came along"
    );
    let images = ok(&dst, nocreds.path(), &["images"]);
    assert!(images.contains("team/sample:1.0"), "{images}");
    ok(&dst, nocreds.path(), &["verify"]);
    let baseline_src = ok(&src, nocreds.path(), &["baseline", "sample:1.0", "--json"]);
    let baseline_dst = ok(
        &dst,
        nocreds.path(),
        &["baseline", "team/sample:1.0", "--json"],
    );
    assert_eq!(baseline_src, baseline_dst);
    let audit = ok(&dst, nocreds.path(), &["audit", "--action", "image.pull"]);
    assert!(audit.contains(&digest[7..19]), "{audit}");

    // By digest, into another store: same image, untagged but present.
    let by_digest = Env::new();
    let out = ok(
        &by_digest,
        nocreds.path(),
        &[
            "pull",
            &format!("{}/team/sample@{digest}", reg.addr),
            "--insecure",
        ],
    );
    assert_eq!(last_line(&out), digest);

    // A second push sends nothing but manifests.
    let t = Instant::now();
    let again = ok(
        &src,
        nocreds.path(),
        &["--json", "push", "sample:1.0", &remote, "--insecure"],
    );
    let elapsed = t.elapsed();
    let report = common::doc(&again);
    assert_eq!(report["blobs_sent"], 0, "{report}");
    assert!(report["blobs_skipped"].as_u64().unwrap() >= 3, "{report}");
    assert!(elapsed < Duration::from_secs(2), "re-push took {elapsed:?}");
}

/// A fleet names a registry image by digest: `plan` says it would pull it,
/// `apply` pulls it (with its baseline) into a store that lacks it and runs
/// it, and `gc` keeps it, untagged, while a release refers to it.
#[test]
fn apply_pulls_a_fleet_image_named_by_registry_digest() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let Some(src) = web_env() else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let pushed = ok(
        &src,
        nocreds.path(),
        &[
            "push",
            "web:1",
            &format!("{}/team/web:1", reg.addr),
            "--insecure",
        ],
    );
    let digest = last_line(&pushed);

    let dst = Env::new();
    // web:1 is signed by src's host key: the deploy policy must trust it.
    dst.trust(&src);
    let fleet = dst.dir.path().join("fleet.toml");
    let write_fleet = |image: &str| {
        let text = format!(
            "[service.web]\nimage = \"{image}\"\nmin_healthy = \"0s\"\ninsecure_registry = true\nreplicas = 1\n"
        );
        write(&fleet, text.as_bytes(), 0o644);
    };
    let f = fleet.to_str().unwrap();
    // A registry tag can move: fleet files pin by digest.
    write_fleet(&format!("{}/team/web:1", reg.addr));
    let out = drover(&dst, nocreds.path(), &["plan", "-f", f]);
    assert!(!out.status.success());
    assert!(
        show(&out).contains("fleet.toml:2:9: service.web.image")
            && show(&out).contains("pin registry images by digest"),
        "{}",
        show(&out)
    );

    write_fleet(&format!("{}/team/web@{digest}", reg.addr));
    let plan = ok(&dst, nocreds.path(), &["plan", "-f", f]);
    assert!(plan.contains("would pull"), "{plan}");
    assert!(
        !dst.store().join("blobs/sha256").join(&digest[7..]).exists(),
        "plan pulled"
    );

    let applied = drover(&dst, nocreds.path(), &["apply", "-f", f]);
    assert!(applied.status.success(), "{}", show(&applied));
    // The pull `apply` does shows its progress too (plain lines here).
    let err = String::from_utf8_lossy(&applied.stderr);
    assert!(err.contains("pull: done, "), "{err}");
    let status = common::items(&ok(&dst, nocreds.path(), &["--json", "status"]));
    let instances = status[0]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{status:?}");
    assert_eq!(instances[0]["image"], digest.as_str());
    assert_eq!(instances[0]["state"], "running");
    let attached = artifacts(&dst.store());
    assert_eq!(
        attached.len(),
        4,
        "the baseline, signature, SBOM and provenance came along: {attached:?}"
    );
    let at_source = artifacts(&src.store());
    assert!(
        attached.iter().all(|a| at_source.contains(a)),
        "{at_source:?}"
    );
    let audit = ok(&dst, nocreds.path(), &["audit", "--action", "image.pull"]);
    assert!(audit.contains(&digest[7..19]), "{audit}");

    // Untagged, but a release refers to it: gc keeps it and its baseline.
    ok(&dst, nocreds.path(), &["gc"]);
    assert!(!manifest_layers(&dst.store(), &digest).is_empty());
    assert_eq!(artifacts(&dst.store()), attached, "gc took an artifact");
    ok(&dst, nocreds.path(), &["verify"]);
    // Re-applying pulls nothing more.
    ok(&dst, nocreds.path(), &["apply", "-f", f]);
    let audit = ok(
        &dst,
        nocreds.path(),
        &["--json", "audit", "--action", "image.pull"],
    );
    let pulls = common::items(&audit);
    assert_eq!(pulls.len(), 1, "{pulls:?}");
}

#[test]
fn a_large_layer_streams_both_ways() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let src = sample_env();
    // Incompressible, so the layer stays above the 16 MiB streaming threshold.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: Vec<u8> = (0..24 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    write(&src.ctx().join("rootfs/big.bin"), &big, 0o644);
    let digest = src.build(&[]);
    let remote = format!("{}/big:1", reg.addr);
    let out = ok(
        &src,
        nocreds.path(),
        &["--json", "push", "sample:1.0", &remote, "--insecure"],
    );
    let report = common::doc(&out);
    assert!(
        report["bytes_sent"].as_u64().unwrap() > 24 << 20,
        "{report}"
    );
    let dst = Env::new();
    let pulled = drover(&dst, nocreds.path(), &["pull", &remote, "--insecure"]);
    assert!(pulled.status.success(), "{}", show(&pulled));
    assert_eq!(last_line(&String::from_utf8_lossy(&pulled.stdout)), digest);
    ok(&dst, nocreds.path(), &["verify"]);
    // Regression (issue 19): a 24 MiB push or pull showed no progress, and
    // nothing at all when not on a terminal (a CI log): plain lines now.
    let err = String::from_utf8_lossy(&pulled.stderr);
    assert!(
        err.contains("pull: 2 blobs, 25.") && err.contains("pull: done, 25."),
        "{err}"
    );
    let pushed = drover(
        &dst,
        nocreds.path(),
        &[
            "push",
            &digest,
            &format!("{}/big:2", reg.addr),
            "--insecure",
        ],
    );
    assert!(pushed.status.success(), "{}", show(&pushed));
    let err = String::from_utf8_lossy(&pushed.stderr);
    assert!(
        err.contains("push: ") && err.contains("push: done, 25."),
        "{err}"
    );
}

#[test]
fn skopeo_reads_what_drover_pushed_and_drover_pulls_what_skopeo_pushed() {
    if !require("skopeo") {
        return;
    }
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let env = sample_env();
    let digest = env.build(&[]);
    let remote = format!("{}/sample:1.0", reg.addr);
    ok(
        &env,
        nocreds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );

    let out_dir = env.dir.path().join("skopeo-out");
    let st = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{remote}"))
        .arg(format!("oci:{}:got", out_dir.display()))
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", show(&st));
    let idx = index(&out_dir);
    assert_eq!(idx["manifests"][0]["digest"], digest.as_str(), "{idx}");

    // The other way: skopeo pushes an image drover did not write (skopeo
    // rewrites nothing of an OCI image, but drover never saw these bytes
    // arrive through its own push).
    let st = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:got", out_dir.display()))
        .arg(format!("docker://{}/other:2", reg.addr))
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", show(&st));
    let dst = Env::new();
    let pulled = ok(
        &dst,
        nocreds.path(),
        &["pull", &format!("{}/other:2", reg.addr), "--insecure"],
    );
    assert_eq!(last_line(&pulled), digest);
    assert!(artifacts(&dst.store()).is_empty(), "no referrers there");
    ok(&dst, nocreds.path(), &["verify"]);
}

#[test]
fn basic_auth_from_docker_config() {
    let Some(reg) = Registry::start(Some(("drover", "s3cret"))) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let env = sample_env();
    let digest = env.build(&[]);
    let remote = format!("{}/sample:1.0", reg.addr);

    let out = drover(
        &env,
        nocreds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );
    assert!(!out.status.success(), "anonymous push was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&reg.addr) && err.contains("credentials"),
        "{err}"
    );

    let creds = tempfile::tempdir().unwrap();
    let auth = STANDARD.encode(b"drover:s3cret");
    fs::write(
        creds.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let pushed = ok(
        &env,
        creds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );
    assert_eq!(last_line(&pushed), digest);
    let dst = Env::new();
    let pulled = ok(&dst, creds.path(), &["pull", &remote, "--insecure"]);
    assert_eq!(last_line(&pulled), digest);
    assert_eq!(
        artifacts(&dst.store()).len(),
        3,
        "the baseline, SBOM and provenance came along"
    );

    // Credentials from the environment, with no Docker config.
    let from_env = Env::new();
    let out = from_env
        .cmd()
        .env("DOCKER_CONFIG", nocreds.path())
        .env("DROVER_REGISTRY_USER", "drover")
        .env("DROVER_REGISTRY_PASSWORD", "s3cret")
        .args(["pull", &remote, "--insecure"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(last_line(&String::from_utf8_lossy(&out.stdout)), digest);

    // What is not there is "not found" (exit 4), not an internal error.
    let missing = format!("{}/nothing:here", reg.addr);
    let out = drover(&from_env, creds.path(), &["pull", &missing, "--insecure"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
}

/// A registry with distribution's token auth: drover asks the token service
/// for a bearer token with the credentials from Docker's config or the
/// environment, and pushes and pulls with it; without credentials, or with a
/// wrong password, it says authentication failed.
#[test]
fn bearer_token_auth_pushes_and_pulls() {
    let Some(tokens) = TokenServer::start("drover", "s3cret") else {
        return;
    };
    let Some(reg) = Registry::start_with_tokens(&tokens) else {
        return;
    };
    // The registry refuses an anonymous request and names its token service.
    let resp = reg.get("/v2/sample/tags/list");
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
    let challenge = resp
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .unwrap_or_default();
    assert!(
        challenge.contains(&format!(r#"Bearer realm="http://{}/token""#, tokens.addr))
            && challenge.contains(&format!(r#"service="{SERVICE}""#))
            && challenge.contains("repository:sample:pull"),
        "{resp}"
    );
    assert!(tokens.asked().is_empty());

    let nocreds = tempfile::tempdir().unwrap();
    let env = sample_env();
    let digest = env.build(&[]);
    let remote = format!("{}/sample:1.0", reg.addr);

    let out = drover(
        &env,
        nocreds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );
    assert!(!out.status.success(), "anonymous push was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&reg.addr) && err.contains("wants credentials"),
        "{err}"
    );
    let asked = tokens.asked();
    assert!(
        asked.iter().any(|a| a.user == "-" && !a.granted),
        "{asked:?}"
    );

    // Credentials from Docker's config.json.
    let creds = tempfile::tempdir().unwrap();
    let auth = STANDARD.encode(b"drover:s3cret");
    fs::write(
        creds.path().join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let pushed = ok(
        &env,
        creds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );
    assert_eq!(last_line(&pushed), digest);
    let asked = tokens.asked();
    assert!(
        asked
            .iter()
            .any(|a| a.user == "drover" && a.granted && a.scope == "repository:sample:pull,push"),
        "the push went through the token service: {asked:?}"
    );
    let seen = asked.len();
    let dst = Env::new();
    let pulled = ok(&dst, creds.path(), &["pull", &remote, "--insecure"]);
    assert_eq!(last_line(&pulled), digest);
    assert_eq!(
        artifacts(&dst.store()).len(),
        3,
        "the baseline, SBOM and provenance came along"
    );
    ok(&dst, creds.path(), &["verify"]);
    let asked = tokens.asked();
    assert!(
        asked[seen..]
            .iter()
            .any(|a| a.user == "drover" && a.granted && a.scope == "repository:sample:pull"),
        "the pull went through the token service: {asked:?}"
    );

    // Credentials from the environment, with no Docker config: push to
    // another repository, and pull it back.
    let with_env = |env: &Env, password: &str, args: &[&str]| {
        env.cmd()
            .env("DOCKER_CONFIG", nocreds.path())
            .env("DROVER_REGISTRY_USER", "drover")
            .env("DROVER_REGISTRY_PASSWORD", password)
            .args(args)
            .output()
            .unwrap()
    };
    let other = format!("{}/team/sample:env", reg.addr);
    let out = with_env(
        &env,
        "s3cret",
        &["push", "sample:1.0", &other, "--insecure"],
    );
    assert!(out.status.success(), "{}", show(&out));
    let from_env = Env::new();
    let out = with_env(&from_env, "s3cret", &["pull", &other, "--insecure"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(last_line(&String::from_utf8_lossy(&out.stdout)), digest);
    let asked = tokens.asked();
    assert!(
        asked
            .iter()
            .any(|a| a.granted && a.scope == "repository:team/sample:pull,push"),
        "{asked:?}"
    );

    // A wrong password: the token service refuses, and drover says so,
    // naming the registry and the user.
    let seen = asked.len();
    let wrong = Env::new();
    let out = with_env(&wrong, "not-it", &["pull", &remote, "--insecure"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("registry {}", reg.addr))
            && err.contains("authentication failed")
            && err.contains(r#"user "drover""#)
            && err.contains("wrong password for drover"),
        "{err}"
    );
    let asked = tokens.asked();
    assert!(
        asked[seen..]
            .iter()
            .any(|a| a.user == "drover" && !a.granted),
        "{asked:?}"
    );
    let images = ok(&wrong, nocreds.path(), &["images", "--json"]);
    assert!(!images.contains("sample"), "{images}");
}

/// An image already in the store gets the referrers attached to it in the
/// registry since it was pulled (here, a signature): `apply` lists them and
/// fetches what is missing. A registry that is gone by then does not stop
/// the deploy; the report says the refresh failed.
#[test]
fn apply_fetches_referrers_attached_after_the_pull() {
    let Some(mut reg) = Registry::start(None) else {
        return;
    };
    let Some(src) = web_env() else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let remote = format!("{}/team/web:1", reg.addr);
    let digest = last_line(&ok(
        &src,
        nocreds.path(),
        &["push", "web:1", &remote, "--insecure"],
    ));
    let dst = Env::new();
    let pinned = format!("{}/team/web@{digest}", reg.addr);
    ok(&dst, nocreds.path(), &["pull", &pinned, "--insecure"]);
    assert_eq!(
        artifacts(&dst.store()).len(),
        4,
        "baseline, signature, SBOM, provenance"
    );
    dst.trust(&src);

    // Approved by a CI key after dst pulled it, and pushed again: a second
    // signature joins the others in the registry.
    let ci = src.dir.path().join("ci");
    src.ok(&["key", "generate", ci.to_str().unwrap()]);
    ok(
        &src,
        nocreds.path(),
        &[
            "sign",
            "web:1",
            "--key",
            ci.with_extension("key").to_str().unwrap(),
        ],
    );
    let pushed = common::doc(&ok(
        &src,
        nocreds.path(),
        &["--json", "push", "web:1", &remote, "--insecure"],
    ));
    assert_eq!(pushed["referrers"].as_array().unwrap().len(), 5, "{pushed}");

    let fleet = dst.dir.path().join("fleet.toml");
    write(
        &fleet,
        format!("[service.web]\nimage = \"{pinned}\"\nmin_healthy = \"0s\"\ninsecure_registry = true\nreplicas = 1\n")
            .as_bytes(),
        0o644,
    );
    let f = fleet.to_str().unwrap();
    let plan = ok(&dst, nocreds.path(), &["plan", "-f", f]);
    assert!(!plan.contains("would pull"), "{plan}");
    ok(&dst, nocreds.path(), &["apply", "-f", f]);
    let mut want: Vec<&str> = pushed["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    want.sort();
    let got = artifacts(&dst.store());
    assert_eq!(
        got.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>(),
        want,
        "the signature came along"
    );
    assert!(got.iter().any(|(_, t)| t.contains("signature")), "{got:?}");
    let pulls = common::items(&ok(
        &dst,
        nocreds.path(),
        &["--json", "audit", "--action", "image.pull"],
    ));
    assert_eq!(pulls.len(), 2, "{pulls:?}");
    ok(&dst, nocreds.path(), &["verify"]);

    // Nothing new: one listing, nothing fetched, nothing recorded.
    ok(&dst, nocreds.path(), &["apply", "-f", f]);
    let pulls = common::items(&ok(
        &dst,
        nocreds.path(),
        &["--json", "audit", "--action", "image.pull"],
    ));
    assert_eq!(pulls.len(), 2, "{pulls:?}");

    // The registry gone: the image is here, so the deploy still happens.
    let _ = reg.child.kill();
    let _ = reg.child.wait();
    let reports = common::items(&ok(&dst, nocreds.path(), &["--json", "apply", "-f", f]));
    assert!(reports[0]["error"].is_null(), "{reports:?}");
    let warning = reports[0]["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("referrers could not be refreshed") && warning.contains(&reg.addr),
        "{reports:?}"
    );
}

#[test]
fn a_tampered_blob_is_refused_and_leaves_nothing() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let env = sample_env();
    let digest = env.build(&[]);
    let remote = format!("{}/sample:1.0", reg.addr);
    ok(
        &env,
        nocreds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );

    let layer = manifest_layers(&env.store(), &digest)[0].clone();
    let data = reg.blob_data(&layer);
    let mut bytes = fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&data, bytes).unwrap();

    let dst = Env::new();
    let out = drover(&dst, nocreds.path(), &["pull", &remote, "--insecure"]);
    assert!(!out.status.success(), "a tampered blob was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&layer), "the error names the blob: {err}");
    let store = dst.store();
    assert!(
        !store.join("blobs/sha256").join(&layer[7..]).exists(),
        "no blob under the tampered digest"
    );
    assert!(
        !store.join("blobs/sha256").join(&digest[7..]).exists(),
        "no manifest naming a missing blob"
    );
    let tmp: Vec<_> = fs::read_dir(store.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "no partial download left: {tmp:?}");
    let images = ok(&dst, nocreds.path(), &["images", "--json"]);
    assert!(!images.contains("sample"), "no tag: {images}");
}

#[test]
fn insecure_is_refused_for_a_remote_host() {
    let env = Env::new();
    let nocreds = tempfile::tempdir().unwrap();
    let out = drover(
        &env,
        nocreds.path(),
        &["pull", "registry.example.com/hello:1", "--insecure"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("loopback") && err.contains("registry.example.com"),
        "{err}"
    );
}

/// Incompressible bytes, different for each `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A store with `layers:1`: four copy layers of 6 MiB of noise each.
fn layered_env() -> (Env, String) {
    let env = Env::new();
    let mut def = String::from("[image]\nname = \"layers\"\ntag = \"1\"\n");
    for i in 0..4u64 {
        write(
            &env.ctx().join(format!("l{i}/data.bin")),
            &noise(0x9e37_79b9 + i, 6 << 20),
            0o644,
        );
        def.push_str(&format!(
            "\n[[layer]]\nkind = \"copy\"\nsrc = \"l{i}\"\ndest = \"/l{i}\"\n"
        ));
    }
    env.write_def(&def);
    let digest = env.build(&[]);
    (env, digest)
}

/// Files directly in `dir`'s subdirectories named `name` (a registry's
/// committed blobs) or, with `name` empty, files in `dir`.
fn count_files(dir: &Path, name: &str) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if name.is_empty() {
                usize::from(e.path().is_file())
            } else {
                fs::read_dir(e.path()).map_or(0, |sub| {
                    sub.flatten()
                        .filter(|b| b.path().join(name).exists())
                        .count()
                })
            }
        })
        .sum()
}

/// Run drover `args` and SIGKILL it as soon as `arrived()` says a blob is in.
/// Returns whether it was killed (rather than finishing first).
fn kill_after_first_blob(
    env: &Env,
    docker_config: &Path,
    args: &[&str],
    arrived: impl Fn() -> bool,
) -> bool {
    let mut child = env
        .cmd()
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("DROVER_REGISTRY_USER")
        .env_remove("DROVER_REGISTRY_PASSWORD")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if arrived() {
            let finished = child.try_wait().unwrap().is_some();
            let _ = child.kill();
            let _ = child.wait();
            return !finished;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("drover {args:?} ended ({status}) before any blob arrived");
        }
        assert!(Instant::now() < deadline, "no blob arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_interrupted_push_or_pull_resumes_without_resending() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let (src, digest) = layered_env();
    let remote = format!("{}/layers:1", reg.addr);
    let reg_blobs = reg.dir.path().join("data/docker/registry/v2/blobs/sha256");
    let killed = kill_after_first_blob(
        &src,
        nocreds.path(),
        &["push", "layers:1", &remote, "--insecure"],
        || count_files(&reg_blobs, "data") >= 1,
    );
    assert!(killed, "the push finished before it could be interrupted");
    let out = ok(
        &src,
        nocreds.path(),
        &["--json", "push", "layers:1", &remote, "--insecure"],
    );
    let report = common::doc(&out);
    assert_eq!(report["digest"], digest.as_str());
    // What arrived is skipped; all nine blobs (the image's config and four
    // layers, the artifacts' shared empty config and the contents of the
    // baseline, SBOM and provenance) are accounted for.
    let (sent, skipped) = (
        report["blobs_sent"].as_u64().unwrap(),
        report["blobs_skipped"].as_u64().unwrap(),
    );
    assert!(skipped >= 1, "{report}");
    assert_eq!(sent + skipped, 9, "{report}");

    let dst = Env::new();
    let dst_blobs = dst.store().join("blobs/sha256");
    let killed = kill_after_first_blob(
        &dst,
        nocreds.path(),
        &["pull", &remote, "--insecure"],
        || count_files(&dst_blobs, "") >= 1,
    );
    assert!(killed, "the pull finished before it could be interrupted");
    // Whatever was cut off mid-blob is in tmp/, never under its digest.
    ok(&dst, nocreds.path(), &["verify"]);
    let out = ok(
        &dst,
        nocreds.path(),
        &["--json", "pull", &remote, "--insecure"],
    );
    let report = common::doc(&out);
    assert_eq!(report["digest"], digest.as_str());
    let (fetched, present) = (
        report["blobs_fetched"].as_u64().unwrap(),
        report["blobs_present"].as_u64().unwrap(),
    );
    assert!(present >= 1, "{report}");
    // Pull counts each artifact's empty config (present after the first).
    assert_eq!(fetched + present, 11, "{report}");
    ok(&dst, nocreds.path(), &["verify"]);
    ok(&dst, nocreds.path(), &["gc"]);
    assert_eq!(
        count_files(&dst.store().join("tmp"), ""),
        0,
        "gc left temp files"
    );
    ok(&dst, nocreds.path(), &["verify"]);
}

/// The fleet's registry, set once: a store that lacks an image pulls it by
/// digest from there (`fleet fetch`, what a host does for a release it is
/// to run), and only if the policy admits what arrived; without the
/// registry it says how to set one.
#[test]
fn fleet_fetch_pulls_by_digest_from_the_fleet_registry_checked_by_policy() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let nocreds = tempfile::tempdir().unwrap();
    let src = sample_env();
    let digest = src.build(&["--sign"]);
    let remote = format!("{}/fleet/sample:1.0", reg.addr);
    ok(
        &src,
        nocreds.path(),
        &["push", "sample:1.0", &remote, "--insecure"],
    );

    // A host that trusts the builder's key.
    let host = Env::new();
    host.trust(&src);
    let out = drover(&host, nocreds.path(), &["fleet", "fetch", &digest]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(show(&out).contains("fleet registry set"), "{}", show(&out));
    let out = drover(&host, nocreds.path(), &["fleet", "registry", "show"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let bad = drover(
        &host,
        nocreds.path(),
        &["fleet", "registry", "set", "http://198.18.0.10:5000/fleet"],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", show(&bad));
    assert!(show(&bad).contains("loopback"), "{}", show(&bad));
    let fleet = format!("http://{}/fleet/sample", reg.addr);
    ok(&host, nocreds.path(), &["fleet", "registry", "set", &fleet]);
    assert!(ok(&host, nocreds.path(), &["fleet", "registry", "show"]).contains(&fleet));
    let fetched = ok(&host, nocreds.path(), &["fleet", "fetch", &digest]);
    assert!(fetched.contains("pulled"), "{fetched}");
    assert!(ok(&host, nocreds.path(), &["fleet", "fetch", &digest]).contains("already"));
    ok(&host, nocreds.path(), &["policy", "check", &digest]);
    assert_eq!(
        artifacts(&host.store()),
        artifacts(&src.store()),
        "the signature and provenance came along"
    );
    assert_eq!(
        host.items(&["audit", "--action", "fleet.registry"]).len(),
        1
    );

    // A host that does not trust it: pulled, then refused, and ledgered.
    let stranger = Env::new();
    ok(
        &stranger,
        nocreds.path(),
        &["fleet", "registry", "set", &fleet],
    );
    let out = drover(&stranger, nocreds.path(), &["fleet", "fetch", &digest]);
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));
    assert!(show(&out).contains("require_signature"), "{}", show(&out));
    assert_eq!(
        stranger
            .items(&["audit", "--action", "policy.refuse"])
            .len(),
        1
    );
}

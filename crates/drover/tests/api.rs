//! `drover serve`'s HTTP API (`/api/v1/` on the admin listener), over TLS
//! with a certificate made for the test, driven with curl as a CI job
//! would: the same documents as the CLI's `--json`, bearer tokens by role
//! (401 and 403 without detail, a 403 ledgered), actions ledgered as the
//! token, a rollback and a revocation through the API, refusals of the
//! policy ledgered, malformed and huge bodies refused, and the event
//! stream. Needs root (CI runs as root).

use crate::common;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Env, eventually, free_port, get};
use serde_json::{Value, json};

/// A running `serve` with a TLS admin listener, and curl to call it.
struct Server {
    serve: Child,
    admin: u16,
    ca: PathBuf,
    log: PathBuf,
    dir: PathBuf,
}

impl Server {
    fn start(env: &Env) -> Server {
        Server::start_with(env, &[])
    }

    /// With `vars` in serve's environment.
    fn start_with(env: &Env, vars: &[(&str, &Path)]) -> Server {
        let dir = env.dir.path().join("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args([
                "-subj",
                "/CN=drover-test",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "{}", common::show(&out));
        let admin = free_port();
        let log = env.dir.path().join("serve.log");
        let mut cmd = env.cmd();
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let serve = cmd
            .args(["serve", "--interval", "500ms", "--drift-interval", "0"])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .arg("--admin-cert")
            .arg(&cert)
            .arg("--admin-key")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start drover serve");
        let s = Server {
            serve,
            admin,
            ca: cert,
            log,
            dir,
        };
        assert!(
            eventually(Duration::from_secs(10), || s
                .call("GET", "/api/v1/openapi.json", None, None)
                .0
                == 200),
            "no API on :{admin}:\n{}",
            s.log()
        );
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.admin)
    }

    /// One request: its status and body. `body`: content type and bytes.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> (u16, String) {
        let out_file = self.dir.join("out");
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "60", "-X", method, "--cacert"])
            .arg(&self.ca)
            .arg("-o")
            .arg(&out_file)
            .args(["-w", "%{http_code}"]);
        if let Some(t) = token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some((ctype, bytes)) = body {
            let in_file = self.dir.join("in");
            std::fs::write(&in_file, bytes).unwrap();
            c.args(["-H", &format!("Content-Type: {ctype}")])
                .arg("--data-binary")
                .arg(format!("@{}", in_file.display()));
        }
        let _ = std::fs::remove_file(&out_file);
        let out = c.arg(self.url(path)).output().expect("run curl");
        let code = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (code, std::fs::read_to_string(&out_file).unwrap_or_default())
    }

    /// A JSON answer with status `want`.
    fn json(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<(&str, &[u8])>,
        want: u16,
    ) -> Value {
        let (code, text) = self.call(method, path, Some(token), body);
        assert_eq!(
            code,
            want,
            "{method} {path}: {text}\nserve:\n{}",
            self.log()
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }

    fn get(&self, path: &str, token: &str) -> Value {
        self.json("GET", path, token, None, 200)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        common::stop(&mut self.serve, Duration::from_secs(15));
    }
}

fn fleet(tag: &str, port: u16) -> String {
    format!(
        "[service.web]\nimage = \"web:{tag}\"\nreplicas = 1\nports = [{port}]\nmin_healthy = \"0s\"\ndrain = \"0s\"\n{}",
        common::WEB_HEALTH
    )
}

fn token(env: &Env, name: &str, role: &str) -> String {
    let t = env.json(&["token", "create", name, "--role", role]);
    t["secret"].as_str().unwrap().to_string()
}

/// The newest ledger entry with `action`.
fn last_entry(env: &Env, action: &str) -> Value {
    env.items(&["audit", "--action", action])
        .pop()
        .unwrap_or_else(|| panic!("no {action} entry"))
}

fn serving(port: u16, page: &str) -> bool {
    eventually(Duration::from_secs(30), || {
        get(port).as_deref() == Some(page)
    })
}

#[test]
fn the_api_answers_as_the_cli_and_acts_as_its_tokens() {
    let Some(env) = common::web_env() else { return };
    if !common::require("curl") || !common::require("openssl") {
        return;
    }
    let port = free_port();
    let f = common::write_fleet(&env, &fleet("1", port));
    env.ok(&["apply", "--detach", "-f", &f]);
    let reader = token(&env, "reader", "read");
    let deployer = token(&env, "deployer", "deploy");
    let admin = token(&env, "admin", "admin");
    let s = Server::start(&env);
    assert!(serving(port, "version one\n"), "{}", s.log());

    // Who am I: the token, never its secret.
    let me = s.get("/api/v1/whoami", &reader);
    assert_eq!(
        (
            me["kind"].as_str(),
            me["name"].as_str(),
            me["role"].as_str()
        ),
        (Some("Token"), Some("reader"), Some("read"))
    );
    assert!(!me.to_string().contains(&reader[4..]), "{me}");

    // No token, a bad one, another scheme: 401, saying nothing more.
    let (code, body) = s.call("GET", "/api/v1/services", None, None);
    assert_eq!(code, 401, "{body}");
    for bad in [
        format!("drv_{}", "0".repeat(64)),
        "nonsense".into(),
        reader.to_uppercase(),
    ] {
        let (code, body) = s.call("GET", "/api/v1/services", Some(&bad), None);
        assert_eq!(code, 401, "{body}");
        let doc: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["error"]["message"], "invalid token", "{doc}");
        assert_eq!(doc["error"]["kind"], "unauthenticated");
    }

    // A deploy through the API as the deployer: recorded (202), rolled out
    // by serve, ledgered as the token.
    let text = fleet("2", port);
    let reports = s.json(
        "POST",
        "/api/v1/apply",
        &deployer,
        Some(("application/toml", text.as_bytes())),
        202,
    );
    assert_eq!(reports["kind"], "DeployReportList", "{reports}");
    assert_eq!(reports["items"][0]["created"], 2, "{reports}");
    assert!(serving(port, "version two\n"), "{}", s.log());
    let created = last_entry(&env, "release.create");
    assert_eq!(created["actor"], "token:deployer", "{created}");

    // Reads are the CLI's documents.
    assert!(eventually(Duration::from_secs(20), || {
        let api = s.get("/api/v1/services/web", &reader);
        api["release"] == 2 && api["ready"] == 1
    }));
    let api = s.get("/api/v1/services", &reader);
    let cli = env.json(&["status"]);
    assert_eq!(api["kind"], "ServiceList");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&api["items"][0]), keys(&cli["items"][0]));
    assert_eq!(api["items"][0]["release"], cli["items"][0]["release"]);
    assert_eq!(api["items"][0]["served"], true);
    assert_eq!(
        s.get("/api/v1/services/web/releases", &reader),
        env.json(&["releases", "web"])
    );
    assert_eq!(s.get("/api/v1/releases", &reader), env.json(&["releases"]));
    let ids = |v: &Value| {
        let mut ids: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(&s.get("/api/v1/instances", &reader)),
        ids(&env.json(&["ps"]))
    );
    assert_eq!(
        ids(&s.get("/api/v1/instances?all=true", &reader)),
        ids(&env.json(&["ps", "-a"]))
    );
    let running = s.get("/api/v1/services/web", &reader)["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let trace = s.get(&format!("/api/v1/instances/{running}/trace"), &reader);
    assert_eq!(trace, env.json(&["trace", &running]));
    assert_eq!(trace["root"]["ok"], true, "{trace}");
    assert_eq!(
        s.get("/api/v1/policy", &reader),
        env.json(&["policy", "show"])
    );
    let logs = s.call(
        "GET",
        &format!("/api/v1/instances/{running}/logs?tail=5"),
        Some(&reader),
        None,
    );
    assert_eq!(logs.0, 200, "{}", logs.1);
    for line in logs.1.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let drift = s.get("/api/v1/drift?target=web", &reader);
    assert_eq!(drift["kind"], "DriftSweep", "{drift}");
    assert_eq!(drift["instances"].as_array().unwrap().len(), 1, "{drift}");
    let events = s.get("/api/v1/events?service=web", &reader);
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "release.created"
                && e["release"] == 2
                && e["actor"] == "token:deployer"),
        "{events}"
    );

    // The ledger, paged, with the chain's verification.
    let page = s.get("/api/v1/ledger?limit=3", &reader);
    assert_eq!(page["kind"], "LedgerPage");
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert_eq!(page["verification"]["valid"], true, "{page}");
    assert_eq!(page["items"][2]["seq"], page["head"]);
    let first = s.get("/api/v1/ledger?from=1&limit=2", &reader);
    assert_eq!(first["items"][0]["seq"], 1);
    assert_eq!(first["next"], 3);
    let second = s.get("/api/v1/ledger?from=3&limit=2", &reader);
    assert_eq!(second["items"][0]["seq"], 3);

    // A read token may not act: 403, and the attempt is ledgered.
    let (code, body) = s.call("POST", "/api/v1/services/web/rollback", Some(&reader), None);
    assert_eq!(code, 403, "{body}");
    let denied = last_entry(&env, "api.denied");
    assert_eq!(denied["actor"], "token:reader", "{denied}");
    assert_eq!(denied["details"]["path"], "/api/v1/services/web/rollback");
    // Nor may a deployer revoke.
    let (code, _) = s.call(
        "POST",
        "/api/v1/revocations",
        Some(&deployer),
        Some(("application/json", b"{}")),
    );
    assert_eq!(code, 403);

    // Malformed fleet documents: 400 naming the line and the key.
    let bad = format!("[service.web]\nimage = \"web:1\"\nreplicas = \"two\"\nports = [{port}]\n");
    let err = s.json(
        "POST",
        "/api/v1/apply",
        &deployer,
        Some(("application/toml", bad.as_bytes())),
        400,
    );
    assert_eq!(err["error"]["line"], 3, "{err}");
    assert!(
        err["error"]["key"]
            .as_str()
            .unwrap_or_default()
            .contains("replicas"),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request body:3:"),
        "{err}"
    );
    let err = s.json(
        "POST",
        "/api/v1/apply",
        &deployer,
        Some(("application/toml", b"[service.web\n")),
        400,
    );
    assert_eq!(err["error"]["line"], 1, "{err}");
    // A huge body: refused, and nothing changed.
    let huge = vec![b'#'; 2 << 20];
    let (code, body) = s.call(
        "POST",
        "/api/v1/apply",
        Some(&deployer),
        Some(("application/toml", &huge)),
    );
    assert_eq!(code, 413, "{body}");
    let (code, body) = s.call(
        "POST",
        "/api/v1/services/web/rollback",
        Some(&deployer),
        Some(("application/json", b"{\"to\": \"one\"}")),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(s.get("/api/v1/services/web", &reader)["release"], 2);

    // The event stream follows what happens next.
    let mut stream = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "60", "--cacert"])
        .arg(&s.ca)
        .args(["-H", &format!("Authorization: Bearer {reader}")])
        .args(["-H", "Accept: text/event-stream"])
        .arg(s.url("/api/v1/events?service=web"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let out = stream.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The stream's first bytes: it is open before the rollback.
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).as_deref(),
        Ok("retry: 2000")
    );

    // Rollback as the deployer: back to release 1's content.
    let r = s.json(
        "POST",
        "/api/v1/services/web/rollback",
        &deployer,
        Some(("application/json", br#"{"message": "from the API"}"#)),
        202,
    );
    assert_eq!(r["items"][0]["created"], 3, "{r}");
    assert!(serving(port, "version one\n"), "{}", s.log());
    let created = last_entry(&env, "release.create");
    assert_eq!(created["actor"], "token:deployer", "{created}");
    let mut seen = Vec::new();
    let healthy = eventually(Duration::from_secs(30), || {
        while let Ok(l) = rx.try_recv() {
            seen.push(l);
        }
        seen.windows(2)
            .any(|w| w[0].starts_with("event: release.healthy") && w[1].contains("\"release\":3"))
    });
    let _ = stream.kill();
    let _ = stream.wait();
    assert!(healthy, "{seen:#?}");
    assert!(seen.iter().any(|l| l.starts_with("id: ")), "{seen:#?}");

    // Revocation by the admin; the deployer's deploy of it is refused (422)
    // and the refusal ledgered as the deployer's.
    let rev = s.json(
        "POST",
        "/api/v1/revocations",
        &admin,
        Some((
            "application/json",
            json!({"image": "web:2", "reason": "CVE-2026-0001"})
                .to_string()
                .as_bytes(),
        )),
        201,
    );
    assert_eq!(rev["actor"], "token:admin", "{rev}");
    assert!(
        rev["digest"].as_str().unwrap().starts_with("sha256:"),
        "{rev}"
    );
    let listed = s.get("/api/v1/revocations", &reader);
    assert_eq!(listed["items"][0]["reason"], "CVE-2026-0001");
    let text = fleet("2", port);
    let (code, body) = s.call(
        "POST",
        "/api/v1/apply?wait=true",
        Some(&deployer),
        Some(("application/toml", text.as_bytes())),
    );
    assert_eq!(code, 422, "{body}");
    let refused = last_entry(&env, "policy.refuse*");
    assert_eq!(refused["actor"], "token:deployer", "{refused}");
    let path = format!(
        "/api/v1/revocations/{}?reason=wrong%20digest",
        rev["digest"].as_str().unwrap().replace(':', "%3A")
    );
    let lifted = s.json("DELETE", &path, &admin, None, 200);
    assert_eq!(lifted["kind"], "Revocation", "{lifted}");
    assert!(
        s.get("/api/v1/revocations", &reader)["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A revoked token is refused like an unknown one.
    env.ok(&["token", "revoke", "reader"]);
    let (code, body) = s.call("GET", "/api/v1/services", Some(&reader), None);
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("invalid token") && !body.contains("revoked"),
        "{body}"
    );

    // The listener speaks TLS only; the OpenAPI document needs no token.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{}/api/v1/openapi.json", s.admin))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout).trim(), "200");
    let (code, doc) = s.call("GET", "/api/v1/openapi.json", None, None);
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["paths"]["/api/v1/services/{name}/rollback"]["post"].is_object());
    assert!(Path::new(&s.ca).exists());
}

/// An apply through the API of an image the store lacks: serve pulls it
/// from a real registry (as the token: the pull is ledgered as
/// `token:ci`), rolls it out, and times the pull in its metrics.
#[test]
fn an_apply_through_the_api_pulls_what_the_store_lacks_and_serve_times_it() {
    let Some(reg) = crate::registry::Registry::start(None) else {
        return;
    };
    let Some(src) = common::web_env() else { return };
    if !common::require("curl") || !common::require("openssl") {
        return;
    }
    let nocreds = tempfile::tempdir().unwrap();
    let out = src
        .cmd()
        .env("DOCKER_CONFIG", nocreds.path())
        .args([
            "push",
            "web:1",
            &format!("{}/team/web:1", reg.addr),
            "--insecure",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::show(&out));
    let digest = common::last_line(&String::from_utf8_lossy(&out.stdout));

    let dst = Env::new();
    dst.trust(&src);
    let ci = token(&dst, "ci", "deploy");
    let s = Server::start_with(&dst, &[("DOCKER_CONFIG", nocreds.path())]);
    let port = free_port();
    let text = format!(
        "[service.web]\nimage = \"{}/team/web@{digest}\"\ninsecure_registry = true\nreplicas = 1\nports = [{port}]\nmin_healthy = \"0s\"\n{}",
        reg.addr,
        common::WEB_HEALTH
    );
    let r = s.json(
        "POST",
        "/api/v1/apply",
        &ci,
        Some(("application/toml", text.as_bytes())),
        202,
    );
    assert!(r["items"][0]["pull_seconds"].as_f64().is_some(), "{r}");
    assert!(serving(port, "version one\n"), "{}", s.log());
    assert_eq!(last_entry(&dst, "image.pull")["actor"], "token:ci");
    let (code, metrics) = s.call("GET", "/metrics", None, None);
    assert_eq!(code, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l == "drover_image_pull_duration_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(
            r#"drover_api_requests_total{method="POST",route="/api/v1/apply",code="202"} 1"#
        )),
        "{metrics}"
    );
}

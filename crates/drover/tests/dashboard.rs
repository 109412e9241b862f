//! The web dashboard on `serve`'s admin listener, in a real headless
//! Chromium (Debian's `chromium` and `chromium-driver`) driven over W3C
//! WebDriver: a person signs in with a read token and reads the fleet, a
//! service, an instance's trace, the ledger and the revocations; signs in
//! again with a deploy token and rolls the service back with the button.
//! One screenshot per page goes to `target/test-artifacts/dashboard/`.
//! Needs root and busybox (real instances), chromium and chromedriver.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Env, eventually, free_port, stop};
use serde_json::{Value, json};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One HTTP/1.1 exchange on loopback `port`: status, head (lowercased)
/// and body. The body is read by its Content-Length (chromedriver keeps
/// the connection open), else to the end of a chunked body or the stream.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let complete = |raw: &[u8]| -> bool {
        let text = String::from_utf8_lossy(raw);
        let Some((head, rest)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let head = head.to_ascii_lowercase();
        if let Some(n) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
        {
            return rest.len() >= n;
        }
        head.contains("transfer-encoding: chunked") && rest.ends_with("0\r\n\r\n")
    };
    while !complete(&raw) {
        let n = s.read(&mut buf).expect("read answer");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head[9..12].parse().expect("a status");
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, head, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

/// A chromedriver on a loopback port with one headless Chromium session;
/// both end when it is dropped.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Browser {
    fn start(shots: PathBuf) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            profile: tempfile::tempdir().unwrap(),
            shots,
        };
        assert!(
            eventually(Duration::from_secs(20), || {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && b.call("GET", "/status", None)["ready"] == true
            }),
            "chromedriver on :{port} did not become ready"
        );
        let binary = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromium's binary");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new",
                    "--no-sandbox", // the tests run as root
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1280,1600",
                    format!("--user-data-dir={}", b.profile.path().display()),
                ],
            },
        }}});
        let v = b.call("POST", "/session", Some(&caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        b
    }

    /// A WebDriver command; its `value` (an error answer panics).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, _, text) = http(self.port, method, path, body);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}: {text}"));
        assert!(
            status == 200,
            "WebDriver {method} {path} answered {status}: {text}"
        );
        v["value"].clone()
    }

    fn session(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.session("POST", "/url", Some(&json!({ "url": url })));
    }

    /// What a person sees: the page's rendered text.
    fn text(&self) -> String {
        self.script("return document.body.innerText;")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn script(&self, js: &str) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": js, "args": [] })),
        )
    }

    /// Wait until the page's text holds every one of `wanted`; the text.
    fn wait_for(&self, wanted: &[&str], serve_log: &Path) -> String {
        self.wait_until(&format!("all of {wanted:?}"), serve_log, |text| {
            wanted.iter().all(|w| text.contains(w))
        })
    }

    /// Wait until the page's text satisfies `test` (`what` says how).
    fn wait_until(&self, what: &str, serve_log: &Path, test: impl Fn(&str) -> bool) -> String {
        let mut text = String::new();
        let ok = eventually(Duration::from_secs(30), || {
            text = self.text();
            test(&text)
        });
        assert!(
            ok,
            "the page ({}) does not show {what}; it shows:\n{text}\nserve:\n{}",
            self.script("return location.href;"),
            std::fs::read_to_string(serve_log).unwrap_or_default()
        );
        text
    }

    /// The elements matching a CSS selector.
    fn find_all(&self, css: &str) -> Vec<String> {
        let v = self.session(
            "POST",
            "/elements",
            Some(&json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e[ELEMENT].as_str().unwrap().to_string())
            .collect()
    }

    fn find(&self, css: &str) -> String {
        let mut found = Vec::new();
        eventually(Duration::from_secs(10), || {
            found = self.find_all(css);
            !found.is_empty()
        });
        found
            .pop()
            .unwrap_or_else(|| panic!("no {css} on the page:\n{}", self.text()))
    }

    fn click(&self, css: &str) {
        let el = self.find(css);
        self.session("POST", &format!("/element/{el}/click"), Some(&json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.session("POST", &format!("/element/{el}/clear"), Some(&json!({})));
        self.session(
            "POST",
            &format!("/element/{el}/value"),
            Some(&json!({ "text": text })),
        );
    }

    /// Save the whole page as `<name>.png` among the artifacts: the window
    /// is made as tall as the page (WebDriver shoots the viewport), then
    /// put back.
    fn screenshot(&self, name: &str) {
        let height = self
            .script("return document.documentElement.scrollHeight;")
            .as_u64()
            .unwrap_or(1600)
            .clamp(900, 6000);
        let rect = |h: u64| json!({"x": 0, "y": 0, "width": 1280, "height": h});
        // The window's frame takes some of its height: ask for more.
        self.session("POST", "/window/rect", Some(&rect(height + 160)));
        let b64 = self.session("GET", "/screenshot", None);
        self.session("POST", "/window/rect", Some(&rect(1600)));
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("a base64 screenshot"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("dashboard: screenshot {}", path.display());
    }

    fn sign_in(&self, token: &str) {
        self.type_into("#token", token);
        self.click("#login button[type=submit]");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The web image's server, saying so on its output (for the log tail)
/// and logging each request it answers (`-v`).
const TALKING_SERVER: &str =
    "echo web listening on \\\"$PORT\\\"; sleep 0.2; httpd -f -v -p \\\"$PORT\\\" -h /www";

/// A `drover serve`, stopped when dropped: before the test's store goes,
/// also when the test fails (else it would heal the instances `Env`
/// removes, in a store that no longer exists).
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        stop(&mut self.0, Duration::from_secs(10));
    }
}

/// `web` with two replicas of `web:<tag>` behind the proxy on `port`.
fn fleet(env: &Env, tag: &str, port: u16) -> String {
    let text = format!(
        "[service.web]\nimage = \"web:{tag}\"\nreplicas = 2\nports = [{port}]\n\
         min_healthy = \"0s\"\ndrain = \"0s\"\n"
    );
    common::write_fleet(env, &(text + common::WEB_HEALTH))
}

fn token(env: &Env, name: &str, role: &str) -> String {
    let out = env.ok(&["token", "create", name, "--role", role]);
    out.trim().to_string()
}

/// Where the screenshots go: `target/test-artifacts/dashboard/` in the
/// workspace, emptied first.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts/dashboard");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

#[test]
fn a_person_reads_every_page_in_chromium_and_a_deploy_token_rolls_back() {
    // Chromium first: without it (outside CI) there is nothing to build.
    if !common::require("chromium") || !common::require("chromedriver") {
        return;
    }
    let Some(env) = common::web_env() else { return };
    common::web_image(&env, "v1", "version one\n", "/", TALKING_SERVER);
    common::web_image(&env, "v2", "version two\n", "/", TALKING_SERVER);
    let port = free_port();
    env.ok(&["apply", "-f", &fleet(&env, "v1", port)]);
    env.ok(&["apply", "-f", &fleet(&env, "v2", port)]);
    let web1 = env.json(&["releases", "web"])["items"][0]["image"].clone();
    let viewer = token(&env, "viewer", "read");
    let deployer = token(&env, "deployer", "deploy");
    let revoked = format!("sha256:{}", "ab".repeat(32));
    env.ok(&[
        "revoke",
        &revoked,
        "--reason",
        "CVE-2026-0001 in the test's image",
    ]);

    let admin = free_port();
    let serve_log = env.dir.path().join("serve.log");
    let _serve = Serving(
        env.cmd()
            .args(["serve", "--interval", "500ms", "--drift-interval", "0"])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&serve_log).unwrap())
            .spawn()
            .expect("start drover serve"),
    );
    let base = format!("http://127.0.0.1:{admin}/");
    assert!(
        eventually(Duration::from_secs(10), || TcpStream::connect((
            "127.0.0.1",
            admin
        ))
        .is_ok()),
        "no admin listener on :{admin}:\n{}",
        std::fs::read_to_string(&serve_log).unwrap_or_default()
    );

    // The assets: the page and its script, with a policy that allows no
    // inline script, and nosniff.
    let (status, head, body) = http(admin, "GET", "/", None);
    assert_eq!(status, 200, "{head}");
    assert!(body.contains("/ui/app.js"), "{body}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self';"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let (status, head, _) = http(admin, "GET", "/ui/app.js", None);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");

    let shots = artifacts();
    eprintln!("dashboard: screenshots go to {}", shots.display());
    let browser = Browser::start(shots.clone());

    // Signing in: a bad token is refused, a read token shows the fleet.
    browser.go(&base);
    browser.wait_for(&["Sign in", "Token"], &serve_log);
    browser.screenshot("01-sign-in");
    browser.sign_in("drv_0000000000000000000000000000000000000000000000000000000000000000");
    browser.wait_for(&["That token was refused"], &serve_log);
    browser.sign_in(&viewer);
    let fleet_text = browser.wait_for(
        &[
            "viewer (read)",
            "Fleet",
            "web",
            "release 2",
            "2/2 ready",
            "rolling",
            "synced",
        ],
        &serve_log,
    );
    assert!(!fleet_text.contains("out-of-sync"), "{fleet_text}");
    browser.screenshot("02-fleet");

    // A service: its releases with who and why, its instances with their
    // drift, its events; no rollback button for a read token.
    let ids: Vec<String> = env
        .items(&["ps"])
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    browser.click("a[href='#/services/web']");
    let mut wanted = vec![
        "Release 2",
        "Release 1",
        "apply web:v2",
        "no drift",
        "web listening on",
        "release.healthy",
        "Live: new events appear as they happen.",
        "Instances",
    ];
    wanted.extend(ids.iter().map(String::as_str));
    let text = browser.wait_for(&wanted, &serve_log);
    assert!(!text.contains("Roll back"), "{text}");
    assert!(browser.find_all("#rollback").is_empty());
    browser.screenshot("03-service-read-token");

    // An instance's trace: each link with its check.
    browser.click(&format!("a[href='#/instances/{}/trace']", ids[0]));
    browser.wait_for(
        &[
            &format!("Trace of {}", ids[0]),
            "Every link holds.",
            "✓ holds",
            "web@2",
            "Signature",
            "Provenance",
            "← web",
        ],
        &serve_log,
    );
    browser.screenshot("04-trace");

    // A link that does not hold is said so, with why: the other instance's
    // config changed behind drover's back (put back afterwards).
    let (config, launched) = common::tamper_env(&env, &ids[1], "SNEAKY=1");
    browser.go(&format!("{base}#/instances/{}/trace", ids[1]));
    browser.wait_for(
        &[
            "1 link does not hold: config",
            "✗ does not hold",
            "SNEAKY=1",
            "✓ holds",
        ],
        &serve_log,
    );
    browser.screenshot("05-trace-broken-link");
    // The service page's drift check finds it too.
    browser.click("a[href='#/services/web']");
    browser.wait_for(&["no drift"], &serve_log);
    browser.click("#check-drift");
    browser.wait_for(&["1 finding", "config /process/env"], &serve_log);
    std::fs::write(&config, launched).unwrap();

    // The ledger, verified; the revocations.
    browser.click("nav a[href='#/ledger']");
    browser.wait_for(
        &[
            "Ledger verified",
            "the hash chain and every signature hold",
            "token.create",
            "image.revoke",
        ],
        &serve_log,
    );
    browser.screenshot("06-ledger");
    browser.click("nav a[href='#/revocations']");
    browser.wait_for(
        &[
            &revoked,
            "CVE-2026-0001 in the test's image",
            "Deploy policy",
        ],
        &serve_log,
    );
    browser.screenshot("07-revocations");

    // A deploy token: the rollback button, and what it does.
    browser.click("#sign-out");
    browser.wait_for(&["Sign in"], &serve_log);
    browser.sign_in(&deployer);
    browser.wait_for(&["deployer (deploy)"], &serve_log);
    browser.go(&format!("{base}#/services/web"));
    browser.wait_for(&["Roll back to", "Release 2"], &serve_log);
    browser.type_into("#rollback-message", "release 2 misbehaves");
    browser.screenshot("08-service-deploy-token");
    browser.click("#rollback");
    browser.wait_for(
        &[
            "Rollback of web recorded as release 3",
            "Release 3",
            "rollback to 1",
            "release 2 misbehaves",
        ],
        &serve_log,
    );
    // serve rolls it out; the page follows, its events from the stream
    // (releases 1, 2 and now 3 rolled out).
    let t = Instant::now();
    let text = browser.wait_until("release 3's release.healthy event", &serve_log, |text| {
        text.matches("rolled out: every instance ready").count() == 3
    });
    assert!(text.contains("Release 3"), "{text}");
    browser.wait_for(&["2/2 ready", "runs release 3"], &serve_log);
    let mut status = Value::Null;
    assert!(
        eventually(Duration::from_secs(30), || {
            status = env.items(&["status"])[0].clone();
            status["release"] == 3 && status["outcome"] == "healthy" && status["ready"] == 2
        }),
        "web did not roll back to release 3 in {:?}: {status}\nserve:\n{}",
        t.elapsed(),
        std::fs::read_to_string(&serve_log).unwrap_or_default()
    );
    assert_eq!(status["image"], web1, "{status}");
    browser.go(&format!("{base}#/services/web"));
    browser.wait_for(&["out-of-sync", "runs release 3", "Release 3"], &serve_log);
    browser.screenshot("09-service-rolled-back");

    // The ledger names the token as the actor, on the page and in `audit`.
    browser.click("nav a[href='#/ledger']");
    browser.wait_for(
        &["Ledger verified", "token:deployer", "release.rollback"],
        &serve_log,
    );
    browser.screenshot("10-ledger-after-rollback");
    // Paging: from an entry on, back to the first.
    browser.go(&format!("{base}#/ledger?from=20"));
    browser.wait_for(&["entries 20–", "‹ older", "« first"], &serve_log);
    browser.click("a[href='#/ledger?from=1']");
    let text = browser.wait_for(&["entries 1–", "Ledger verified"], &serve_log);
    assert!(!text.contains("‹ older"), "{text}");
    // Filtered by actor: the token's own entries only.
    browser.type_into("#ledger-actor", "token:deployer");
    browser.click("#ledger-filter button[type=submit]");
    let text = browser.wait_for(&["1 matching entry", "release.rollback"], &serve_log);
    assert!(!text.contains("root@"), "{text}");
    browser.screenshot("11-ledger-by-actor");
    let audit = env.items(&["audit", "--action", "release.rollback"]);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["actor"], "token:deployer", "{audit:?}");

    drop(browser);
    let pngs = std::fs::read_dir(&shots).unwrap().count();
    assert_eq!(pngs, 11, "screenshots in {}", shots.display());
    eprintln!("dashboard: {pngs} screenshots in {}", shots.display());
}

//! `drover serve --admin`: its Prometheus metrics, scraped by a real
//! Prometheus (Debian's `prometheus`) on loopback, and read back through
//! Prometheus' query API after a rollout, requests through the proxy and a
//! heal; and the admin port moving to a `--takeover` successor. Needs root
//! and busybox (real instances), and prometheus.

use crate::common;

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Env, eventually, free_port, get, stop, write};
use serde_json::Value;

/// GET `path` on loopback `port` (HTTP/1.0: no chunking): status and body.
fn fetch(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let code = r.get(9..12)?.parse().ok()?;
    let (_, body) = r.split_once("\r\n\r\n")?;
    Some((code, body.to_string()))
}

/// Percent-encode a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant PromQL query that yields one sample (wrap it in
/// `sum(...)`), as Prometheus answers it; `None` while it has none.
fn query(port: u16, q: &str) -> Option<f64> {
    let (code, body) = fetch(port, &format!("/api/v1/query?query={}", encode(q)))?;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"].as_array()?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// A Prometheus scraping `target` every second, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(env: &Env, target: u16) -> Prometheus {
        let dir = env.dir.path().join("prometheus");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: drover\n    static_configs:\n      \
             - targets: ['127.0.0.1:{target}']\n"
        );
        write(&dir.join("prometheus.yml"), config.as_bytes(), 0o644);
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `q` is at least `min`; its last value.
    fn wait_for(&self, q: &str, min: f64, serve_log: &std::path::Path) -> f64 {
        let mut last = None;
        let ok = eventually(Duration::from_secs(30), || {
            last = query(self.port, q);
            last.is_some_and(|v| v >= min)
        });
        assert!(
            ok,
            "{q}: {last:?}, wanted at least {min}\nprometheus:\n{}\nserve:\n{}\nscrape:\n{}",
            self.log(),
            std::fs::read_to_string(serve_log).unwrap_or_default(),
            self.targets()
        );
        last.unwrap()
    }

    fn targets(&self) -> String {
        fetch(self.port, "/api/v1/targets").map_or(String::new(), |(_, b)| b)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fleet(env: &Env, tag: &str, port: u16, extra: &str) -> String {
    let text = format!(
        r#"
[service.web]
image = "web:{tag}"
replicas = 2
ports = [{port}]
drain = "1s"
{extra}

"#
    );
    common::write_fleet(env, &(text + common::WEB_HEALTH))
}

/// The pid of one running instance of web.
fn a_running_pid(env: &Env) -> Option<u64> {
    let all = env.items(&["status"]);
    let web = all.iter().find(|s| s["name"] == "web")?;
    web["instances"]
        .as_array()?
        .iter()
        .find(|i| i["state"] == "running")?["pid"]
        .as_u64()
}

#[test]
fn prometheus_reads_requests_releases_instances_and_heals_from_serve() {
    let Some(env) = common::web_env() else { return };
    if !common::require("prometheus") {
        return;
    }
    let (admin, port) = (free_port(), free_port());
    let serve_log = env.dir.path().join("serve.log");
    let mut serve = env
        .cmd()
        .args(["serve", "--interval", "500ms", "--drift-interval", "0"])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::null())
        .stderr(File::create(&serve_log).unwrap())
        .spawn()
        .expect("start drover serve");
    let prom = Prometheus::start(&env, admin);

    // The admin listener: metrics, and a 404 elsewhere.
    assert!(
        eventually(Duration::from_secs(10), || fetch(admin, "/metrics")
            .is_some_and(|(c, b)| c == 200 && b.ends_with("# EOF\n"))),
        "no /metrics on :{admin}:\n{}",
        std::fs::read_to_string(&serve_log).unwrap_or_default()
    );
    assert_eq!(fetch(admin, "/nothing").map(|(c, _)| c), Some(404));

    // Serve rolls out what `apply --detach` recorded.
    let out = env.ok(&[
        "apply",
        "--detach",
        "-f",
        &fleet(&env, "1", port, "min_healthy = \"0s\""),
    ]);
    assert!(out.contains("recorded release 1"), "{out}");
    assert!(
        eventually(Duration::from_secs(20), || get(port).as_deref()
            == Some("version one\n")),
        "the proxy on :{port} does not serve version one:\n{}",
        std::fs::read_to_string(&serve_log).unwrap_or_default()
    );
    for _ in 0..10 {
        assert_eq!(get(port).as_deref(), Some("version one\n"));
    }

    // kill -9 an instance: serve replaces it.
    let pid = a_running_pid(&env).expect("a running instance");
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();

    let p = &prom;
    let requests = p.wait_for(
        r#"sum(drover_proxy_requests_total{job="drover",service="web",code="200"})"#,
        11.0,
        &serve_log,
    );
    assert!(requests >= 11.0, "{requests}");
    p.wait_for(
        r#"sum(drover_proxy_request_duration_seconds_count{service="web"})"#,
        11.0,
        &serve_log,
    );
    let info = p.wait_for(
        r#"sum(drover_service_release_info{service="web",release="1",image="web:1"})"#,
        1.0,
        &serve_log,
    );
    assert_eq!(info, 1.0);
    p.wait_for(r#"sum(drover_heals_total{service="web"})"#, 1.0, &serve_log);
    p.wait_for(
        r#"sum(drover_rollouts_total{service="web",result="succeeded"})"#,
        1.0,
        &serve_log,
    );
    // After the heal, back to the replicas asked for.
    let running = p.wait_for(
        r#"sum(drover_instances{service="web",state="running"}) == sum(drover_service_replicas_desired{service="web"})"#,
        2.0,
        &serve_log,
    );
    assert_eq!(running, 2.0);
    p.wait_for(
        r#"sum(drover_health_probes_total{service="web",result="ok",phase="serving"})"#,
        1.0,
        &serve_log,
    );
    // The rollout's gates probed the new instances until they passed.
    p.wait_for(
        r#"sum(drover_health_probes_total{service="web",result="ok",phase="rollout"})"#,
        2.0,
        &serve_log,
    );
    p.wait_for(
        r#"sum(drover_ledger_entries_total{action="service.heal"})"#,
        1.0,
        &serve_log,
    );
    p.wait_for(
        "sum(process_resident_memory_bytes{job=\"drover\"})",
        1e6,
        &serve_log,
    );
    p.wait_for("sum(up{job=\"drover\"})", 1.0, &serve_log);

    // A successor (`--takeover`) binds the admin port once its
    // predecessor lets go, and answers there: its own start time.
    let started = |body: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .map(str::to_string)
    };
    let before = fetch(admin, "/metrics").and_then(|(_, b)| started(&b));
    assert!(before.is_some());
    let next_log = env.dir.path().join("serve-next.log");
    let mut next = env
        .cmd()
        .args([
            "serve",
            "--takeover",
            "--interval",
            "500ms",
            "--drift-interval",
            "0",
        ])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::null())
        .stderr(File::create(&next_log).unwrap())
        .spawn()
        .expect("start the successor");
    assert!(
        eventually(Duration::from_secs(20), || {
            serve.try_wait().unwrap().is_some()
                && fetch(admin, "/metrics").is_some_and(|(_, b)| started(&b) != before)
        }),
        "the successor does not answer on :{admin}:\n{}",
        std::fs::read_to_string(&next_log).unwrap_or_default()
    );
    assert_eq!(get(port).as_deref(), Some("version one\n"));

    stop(&mut next, Duration::from_secs(10));
    drop(prom);
}

/// The samples of serve's `/metrics` on `port`, `name{labels}` → value.
fn scrape(port: u16) -> Vec<(String, f64)> {
    let Some((200, body)) = fetch(port, "/metrics") else {
        return Vec::new();
    };
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn sample(samples: &[(String, f64)], key: &str) -> f64 {
    samples
        .iter()
        .find(|(k, _)| k == key)
        .map_or(0.0, |(_, v)| *v)
}

/// A release that was healthy and then crash-loops is rolled back by
/// serve: counted as a failed rollout and a rollback, with a back-off
/// while it looped, and the release info moves to the rollback.
#[test]
fn a_crash_loop_shows_as_a_failed_rollout_a_rollback_and_back_offs() {
    let Some(env) = common::web_env() else { return };
    common::web_image(
        &env,
        "crashy",
        "crashy\n",
        "/",
        "httpd -f -p \\\"$PORT\\\" -h /www & sleep 2.5; kill $!; exit 3",
    );
    let (admin, port) = (free_port(), free_port());
    env.ok(&[
        "apply",
        "-f",
        &fleet(&env, "1", port, "min_healthy = \"0s\""),
    ]);
    let crashy = fleet(
        &env,
        "crashy",
        port,
        "min_healthy = \"1s\"\ncrash_loop = { restarts = 3, within = \"2m\" }",
    );
    env.ok(&["apply", "-f", &crashy]);
    let log = env.dir.path().join("serve.log");
    let mut serve = env
        .cmd()
        .args(["serve", "--interval", "500ms", "--drift-interval", "0"])
        .args([
            "--max-backoff",
            "2s",
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("start drover serve");
    let mut last = Vec::new();
    let rolled_back = eventually(Duration::from_secs(60), || {
        last = scrape(admin);
        sample(
            &last,
            r#"drover_rollbacks_total{service="web",reason="crash_loop"}"#,
        ) >= 1.0
            && sample(
                &last,
                r#"drover_service_release_info{service="web",release="3",image="web:1"}"#,
            ) == 1.0
    });
    stop(&mut serve, Duration::from_secs(10));
    let shown = format!(
        "{last:#?}\nserve:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(rolled_back, "{shown}");
    assert!(
        sample(
            &last,
            r#"drover_rollouts_total{service="web",result="failed"}"#
        ) >= 1.0,
        "{shown}"
    );
    assert!(
        sample(&last, r#"drover_heals_total{service="web"}"#) >= 1.0,
        "{shown}"
    );
    assert!(
        sample(
            &last,
            r#"drover_ledger_entries_total{action="service.rollback"}"#
        ) >= 1.0,
        "{shown}"
    );
    assert!(
        sample(&last, r#"drover_backoffs_total{service="web"}"#) >= 1.0,
        "{shown}"
    );
}

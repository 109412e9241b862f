//! `drover serve` with real instances (embedded runtime), busybox httpd and
//! real load (Debian's wrk): self-healing, adoption after a restart, a
//! rollout recorded by `apply --detach` elsewhere, crash-loop back-off,
//! zero failed requests through ten deploys and a rollback, HTTP/2 and TCP
//! proxying, and drift made behind drover's back found and replaced.
//! Needs root (CI runs as root).

use crate::common;

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Env, eventually, free_port, get, show};
use serde_json::Value;

fn setup() -> Option<Env> {
    common::web_env()
}

/// Write the fleet file: service web, `replicas` of web:`tag`, proxied on
/// `port`.
fn fleet(env: &Env, tag: &str, replicas: u32, port: u16, extra: &str) -> String {
    // Tests about the stability window set their own.
    let min_healthy = if extra.contains("min_healthy") {
        ""
    } else {
        "min_healthy = \"0s\"\n"
    };
    let text = format!(
        r#"
[service.web]
image = "web:{tag}"
{min_healthy}replicas = {replicas}
ports = [{port}]
drain = "5s"
{extra}

"#
    );
    common::write_fleet(env, &(text + common::WEB_HEALTH))
}

/// A running `drover serve`, stopped (SIGTERM) when dropped.
struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn start(env: &Env, extra: &[&str]) -> Serve {
        let log = env
            .dir
            .path()
            .join(format!("serve-{}.log", Instant::now().elapsed().as_nanos()));
        let child = env
            .cmd()
            .args(["serve", "--bind", "127.0.0.1", "--interval", "500ms"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start drover serve");
        Serve { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        term(&self.child);
        let status = wait_child(&mut self.child, Duration::from_secs(10));
        std::mem::forget(self);
        status
    }
}

/// Start `serve` (drift scans off) and wait until its proxy on `port`
/// serves `page`.
fn serve_and_wait(env: &Env, port: u16, page: &str) -> Serve {
    let serve = Serve::start(env, &["--drift-interval", "0"]);
    assert!(
        eventually(Duration::from_secs(5), || get(port).as_deref()
            == Some(page)),
        "the proxy on :{port} does not serve {page:?}:\n{}",
        serve.log()
    );
    serve
}

impl Drop for Serve {
    fn drop(&mut self) {
        term(&self.child);
        wait_child(&mut self.child, Duration::from_secs(10));
    }
}

fn term(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

fn wait_child(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(env: &Env) -> Value {
    let all: Vec<Value> = env.items(&["status"]);
    all.into_iter()
        .find(|s| s["name"] == "web")
        .expect("service web")
}

/// Ids of the service's running instances.
fn running(env: &Env) -> Vec<String> {
    status(env)["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "running")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn ledger(env: &Env) -> Vec<Value> {
    env.items(&["audit"])
}

fn pid_of(env: &Env, id: &str) -> u32 {
    status(env)["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .and_then(|i| i["pid"].as_u64())
        .expect("a pid") as u32
}

common::backends!(serve_heals_a_killed_instance_and_adopts_what_runs_after_a_restart);
fn serve_heals_a_killed_instance_and_adopts_what_runs_after_a_restart() {
    let Some(env) = setup() else { return };
    let port = free_port();
    let f = fleet(&env, "1", 2, port, "");
    env.ok(&["apply", "-f", &f]);
    let before = running(&env);
    assert_eq!(before.len(), 2);

    let serve = serve_and_wait(
        &env,
        port,
        "version one
",
    );

    // One serve per store.
    let second = env.run(&["serve", "--bind", "127.0.0.1"]);
    assert_eq!(second.status.code(), Some(5), "busy: {}", show(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another `drover serve` runs"),
        "{}",
        show(&second)
    );

    // kill -9 one instance's process: replaced within 2 s.
    let victim = before[0].clone();
    let killed = Instant::now();
    Command::new("kill")
        .args(["-KILL", &pid_of(&env, &victim).to_string()])
        .status()
        .unwrap();
    let healed = eventually(Duration::from_secs(5), || {
        let now = running(&env);
        now.len() == 2 && !now.contains(&victim)
    });
    let took = killed.elapsed();
    assert!(healed, "not replaced:\n{}", serve.log());
    assert!(
        took < Duration::from_secs(2) + Duration::from_millis(500),
        "took {took:?}"
    );
    assert!(
        eventually(Duration::from_secs(3), || status(&env)["ready"] == 2),
        "{}",
        status(&env)
    );
    let heal = ledger(&env)
        .into_iter()
        .find(|e| e["action"] == "service.heal")
        .expect("a service.heal ledger entry");
    assert_eq!(heal["details"]["instance"], victim.as_str());
    assert!(
        eventually(
            Duration::from_secs(3),
            || status(&env)["health"]["restarts"] == 1
        ),
        "{}",
        status(&env)
    );

    // SIGTERM: serve stops cleanly, the instances keep running.
    let ids = running(&env);
    let code = serve.stop();
    assert!(code.success(), "serve exited {code}");
    assert_eq!(running(&env), ids, "instances outlive serve");

    // A new serve adopts them: nothing is replaced, traffic flows.
    let serve = serve_and_wait(
        &env,
        port,
        "version one
",
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(running(&env), ids, "a restarted serve replaced instances");
    drop(serve);
    env.ok(&["audit", "verify"]);
}

common::backends!(serve_rolls_out_what_apply_recorded_from_another_process);
fn serve_rolls_out_what_apply_recorded_from_another_process() {
    let Some(env) = setup() else { return };
    let port = free_port();
    env.ok(&["apply", "-f", &fleet(&env, "1", 2, port, "")]);
    let serve = Serve::start(&env, &["--drift-interval", "0"]);
    let out = env.ok(&["apply", "--detach", "-f", &fleet(&env, "2", 3, port, "")]);
    assert!(out.contains("recorded release 2"), "{out}");
    let done = eventually(Duration::from_secs(20), || {
        let s = status(&env);
        s["release"] == 2
            && s["ready"] == 3
            && s["outcome"] == "healthy"
            && running(&env).len() == 3
    });
    assert!(done, "{}\n{}", status(&env), serve.log());
    assert_eq!(get(port).as_deref(), Some("version two\n"));
}

common::backends!(an_instance_that_stops_answering_its_health_check_is_replaced);
fn an_instance_that_stops_answering_its_health_check_is_replaced() {
    let Some(env) = setup() else { return };
    let port = free_port();
    env.ok(&["apply", "-f", &fleet(&env, "1", 2, port, "")]);
    let serve = serve_and_wait(&env, port, "version one\n");
    let ids = running(&env);
    let victim = ids[0].clone();
    let victim_port = status(&env)["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == victim.as_str())
        .unwrap()["port"]
        .as_u64()
        .unwrap();
    // Freeze its web server: the process lives on, the check times out.
    let out = Command::new("pkill")
        .args(["-STOP", "-f", &format!("httpd -f -p {victim_port} ")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let replaced = eventually(Duration::from_secs(15), || {
        let now = running(&env);
        now.len() == 2 && !now.contains(&victim) && status(&env)["ready"] == 2
    });
    assert!(replaced, "{}\n{}", status(&env), serve.log());
    let e = ledger(&env)
        .into_iter()
        .find(|e| e["action"] == "instance.unhealthy")
        .expect("an instance.unhealthy ledger entry");
    assert_eq!(e["subjects"][0], victim.as_str());
    assert!(
        e["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("http GET"),
        "{e}"
    );
}

common::backends!(a_crash_looping_release_backs_off_and_shows_in_status);
fn a_crash_looping_release_backs_off_and_shows_in_status() {
    let Some(env) = setup() else { return };
    // Healthy long enough to be released, then it dies after 1.5 s.
    common::web_image(
        &env,
        "crashy",
        "crashy\n",
        "/",
        "httpd -f -p \\\"$PORT\\\" -h /www & sleep 1.5; kill $!; exit 3",
    );
    let port = free_port();
    env.ok(&["apply", "-f", &fleet(&env, "crashy", 1, port, "")]);
    let serve = Serve::start(&env, &["--drift-interval", "0", "--max-backoff", "4s"]);
    let backing_off = eventually(Duration::from_secs(20), || {
        let h = &status(&env)["health"];
        h["failures"].as_i64().unwrap_or(0) >= 2 && h["backoff_until"].is_i64()
    });
    let s = status(&env);
    assert!(backing_off, "{s}\n{}", serve.log());
    assert!(
        s["health"]["last_error"]
            .as_str()
            .unwrap()
            .contains("crash loop"),
        "{s}"
    );
    let text = env.ok(&["status"]);
    assert!(text.contains("backing off"), "{text}");
    assert!(
        ledger(&env)
            .iter()
            .any(|e| e["action"] == "service.backoff"),
        "a service.backoff ledger entry"
    );
    // It was not rolled back: the release stays, only its instances restart.
    assert_eq!(s["release"], 1);
}

/// Run wrk against `port` until `stop` returns; the (requests, errors,
/// non-2xx) it reports.
fn wrk_during(port: u16, work: impl FnOnce()) -> (u64, u64, u64, String) {
    wrk_during_at("127.0.0.1", port, work)
}

/// [`wrk_during`] against the proxy listening on `addr`.
pub(crate) fn wrk_during_at(addr: &str, port: u16, work: impl FnOnce()) -> (u64, u64, u64, String) {
    let mut child = Command::new("wrk")
        .args(["-t1", "-c8", "-d600s", "--timeout", "10s"])
        .arg(format!("http://{addr}:{port}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk");
    std::thread::sleep(Duration::from_secs(1));
    work();
    std::thread::sleep(Duration::from_secs(1));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out: Output = {
        wait_child(&mut child, Duration::from_secs(10));
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        Output {
            status: child.wait().unwrap(),
            stdout: stdout.into_bytes(),
            stderr: vec![],
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(0);
    let errors = text
        .lines()
        .find(|l| l.contains("Socket errors"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let non2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (requests, errors, non2xx, text)
}

common::backends!(ten_deploys_and_a_rollback_under_load_fail_no_request);
fn ten_deploys_and_a_rollback_under_load_fail_no_request() {
    let Some(env) = setup() else { return };
    if !common::require("wrk") {
        return;
    }
    let port = free_port();
    env.ok(&["apply", "-f", &fleet(&env, "1", 2, port, "")]);
    let serve = serve_and_wait(
        &env,
        port,
        "version one
",
    );
    let (requests, errors, non2xx, text) = wrk_during(port, || {
        for n in 0..10 {
            let tag = if n % 2 == 0 { "2" } else { "1" };
            let f = fleet(&env, tag, 2, port, "");
            let out = env.run(&["apply", "-f", &f, "-m", &format!("deploy {n}")]);
            assert!(out.status.success(), "deploy {n}: {}", show(&out));
        }
        let out = env.run(&["rollback", "web"]);
        assert!(out.status.success(), "rollback: {}", show(&out));
    });
    eprintln!("{text}");
    let releases: Vec<Value> = env.items(&["releases", "web"]);
    assert_eq!(releases.len(), 12, "1 + 10 deploys + 1 rollback");
    assert!(requests > 100, "wrk made only {requests} requests:\n{text}");
    assert_eq!(
        (errors, non2xx),
        (0, 0),
        "failed requests:\n{text}\n{}",
        serve.log()
    );
}

common::backends!(the_proxy_speaks_http2_and_plain_tcp);
fn the_proxy_speaks_http2_and_plain_tcp() {
    let Some(env) = setup() else { return };
    let port = free_port();
    env.ok(&["apply", "-f", &fleet(&env, "1", 2, port, "")]);
    let serve = serve_and_wait(
        &env,
        port,
        "version one
",
    );
    if common::require("curl") {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--http2-prior-knowledge",
                "-o",
                "-",
                "-w",
                "%{http_version}",
            ])
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", show(&out));
        assert_eq!(text, "version one\n2", "HTTP/2 through the proxy");
    }
    // The same service as plain TCP.
    let tcp = free_port();
    env.ok(&["apply", "-f", &fleet(&env, "1", 2, tcp, "proxy = \"tcp\"")]);
    assert!(
        eventually(Duration::from_secs(5), || get(tcp).as_deref()
            == Some("version one\n")),
        "{}",
        serve.log()
    );
    assert!(get(port).is_none(), "the old port closed");
}

/// Run `script` inside instance `pid`'s user, mount and pid namespaces, as
/// its root (with every capability and no seccomp filter).
fn inside(pid: u32, script: &str) {
    let out = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-U",
            "-m",
            "-p",
            "/bin/busybox",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {}", show(&out));
}

/// The shared, unpacked root instance `id` runs on (on the host).
fn shared_root(env: &Env, id: &str) -> PathBuf {
    env.items(&["ps"])
        .iter()
        .find(|i| i["id"] == id)
        .and_then(|i| i["launch"]["rootfs"].as_str())
        .map(PathBuf::from)
        .expect("a root")
}

fn drift_json(env: &Env, target: &str) -> (i32, Value) {
    let out = env.run(&["--json", "drift", target]);
    let code = out.status.code().unwrap_or(-1);
    let v = common::doc(&String::from_utf8_lossy(&out.stdout));
    (code, v)
}

fn paths_of(report: &Value, id: &str) -> Vec<String> {
    report["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == id)
        .map(|i| {
            i["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let field = |k: &str| f[k].as_str().unwrap_or_default().to_string();
                    match f["area"].as_str().unwrap() {
                        "file" => field("path"),
                        "config" => format!("config:{}", field("path")),
                        "process" => format!("process:{}", field("what")),
                        other => other.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

common::backends!(drift_behind_drovers_back_is_found_and_replaced_not_patched);
fn drift_behind_drovers_back_is_found_and_replaced_not_patched() {
    let Some(env) = setup() else { return };
    let port = free_port();
    env.ok(&["apply", "-f", &fleet(&env, "1", 2, port, "")]);
    let (code, clean) = drift_json(&env, "web");
    assert_eq!(code, 0, "a fresh service has no drift: {clean}");
    let ids = running(&env);
    let (a, b) = (ids[0].clone(), ids[1].clone());

    // Behind drover's back, as host root. a's root cannot be remounted
    // read-write even from the host: its id-mapped view is locked read-only
    // inside the instance's user namespace. So edit the shared root on the
    // host: a file changed, one added, one chmodded; and change b's config.
    let remount = Command::new("nsenter")
        .args(["-t", &pid_of(&env, &a).to_string(), "-m", "-p"])
        .args(["/bin/busybox", "mount", "-o", "remount,rw,bind", "/"])
        .output()
        .unwrap();
    assert!(
        !remount.status.success(),
        "a's root was remounted read-write"
    );
    let shared = shared_root(&env, &a);
    std::fs::write(shared.join("www/index.html"), "hacked\n").unwrap();
    std::fs::write(shared.join("www/added.html"), "new\n").unwrap();
    std::fs::set_permissions(
        shared.join("etc/passwd"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    common::tamper_env(&env, &b, "INJECTED=1");

    let (code, report) = drift_json(&env, "web");
    assert_eq!(code, 3, "drift found: exit 3");
    let pa = paths_of(&report, &a);
    for p in ["/www/index.html", "/www/added.html", "/etc/passwd"] {
        assert!(pa.contains(&p.to_string()), "{p} not in {pa:?}");
    }
    let pb = paths_of(&report, &b);
    assert!(
        pb.iter().any(|p| p == "/www/index.html"),
        "b shares the root: {pb:?}"
    );
    assert!(
        pb.contains(&"config:/process/env".to_string()),
        "b's config change: {pb:?}"
    );
    let text = env.run(&["drift", &b]);
    assert_eq!(text.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("INJECTED=1"),
        "{}",
        show(&text)
    );

    // serve replaces both with fresh instances on a freshly unpacked root.
    let serve = Serve::start(&env, &["--drift-interval", "1s"]);
    let replaced = eventually(Duration::from_secs(30), || {
        let now = running(&env);
        now.len() == 2 && !now.contains(&a) && !now.contains(&b) && status(&env)["ready"] == 2
    });
    assert!(replaced, "{}\n{}", status(&env), serve.log());

    // Again, under load: replacing drifted instances fails no request
    // (the replacements start and pass their checks before the drifted
    // ones are drained and stopped).
    if common::require("wrk") {
        let drifted = running(&env);
        let (requests, errors, non2xx, text) = wrk_during(port, || {
            inside(pid_of(&env, &drifted[0]), "echo x > /tmp/ok");
            let root = shared_root(&env, &drifted[0]);
            std::fs::write(root.join("www/again.html"), "new\n").unwrap();
            let again = eventually(Duration::from_secs(30), || {
                let now = running(&env);
                now.len() == 2
                    && drifted.iter().all(|d| !now.contains(d))
                    && status(&env)["ready"] == 2
            });
            assert!(again, "{}\n{}", status(&env), serve.log());
        });
        assert!(requests > 100, "wrk made only {requests} requests:\n{text}");
        assert_eq!(
            (errors, non2xx),
            (0, 0),
            "failed requests:\n{text}\n{}",
            serve.log()
        );
    }
    drop(serve);
    assert_eq!(get(port), None, "serve is gone, and so is its proxy");
    let (code, after) = drift_json(&env, "web");
    assert_eq!(code, 0, "replacements run on a clean root: {after}");
    let entries: Vec<Value> = ledger(&env)
        .into_iter()
        .filter(|e| e["action"] == "instance.drift" && e["details"]["action"] == "replaced")
        .collect();
    assert!(
        entries.iter().any(|e| e["details"]["paths"]
            .to_string()
            .contains("/www/index.html")),
        "{entries:?}"
    );
    let paths = entries
        .iter()
        .map(|e| e["details"]["paths"].to_string())
        .collect::<String>();
    if common::have("wrk") {
        assert!(paths.contains("/www/again.html"), "{paths}");
    }
    assert!(
        !paths.contains("/tmp/ok"),
        "the tmpfs is out of scope: {paths}"
    );
    let page = std::fs::read_to_string(
        env.store()
            .join("rootfs")
            .join(
                status(&env)["image"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            )
            .join("www/index.html"),
    )
    .unwrap();
    assert_eq!(page, "version one\n", "the fresh root is the image's");
    env.ok(&["audit", "verify"]);
}

/// Release 1 of web (version one) applied on a free port, which it returns;
/// and image web:crashy, whose server answers for `secs` and then exits 3.
fn healthy_then_crashy(env: &Env, secs: &str) -> u16 {
    common::web_image(
        env,
        "crashy",
        "crashy\n",
        "/",
        &format!("httpd -f -p \\\"$PORT\\\" -h /www & sleep {secs}; kill $!; exit 3"),
    );
    let port = free_port();
    env.ok(&["apply", "-f", &fleet(env, "1", 1, port, "")]);
    port
}

common::backends!(a_healthy_release_that_crash_loops_is_rolled_back_to_the_last_stable_one);
/// Issue 18: a release that was healthy (it passed its window) and then
/// crash-loops under `serve` is rolled back to the last release that was
/// healthy and stable, with a `service.rollback` ledger entry saying why;
/// the crash-looping release is marked unstable and quarantined, and the
/// back-off clears once the service is healthy again.
fn a_healthy_release_that_crash_loops_is_rolled_back_to_the_last_stable_one() {
    let Some(env) = setup() else { return };
    let port = healthy_then_crashy(&env, "2.5");
    // Stable for its 1 s window, so `apply` calls it healthy.
    let crashy = fleet(
        &env,
        "crashy",
        1,
        port,
        "min_healthy = \"1s\"\ncrash_loop = { restarts = 3, within = \"2m\" }",
    );
    env.ok(&["apply", "-f", &crashy]);
    assert_eq!(status(&env)["outcome"], "healthy");
    let serve = Serve::start(&env, &["--drift-interval", "0", "--max-backoff", "2s"]);
    let back = eventually(Duration::from_secs(60), || {
        let s = status(&env);
        s["release"] == 3 && s["ready"] == 1
    });
    let s = status(&env);
    assert!(back, "{s}\n{}", serve.log());
    assert!(
        eventually(Duration::from_secs(5), || get(port).as_deref()
            == Some("version one\n")),
        "{}",
        serve.log()
    );
    let rollback = ledger(&env)
        .into_iter()
        .find(|e| e["action"] == "service.rollback")
        .expect("a service.rollback entry");
    let d = &rollback["details"];
    assert_eq!(
        (d["from"].as_i64(), d["to"].as_i64()),
        (Some(2), Some(3)),
        "{d}"
    );
    assert_eq!(d["rollback_of"], 1, "{d}");
    assert_eq!(d["automatic"], true, "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("crash loop: 3 restarts"),
        "{d}"
    );
    assert!(
        eventually(Duration::from_secs(10), || serve
            .log()
            .contains("is in a crash loop")),
        "{}",
        serve.log()
    );
    let releases: Vec<Value> = env.items(&["releases", "web"]);
    assert!(
        releases[1]["unstable"]
            .as_str()
            .is_some_and(|u| u.contains("crash loop")),
        "{releases:?}"
    );
    assert!(env.ok(&["releases", "web"]).contains("unstable"));
    assert_eq!(s["quarantined"].as_array().unwrap().len(), 1, "{s}");
    // Healthy again: no back-off left.
    assert!(
        eventually(Duration::from_secs(15), || {
            let h = &status(&env)["health"];
            h["failures"] == 0 && h["backoff_until"].is_null()
        }),
        "{}",
        status(&env)
    );
    assert!(!env.ok(&["status"]).contains("backing off"));
    // Applying the crash-looping file again meets its quarantine.
    let out = env.run(&["apply", "-f", &crashy]);
    assert!(
        !out.status.success() && show(&out).contains("quarantined"),
        "{}",
        show(&out)
    );
    env.ok(&["audit", "verify"]);
}

common::backends!(a_manual_rollback_out_of_a_crash_loop_clears_the_back_off);
/// Regression (issue 18): after a manual rollback out of a crash loop,
/// `status` still said "backing off: crash loop". The back-off belongs to
/// the release that crash-looped. (`crash_loop = false`: serve only backs
/// off, it does not roll back by itself.)
fn a_manual_rollback_out_of_a_crash_loop_clears_the_back_off() {
    let Some(env) = setup() else { return };
    let port = healthy_then_crashy(&env, "1.5");
    env.ok(&[
        "apply",
        "-f",
        &fleet(&env, "crashy", 1, port, "crash_loop = false"),
    ]);
    let serve = Serve::start(&env, &["--drift-interval", "0", "--max-backoff", "30s"]);
    assert!(
        eventually(Duration::from_secs(30), || {
            let h = &status(&env)["health"];
            h["failures"].as_i64().unwrap_or(0) >= 2
        }),
        "{}\n{}",
        status(&env),
        serve.log()
    );
    assert!(env.ok(&["status"]).contains("backing off"));
    assert_eq!(
        status(&env)["release"],
        2,
        "crash_loop = false: no rollback"
    );
    env.ok(&["rollback", "web"]);
    let text = env.ok(&["status"]);
    assert!(!text.contains("backing off"), "{text}");
    let s = status(&env);
    assert_eq!(s["health"]["failures"], 0, "{s}");
    assert!(
        eventually(Duration::from_secs(10), || get(port).as_deref()
            == Some("version one\n")),
        "{}",
        serve.log()
    );
}

common::backends!(status_says_not_served_until_serve_runs);
/// Regression (issue 20): `status` said "in traffic" when no `serve` ran,
/// so nothing proxied anything. It says the service is not served, until
/// `serve` runs.
fn status_says_not_served_until_serve_runs() {
    let Some(env) = setup() else { return };
    let port = free_port();
    env.ok(&["apply", "-f", &fleet(&env, "1", 1, port, "")]);
    let text = env.ok(&["status"]);
    assert!(
        text.contains("NOT SERVED") && text.contains("ready, not served"),
        "{text}"
    );
    assert!(!text.contains("in traffic"), "{text}");
    assert_eq!(status(&env)["served"], false);
    let serve = Serve::start(&env, &["--drift-interval", "0"]);
    let served = eventually(Duration::from_secs(20), || status(&env)["served"] == true);
    assert!(served, "{}\n{}", status(&env), serve.log());
    let text = env.ok(&["status"]);
    assert!(
        text.contains("in traffic") && !text.contains("NOT SERVED"),
        "{text}"
    );
}

//! The examples that run (issue 17, deliverable 6): `examples/nginx`,
//! `examples/redis` and `examples/python-app`, each built from its
//! committed `drover.lock` against the real Debian repository, in two
//! fresh stores (the same digest: bit-identical), signed by the store's
//! host key and so trusted by the default policy, deployed with its own
//! health check gating the rollout, read-only, and answering on its port.
//!
//! nginx and redis listen on fixed ports (8080, 6379), so the tests that
//! run them take turns.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Env, show};
use crate::packages::{self, example};

/// One example instance at a time: their ports are fixed.
static PORTS: Mutex<()> = Mutex::new(());

/// Root is needed to run instances (and CI has it).
fn root() -> bool {
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    if uid != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "the examples run instances: root in CI"
        );
        eprintln!("skipping: the examples run instances, which needs root");
    }
    uid == 0
}

/// Build `examples/<name>` in two fresh stores: the same digest. Returns
/// the first store (the image signed there) and the digest.
fn build_twice(name: &str) -> (Env, String) {
    packages::warm(name);
    let def = example(name).join("drover.toml");
    let def = def.to_str().unwrap();
    let [a, b] = [packages::store(), packages::store()];
    let da = common::last_line(&a.ok(&["build", "--sign", "-f", def]));
    let db = common::last_line(&b.ok(&["build", "-f", def]));
    assert!(da.starts_with("sha256:"), "{da}");
    assert_eq!(da, db, "examples/{name}: two fresh stores, two images");
    // The default policy: images built and signed by this host.
    let reference = images(&a);
    a.ok(&["policy", "check", &reference]);
    (a, da)
}

/// The one tag in `env`.
fn images(env: &Env) -> String {
    let list = env.items(&["images"]);
    assert_eq!(list.len(), 1, "{list:?}");
    list[0]["name"].as_str().unwrap().to_string()
}

/// Deploy `fleet` (a fleet file's text): `apply` waits for the image's own
/// health check. Returns the running instances (`ps --json`).
fn deploy(env: &Env, fleet: &str) -> Vec<Value> {
    let file = env.ctx().join("fleet.toml");
    common::write(&file, fleet.as_bytes(), 0o644);
    let out = env.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("rolled out release 1"), "{out}");
    let status = env.ok(&["status"]);
    assert!(
        status.contains("(healthy)") && status.contains("1/1 ready"),
        "{status}"
    );
    running(env)
}

fn running(env: &Env) -> Vec<Value> {
    env.items(&["ps"])
        .into_iter()
        .filter(|i| i["state"] == "running")
        .collect()
}

/// The instance's root is mounted read-only.
fn assert_read_only(instance: &Value) {
    let pid = instance["pid"].as_u64().expect("a pid");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no / in {mounts}"));
    let options = root.split_whitespace().nth(5).unwrap();
    assert!(options.split(',').any(|o| o == "ro"), "{root}");
}

/// Connect to 127.0.0.1:`port`, retrying for a few seconds.
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                return s;
            }
            Err(e) if Instant::now() > deadline => panic!("127.0.0.1:{port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `GET path` on 127.0.0.1:`port`: the status line and the body.
fn get(port: u16, path: &str) -> (String, String) {
    let mut s = connect(port);
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// One redis command (inline protocol) on 6379: the first reply line(s).
fn redis(command: &str) -> String {
    let mut s = connect(6379);
    write!(s, "{command}\r\nQUIT\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

/// Nothing listens on `port` (another example, or something of the host's).
fn assert_free(port: u16) {
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "127.0.0.1:{port} is taken; the example needs it"
    );
}

#[test]
fn nginx_builds_bit_identically_and_serves_read_only() {
    if !root() {
        return;
    }
    let (env, _) = build_twice("nginx");
    let _turn = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    assert_free(8080);
    let instances = deploy(
        &env,
        "[service.nginx]\nimage = \"nginx:1.22\"\nmin_healthy = \"0s\"\n",
    );
    assert_read_only(&instances[0]);
    assert_eq!(instances[0]["launch"]["uid"], 101, "{}", instances[0]);
    assert_eq!(
        get(8080, "/healthz"),
        ("HTTP/1.1 200 OK".into(), "ok\n".into())
    );
    let (status, page) = get(8080, "/");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let want = std::fs::read_to_string(example("nginx").join("html/index.html")).unwrap();
    assert_eq!(page, want);
    // Logs go to the instance's stdout, as the config says.
    let id = instances[0]["id"].as_str().unwrap();
    assert!(env.ok(&["logs", id]).contains("\"GET / HTTP/1.0\" 200"));
    // nginx listens on 8080 whatever $PORT says; its health check names
    // 8080, so that is the instance's port (and $PORT).
    assert_eq!(instances[0]["port"], 8080, "{}", instances[0]);

    // Through serve's proxy, and across a rolling update: the new
    // instance can only bind 8080 once the old one let go, so the rollout
    // stops the old one first (plan says why), and the proxy follows.
    let proxy = common::free_port();
    let fleet = |v: &str| {
        format!(
            "[service.nginx]\nimage = \"nginx:1.22\"\nmin_healthy = \"0s\"\nports = [{proxy}]\n\
             env = {{ RELEASE = \"{v}\" }}\n"
        )
    };
    let file = env.ctx().join("fleet.toml");
    common::write(&file, fleet("1").as_bytes(), 0o644);
    let f = file.to_str().unwrap();
    env.ok(&["apply", "-f", f]);
    let log = env.dir.path().join("serve.log");
    let mut serve = env
        .cmd()
        .args([
            "serve",
            "--interval",
            "500ms",
            "--drift-interval",
            "0",
            "--admin",
            "off",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let page_via_proxy = || common::get(proxy).is_some_and(|b| b == want);
    assert!(
        common::eventually(Duration::from_secs(20), page_via_proxy),
        "no page through the proxy on :{proxy}:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    common::write(&file, fleet("2").as_bytes(), 0o644);
    let plan = env.ok(&["plan", "-f", f]);
    assert!(
        plan.contains(
            "each old instance stopped before its replacement starts: port 8080 is fixed"
        ),
        "{plan}"
    );
    let out = env.ok(&["apply", "-f", f]);
    assert!(out.contains("rolled out release 3"), "{out}");
    assert!(
        common::eventually(Duration::from_secs(20), page_via_proxy),
        "no page through the proxy after the update:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    common::stop(&mut serve, Duration::from_secs(10));
    env.ok(&["service", "rm", "nginx"]);
}

#[test]
fn redis_keeps_its_data_in_a_volume_across_instances() {
    if !root() {
        return;
    }
    let (env, _) = build_twice("redis");
    let _turn = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    assert_free(6379);
    // The example's own fleet file: the volume redisdata on /data.
    let fleet = std::fs::read_to_string(example("redis").join("fleet.toml")).unwrap();
    let instances = deploy(&env, &fleet);
    assert_read_only(&instances[0]);
    assert_eq!(instances[0]["launch"]["uid"], 999, "{}", instances[0]);
    assert!(redis("SET greeting persisted").starts_with("+OK"));
    let id = instances[0]["id"].as_str().unwrap();
    env.ok(&["stop", id]);
    env.ok(&["rm", id]);
    assert_free(6379);
    // A new instance on the same volume finds the key.
    env.ok(&[
        "run",
        "--name",
        "again",
        "-v",
        "redisdata:/data",
        "redis:7.0",
    ]);
    // Just started, redis answers LOADING until it has read its dump.
    let mut reply = redis("GET greeting");
    let t = Instant::now();
    while reply.starts_with("-LOADING") && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        reply = redis("GET greeting");
    }
    assert!(reply.starts_with("$9\r\npersisted\r\n"), "{reply:?}");
    let out = env.run(&["rm", "--force", "again"]);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn the_python_app_serves_on_its_port_as_an_unprivileged_user() {
    if !root() {
        return;
    }
    let (env, _) = build_twice("python-app");
    // Its port is the one drover gives it ($PORT): no turn needed.
    let instances = deploy(
        &env,
        "[service.app]\nimage = \"python-app:1.0\"\nmin_healthy = \"0s\"\n",
    );
    let instance = &instances[0];
    assert_read_only(instance);
    assert_eq!(instance["launch"]["uid"], 10001, "{instance}");
    let port = instance["port"].as_u64().unwrap() as u16;
    assert_eq!(
        get(port, "/healthz"),
        ("HTTP/1.0 200 OK".into(), "ok\n".into())
    );
    assert_eq!(get(port, "/").1, "hello from python\n");
    assert_eq!(get(port, "/count").1, "{\"visits\": 1}\n");
    // The run step compiled the app; the root is read-only to the app.
    let out = env.run(&[
        "run",
        "--wait",
        "--rm",
        "python-app:1.0",
        "--",
        "/usr/bin/python3",
        "-c",
        "import app, os; print(app.__cached__, os.path.exists(app.__cached__)); open('/app/x', 'w')",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("/app/__pycache__/app.cpython-311.pyc True")
            && text.contains("Read-only file system"),
        "{text}"
    );
}

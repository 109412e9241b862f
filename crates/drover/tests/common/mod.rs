//! Shared helpers for the integration tests: run the real `drover` binary
//! against a temp store and a generated build context.
#![allow(dead_code)]

pub mod netns;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const DROVER: &str = env!("CARGO_BIN_EXE_drover");

pub use drover_core::state::pgtest::Backend;

/// Each test twice, on both state backends: `name::sqlite` and
/// `name::postgres` run the plain function `name` (which makes its
/// [`Env`]s on that backend). PostgreSQL runs on a throwaway cluster, one
/// per test binary, a database per `Env`; skipped where PostgreSQL is not
/// installed, except in CI, where that fails.
macro_rules! backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                drover_core::state::pgtest::with($crate::common::Backend::Sqlite, super::$name)
            }
            #[test]
            fn postgres() {
                drover_core::state::pgtest::with($crate::common::Backend::Postgres, super::$name)
            }
        }
    )*};
}
pub(crate) use backends;

/// A temp dir holding a store (`store/`) and a build context (`ctx/`).
pub struct Env {
    pub dir: tempfile::TempDir,
    /// `DROVER_STATE` for every command: a PostgreSQL database of the test
    /// cluster, or none (SQLite).
    pub state: Option<String>,
}

impl Env {
    /// A temp dir; its store has the built-in default policy (images built
    /// and signed by its host key). Its state is on the running test's
    /// backend ([`backends!`]; SQLite outside it).
    pub fn new() -> Env {
        Env::on(drover_core::state::pgtest::backend())
    }

    /// [`Env::new`] on `backend`.
    pub fn on(backend: Backend) -> Env {
        let state = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(
                drover_core::state::pgtest::cluster()
                    .expect("a PostgreSQL test runs only with a cluster")
                    .database(),
            ),
        };
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
            state,
        }
    }

    /// Another store (another host of a fleet) over the same state as
    /// this one: the same PostgreSQL database (`DROVER_STATE`).
    pub fn sharing(&self) -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
            state: self.state.clone(),
        }
    }

    /// Replace the store's policy with `text`.
    pub fn set_policy(&self, text: &str) {
        write(&self.store().join("policy.toml"), text.as_bytes(), 0o644);
    }

    /// Trust `other`'s host key too (images signed there run here).
    pub fn trust(&self, other: &Env) {
        let pub_key = other.store().join("keys/host.pub");
        assert!(
            pub_key.exists(),
            "{} has no host key yet",
            other.store().display()
        );
        self.set_policy(&format!(
            "trusted_keys = [\"keys/host.pub\", {:?}]\n",
            pub_key.to_str().unwrap()
        ));
        // The host key of this store must exist for the policy to load.
        self.ok(&["key", "show"]);
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    /// A `drover` command with `--store` set.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(DROVER);
        c.arg("--init")
            .arg("--store")
            .arg(self.store())
            .env_remove("SOURCE_DATE_EPOCH");
        match &self.state {
            Some(url) => c.env("DROVER_STATE", url),
            None => c.env_remove("DROVER_STATE"),
        };
        c
    }

    /// Run drover with `args`; panics with its output if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "drover {args:?} failed:\n{}",
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `drover --json ARGS` (it must succeed) and return its document
    /// (checked to carry `apiVersion: drover/v1` and a `kind`).
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        doc(&self.ok(&all))
    }

    /// Run `drover --json ARGS` (it must succeed) and return the items of
    /// its list document (`kind: <Kind>List`).
    pub fn items(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        items(&self.ok(&all))
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run drover")
    }

    /// Build the definition at `ctx/drover.toml`; returns the digest.
    pub fn build(&self, extra: &[&str]) -> String {
        let def = self.ctx().join("drover.toml");
        let mut args = vec!["build", "-f", def.to_str().unwrap()];
        args.extend_from_slice(extra);
        last_line(&self.ok(&args))
    }

    pub fn write_def(&self, toml: &str) {
        write(&self.ctx().join("drover.toml"), toml.as_bytes(), 0o644);
    }
}

/// Instances outlive the CLI by design; a test's must not outlive the test
/// (their store is about to be deleted under them).
impl Drop for Env {
    fn drop(&mut self) {
        let store = self.store();
        if !store.join("oci-layout").exists() {
            return;
        }
        let Ok(out) = self.cmd().args(["--json", "ps"]).output() else {
            return;
        };
        // On a fleet, only this store's host's instances are its to stop.
        let me = drover_core::state::hosts::local_host(&store).map(|(h, _)| h);
        let ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|i| i["host"].as_str().is_none_or(|h| Some(h) == me.as_deref()))
            .filter_map(|i| i["id"].as_str().map(str::to_string))
            .collect();
        if !ids.is_empty() {
            let _ = self.cmd().args(["rm", "--force"]).args(&ids).output();
        }
    }
}

/// A machine-readable document drover printed: parsed, and checked to be
/// versioned (`apiVersion: drover/v1`, a `kind`).
pub fn doc(text: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON document ({e}):\n{text}"));
    assert_eq!(v["apiVersion"], "drover/v1", "{text}");
    assert!(v["kind"].is_string(), "no kind: {text}");
    v
}

/// The items of a list document (`kind: <Kind>List`).
pub fn items(text: &str) -> Vec<serde_json::Value> {
    let v = doc(text);
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    assert!(kind.ends_with("List"), "{kind} is not a list: {text}");
    match v {
        serde_json::Value::Object(mut m) => match m.remove("items") {
            Some(serde_json::Value::Array(items)) => items,
            other => panic!("a {kind} without items: {other:?}"),
        },
        _ => unreachable!(),
    }
}

pub fn show(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or_default().trim().to_string()
}

pub fn write(path: &Path, content: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A small but varied tree: nested dirs, text and binary files, an
/// executable, a symlink, a hard link, an empty dir, a long path.
pub fn sample_tree(root: &Path) {
    write(&root.join("etc/motd"), b"welcome\n", 0o644);
    write(&root.join("etc/app/config.toml"), b"port = 8080\n", 0o600);
    write(&root.join("bin/tool"), b"#!/bin/sh\necho tool\n", 0o755);
    let blob: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&root.join("usr/share/data.bin"), &blob, 0o644);
    let long = "very-long-directory-name-".repeat(5);
    write(
        &root.join(format!("opt/{long}/{long}/file.txt")),
        b"deep\n",
        0o644,
    );
    fs::create_dir_all(root.join("var/empty")).unwrap();
    std::os::unix::fs::symlink("../etc/motd", root.join("bin/motd-link")).unwrap();
    fs::hard_link(root.join("etc/motd"), root.join("etc/motd.hard")).unwrap();
}

pub const SIMPLE_DEF: &str = r#"
[image]
name = "sample"
tag = "1.0"

[[layer]]
kind = "copy"
src = "rootfs"
dest = "/"

[[layer]]
kind = "file"
dest = "/etc/greeting"
content = "hello\n"

[config]
entrypoint = ["/bin/tool"]
env = { PATH = "/bin" }
ports = ["8080/tcp"]
"#;

/// A context with `SIMPLE_DEF` and `sample_tree` under `rootfs/`.
pub fn sample_env() -> Env {
    let env = Env::new();
    sample_tree(&env.ctx().join("rootfs"));
    env.write_def(SIMPLE_DEF);
    env
}

/// `true` when an external tool is installed (tests that need it say so and skip otherwise only outside CI).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Skip (outside CI) or fail (in CI) when a tool is missing.
pub fn require(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{tool} is required in CI (scripts/setup.sh installs it)"
    );
    eprintln!("skipping: {tool} not installed (run scripts/setup.sh)");
    false
}

/// The web image's server: it takes a moment to come up, as real ones do
/// (which widens the window in which tests interrupt a rollout).
pub const WEB_SERVER: &str = "sleep 0.2; httpd -f -p \\\"$PORT\\\" -h /www";

/// Build `web:<tag>`: busybox httpd serving `page` at / as nobody, started
/// by the shell command `server` (which runs in the background of a shell
/// that exits on SIGTERM), with its own health check asking for
/// `health_path`.
pub fn web_image(env: &Env, tag: &str, page: &str, health_path: &str, server: &str) {
    let root = env.ctx().join(format!("rootfs-{tag}"));
    if !root.exists() {
        let busybox = fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
        write(&root.join("bin/busybox"), &busybox, 0o755);
        for applet in ["sh", "httpd", "sleep", "true", "false"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        write(
            &root.join("etc/passwd"),
            b"nobody:x:65534:65534::/:/bin/sh\n",
            0o644,
        );
        write(&root.join("www/index.html"), page.as_bytes(), 0o644);
    }
    let def = format!(
        r#"
[image]
name = "web"
tag = "{tag}"

[[layer]]
kind = "copy"
src = "rootfs-{tag}"
dest = "/"

[config]
entrypoint = ["/bin/sh", "-c", "trap 'exit 0' TERM; ({server}) & wait"]
env = {{ PATH = "/bin" }}
user = "65534:65534"

[config.health]
kind = "http"
path = "{health_path}"
interval = "200ms"
timeout = "200ms"
retries = 2
start_period = "1s"
"#
    );
    let file = env.ctx().join(format!("web-{tag}.toml"));
    write(&file, def.as_bytes(), 0o644);
    env.ok(&["build", "--sign", "-f", file.to_str().unwrap()]);
}

/// A store with `web:1` and `web:2` (pages "version one" and "version two"),
/// for the tests that run real instances: `None` (skip) without busybox or
/// root outside CI; in CI both are required.
pub fn web_env() -> Option<Env> {
    if !require("busybox") {
        return None;
    }
    if std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").unwrap()) != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests with real instances need root in CI"
        );
        eprintln!("skipping: tests with real instances need root");
        return None;
    }
    let env = Env::new();
    web_image(&env, "1", "version one\n", "/", WEB_SERVER);
    web_image(&env, "2", "version two\n", "/", WEB_SERVER);
    Some(env)
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stop a child (a `drover serve`) the way an operator would: SIGTERM,
/// then SIGKILL if it is still there after `limit`.
pub fn stop(child: &mut std::process::Child, limit: std::time::Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t = std::time::Instant::now();
    while child.try_wait().ok().flatten().is_none() && t.elapsed() < limit {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Poll `f` every 50 ms until it holds or `limit` passes; whether it held.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// GET / on loopback `port` (one HTTP/1.1 request): the body of a 200
/// answer, `None` for anything else.
pub fn get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    if !r.starts_with("HTTP/1.1 200") && !r.starts_with("HTTP/1.0 200") {
        return None;
    }
    r.split("\r\n\r\n").nth(1).map(str::to_string)
}

/// The health check the web fleets of the serve tests use (HTTP on `/`,
/// every 500 ms), to follow a `[service.web]` table.
pub const WEB_HEALTH: &str = r#"
[service.web.health]
kind = "http"
path = "/"
interval = "500ms"
timeout = "500ms"
retries = 2
start_period = "1s"
deadline = "10s"
"#;

/// Write `text` as the fleet file of `env`'s build context; its path.
pub fn write_fleet(env: &Env, text: &str) -> String {
    let path = env.ctx().join("fleet.toml");
    write(&path, text.as_bytes(), 0o644);
    path.to_str().unwrap().to_string()
}

/// Change instance `id`'s runtime config behind drover's back: add `var`
/// (`NAME=value`) to its process's env. Returns the config's path and its
/// bytes before, to put it back.
pub fn tamper_env(env: &Env, id: &str, var: &str) -> (PathBuf, Vec<u8>) {
    let path = env.store().join("instances").join(id).join("config.json");
    let before = fs::read(&path).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&before).unwrap();
    config["process"]["env"]
        .as_array_mut()
        .expect("the config's process env")
        .push(var.into());
    fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    (path, before)
}

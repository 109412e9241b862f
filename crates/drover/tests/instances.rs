//! Instances with real containers: an image made by drover from the host's
//! static busybox, run by the embedded runtime (libcontainer) and by runc.
//! Every behavioural test runs once per driver (see `both_drivers!`).
//! Needs root (CI runs as root); skipped with a message otherwise.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Env, show, write};
use serde_json::Value;

pub(crate) const BOX_DEF: &str = r#"
[image]
name = "box"
tag = "1"

[[layer]]
kind = "copy"
src = "rootfs"
dest = "/"

[config]
entrypoint = ["/bin/sh", "-c", "trap 'exit 0' TERM; httpd -f -p \"$PORT\" -h /www & wait"]
env = { PATH = "/bin" }
user = "65534:65534"
"#;

/// A busybox image with /etc, /usr, a web root and a /data mount point.
pub(crate) fn box_env() -> Option<Env> {
    if !common::require("busybox") || !is_root() {
        return None;
    }
    let env = Env::new();
    let root = env.ctx().join("rootfs");
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    write(&root.join("bin/busybox"), &busybox, 0o755);
    for applet in [
        "sh", "httpd", "cat", "ls", "touch", "echo", "id", "sleep", "grep", "unshare", "mount",
        "wc",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    write(
        &root.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        0o644,
    );
    write(
        &root.join("etc/group"),
        b"root:x:0:\nnogroup:x:65534:\n",
        0o644,
    );
    write(&root.join("www/index.html"), b"hello from box\n", 0o644);
    write(&root.join("usr/share/doc/README"), b"docs\n", 0o644);
    std::fs::create_dir_all(root.join("data")).unwrap();
    env.write_def(BOX_DEF);
    env.build(&["--sign"]);
    Some(env)
}

fn is_root() -> bool {
    if nix_uid() == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "instance tests need root in CI"
    );
    eprintln!("skipping: instance tests need root");
    false
}

fn nix_uid() -> u32 {
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
}

/// `drover run --wait --rm box:1 -- /bin/sh -c script`: (exit code, output).
pub(crate) fn sh(env: &Env, driver: &str, extra: &[&str], script: &str) -> (i32, String) {
    let mut args = vec!["run", "--wait", "--rm", "--driver", driver];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["box:1", "--", "/bin/sh", "-c", script]);
    let out = env.run(&args);
    assert!(
        out.stderr.is_empty() || out.status.success(),
        "drover run failed:\n{}",
        show(&out)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn ps(env: &Env, all: bool) -> Vec<Value> {
    let mut args = vec!["ps"];
    if all {
        args.push("--all");
    }
    env.items(&args)
}

fn instance(env: &Env, id: &str) -> Value {
    ps(env, true)
        .into_iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("instance {id} not in ps"))
}

fn ledger_actions(env: &Env, id: &str) -> Vec<String> {
    let entries: Vec<Value> = env.items(&["audit"]);
    entries
        .iter()
        .filter(|e| e["subjects"].as_array().unwrap().iter().any(|s| s == id))
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn http_get(port: u64) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port as u16)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[test] fn $name() { super::$name("embedded") })*
        }
        mod runc {
            $(#[test] fn $name() {
                if super::common::require("runc") { super::$name("runc") }
            })*
        }
    };
}

both_drivers!(
    root_is_read_only_and_tmp_is_fresh,
    process_is_locked_down,
    volume_outlives_the_instance,
    detached_lifecycle_is_recorded,
    a_dead_process_is_never_shown_running,
    limits_reach_the_cgroup,
);

fn root_is_read_only_and_tmp_is_fresh(driver: &str) {
    let Some(env) = box_env() else { return };
    let (code, out) = sh(
        &env,
        driver,
        &[],
        "for d in / /etc /usr /bin; do touch $d/x 2>&1; done; \
         ls -A /tmp | wc -l; echo hi > /tmp/mine && echo tmp-writable",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 4, "{out}");
    assert!(out.contains("tmp-writable"), "{out}");
    // A second, fresh instance sees an empty /tmp again.
    let (_, out) = sh(&env, driver, &[], "ls -A /tmp | wc -l");
    assert_eq!(out.trim(), "0", "/tmp not empty in a fresh instance: {out}");
    // Nothing leaked into the shared root on the host.
    let roots = env.store().join("rootfs");
    for e in std::fs::read_dir(&roots).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            assert!(!p.join("tmp/mine").exists() && !p.join("x").exists());
        }
    }
}

fn process_is_locked_down(driver: &str) {
    let Some(env) = box_env() else { return };
    let (code, out) = sh(
        &env,
        driver,
        &[],
        "grep -E '^(NoNewPrivs|CapEff|CapBnd|Seccomp|SigIgn):' /proc/self/status; \
         unshare -U true 2>&1; echo unshare=$?; id -u",
    );
    // Rust ignores SIGPIPE; a container must not inherit that from drover.
    let ignored = out
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(ignored & (1 << (13 - 1)), 0, "SIGPIPE ignored: {out}");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // A new user namespace needs no privilege on this host; seccomp denies it.
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("unshare=1"), "{out}");
    assert_eq!(
        out.trim().lines().last(),
        Some("65534"),
        "runs as the image's user: {out}"
    );
    // Even a named capability does not reopen mount: seccomp still says no.
    let (_, out) = sh(
        &env,
        driver,
        &["--cap-add", "SYS_ADMIN"],
        "grep CapEff /proc/self/status; mount -t tmpfs none /data 2>&1; echo mount=$?",
    );
    assert!(out.contains("CapEff:\t0000000000200000"), "{out}");
    assert!(out.contains("mount=") && !out.contains("mount=0"), "{out}");
}

fn volume_outlives_the_instance(driver: &str) {
    let Some(env) = box_env() else { return };
    let id = common::last_line(&env.ok(&[
        "run",
        "--driver",
        driver,
        "-v",
        "appdata:/data",
        "box:1",
        "--",
        "/bin/sh",
        "-c",
        "echo kept > /data/state; trap 'exit 0' TERM; sleep 100 & wait",
    ]));
    let on_host = env.store().join("volumes/appdata/state");
    eventually("the volume write", || on_host.exists());
    // Replace the instance: the new one sees the old one's data.
    env.ok(&["rm", "--force", &id]);
    let (code, out) = sh(&env, driver, &["-v", "appdata:/data"], "cat /data/state");
    assert_eq!((code, out.trim()), (0, "kept"));
    // A read-only mount is read-only.
    let (_, out) = sh(
        &env,
        driver,
        &["-v", "appdata:/data:ro"],
        "touch /data/x 2>&1",
    );
    assert!(out.contains("Read-only file system"), "{out}");
}

fn detached_lifecycle_is_recorded(driver: &str) {
    let Some(env) = box_env() else { return };
    let id = common::last_line(&env.ok(&["run", "--driver", driver, "--name", "web", "box:1"]));
    // The CLI has exited; a new one finds the instance running.
    let i = instance(&env, &id);
    assert_eq!(i["state"], "running", "{i}");
    assert_eq!(i["driver"], driver);
    assert_eq!(i["name"], "web");
    assert!(i["pid"].as_u64().is_some());
    let port = i["port"].as_u64().unwrap();
    let mut page = None;
    eventually("httpd to answer", || {
        page = http_get(port);
        page.as_deref()
            .is_some_and(|p| p.contains("hello from box"))
    });
    // The table view names it too.
    let table = env.ok(&["ps"]);
    assert!(table.contains(&id) && table.contains("running"), "{table}");

    let out = env.ok(&["stop", "--time", "5", "web"]);
    assert!(
        out.contains("exited (exit code 0)"),
        "TERM is trapped: {out}"
    );
    let i = instance(&env, &id);
    assert_eq!(i["state"], "exited");
    assert_eq!(i["exit"]["value"], 0);
    env.ok(&["rm", &id]);
    assert_eq!(instance(&env, &id)["state"], "deleted");
    assert!(ps(&env, false).is_empty());
    assert!(!env.store().join("instances").join(&id).exists());

    assert_eq!(
        ledger_actions(&env, &id),
        ["instance.start", "instance.stop", "instance.delete"]
    );
    let entries: Vec<Value> = env.items(&["audit"]);
    let start = entries
        .iter()
        .find(|e| e["action"] == "instance.start")
        .unwrap();
    assert_eq!(
        start["subjects"][1], i["image"],
        "the entry names the image digest"
    );
    env.ok(&["audit", "verify"]);
}

fn a_dead_process_is_never_shown_running(driver: &str) {
    let Some(env) = box_env() else { return };
    let script = ["--", "/bin/sh", "-c", "sleep 100"];
    let run = |name: &str| {
        let mut a = vec!["run", "--driver", driver, "--name", name, "box:1"];
        a.extend_from_slice(&script);
        common::last_line(&env.ok(&a))
    };
    // Killed behind drover's back: the monitor records the signal.
    let a = run("a");
    let pid = instance(&env, &a)["pid"].as_u64().unwrap();
    kill(pid, 9);
    eventually("the exit to be recorded", || {
        instance(&env, &a)["state"] == "exited"
    });
    assert_eq!(
        instance(&env, &a)["exit"],
        serde_json::json!({"kind": "signal", "value": 9})
    );
    assert!(ledger_actions(&env, &a).contains(&"instance.exit".to_string()));

    // Monitor and process both killed: nobody saw the status, and ps says so.
    let b = run("b");
    let pid = instance(&env, &b)["pid"].as_u64().unwrap();
    let monitor = parent_of(pid);
    kill(monitor, 9);
    kill(pid, 9);
    eventually("pid to go", || !Path::new(&format!("/proc/{pid}")).exists());
    let i = instance(&env, &b);
    assert_eq!(i["state"], "exited", "{i}");
    assert_eq!(i["exit"]["kind"], "unknown");
    env.ok(&["rm", "a", "b"]);
}

fn limits_reach_the_cgroup(driver: &str) {
    let Some(env) = box_env() else { return };
    let id = common::last_line(&env.ok(&[
        "run", "--driver", driver, "--memory", "32m", "--pids", "20", "box:1",
    ]));
    let cg = |ctl: &str, file: &str| {
        let p = format!("/sys/fs/cgroup/{ctl}/drover/{id}/{file}");
        std::fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .ok()
    };
    // cgroup v1 (this host's hybrid mode); on a pure v2 host the files differ.
    if Path::new("/sys/fs/cgroup/memory").exists() {
        assert_eq!(
            cg("memory", "memory.limit_in_bytes").as_deref(),
            Some("33554432")
        );
        assert_eq!(cg("pids", "pids.max").as_deref(), Some("20"));
    }
    env.ok(&["rm", "--force", &id]);
    assert!(!Path::new(&format!("/sys/fs/cgroup/pids/drover/{id}")).exists());
}

fn kill(pid: u64, signal: i32) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

fn parent_of(pid: u64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(") ").unwrap().1;
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn bad_requests_say_what_is_wrong() {
    let Some(env) = box_env() else { return };
    let out = env.run(&["run", "-v", "x:/nope", "box:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nope is not a directory in image"));
    let out = env.run(&["run", "-v", "x:/etc/passwd", "box:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = env.run(&["run", "nothere:1"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let out = env.run(&["run", "--driver", "docker", "box:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = env.run(&["run", "--cap-add", "FLY", "box:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let out = env.run(&["stop", "nobody-by-this-name"]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));

    let id = common::last_line(&env.ok(&["run", "--name", "dup", "box:1"]));
    let out = env.run(&["run", "--name", "dup", "box:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = env.run(&["rm", &id]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "removing a running instance needs --force"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    env.ok(&["rm", "-f", "dup"]);
    // A failed run leaves nothing behind.
    assert!(ps(&env, true).iter().all(|i| i["id"] == id.as_str()));
}

#[test]
fn logs_follow_until_the_instance_exits() {
    let Some(env) = box_env() else { return };
    let id = common::last_line(&env.ok(&[
        "run",
        "box:1",
        "--",
        "/bin/sh",
        "-c",
        "echo one; sleep 1; echo two >&2; sleep 1; echo three",
    ]));
    let started = Instant::now();
    let out = env.ok(&["logs", "--follow", &id]);
    assert_eq!(out, "one\ntwo\nthree\n");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(instance(&env, &id)["state"], "exited");
    assert_eq!(env.ok(&["logs", &id]), "one\ntwo\nthree\n");
    env.ok(&["rm", &id]);
}

#[test]
fn gc_keeps_what_instances_use() {
    let Some(env) = box_env() else { return };
    let id = common::last_line(&env.ok(&["run", "box:1", "--", "/bin/sleep", "100"]));
    let digest = instance(&env, &id)["image"].as_str().unwrap().to_string();
    let root = env
        .store()
        .join("rootfs")
        .join(digest.strip_prefix("sha256:").unwrap());
    assert!(root.join("bin/busybox").is_file());
    // Untagged, but an instance still runs from it: gc keeps image and root.
    env.ok(&["rmi", "box:1"]);
    let out = env.ok(&["gc"]);
    assert!(out.contains("removed 0 blobs"), "{out}");
    assert!(root.is_dir());
    let (code, out) = {
        let o = env.run(&[
            "run",
            "--wait",
            "--rm",
            &digest,
            "--",
            "/bin/echo",
            "still here",
        ]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert_eq!((code, out.as_str()), (Some(0), "still here\n"));
    // Once the instance is removed, nothing reaches it.
    env.ok(&["rm", "--force", &id]);
    let out = env.ok(&["gc"]);
    assert!(out.contains("1 unpacked roots"), "{out}");
    assert!(!root.exists());
}

/// Regression: with a relative `--store`, the runtime config named the root
/// relative to the store's parent, and runtimes resolve it from the bundle.
#[test]
fn a_relative_store_path_works() {
    let Some(env) = box_env() else { return };
    let out = std::process::Command::new(common::DROVER)
        .current_dir(env.dir.path())
        .args([
            "--init",
            "--store",
            "store",
            "run",
            "--wait",
            "--rm",
            "box:1",
            "--",
            "/bin/echo",
            "ok",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

/// Stopping several instances that ignore their stop signal (a shell as
/// PID 1 without a trap, and without the init a shell gets by default)
/// takes one grace period, not one each.
#[test]
fn stopping_many_takes_one_grace_period() {
    let Some(env) = box_env() else { return };
    let ids: Vec<String> = (0..3)
        .map(|_| {
            common::last_line(&env.ok(&[
                "run",
                "--init=false",
                "box:1",
                "--",
                "/bin/sh",
                "-c",
                "sleep 100",
            ]))
        })
        .collect();
    let started = Instant::now();
    let mut args = vec!["stop", "--time", "1"];
    args.extend(ids.iter().map(String::as_str));
    let out = env.ok(&args);
    assert_eq!(out.matches("killed by signal 9").count(), 3, "{out}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
}

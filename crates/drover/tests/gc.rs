//! `drover gc` beside everything else: it runs while `serve` runs, waits
//! for a concurrent build naming it and gives up after `--wait`, loses
//! nothing to builds racing it, collects the unpacked roots of old
//! releases (a rollback unpacks them again), and roots of two versions
//! share their identical files while drift still sees a tampered one.
//! Needs root and busybox (as `serve`'s tests do).

use crate::common;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Env, WEB_SERVER, eventually, free_port, show, web_image, write};
use serde_json::Value;

fn fleet(env: &Env, tag: &str, port: u16) -> String {
    let text = format!(
        r#"
[service.web]
image = "web:{tag}"
min_healthy = "0s"
replicas = 1
ports = [{port}]
drain = "1s"

"#
    );
    common::write_fleet(env, &(text + common::WEB_HEALTH))
}

fn digest(env: &Env, tag: &str) -> String {
    env.items(&["images"])
        .iter()
        .find(|i| i["name"] == tag)
        .and_then(|i| i["digest"].as_str())
        .unwrap_or_else(|| panic!("no image {tag}"))
        .trim_start_matches("sha256:")
        .to_string()
}

fn root_of(env: &Env, tag: &str) -> PathBuf {
    env.store().join("rootfs").join(digest(env, tag))
}

fn get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn verify_clean(env: &Env) {
    let out = env.run(&["verify"]);
    assert!(out.status.success(), "verify:\n{}", show(&out));
}

struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        common::stop(&mut self.0, Duration::from_secs(10));
    }
}

/// Regression (issue 20): `drover gc` waited forever, silently, while
/// `serve` held the store.
#[test]
fn gc_runs_beside_serve_within_seconds_and_keeps_what_runs() {
    let Some(env) = common::web_env() else { return };
    let port = free_port();
    let f = fleet(&env, "1", port);
    env.ok(&["apply", "-f", &f]);
    let log = env.dir.path().join("serve.log");
    let _serve = Background(
        env.cmd()
            .args(["serve", "--bind", "127.0.0.1", "--interval", "500ms"])
            .args(["--drift-interval", "1s"])
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    assert!(
        eventually(Duration::from_secs(10), || get(port).as_deref()
            == Some("version one\n")),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for _ in 0..3 {
        let t = Instant::now();
        let out = env.run(&["gc", "--wait", "5s"]);
        assert!(out.status.success(), "{}", show(&out));
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "gc took {:?} beside serve",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(get(port).as_deref(), Some("version one\n"));
    assert!(
        root_of(&env, "web:1").is_dir(),
        "the running root was collected"
    );
    verify_clean(&env);
}

/// A build's `run` step that sleeps: a build that holds the store a while.
fn slow_build(env: &Env) -> Child {
    let def = r#"
[image]
name = "slow"
tag = "1"

[[layer]]
kind = "copy"
src = "rootfs-1"
dest = "/"

[[layer]]
kind = "run"
command = ["/bin/sh", "-c", "sleep 4"]
"#;
    let file = env.ctx().join("slow.toml");
    write(&file, def.as_bytes(), 0o644);
    env.cmd()
        .args(["build", "-f", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn gc_waiting_for_a_build_names_it_and_gives_up_after_wait() {
    let Some(env) = common::web_env() else { return };
    let mut build = slow_build(&env);
    let leases = env.store().join("leases");
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_dir(&leases)
            .into_iter()
            .flatten()
            .flatten()
            .any(
                |e| std::fs::read_to_string(e.path()).is_ok_and(|s| s.contains("build"))
            )),
        "no lease of the build"
    );
    let t = Instant::now();
    let out = env.run(&["gc", "--wait", "1s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let pid = build.id().to_string();
    assert!(
        err.contains("waiting for drover") && err.contains("build"),
        "{err}"
    );
    assert!(err.contains(&format!("pid {pid}")), "{err}");
    assert!(
        err.contains("gave up after 1 s") && err.contains("--wait"),
        "{err}"
    );
    // Long enough a wait, and gc goes ahead once the build is done.
    let out = env.run(&["gc", "--wait", "60s"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(build.wait().unwrap().success());
    env.ok(&["inspect", "slow:1"]);
    verify_clean(&env);
}

/// Builds that find their layers already present race gc removing an
/// untagged image with those very layers: nothing a tag reaches is lost.
#[test]
fn builds_racing_gc_lose_nothing() {
    let Some(env) = common::web_env() else { return };
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = env.run(&["gc", "--wait", "60s"]);
                assert!(out.status.success(), "{}", show(&out));
            }
        });
        for round in 0..6 {
            // Untag and build again: the same layers, garbage in between.
            let tag = if round % 2 == 0 { "1" } else { "2" };
            env.ok(&["rmi", &format!("web:{tag}")]);
            web_image(&env, tag, "unused", "/", WEB_SERVER);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    verify_clean(&env);
    env.ok(&["gc"]);
    verify_clean(&env);
    let id = common::last_line(&env.ok(&["run", "web:1"]));
    env.ok(&["rm", "-f", &id]);
}

#[test]
fn roots_of_old_releases_are_collected_and_rollback_unpacks_them_again() {
    let Some(env) = common::web_env() else { return };
    web_image(&env, "3", "version three\n", "/", WEB_SERVER);
    web_image(&env, "4", "version four\n", "/", WEB_SERVER);
    let port = free_port();
    for tag in ["1", "2", "3", "4"] {
        env.ok(&["apply", "-f", &fleet(&env, tag, port)]);
    }
    for tag in ["1", "2", "3", "4"] {
        assert!(root_of(&env, &format!("web:{tag}")).is_dir());
    }
    let report = env.json(&["gc", "--keep-roots", "1"]);
    assert_eq!(report["kept_roots"], 2, "{report}");
    assert!(
        root_of(&env, "web:4").is_dir(),
        "the current release's root"
    );
    assert!(
        root_of(&env, "web:3").is_dir(),
        "the previous release's root"
    );
    assert!(!root_of(&env, "web:2").exists());
    assert!(!root_of(&env, "web:1").exists());
    verify_clean(&env);
    // Release 1's blobs stay with it: a rollback unpacks its root again.
    env.ok(&["rollback", "web", "--to", "1"]);
    assert!(root_of(&env, "web:1").is_dir());
    let running: Vec<Value> = env
        .items(&["ps"])
        .into_iter()
        .filter(|i| i["state"] == "running")
        .collect();
    assert_eq!(running.len(), 1, "{running:?}");
    let rootfs = running[0]["launch"]["rootfs"].as_str().unwrap_or_default();
    assert!(rootfs.contains(&digest(&env, "web:1")), "{rootfs}");
    // Default --keep-roots 2: current (1) and the two healthy before it (4, 3).
    env.ok(&["gc"]);
    assert!(root_of(&env, "web:1").is_dir());
    assert!(root_of(&env, "web:4").is_dir());
    assert!(root_of(&env, "web:3").is_dir());
    assert!(!root_of(&env, "web:2").exists());
    verify_clean(&env);
    for i in env.items(&["ps"]) {
        env.ok(&["rm", "-f", i["id"].as_str().unwrap()]);
    }
}

fn findings(env: &Env, id: &str) -> Vec<String> {
    let out = env.run(&["--json", "drift", id]);
    let v = common::doc(&String::from_utf8_lossy(&out.stdout));
    v["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["findings"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn two_versions_share_identical_files_and_drift_sees_a_tampered_one() {
    let Some(env) = common::web_env() else { return };
    let a = common::last_line(&env.ok(&["run", "web:1"]));
    let b = common::last_line(&env.ok(&["run", "web:2"]));
    let (ra, rb) = (root_of(&env, "web:1"), root_of(&env, "web:2"));
    let ino = |p: PathBuf| std::fs::symlink_metadata(p).unwrap().ino();
    assert_eq!(ino(ra.join("bin/busybox")), ino(rb.join("bin/busybox")));
    assert_ne!(
        ino(ra.join("www/index.html")),
        ino(rb.join("www/index.html"))
    );
    assert!(findings(&env, &a).is_empty() && findings(&env, &b).is_empty());
    // Change one byte of a shared inode, keeping size and mtime.
    assert_eq!(ino(ra.join("etc/passwd")), ino(rb.join("etc/passwd")));
    let path = ra.join("etc/passwd");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &bytes[mid..=mid], mid as u64).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    for id in [&a, &b] {
        assert!(
            findings(&env, id).iter().any(|p| p == "/etc/passwd"),
            "drift missed the tampered shared file in {id}"
        );
    }
    for id in [a, b] {
        env.ok(&["rm", "-f", &id]);
    }
}

/// A `drover logs -f` left running in another terminal only reads: gc
/// does not wait for it.
#[test]
fn gc_does_not_wait_for_a_following_logs() {
    let Some(env) = common::web_env() else { return };
    let id = common::last_line(&env.ok(&["run", "web:1"]));
    let _logs = Background(
        env.cmd()
            .args(["logs", "-f", &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = env.run(&["gc", "--wait", "2s"]);
    assert!(out.status.success(), "{}", show(&out));
    env.ok(&["rm", "-f", &id]);
}

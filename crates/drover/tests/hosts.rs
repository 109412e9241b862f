//! Hosts joining a fleet (`serve --join`), `drover hosts`, a lapsed host
//! marked down and fenced when it comes back, and one trust domain
//! (`policy trust`), through the real binary on SQLite.
//!
//! Until `--state postgres://…` lands, two hosts share state the only way
//! SQLite allows: the second store's `drover.db` is a symlink to the
//! first's (each store keeps its own host key, so its own signer). The
//! multi-host rules themselves are unit-tested on both backends
//! (drover-core `state::hosts`). Running instances needs root and busybox.

use crate::common;

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Env, eventually, free_port, show};
use serde_json::Value;

/// A running `drover serve --join …`, SIGTERMed when dropped.
pub(crate) struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    pub(crate) fn start(env: &Env, args: &[&str]) -> Serve {
        let log = env.dir.path().join(format!(
            "serve-{}.log",
            std::process::id() as u128 + Instant::now().elapsed().as_nanos()
        ));
        let child = env
            .cmd()
            .args([
                "serve",
                "--admin",
                "off",
                "--drift-interval",
                "0",
                "--interval",
                "500ms",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start drover serve");
        Serve { child, log }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the host dies without a word.
    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Not one already killed (its pid may name another process now).
        if self.child.try_wait().ok().flatten().is_none() {
            common::stop(&mut self.child, Duration::from_secs(10));
        }
    }
}

fn hosts(env: &Env) -> Vec<Value> {
    env.items(&["hosts"])
}

fn host(env: &Env, name: &str) -> Option<Value> {
    hosts(env).into_iter().find(|h| h["name"] == name)
}

fn entries(env: &Env, action: &str) -> Vec<Value> {
    env.items(&["audit", "--action", action])
}

/// A second store, another host, over `env`'s state (a symlink to its
/// database): its own host key.
fn second_host(env: &Env) -> Env {
    let other = Env::new();
    std::fs::create_dir_all(other.store()).unwrap();
    std::os::unix::fs::symlink(
        env.store().join("drover.db"),
        other.store().join("drover.db"),
    )
    .unwrap();
    other.ok(&["key", "show"]);
    other
}

#[test]
fn a_joined_serve_is_listed_up_with_its_labels_and_a_fresh_heartbeat() {
    let env = Env::new();
    env.ok(&["images"]);
    assert!(hosts(&env).is_empty());
    let serve = Serve::start(
        &env,
        &[
            "--join",
            "--host",
            "h1",
            "--label",
            "zone=a",
            "--label",
            "disk=ssd",
            "--address",
            "127.0.0.1",
        ],
    );
    assert!(
        eventually(Duration::from_secs(10), || host(&env, "h1").is_some()),
        "h1 did not join:\n{}",
        serve.log()
    );
    let h1 = host(&env, "h1").unwrap();
    assert_eq!(h1["state"], "up", "{h1}");
    assert_eq!(
        h1["labels"],
        serde_json::json!({"zone": "a", "disk": "ssd"})
    );
    assert_eq!(h1["address"], "127.0.0.1");
    assert_eq!(h1["epoch"], 1);
    assert_eq!(h1["instances"], 0);
    assert!(h1["capacity"]["cpus"].as_u64().unwrap() >= 1, "{h1}");
    let joined = &entries(&env, "host.join")[0];
    assert_eq!(joined["details"]["keyid"], h1["keyid"], "{joined}");
    assert_eq!(
        joined["keyid"], h1["keyid"],
        "the entry is signed by the key it pins"
    );
    // It keeps beating: a later heartbeat, still fresh.
    let first = h1["heartbeat"].as_i64().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || host(&env, "h1")
            .is_some_and(|h| h["heartbeat"].as_i64().unwrap() > first)),
        "no second heartbeat:\n{}",
        serve.log()
    );
    let h1 = host(&env, "h1").unwrap();
    assert!(h1["heartbeat_age_ms"].as_i64().unwrap() < 10_000, "{h1}");
    let table = env.ok(&["hosts"]);
    assert!(
        table.contains("h1")
            && table.contains("up")
            && table.contains("zone=a")
            && table.contains(" ago"),
        "{table}"
    );
    assert_eq!(entries(&env, "host.join").len(), 1);

    // Draining says what it does.
    let drained = env.ok(&["drain", "h1"]);
    assert!(drained.contains("replaced on other hosts"), "{drained}");
    // Nothing runs on it: drained at once.
    assert_eq!(host(&env, "h1").unwrap()["state"], "drained");
    let out = env.run(&["drain", "nope"]);
    assert!(
        !out.status.success() && show(&out).contains("host \"nope\""),
        "{}",
        show(&out)
    );
    env.ok(&["drain", "--undo", "h1"]);
    assert_eq!(host(&env, "h1").unwrap()["state"], "up");
    assert_eq!(entries(&env, "host.drain").len(), 1);

    // The store is host h1: the same host key under another name is refused.
    serve.kill9();
    let out = env.run(&["serve", "--admin", "off", "--join", "--host", "h2"]);
    assert!(!out.status.success());
    assert!(
        show(&out).contains(&format!(
            "host key {} (this store's keys/host.pub) already joined the fleet as host \"h1\"",
            h1["keyid"].as_str().unwrap()
        )),
        "{}",
        show(&out)
    );
    // A serve without --join is what it was.
    let plain = Serve::start(&env, &[]);
    std::thread::sleep(Duration::from_millis(500));
    drop(plain);
    assert_eq!(host(&env, "h1").unwrap()["epoch"], 1);
}

#[test]
fn a_host_whose_heartbeat_lapsed_is_marked_down_and_fenced_when_it_comes_back() {
    let Some(env) = common::web_env() else {
        return;
    };
    let h1 = Serve::start(&env, &["--join", "--host", "h1", "--host-timeout", "2s"]);
    assert!(
        eventually(Duration::from_secs(10), || host(&env, "h1").is_some()),
        "{}",
        h1.log()
    );
    let id = common::last_line(&env.ok(&["run", "web:1"]));
    let rows = env.items(&["ps"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(host(&env, "h1").unwrap()["instances"], 1);

    // h1 dies (its instance runs on); h2, another store over the same
    // state, sees its heartbeat lapse.
    h1.kill9();
    let other = second_host(&env);
    let h2 = Serve::start(&other, &["--join", "--host", "h2", "--host-timeout", "2s"]);
    assert!(
        eventually(Duration::from_secs(20), || host(&env, "h1")
            .is_some_and(|h| h["state"] == "down")),
        "h1 was not marked down:\n{}",
        h2.log()
    );
    let down = host(&env, "h1").unwrap();
    assert_eq!(down["epoch"], 2, "{down}");
    assert!(
        down["reason"].as_str().unwrap().contains("seen by h2"),
        "{down}"
    );
    assert_eq!(down["instances"], 0, "its instance is counted lost");
    let marked = entries(&env, "host.down");
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(marked[0]["details"]["host"], "h1");
    assert_eq!(marked[0]["details"]["epoch"], 2);
    assert_eq!(marked[0]["details"]["lost"], serde_json::json!([id]));
    assert!(h2.log().contains("host down"), "{}", h2.log());
    drop(h2);

    // h1 comes back: fenced, it stops its stale instance before anything.
    let back = Serve::start(&env, &["--join", "--host", "h1", "--host-timeout", "2s"]);
    assert!(
        eventually(Duration::from_secs(20), || !entries(&env, "host.fenced")
            .is_empty()),
        "h1 did not fence itself:\n{}",
        back.log()
    );
    let fenced = &entries(&env, "host.fenced")[0];
    assert_eq!(
        fenced["details"]["stopped"],
        serde_json::json!([id]),
        "{fenced}"
    );
    assert_eq!(fenced["details"]["epoch"], 2);
    let stopped = env.items(&["ps", "--all"]);
    assert_eq!(stopped[0]["state"], "exited", "{stopped:?}");
    let up = host(&env, "h1").unwrap();
    assert_eq!(
        (up["state"].as_str(), up["epoch"].as_i64()),
        (Some("up"), Some(2))
    );
    let log = back.log();
    let (joined, started) = (
        log.find("joined the fleet").unwrap(),
        log.find("started").unwrap(),
    );
    assert!(joined < started, "fenced before serving:\n{log}");
    let epoch: Value =
        serde_json::from_str(&std::fs::read_to_string(env.store().join("host.epoch")).unwrap())
            .unwrap();
    assert_eq!(epoch, serde_json::json!({"host": "h1", "epoch": 2}));
    drop(back);
    let events = env.ok(&["events"]);
    assert!(
        events.contains("host.down")
            && events.contains("host.fenced")
            && events.contains("host h1"),
        "{events}"
    );
    // Each host signed its own entries; audit verify trusts every joined
    // host's key.
    let verified = env.ok(&["audit", "verify"]);
    assert!(verified.contains("ledger valid"), "{verified}");
    let signers: std::collections::BTreeSet<String> = env
        .items(&["audit"])
        .iter()
        .filter_map(|e| e["keyid"].as_str().map(str::to_string))
        .collect();
    assert_eq!(signers.len(), 2, "{signers:?}");
}

/// A busybox web image `web:<tag>` serving `page`, built (its provenance
/// signed by the host key) but not signed by the host key: signed by `key`
/// only, or by nobody.
fn web_signed_by(env: &Env, tag: &str, page: &str, key: Option<&std::path::Path>) -> String {
    let root = env.ctx().join(format!("rootfs-{tag}"));
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    common::write(&root.join("bin/busybox"), &busybox, 0o755);
    for applet in ["sh", "httpd", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    common::write(
        &root.join("etc/passwd"),
        b"nobody:x:65534:65534::/:/bin/sh\n",
        0o644,
    );
    common::write(&root.join("www/index.html"), page.as_bytes(), 0o644);
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
entrypoint = ["/bin/sh", "-c", "trap 'exit 0' TERM; ({}) & wait"]
env = {{ PATH = "/bin" }}
user = "65534:65534"
"#,
        common::WEB_SERVER
    );
    let file = env.ctx().join(format!("web-{tag}.toml"));
    common::write(&file, def.as_bytes(), 0o644);
    env.ok(&["build", "-f", file.to_str().unwrap()]);
    if let Some(key) = key {
        env.ok(&[
            "sign",
            &format!("web:{tag}"),
            "--key",
            key.to_str().unwrap(),
        ]);
    }
    format!("web:{tag}")
}

#[test]
fn a_key_trusted_for_the_fleet_admits_what_it_signed_and_the_ledger_says_who() {
    if !common::require("busybox") || !is_root() {
        return;
    }
    let env = Env::new();
    let ci = env.dir.path().join("ci");
    env.ok(&["key", "generate", ci.to_str().unwrap()]);
    let signed = web_signed_by(&env, "1", "trusted\n", Some(&ci.with_extension("key")));
    let port = free_port();
    let fleet = |image: &str| {
        common::write_fleet(
            &env,
            &format!(
                "[service.web]\nimage = \"{image}\"\nmin_healthy = \"0s\"\nreplicas = 1\nports = [{port}]\n{}",
                common::WEB_HEALTH
            ),
        )
    };
    let out = env.run(&["apply", "-f", &fleet(&signed)]);
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));
    assert!(
        show(&out).contains("none by a trusted key"),
        "{}",
        show(&out)
    );

    let trusted = env.ok(&[
        "policy",
        "trust",
        ci.with_extension("pub").to_str().unwrap(),
        "--name",
        "ci",
    ]);
    assert!(trusted.contains("trusted key"), "{trusted}");
    let shown = env.ok(&["policy", "show"]);
    assert!(shown.contains("(ci), trusted"), "{shown}");
    let policy = env.json(&["policy", "show"]);
    assert_eq!(policy["fleet_keys"][0]["name"], "ci", "{policy}");
    env.ok(&["apply", "-f", &fleet(&signed)]);
    let running = env.items(&["ps"]);
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0]["state"], "running", "{running:?}");
    let entry = &entries(&env, "key.trust")[0];
    assert_eq!(entry["details"]["name"], "ci");
    assert_eq!(entry["actor"], policy["fleet_keys"][0]["actor"]);
    assert!(!entry["actor"].as_str().unwrap().is_empty());

    // Unsigned: still refused.
    let unsigned = web_signed_by(&env, "2", "unsigned\n", None);
    let out = env.run(&["apply", "-f", &fleet(&unsigned)]);
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));
    assert!(show(&out).contains("require_signature"), "{}", show(&out));

    // Untrusted again: what it signed is refused from now on.
    let keyid = entry["details"]["keyid"].as_str().unwrap();
    env.ok(&["policy", "untrust", &keyid[..12]]);
    let out = env.run(&["policy", "check", &signed]);
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));
    assert_eq!(entries(&env, "key.untrust").len(), 1);
    env.ok(&["audit", "verify"]);
}

fn is_root() -> bool {
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests with real instances need root in CI"
        );
        eprintln!("skipping: tests with real instances need root");
    }
    root
}

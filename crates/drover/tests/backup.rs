//! `drover store backup` / `store restore` end to end, and host identity:
//! a backup taken while `serve` runs its instances (and a build runs)
//! restores into a new directory that verifies, audits, shows those
//! instances lost and comes back up with `apply`; a damaged backup
//! restores nothing; an instance recorded on another boot is lost.
//! The tests with real instances need root and busybox (as serve.rs's).

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{DROVER, Env, eventually, free_port, get, show, write};
use serde_json::Value;

/// drover on the store at `store` (no --init).
fn at(store: &Path, args: &[&str]) -> Output {
    Command::new(DROVER)
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run drover")
}

fn ok_at(store: &Path, args: &[&str]) -> String {
    let out = at(store, args);
    assert!(
        out.status.success(),
        "drover {args:?} on {}:\n{}",
        store.display(),
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn items_at(store: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    common::items(&ok_at(store, &all))
}

fn fleet(env: &Env, port: u16) -> String {
    let text = format!(
        r#"
[service.web]
image = "web:1"
replicas = 2
ports = [{port}]
min_healthy = "0s"

"#
    );
    common::write_fleet(env, &(text + common::WEB_HEALTH))
}

fn serve(store: &Path, log: &Path) -> std::process::Child {
    Command::new(DROVER)
        .arg("--store")
        .arg(store)
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--interval",
            "500ms",
            "--drift-interval",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start drover serve")
}

/// The running instances of the service `web`.
fn running(store: &Path) -> Vec<Value> {
    items_at(store, &["ps"])
        .into_iter()
        .filter(|i| i["state"] == "running" && i["service"] == "web")
        .collect()
}

/// Issue 20, part 6.
#[test]
fn a_backup_taken_while_serving_restores_elsewhere_with_its_instances_lost() {
    let Some(env) = common::web_env() else { return };
    let store = env.store();
    let port = free_port();
    let fleet = fleet(&env, port);
    env.ok(&["apply", "-f", &fleet]);
    let log = env.dir.path().join("serve.log");
    let mut served = serve(&store, &log);
    assert!(
        eventually(Duration::from_secs(10), || get(port).as_deref()
            == Some("version one\n")),
        "serve does not serve:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let before: Vec<String> = running(&store)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(before.len(), 2);
    // An instance run by hand that said something.
    let talker = common::last_line(&env.ok(&[
        "run",
        "--name",
        "talker",
        "web:1",
        "--",
        "/bin/sh",
        "-c",
        "echo said before the backup; exec sleep 1000",
    ]));
    assert!(eventually(Duration::from_secs(10), || {
        env.ok(&["logs", "talker"]) == "said before the backup\n"
    }));
    // A volume (as a service leaves one), with a link in it.
    let kept = Path::new("volumes/data/kept");
    write(&store.join(kept), b"state\n", 0o640);
    std::os::unix::fs::symlink("kept", store.join("volumes/data/link")).unwrap();
    // A build at the same time (cached: cheap).
    let def = env.ctx().join("web-1.toml");
    let mut build = env
        .cmd()
        .args(["build", "-f", def.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let file = env.dir.path().join("store.tar.zst");
    let report = env.json(&["store", "backup", file.to_str().unwrap(), "--volumes"]);
    assert_eq!(report["kind"], "StoreBackup");
    assert!(report["counts"]["blobs"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["compressed"], true);
    assert!(build.wait().unwrap().success());
    common::stop(&mut served, Duration::from_secs(10));

    let restored = env.dir.path().join("restored");
    let out = ok_at(
        &restored,
        &["--json", "store", "restore", file.to_str().unwrap()],
    );
    let doc = common::doc(&out);
    assert_eq!(doc["kind"], "StoreRestore");
    let lost: Vec<String> = doc["lost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(lost.len(), 3, "{doc}");
    ok_at(&restored, &["verify"]);
    ok_at(&restored, &["audit", "verify"]);
    // The source's instances: lost here, never running.
    let ps = ok_at(&restored, &["ps"]);
    for id in &before {
        let line = ps
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not in\n{ps}"));
        assert!(line.contains("lost") && !line.contains("running"), "{line}");
    }
    assert!(ok_at(&restored, &["status"]).contains("lost"));
    // What the lost instances printed came along, and stays when they go.
    assert_eq!(
        ok_at(&restored, &["logs", "talker"]),
        "said before the backup\n"
    );
    ok_at(&restored, &["rm", "talker"]);
    assert_eq!(
        ok_at(&restored, &["logs", &talker]),
        "said before the backup\n"
    );
    let audit = items_at(&restored, &["audit"]);
    let entry = audit
        .iter()
        .find(|e| e["action"] == "store.restore")
        .expect("a store.restore entry");
    assert!(
        entry["details"]["source"]["store"]
            .as_str()
            .unwrap()
            .ends_with("/store"),
        "{entry}"
    );
    assert_eq!(
        audit
            .iter()
            .filter(|e| e["action"] == "instance.lost")
            .count(),
        3
    );
    // The volume came along.
    assert_eq!(std::fs::read(restored.join(kept)).unwrap(), b"state\n");
    assert_eq!(
        std::fs::read_link(restored.join("volumes/data/link")).unwrap(),
        Path::new("kept")
    );
    // apply brings the service back on the restored store, and it serves.
    ok_at(&restored, &["apply", "-f", &fleet]);
    let now: Vec<String> = running(&restored)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|i| !before.contains(i)));
    let log2 = env.dir.path().join("serve2.log");
    let mut served2 = serve(&restored, &log2);
    let serves = eventually(Duration::from_secs(10), || {
        get(port).as_deref() == Some("version one\n")
    });
    common::stop(&mut served2, Duration::from_secs(10));
    let _ = at(
        &restored,
        &[
            &["rm", "--force"][..],
            &now.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
    );
    assert!(
        serves,
        "{}",
        std::fs::read_to_string(&log2).unwrap_or_default()
    );
    // The original store is untouched: its instances still run.
    let still: Vec<String> = running(&store)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(still, before);
    env.ok(&["rm", "--force", &talker]);
    env.ok(&["verify"]);
    env.ok(&["audit", "verify"]);
}

/// A damaged backup restores nothing, and says what is wrong.
#[test]
fn a_corrupt_or_truncated_backup_restores_nothing() {
    let env = common::sample_env();
    env.build(&["--sign"]);
    let file = env.dir.path().join("b.tar");
    env.ok(&["store", "backup", file.to_str().unwrap()]);
    let bytes = std::fs::read(&file).unwrap();
    let parent = env.dir.path().join("restores");
    std::fs::create_dir(&parent).unwrap();
    let target = parent.join("store");
    let refuse = |bytes: &[u8], expect: &str| {
        let damaged = env.dir.path().join("damaged.tar");
        std::fs::write(&damaged, bytes).unwrap();
        let out = at(&target, &["store", "restore", damaged.to_str().unwrap()]);
        assert!(!out.status.success(), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "want {expect:?}:\n{}", show(&out));
        assert!(!target.exists(), "a half-made store was left");
        assert_eq!(
            std::fs::read_dir(&parent).unwrap().count(),
            0,
            "leftovers beside it"
        );
    };
    // A byte of the largest blob flipped.
    let blobs = env.store().join("blobs/sha256");
    let largest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let blob = std::fs::read(&largest).unwrap();
    let at_ = bytes
        .windows(64)
        .position(|w| w == &blob[..64])
        .expect("the blob is in the tar");
    let mut flipped = bytes.clone();
    flipped[at_ + blob.len() / 2] ^= 0x40;
    refuse(&flipped, "does not match its digest");
    refuse(&bytes[..bytes.len() / 2], "truncated");
    refuse(&bytes[..bytes.len() - 2048], "truncated");
    // Compressed, truncated.
    let zst = env.dir.path().join("b.tar.zst");
    env.ok(&["store", "backup", zst.to_str().unwrap()]);
    let z = std::fs::read(&zst).unwrap();
    assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    refuse(&z[..z.len() - 100], "corrupt");
    // Not empty: refused, and what is there stays.
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("precious"), b"x").unwrap();
    let out = at(&target, &["store", "restore", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        show(&out)
    );
    assert_eq!(std::fs::read(target.join("precious")).unwrap(), b"x");
    // The intact file restores, into an empty directory too.
    std::fs::remove_file(target.join("precious")).unwrap();
    ok_at(&target, &["store", "restore", file.to_str().unwrap()]);
    ok_at(&target, &["verify"]);
    ok_at(&target, &["audit", "verify"]);
    assert_eq!(ok_at(&target, &["images", "-q"]), env.ok(&["images", "-q"]));
}

/// Issue 20, part 4: a row recorded on another boot (as a restored or
/// copied store, or a reboot, leaves) is lost, even though its pid lives
/// here, and `apply` replaces it.
#[test]
fn an_instance_recorded_on_another_boot_is_lost_and_apply_replaces_it() {
    if !common::require("sqlite3") {
        return;
    }
    let Some(env) = common::web_env() else { return };
    let port = free_port();
    let text = format!(
        "[service.web]\nimage = \"web:1\"\nreplicas = 1\nports = [{port}]\nmin_healthy = \"0s\"\n"
    );
    let fleet = env.ctx().join("one.toml");
    write(&fleet, text.as_bytes(), 0o644);
    env.ok(&["apply", "-f", fleet.to_str().unwrap()]);
    let old = running(&env.store()).pop().expect("a running instance");
    let id = old["id"].as_str().unwrap().to_string();
    let pid = old["pid"].as_u64().unwrap();
    let db = env.store().join("drover.db");
    let monitor = String::from_utf8(
        Command::new("sqlite3")
            .arg(&db)
            .arg(format!(
                "SELECT monitor_pid FROM instances WHERE id = '{id}'"
            ))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let edit = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "UPDATE instances SET boot_id = 'an-earlier-boot' WHERE id = '{id}'"
        ))
        .output()
        .unwrap();
    assert!(edit.status.success(), "{}", show(&edit));
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "its process still lives"
    );
    let ps = env.ok(&["ps"]);
    let line = ps.lines().find(|l| l.contains(&id)).unwrap();
    assert!(line.contains("lost") && !line.contains("running"), "{line}");
    assert!(env.ok(&["status"]).contains("lost"));
    let entry = env
        .items(&["audit"])
        .into_iter()
        .find(|e| e["action"] == "instance.lost")
        .expect("an instance.lost entry");
    assert!(
        entry["details"]["why"]
            .as_str()
            .unwrap()
            .contains("an-earlier"),
        "{entry}"
    );
    // Its real process is this test's to end (drover no longer claims it).
    for p in [pid.to_string(), monitor.trim().to_string()] {
        let _ = Command::new("kill").args(["-KILL", &p]).status();
    }
    env.ok(&["apply", "-f", fleet.to_str().unwrap()]);
    let now = running(&env.store());
    assert_eq!(now.len(), 1);
    assert_ne!(now[0]["id"], old["id"]);
}

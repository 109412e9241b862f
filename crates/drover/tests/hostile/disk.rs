//! A full disk never locks the operator out: stop and rm work on a full store, a failed run leaves nothing half-made.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::limits::{box_in, is_root, run_with};
use crate::common::{self, Env, show};

/// A tmpfs mounted at a directory, unmounted when dropped (a failing test
/// included).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", show(&out));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Write zeros to `path` until the disk refuses.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 256 << 10];
    while f.write_all(&chunk).is_ok() {}
    // The last partial page too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.write_all(&[0u8]);
}

fn ps(env: &Env) -> Vec<Value> {
    env.items(&["ps", "--all"])
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Issue 16: with the store's disk full, `stop` and `rm -f` failed
/// ("database or disk is full") and `run` left `instances/<id>/` behind
/// with no database row.
#[test]
fn a_full_disk_still_stops_and_removes_and_a_failed_run_leaves_nothing() {
    if !common::require("busybox") || !is_root() {
        return;
    }
    let env = Env::new();
    let _tmpfs = Tmpfs::mount(&env.store(), "64m");
    let env = box_in(env, |_| {});
    let store = env.store();
    let sleeper = ["run", "box:1", "--", "/bin/sh", "-c", "sleep 1000"];
    let a = common::last_line(&env.ok(&sleeper));
    let b = common::last_line(&env.ok(&sleeper));
    assert!(store.join("reserve").exists(), "the store keeps a reserve");
    let mut before = vec![a.clone(), b.clone()];
    before.sort();

    fill(&store.join("filler"));

    // run fails, clearly, and leaves nothing: no bundle, no row, no
    // runtime state, no volume it made.
    let out = run_with(
        &env,
        &[],
        &[
            "run",
            "--volume",
            "fresh:/data",
            "box:1",
            "--",
            "/bin/sh",
            "-c",
            "sleep 1000",
        ],
    );
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("run on a full disk says: {err}");
    assert!(
        err.contains("is full") && err.contains("drover gc"),
        "{err}"
    );
    assert_eq!(names(&store.join("instances")), before);
    assert_eq!(names(&store.join("run/embedded")), before);
    assert!(!store.join("volumes/fresh").exists());
    assert_eq!(ps(&env).len(), 2);

    // stop, ps and rm -f work on the full disk, and the ledger has them.
    env.ok(&["stop", &a]);
    let states: Vec<(String, String)> = ps(&env)
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().into(),
                i["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(states.contains(&(a.clone(), "exited".into())), "{states:?}");
    assert!(
        states.contains(&(b.clone(), "running".into())),
        "{states:?}"
    );
    env.ok(&["rm", "--force", &b]);
    env.ok(&["rm", &a]);
    assert!(ps(&env).iter().all(|i| i["state"] == "deleted"));
    assert_eq!(names(&store.join("instances")), Vec::<String>::new());
    let entries = env.items(&["audit"]);
    let actions = |id: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["subjects"][0] == id)
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        actions(&a).contains(&"instance.stop".into()),
        "{:?}",
        actions(&a)
    );
    assert!(actions(&a).contains(&"instance.delete".into()));
    assert!(
        actions(&b).contains(&"instance.delete".into()),
        "{:?}",
        actions(&b)
    );
    env.ok(&["audit", "verify"]);

    // Once there is room again, the reserve comes back.
    std::fs::remove_file(store.join("filler")).unwrap();
    env.ok(&["ps"]);
    assert!(store.join("reserve").exists());
}

//! Volumes with an owner (issue 18), with real instances (embedded
//! runtime): a read-write volume has one writer, so a fleet that would
//! give it two is refused, a rollout stops the old writer before the new
//! one starts, and `drover run` is refused beside a writer; per-replica
//! volumes (`data-{replica}`) follow their replica slot through heals and
//! redeploys. The writer is busybox: each instance appends its port to
//! `/data/log` when it starts and serves the volume over HTTP. Needs root.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use common::{Env, show, write};
use serde_json::Value;

/// Build `writer:<tag>`: busybox as nobody, with an empty `/data` to mount
/// a volume on; at start it appends its `PORT` to `/data/log`, then serves
/// `/data` (health check: `/log`).
fn writer_image(env: &Env, tag: &str) {
    let root = env.ctx().join("rootfs-writer");
    if !root.exists() {
        let busybox = fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
        write(&root.join("bin/busybox"), &busybox, 0o755);
        for applet in ["sh", "httpd", "sleep", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        write(
            &root.join("etc/passwd"),
            b"nobody:x:65534:65534::/:/bin/sh\n",
            0o644,
        );
        fs::create_dir_all(root.join("data")).unwrap();
    }
    let def = format!(
        r#"
[image]
name = "writer"
tag = "{tag}"

[[layer]]
kind = "copy"
src = "rootfs-writer"
dest = "/"

[config]
entrypoint = ["/bin/sh", "-c", "trap 'exit 0' TERM; echo \"$PORT\" >> /data/log; (httpd -f -p \"$PORT\" -h /data) & wait"]
env = {{ PATH = "/bin" }}
user = "65534:65534"
"#
    );
    let file = env.ctx().join(format!("writer-{tag}.toml"));
    write(&file, def.as_bytes(), 0o644);
    env.ok(&["build", "--sign", "-f", file.to_str().unwrap()]);
}

/// A store with `writer:1`, or `None` (skip) without busybox or root.
fn setup() -> Option<Env> {
    // web_env checks busybox and root (and builds web images we ignore).
    let env = common::web_env()?;
    writer_image(&env, "1");
    Some(env)
}

/// Write the fleet file: service `db` of `writer:1` with `replicas` and
/// `volumes`, plus `extra` lines.
fn fleet(env: &Env, replicas: u32, volumes: &str, extra: &str) -> String {
    let text = format!(
        r#"
[service.db]
image = "writer:1"
replicas = {replicas}
volumes = [{volumes}]
min_healthy = "0s"
{extra}

[service.db.health]
kind = "http"
path = "/log"
interval = "200ms"
timeout = "200ms"
retries = 2
start_period = "1s"
deadline = "10s"
"#
    );
    common::write_fleet(env, &text)
}

/// The live instances of service db, as `ps --json` shows them.
fn instances(env: &Env) -> Vec<Value> {
    let all: Vec<Value> = env.items(&["ps"]);
    all.into_iter()
        .filter(|i| i["service"] == "db" && i["state"] == "running")
        .collect()
}

/// slot → (instance id, port) of the running instances.
fn by_slot(env: &Env) -> BTreeMap<u64, (String, u64)> {
    instances(env)
        .iter()
        .map(|i| {
            (
                i["slot"].as_u64().expect("a service's instance has a slot"),
                (
                    i["id"].as_str().unwrap().to_string(),
                    i["port"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// The ports recorded in volume `name`'s log: one line per instance that
/// ever started on it.
fn log_of(env: &Env, name: &str) -> Vec<u64> {
    fs::read_to_string(env.store().join("volumes").join(name).join("log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

fn ledger(env: &Env) -> Vec<Value> {
    env.items(&["audit"])
}

/// The most instances of service db running at once after ledger entry
/// `from_seq`, replaying the ledger's instance entries.
fn most_running(env: &Env, from_seq: u64) -> usize {
    let mut running = BTreeSet::new();
    let mut most = 0;
    for e in ledger(env) {
        if e["details"]["service"] != "db" {
            continue;
        }
        let id = e["subjects"][0].as_str().unwrap().to_string();
        match e["action"].as_str().unwrap() {
            "instance.start" => {
                running.insert(id);
            }
            "instance.stop" | "instance.exit" => {
                running.remove(&id);
            }
            _ => continue,
        }
        if e["seq"].as_u64().unwrap() > from_seq {
            most = most.max(running.len());
        }
    }
    most
}

fn last_seq(env: &Env) -> u64 {
    ledger(env).last().map_or(0, |e| e["seq"].as_u64().unwrap())
}

/// Regression (issue 18): with `replicas = 2` and `cachedata:/data`, two
/// redis processes appended to the same files. Such a fleet is refused,
/// naming the service and the volume, before anything runs.
#[test]
fn two_replicas_on_one_read_write_volume_are_refused() {
    let Some(env) = setup() else { return };
    let f = fleet(&env, 2, "\"cachedata:/data\"", "");
    for cmd in ["plan", "apply"] {
        let out = env.run(&[cmd, "-f", &f]);
        assert!(!out.status.success(), "{cmd}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for part in [
            "service.db.volumes[0]",
            "service db runs 2 replicas",
            "volume cachedata",
            "cachedata-{replica}:/data",
            "shared",
        ] {
            assert!(err.contains(part), "{cmd} lacks {part:?}: {}", show(&out));
        }
    }
    assert!(instances(&env).is_empty());
    // Declared shared, two writers are what the operator asked for.
    let f = fleet(&env, 2, "\"cachedata:/data:shared\"", "");
    env.ok(&["apply", "-f", &f]);
    let mut ports: Vec<u64> = by_slot(&env).values().map(|(_, p)| *p).collect();
    let mut logged = log_of(&env, "cachedata");
    ports.sort_unstable();
    logged.sort_unstable();
    assert_eq!(logged, ports, "both replicas write the shared volume");
}

/// Each replica writes its own volume, kept by slot: a healed instance's
/// replacement and a redeploy's new instances find what their slot's
/// predecessors wrote; no two instances ever hold one at once.
#[test]
fn per_replica_volumes_follow_their_slot_through_heals_and_redeploys() {
    let Some(env) = setup() else { return };
    let f = fleet(&env, 2, "\"data-{replica}:/data\"", "");
    env.ok(&["apply", "-f", &f]);
    let first = by_slot(&env);
    assert_eq!(first.keys().copied().collect::<Vec<_>>(), [0, 1]);
    for (slot, (_, port)) in &first {
        assert_eq!(
            log_of(&env, &format!("data-{slot}")),
            [*port],
            "slot {slot}"
        );
    }
    let ps: Vec<Value> = instances(&env);
    let held: Vec<&Value> = ps.iter().map(|i| &i["volumes"][0]).collect();
    assert!(held.iter().all(|h| h["access"] == "exclusive"), "{held:?}");

    // kill -9 the process in slot 1; the next pass heals it in slot 1.
    let (victim, victim_port) = first[&1].clone();
    let pid = ps.iter().find(|i| i["id"] == victim.as_str()).unwrap()["pid"]
        .as_u64()
        .unwrap();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    env.ok(&["apply", "-f", &f]);
    let healed = by_slot(&env);
    assert_eq!(healed[&0], first[&0], "slot 0 untouched");
    let (new_id, new_port) = &healed[&1];
    assert_ne!(new_id, &victim);
    assert_eq!(
        log_of(&env, "data-1"),
        [victim_port, *new_port],
        "the replacement in slot 1 mounts slot 1's volume"
    );
    assert_eq!(log_of(&env, "data-0"), [first[&0].1]);
    assert!(
        ledger(&env).iter().any(|e| e["action"] == "service.heal"),
        "a service.heal entry"
    );

    // A new release (an env change) replaces both, slot for slot, never
    // more than two running (the rollout stops before it starts).
    let f = fleet(&env, 2, "\"data-{replica}:/data\"", "env = { V = \"2\" }");
    let plan = env.ok(&["plan", "-f", &f]);
    assert!(
        plan.contains("each old instance stopped before its replacement starts: volume data-{replica} is single-writer"),
        "{plan}"
    );
    let seq = last_seq(&env);
    env.ok(&["apply", "-f", &f]);
    assert!(most_running(&env, seq) <= 2, "surged over a volume");
    let redeployed = by_slot(&env);
    assert_eq!(redeployed.len(), 2);
    for slot in [0, 1] {
        let log = log_of(&env, &format!("data-{slot}"));
        let before = if slot == 0 {
            vec![first[&0].1]
        } else {
            vec![victim_port, *new_port]
        };
        assert_eq!(log[..log.len() - 1], before[..], "slot {slot}: {log:?}");
        assert_eq!(*log.last().unwrap(), redeployed[&slot].1, "slot {slot}");
    }

    // A rollback, too, keeps slot k on data-k.
    env.ok(&["rollback", "db"]);
    let back = by_slot(&env);
    for slot in [0u64, 1] {
        assert_eq!(
            log_of(&env, &format!("data-{slot}")).last(),
            Some(&back[&slot].1)
        );
    }
    env.ok(&["audit", "verify"]);
}

/// The default rolling strategy (surge 1) ran old and new instances on the
/// same volume during every deploy (issue 18). With a single-writer volume
/// the old instance stops before the new one starts, and `plan` says so.
#[test]
fn a_rolling_deploy_stops_the_old_writer_before_the_new_one_starts() {
    let Some(env) = setup() else { return };
    let f = fleet(&env, 1, "\"data:/data\"", "");
    env.ok(&["apply", "-f", &f]);
    let old = by_slot(&env)[&0].clone();

    let f = fleet(&env, 1, "\"data:/data\"", "env = { V = \"2\" }");
    let plan = env.ok(&["plan", "-f", &f]);
    assert!(
        plan.contains(
            "note: rolling one at a time, each old instance stopped before its replacement \
             starts: volume data is single-writer"
        ),
        "{plan}"
    );
    let stop_at = plan.find("stop and remove").expect("a stop step");
    let start_at = plan.find("start 1 new").expect("a start step");
    assert!(stop_at < start_at, "stop before start:\n{plan}");

    let seq = last_seq(&env);
    env.ok(&["apply", "-f", &f]);
    assert_eq!(most_running(&env, seq), 1, "two writers on volume data");
    // The ledger's order: the old instance's stop, then the new one's start.
    let entries = ledger(&env);
    let pos = |action: &str, id: &str| {
        entries
            .iter()
            .position(|e| e["action"] == action && e["subjects"][0] == id)
            .unwrap_or_else(|| panic!("no {action} of {id}"))
    };
    let new = by_slot(&env)[&0].clone();
    assert!(pos("instance.stop", &old.0) < pos("instance.start", &new.0));
    assert_eq!(log_of(&env, "data"), [old.1, new.1]);
}

/// `drover run` cannot write a volume a service's instance writes: refused,
/// naming the volume, the instance and its service. Read-only it may.
#[test]
fn drover_run_beside_a_writer_is_refused_naming_the_instance() {
    let Some(env) = setup() else { return };
    let f = fleet(&env, 1, "\"data-{replica}:/data\"", "");
    env.ok(&["apply", "-f", &f]);
    let (holder, _) = by_slot(&env)[&0].clone();
    for mode in ["", ":shared"] {
        let v = format!("data-0:/data{mode}");
        let out = env.run(&["run", "-v", &v, "writer:1"]);
        assert_eq!(out.status.code(), Some(5), "busy: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for part in [
            "volume data-0",
            &format!("instance {holder} of service db (release 1)"),
            "drover stop",
        ] {
            assert!(err.contains(part), "lacks {part:?}: {}", show(&out));
        }
    }
    let out = env.run(&["run", "-v", "data-{replica}:/data", "writer:1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("per replica of a fleet service"),
        "{}",
        show(&out)
    );
    // A reader never conflicts, and an ad-hoc writer is refused beside it
    // only by another writer.
    let reader = common::last_line(&env.ok(&[
        "run",
        "-v",
        "data-0:/data:ro",
        "writer:1",
        "--",
        "sleep",
        "30",
    ]));
    assert!(!reader.is_empty());
    env.ok(&["run", "-v", "solo:/data", "writer:1", "--", "sleep", "30"]);
    let out = env.run(&["run", "-v", "solo:/data", "writer:1", "--", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("volume solo"),
        "{}",
        show(&out)
    );
}

//! Habits people bring from docker and kubectl (issue 19): `--init`, `exec`
//! (refused, with the alternative) and `debug`, shell completion and man
//! pages. Instance tests need root and busybox, as `instances` does.

use crate::common;
use crate::instances::box_env;

use std::time::{Duration, Instant};

use common::{Env, show};
use serde_json::Value;

/// The host pid of instance `id`'s PID 1.
fn pid_of(env: &Env, id: &str) -> u32 {
    let ps: Vec<Value> = serde_json::from_str(&env.ok(&["--json", "ps"])).unwrap();
    let i = ps.iter().find(|i| i["id"] == id).expect("instance in ps");
    i["pid"].as_u64().expect("a running instance has a pid") as u32
}

/// (pid, state) of every child of host process `parent`.
fn children(parent: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so after the last ')'.
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        if rest[1].parse::<u32>() == Ok(parent) {
            out.push((pid, rest[0].chars().next().unwrap()));
        }
    }
    out
}

fn config(env: &Env, id: &str) -> Value {
    let path = env.store().join("instances").join(id).join("config.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

const LOOP: &str = "while true; do sleep 1; done";

/// Issue 19: "A PID-1 shell loop takes the 10 s SIGKILL path on stop: no
/// `--init`." A shell entrypoint now gets an init by default, which
/// forwards SIGTERM: the loop stops at once. With `--init=false` the same
/// loop is PID 1 again and waits out the grace period.
#[test]
fn a_shell_loop_stops_on_sigterm_under_the_default_init() {
    let Some(env) = box_env() else { return };
    for driver in ["embedded", "runc"] {
        if driver == "runc" && !common::have("runc") {
            continue;
        }
        let id = common::last_line(&env.ok(&[
            "run", "--driver", driver, "box:1", "--", "/bin/sh", "-c", LOOP,
        ]));
        let c = config(&env, &id);
        match driver {
            "embedded" => assert_eq!(c["annotations"]["org.drover.init"], "true", "{c}"),
            _ => assert_eq!(c["process"]["args"][0], "/dev/init", "{c}"),
        }
        let t = Instant::now();
        let out = env.ok(&["stop", &id]);
        let took = t.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{driver}: stop took {took:?} (the SIGKILL path): {out}"
        );
        assert!(out.contains("exited"), "{out}");
        env.ok(&["rm", &id]);

        // Without it: PID 1 ignores SIGTERM, SIGKILL after the grace.
        let id = common::last_line(&env.ok(&[
            "run",
            "--init=false",
            "--driver",
            driver,
            "box:1",
            "--",
            "/bin/sh",
            "-c",
            LOOP,
        ]));
        assert!(config(&env, &id).get("annotations").is_none());
        let t = Instant::now();
        env.ok(&["stop", "--time", "1", &id]);
        assert!(t.elapsed() >= Duration::from_secs(1), "{driver}");
        env.ok(&["rm", &id]);
    }
}

/// A process orphaned inside the instance is the init's child and is
/// reaped; with `--init=false` the entrypoint (here `sleep`, which reaps
/// nothing) is PID 1 and the orphan stays a zombie.
#[test]
fn the_init_reaps_orphaned_zombies() {
    let Some(env) = box_env() else { return };
    let script = "(sleep 0.2 &); exec sleep 1000";
    let zombies = |init: &str| {
        let id = common::last_line(&env.ok(&["run", init, "box:1", "--", "/bin/sh", "-c", script]));
        let pid = pid_of(&env, &id);
        // The orphan exits after 0.2 s; give PID 1 time to reap it.
        std::thread::sleep(Duration::from_millis(1200));
        let kids = children(pid);
        env.ok(&["rm", "--force", &id]);
        (kids.iter().filter(|(_, s)| *s == 'Z').count(), kids)
    };
    let (with, kids) = zombies("--init");
    assert_eq!(with, 0, "zombies under the init: {kids:?}");
    // The control: the same script leaves one without it.
    let (without, kids) = zombies("--init=false");
    assert!(without >= 1, "expected a zombie without an init: {kids:?}");
}

/// The exit status passes through the init.
#[test]
fn the_init_exits_with_the_commands_status() {
    let Some(env) = box_env() else { return };
    let out = env.run(&[
        "run",
        "--wait",
        "--rm",
        "--init",
        "box:1",
        "--",
        "/bin/sh",
        "-c",
        "echo hi; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
}

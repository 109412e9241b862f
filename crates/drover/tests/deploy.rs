//! Deploys with real instances (embedded runtime) and real HTTP health
//! checks against busybox httpd: rollouts, a second apply that does nothing,
//! automatic rollback and quarantine, manual rollback, locks, and `apply`
//! killed at many points. Needs root (CI runs as root).

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Env, show, write};
use serde_json::Value;

/// `web:<tag>` serving `page`, whose own health check asks for `health_path`.
fn image_checking(env: &Env, tag: &str, page: &str, health_path: &str) {
    common::web_image(env, tag, page, health_path, common::WEB_SERVER);
}

fn fleet(env: &Env, tag: &str, extra: &str) -> String {
    fleet_n(env, tag, 3, extra)
}

fn fleet_n(env: &Env, tag: &str, replicas: u32, extra: &str) -> String {
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
{extra}

[service.web.health]
kind = "http"
path = "/"
interval = "200ms"
timeout = "200ms"
retries = 2
start_period = "1s"
deadline = "10s"
"#
    );
    common::write_fleet(env, &text)
}

fn setup() -> Option<Env> {
    common::web_env()
}

fn status(env: &Env) -> Value {
    let all: Vec<Value> = env.items(&["status"]);
    all.into_iter()
        .find(|s| s["name"] == "web")
        .expect("service web")
}

fn pages(s: &Value) -> Vec<String> {
    s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| get(i["port"].as_u64().unwrap() as u16).unwrap_or_default())
        .collect()
}

fn get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    r.split("\r\n\r\n").nth(1).map(str::to_string)
}

fn ledger(env: &Env) -> Vec<Value> {
    env.items(&["audit"])
}

/// Replays the ledger's instance entries of `service`: the fewest instances
/// running at any moment after `from_seq`, and the most.
fn running_bounds(env: &Env, from_seq: u64) -> (usize, usize) {
    let mut running: BTreeMap<String, ()> = BTreeMap::new();
    let (mut least, mut most) = (usize::MAX, 0);
    for e in ledger(env) {
        if e["details"]["service"] != "web" {
            continue;
        }
        let id = e["subjects"][0].as_str().unwrap().to_string();
        match e["action"].as_str().unwrap() {
            "instance.start" => {
                running.insert(id, ());
            }
            "instance.stop" | "instance.exit" => {
                running.remove(&id);
            }
            _ => continue,
        }
        if e["seq"].as_u64().unwrap() > from_seq {
            least = least.min(running.len());
            most = most.max(running.len());
        }
    }
    (least, most)
}

fn last_seq(env: &Env) -> u64 {
    ledger(env).last().map_or(0, |e| e["seq"].as_u64().unwrap())
}

common::backends!(rolling_deploy_then_nothing_to_do_then_a_new_image_without_going_below_replicas);
fn rolling_deploy_then_nothing_to_do_then_a_new_image_without_going_below_replicas() {
    let Some(env) = setup() else { return };
    let f = fleet(
        &env,
        "1",
        "strategy = \"rolling\"\nmax_surge = 1\nmax_unavailable = 0",
    );
    let out = env.ok(&["apply", "-f", &f]);
    assert!(out.contains("rolled out release 1"), "{out}");
    let s = status(&env);
    assert_eq!(
        (s["release"].as_i64(), s["ready"].as_u64()),
        (Some(1), Some(3)),
        "{s}"
    );
    assert_eq!(pages(&s), vec!["version one\n"; 3]);
    let ids: Vec<Value> = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].clone())
        .collect();

    // The same fleet again: nothing happens.
    let out = env.ok(&["apply", "-f", &f]);
    assert!(out.contains("unchanged"), "{out}");
    let s = status(&env);
    let again: Vec<Value> = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(ids, again, "a second apply replaced instances");

    // A new image: release 2, rolled one at a time, never fewer than 3
    // running, never more than 4.
    let before = last_seq(&env);
    let f = fleet(
        &env,
        "2",
        "strategy = \"rolling\"\nmax_surge = 1\nmax_unavailable = 0",
    );
    let plan = env.ok(&["plan", "-f", &f]);
    assert!(
        plan.contains("new release 2") && plan.contains("image: "),
        "{plan}"
    );
    assert!(plan.contains("start 1 new instance"), "{plan}");
    let out = env.ok(&["apply", "-f", &f, "-m", "ship v2"]);
    assert!(out.contains("rolled out release 2"), "{out}");
    let s = status(&env);
    assert_eq!(
        (s["release"].as_i64(), s["ready"].as_u64()),
        (Some(2), Some(3)),
        "{s}"
    );
    assert_eq!(pages(&s), vec!["version two\n"; 3]);
    assert_eq!(running_bounds(&env, before), (3, 4));

    let releases: Vec<Value> = env.items(&["releases", "web"]);
    assert_eq!(releases.len(), 2);
    assert_eq!(releases[1]["outcome"], "healthy");
    assert_eq!(releases[1]["parent"], 1);
    assert_eq!(releases[1]["message"], "ship v2");
    let actions: Vec<String> = ledger(&env)
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert!(
        actions.contains(&"release.create".into()) && actions.contains(&"release.healthy".into())
    );
    env.ok(&["audit", "verify"]);
}

common::backends!(a_failing_health_check_rolls_back_and_quarantines_the_image);
fn a_failing_health_check_rolls_back_and_quarantines_the_image() {
    let Some(env) = setup() else { return };
    env.ok(&["apply", "-f", &fleet(&env, "1", "")]);
    let before = last_seq(&env);
    // Release 2's check asks for a page that is not there.
    let f = fleet(&env, "2", "");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("path = \"/\"", "path = \"/missing\"");
    std::fs::write(&f, text).unwrap();
    let f = std::path::PathBuf::from(f);
    let out = env.run(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("release 2 failed") && err.contains("HTTP 404"),
        "{err}"
    );
    assert!(
        err.contains("/missing") && err.contains("rolled back to release 1"),
        "{err}"
    );
    assert!(err.contains("drover logs web@2"), "{err}");
    // The failed release's instance is removed; its (empty) log is kept.
    assert!(env.run(&["logs", "web@2"]).status.success());

    // Release 1 kept serving throughout (rolling never went below 3) and serves now.
    assert_eq!(running_bounds(&env, before).0, 3);
    let s = status(&env);
    assert_eq!(
        (s["release"].as_i64(), s["ready"].as_u64()),
        (Some(1), Some(3)),
        "{s}"
    );
    assert_eq!(pages(&s), vec!["version one\n"; 3]);
    assert_eq!(s["quarantined"].as_array().unwrap().len(), 1);
    let releases: Vec<Value> = env.items(&["releases", "web"]);
    assert_eq!(releases[1]["outcome"], "failed");

    // Applying it again is refused without --force, but what runs is still
    // brought back to the desired release (here: after losing an instance).
    let victim = s["instances"][0]["id"].as_str().unwrap().to_string();
    env.ok(&["rm", "--force", &victim]);
    let out = env.run(&["apply", "-f", f.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("quarantined"),
        "{}",
        show(&out)
    );
    let s = status(&env);
    assert_eq!(
        (s["release"].as_i64(), s["ready"].as_u64()),
        (Some(1), Some(3)),
        "{s}"
    );
    let actions: Vec<String> = ledger(&env)
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for a in ["release.failed", "release.quarantine", "service.rollback"] {
        assert!(actions.contains(&a.to_string()), "{a} missing: {actions:?}");
    }
    env.ok(&["audit", "verify"]);
}

common::backends!(manual_rollback_is_a_new_release_and_a_reapply_respects_it);
fn manual_rollback_is_a_new_release_and_a_reapply_respects_it() {
    let Some(env) = setup() else { return };
    env.ok(&["apply", "-f", &fleet_n(&env, "1", 2, "")]);
    let f2 = fleet_n(&env, "2", 2, "");
    env.ok(&["apply", "-f", &f2]);
    let out = env.ok(&["rollback", "web"]);
    assert!(out.contains("runs release 3"), "{out}");
    let s = status(&env);
    assert_eq!(pages(&s), vec!["version one\n"; 2]);
    let releases: Vec<Value> = env.items(&["releases", "web"]);
    assert_eq!(releases[2]["rollback_of"], 1);
    assert_eq!(releases[2]["image"], releases[0]["image"]);
    // The fleet file still names version 2; applying it unchanged does not
    // undo the rollback.
    let out = env.ok(&["apply", "-f", &f2]);
    assert!(out.contains("unchanged, runs release 3"), "{out}");
    // Roll forward explicitly.
    env.ok(&["rollback", "web", "--to", "2"]);
    assert_eq!(pages(&status(&env)), vec!["version two\n"; 2]);
    // Releases keep their images through gc, tags or not: rolling back to
    // release 1 still works after its tag is gone.
    env.ok(&["rmi", "web:1"]);
    env.ok(&["gc"]);
    env.ok(&["rollback", "web", "--to", "1"]);
    assert_eq!(pages(&status(&env)), vec!["version one\n"; 2]);
}

common::backends!(recreate_and_blue_green_order_their_steps);
fn recreate_and_blue_green_order_their_steps() {
    let Some(env) = setup() else { return };
    env.ok(&["apply", "-f", &fleet(&env, "1", "strategy = \"recreate\"")]);
    let before = last_seq(&env);
    env.ok(&["apply", "-f", &fleet(&env, "2", "strategy = \"recreate\"")]);
    assert_eq!(
        running_bounds(&env, before),
        (0, 3),
        "recreate stops all first"
    );
    let before = last_seq(&env);
    env.ok(&[
        "apply",
        "-f",
        &fleet(&env, "1", "strategy = \"blue-green\""),
    ]);
    assert_eq!(
        running_bounds(&env, before),
        (3, 6),
        "blue-green doubles, never dips"
    );
    assert_eq!(pages(&status(&env)), vec!["version one\n"; 3]);
}

common::backends!(a_second_apply_waits_or_fails_naming_the_holder);
fn a_second_apply_waits_or_fails_naming_the_holder() {
    let Some(env) = setup() else { return };
    // A slow rollout: the health check only passes after a start period.
    let f = fleet(&env, "1", "");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("start_period = \"1s\"", "start_period = \"2s\"")
        .replace("path = \"/\"", "path = \"/missing\"");
    std::fs::write(&f, text).unwrap();
    let path = std::path::PathBuf::from(f);
    let mut first = env
        .cmd()
        .args(["apply", "-f", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = env.run(&["apply", "--no-wait", "-f", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another deploy holds its lock") && err.contains(" pid "),
        "{err}"
    );
    first.wait().unwrap();
}

common::backends!(apply_killed_at_any_point_converges_on_the_next_run);
/// SIGKILL `apply` at many moments; the next `apply` must converge to
/// exactly the desired replicas of the desired release, with no orphans.
fn apply_killed_at_any_point_converges_on_the_next_run() {
    let Some(env) = setup() else { return };
    let f1 = fleet(&env, "1", "");
    env.ok(&["apply", "-f", &f1]);
    // A rollout of 3 here takes about a second; these land all over it.
    let delays = [20u64, 60, 120, 200, 300, 450, 600, 800, 1000, 1300];
    for (round, delay_ms) in delays.into_iter().enumerate() {
        let tag = if round % 2 == 0 { "2" } else { "1" };
        let f = fleet(&env, tag, "");
        let mut child = env
            .cmd()
            .args(["apply", "-f", &f])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let out = env.run(&["apply", "-f", &f]);
        assert!(
            out.status.success(),
            "round {round} (killed at {delay_ms} ms):\n{}",
            show(&out)
        );
        let s = status(&env);
        let want = if tag == "2" {
            "version two\n"
        } else {
            "version one\n"
        };
        assert_eq!(s["ready"].as_u64(), Some(3), "round {round}: {s}");
        let inst = s["instances"].as_array().unwrap();
        assert_eq!(inst.len(), 3, "round {round}: exactly the replicas: {s}");
        assert!(
            inst.iter()
                .all(|i| i["release"] == s["release"] && i["state"] == "running"),
            "{s}"
        );
        assert_eq!(pages(&s), vec![want; 3], "round {round}");
        // No instance drover does not know about, none left half-made.
        let ps: Vec<Value> = env.items(&["ps"]);
        assert_eq!(ps.len(), 3, "round {round}: {ps:?}");
        let containers = std::fs::read_dir(env.store().join("run/embedded"))
            .unwrap()
            .count();
        assert_eq!(
            containers, 3,
            "round {round}: runtime state for other containers"
        );
    }
    env.ok(&["audit", "verify"]);
}

common::backends!(an_image_whose_own_health_check_fails_is_rolled_back);
/// The image's own health check (no override in the fleet) gates the
/// rollout: an image whose check fails is rolled back.
fn an_image_whose_own_health_check_fails_is_rolled_back() {
    let Some(env) = setup() else { return };
    image_checking(&env, "3", "version three\n", "/missing");
    let plain = |tag: &str| {
        let path = env.ctx().join("plain.toml");
        let text =
            format!("[service.web]\nimage = \"web:{tag}\"\nmin_healthy = \"0s\"\nreplicas = 2\n");
        write(&path, text.as_bytes(), 0o644);
        path.to_str().unwrap().to_string()
    };
    env.ok(&["apply", "-f", &plain("1")]);
    let out = env.run(&["apply", "-f", &plain("3")]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("HTTP 404") && err.contains("rolled back to release 1"),
        "{err}"
    );
    let s = status(&env);
    assert_eq!(
        (s["release"].as_i64(), s["ready"].as_u64()),
        (Some(1), Some(2)),
        "{s}"
    );
    assert_eq!(pages(&s), vec!["version one\n"; 2]);
}

common::backends!(replicas_with_a_health_check_on_a_fixed_port_are_refused);
/// Replicas share the host network: a health check on a fixed port would
/// reach one of them for all (nginx's 8080 let a replica that could not
/// bind pass). plan and apply refuse it, naming the service and the way out.
fn replicas_with_a_health_check_on_a_fixed_port_are_refused() {
    let Some(env) = setup() else { return };
    let fleet = fleet_n(&env, "1", 2, "");
    let text = std::fs::read_to_string(&fleet)
        .unwrap()
        .replace("kind = \"http\"\n", "kind = \"http\"\nport = 8080\n");
    write(std::path::Path::new(&fleet), text.as_bytes(), 0o644);
    // plan's is a usage error; apply's a failed deploy, as for any service
    // it could not deploy.
    for (cmd, code) in [("plan", 2), ("apply", 1)] {
        let out = env.run(&[cmd, "-f", &fleet]);
        assert_eq!(out.status.code(), Some(code), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("service web: 2 replicas")
                && err.contains("port 8080")
                && err.contains("$PORT"),
            "{err}"
        );
    }
    assert!(env.items(&["ps"]).is_empty());
    // One replica may: nothing else answers on that port.
    let one = std::fs::read_to_string(&fleet)
        .unwrap()
        .replace("replicas = 2", "replicas = 1");
    write(std::path::Path::new(&fleet), one.as_bytes(), 0o644);
    let out = env.run(&["plan", "-f", &fleet]);
    assert!(out.status.success(), "{}", show(&out));
    // But not with the proxy on the program's own port.
    let clash = one.replace("replicas = 1", "replicas = 1\nports = [8080]");
    write(std::path::Path::new(&fleet), clash.as_bytes(), 0o644);
    let out = env.run(&["plan", "-f", &fleet]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        show(&out).contains("the proxy cannot listen there too"),
        "{}",
        show(&out)
    );
}

common::backends!(a_release_that_cannot_start_is_rolled_back);
/// A release whose instances cannot start (here: a volume the image has no
/// mount point for) fails like one that never gets healthy.
fn a_release_that_cannot_start_is_rolled_back() {
    let Some(env) = setup() else { return };
    env.ok(&["apply", "-f", &fleet(&env, "1", "")]);
    let out = env.run(&[
        "apply",
        "-f",
        &fleet(&env, "1", "volumes = [\"data-{replica}:/nope\"]"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not start") && err.contains("/nope"),
        "{err}"
    );
    assert!(err.contains("rolled back to release 1"), "{err}");
    let s = status(&env);
    assert_eq!(
        (s["release"].as_i64(), s["ready"].as_u64()),
        (Some(1), Some(3)),
        "{s}"
    );
}

common::backends!(exec_health_checks_run_inside_the_instance);
/// An exec health check runs inside the instance, through either driver.
fn exec_health_checks_run_inside_the_instance() {
    let Some(env) = setup() else { return };
    // The check runs as the image's user (65534), on both drivers.
    let as_nobody = r#"["/bin/sh", "-c", "[ \"$(/bin/busybox id -u)\" = 65534 ]"]"#;
    for (n, (driver, check, ok)) in [
        ("embedded", r#"["/bin/true"]"#, true),
        ("embedded", r#"["/bin/false"]"#, false),
        ("embedded", as_nobody, true),
        ("runc", as_nobody, true),
    ]
    .into_iter()
    .enumerate()
    {
        if driver == "runc" && !common::require("runc") {
            continue;
        }
        let text = format!(
            "[service.x{n}]\nimage = \"web:1\"\nmin_healthy = \"0s\"\nreplicas = 1\ndriver = \"{driver}\"\n\
             [service.x{n}.health]\nkind = \"exec\"\ncommand = {check}\n\
             interval = \"200ms\"\ntimeout = \"200ms\"\nretries = 2\ndeadline = \"5s\"\n"
        );
        let path = env.ctx().join("exec.toml");
        write(&path, text.as_bytes(), 0o644);
        let out = env.run(&["apply", "-f", path.to_str().unwrap()]);
        assert_eq!(
            out.status.success(),
            ok,
            "{driver} {check}:\n{}",
            show(&out)
        );
        if !ok {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("exit code 1"),
                "{}",
                show(&out)
            );
        }
    }
}

common::backends!(fleet_errors_name_file_line_and_key);
fn fleet_errors_name_file_line_and_key() {
    let Some(env) = setup() else { return };
    let path = env.ctx().join("fleet.toml");
    std::fs::write(
        &path,
        "[service.web]\nimage = \"web:1\"\nreplicas = \"three\"\n",
    )
    .unwrap();
    let out = env.run(&["apply", "-f", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fleet.toml:3:") && err.contains("service.web.replicas"),
        "{err}"
    );
    let _ = Command::new("true").status();
}

common::backends!(a_release_that_crashes_after_ready_fails_inside_its_stability_window);
/// Regression (issue 18): a release whose instances pass their health check
/// and then exit (`sleep 3; exit 3`) was called healthy. With the default
/// stability window (10 s) it fails like a failed gate: rolled back, its
/// content quarantined, its logs kept, `apply` failing with what happened.
/// Rolling kept the old instances serving until the new ones were stable.
fn a_release_that_crashes_after_ready_fails_inside_its_stability_window() {
    let Some(env) = setup() else { return };
    common::web_image(
        &env,
        "crashy",
        "crashy\n",
        "/",
        "httpd -f -p \\\"$PORT\\\" -h /www & sleep 3; kill $!; exit 3",
    );
    env.ok(&["apply", "-f", &fleet_n(&env, "1", 2, "")]);
    let before = last_seq(&env);
    // No min_healthy in the file: the default window.
    let f = fleet_n(&env, "crashy", 2, "");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace("min_healthy = \"0s\"\n", "");
    std::fs::write(&f, text).unwrap();
    let t = std::time::Instant::now();
    let out = env.run(&["apply", "-f", &f]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("release 2 failed")
            && err.contains("exited (exit code")
            && err.contains("after passing its health check")
            && err.contains("min_healthy")
            && err.contains("rolled back to release 1"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "failed at the crash, not at a deadline"
    );
    assert!(env.run(&["logs", "web@2"]).status.success());
    // The old instances served throughout.
    assert_eq!(running_bounds(&env, before).0, 2);
    let s = status(&env);
    assert_eq!(
        (s["release"].as_i64(), s["ready"].as_u64()),
        (Some(1), Some(2)),
        "{s}"
    );
    assert_eq!(pages(&s), vec!["version one\n"; 2]);
    assert_eq!(s["quarantined"].as_array().unwrap().len(), 1, "{s}");
    let entries = ledger(&env);
    let failed = entries
        .iter()
        .find(|e| e["action"] == "release.failed")
        .expect("a release.failed entry");
    assert_eq!(failed["details"]["release"], 2);
    assert!(
        !entries
            .iter()
            .any(|e| e["action"] == "release.healthy" && e["details"]["release"] == 2),
        "release 2 was never healthy"
    );
    let rollback = entries
        .iter()
        .find(|e| e["action"] == "service.rollback")
        .expect("a service.rollback entry");
    assert_eq!(rollback["details"]["automatic"], true);
    env.ok(&["audit", "verify"]);
}

common::backends!(a_stable_release_passes_its_window);
/// A stable release still deploys (the window passes), and a window of 0
/// behaves as before: healthy at the gate.
fn a_stable_release_passes_its_window() {
    let Some(env) = setup() else { return };
    let t = std::time::Instant::now();
    env.ok(&[
        "apply",
        "-f",
        &fleet_n(&env, "1", 1, "min_healthy = \"2s\""),
    ]);
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "the window was waited for"
    );
    let s = status(&env);
    assert_eq!(
        (s["release"].as_i64(), s["outcome"].as_str()),
        (Some(1), Some("healthy"))
    );
}

/// `constraints` and `spread_by` (issue 22) on a store that is not part of
/// a fleet: accepted, recorded as rollout settings (a change is no new
/// release and replaces no instance), and `plan` says in one line that they
/// apply when hosts join.
#[test]
fn placement_settings_wait_for_hosts_and_make_no_release() {
    let Some(env) = setup() else { return };
    let f = fleet_n(
        &env,
        "1",
        1,
        "constraints = { zone = [\"eu-1a\", \"eu-1b\"] }\nspread_by = \"zone\"",
    );
    let plan = env.ok(&["plan", "-f", &f]);
    assert!(
        plan.contains(
            "note: constraints (zone) and spread_by (zone) apply when hosts join a fleet"
        ),
        "{plan}"
    );
    assert_eq!(plan.matches("apply when hosts join").count(), 1, "{plan}");
    let out = env.ok(&["apply", "-f", &f]);
    assert!(out.contains("rolled out release 1"), "{out}");
    let ids = |env: &Env| -> Vec<Value> {
        status(env)["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].clone())
            .collect()
    };
    let before = ids(&env);
    assert_eq!(before.len(), 1);

    // Changed: a rollout setting, shown as such, no release, no new instance.
    let f = fleet_n(
        &env,
        "1",
        1,
        "constraints = { zone = \"eu-1a\", disk = \"ssd\" }",
    );
    let plan = env.json(&["plan", "-f", &f]);
    let web = &plan["services"][0];
    assert_eq!(web["new_release"], Value::Null, "{plan}");
    let changes: Vec<String> = web["rollout_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        changes,
        ["constraints.disk", "constraints.zone", "spread_by"],
        "{plan}"
    );
    let out = env.ok(&["apply", "-f", &f]);
    assert!(!out.contains("release 2"), "{out}");
    assert_eq!(env.items(&["releases", "web"]).len(), 1);
    assert_eq!(ids(&env), before, "a placement change replaced an instance");
    // And bad ones are located, like every fleet field.
    let bad = fleet_n(&env, "1", 1, "constraints = { zone = [] }");
    let out = env.run(&["plan", "-f", &bad]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fleet.toml:6:") && err.contains("service.web.constraints.zone"),
        "{err}"
    );
}

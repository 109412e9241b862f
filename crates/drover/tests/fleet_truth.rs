//! The fleet file against what runs, with real instances (embedded
//! runtime, busybox httpd), each test reproducing a reported failure:
//! after `rollback`, `plan` said "no change" and `status` saw nothing; a
//! service dropped from the fleet file ran on and could not be deleted; a
//! second service on a held proxy port passed `plan` and `apply`; `plan`
//! printed "config: env" without values, and rollout steps after
//! "refused"; `apply --detach` could not be followed to its outcome.
//! Needs root (CI runs as root).

use crate::common;

use std::process::{Child, Output, Stdio};
use std::time::Duration;

use common::{Env, show, write};
use serde_json::Value;

/// One `[service.<name>]` table: `replicas` of web:`tag`, health-checked
/// at `health` (a path that 404s fails the gate), with `extra` lines.
fn service(name: &str, tag: &str, health: &str, extra: &str) -> String {
    format!(
        r#"
[service.{name}]
image = "web:{tag}"
replicas = 1
min_healthy = "0s"
{extra}

[service.{name}.health]
kind = "http"
path = "{health}"
interval = "200ms"
timeout = "200ms"
retries = 2
start_period = "1s"
deadline = "10s"
"#
    )
}

/// Write `file` (under the context dir) with `services`; its path.
fn fleet(env: &Env, file: &str, services: &[String]) -> String {
    let path = env.ctx().join(file);
    write(&path, services.concat().as_bytes(), 0o644);
    path.to_str().unwrap().to_string()
}

fn statuses(env: &Env) -> Vec<Value> {
    env.items(&["status"])
}

fn status_of(env: &Env, name: &str) -> Option<Value> {
    statuses(env).into_iter().find(|s| s["name"] == name)
}

fn ledger(env: &Env) -> Vec<Value> {
    env.items(&["audit"])
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Live instances of `service`, as `ps` lists them.
fn instances_of(env: &Env, name: &str) -> usize {
    let all: Vec<Value> = env.items(&["ps"]);
    all.iter()
        .filter(|i| i["service"] == name && i["state"] != "deleted")
        .count()
}

/// Regression: after `drover rollback web`, `plan` said "web: no change"
/// while the rolled-back release ran, and `status` showed no mismatch.
#[test]
fn a_rollback_leaves_the_service_out_of_sync_and_plan_status_and_apply_say_so() {
    let Some(env) = common::web_env() else { return };
    env.ok(&[
        "apply",
        "-f",
        &fleet(&env, "f.toml", &[service("web", "1", "/", "")]),
    ]);
    let f = fleet(&env, "f.toml", &[service("web", "2", "/", "")]);
    env.ok(&["apply", "-f", &f]);
    env.ok(&["rollback", "web"]); // release 3: release 1's content

    let plan = env.run(&["plan", "-f", &f, "--detailed-exitcode"]);
    let text = out(&plan);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "apply changes nothing: {}",
        show(&plan)
    );
    assert!(text.contains("OUT OF SYNC"), "{text}");
    assert!(
        text.contains("the fleet file asks for release 2")
            && text.contains("runs release 3 (a rollback to release 1)")
            && text.contains("drover rollback web --to 2"),
        "{text}"
    );
    assert!(
        text.contains("image: sha256:"),
        "the differing field is named: {text}"
    );

    let s = status_of(&env, "web").unwrap();
    assert_eq!(s["sync"]["state"], "out-of-sync", "{s}");
    assert_eq!(s["sync"]["fleet_release"], 2, "{s}");
    assert_eq!(s["sync"]["running_release"], 3, "{s}");
    assert_eq!(s["sync"]["differences"][0]["field"], "image", "{s}");
    let text = env.ok(&["status"]);
    assert!(
        text.contains("OUT OF SYNC") && text.contains("release 2"),
        "{text}"
    );

    // apply leaves the manual rollback standing, and says how to go back.
    let o = env.run(&["apply", "-f", &f]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        out(&o).contains("unchanged, runs release 3"),
        "{}",
        show(&o)
    );
    assert!(
        err(&o).contains("out of sync") && err(&o).contains("drover rollback web --to 2"),
        "{}",
        show(&o)
    );

    // Back to the fleet's content: in sync again.
    env.ok(&["rollback", "web", "--to", "2"]);
    let s = status_of(&env, "web").unwrap();
    assert_eq!(s["sync"]["state"], "synced", "{s}");
    let text = env.ok(&["plan", "-f", &f]);
    assert!(
        text.contains("web: no change") && !text.contains("OUT OF SYNC"),
        "{text}"
    );
}

/// Regression: `plan` printed "config: env" without the values, and a
/// replicas change as "no change".
#[test]
fn plan_shows_old_and_new_values_masks_secrets_and_exits_0_2_1() {
    let Some(env) = common::web_env() else { return };
    let env_line = |mode: &str, pw: &str| {
        format!("env = {{ MODE = \"{mode}\", PASSWORD = {{ value = \"{pw}\", secret = true }} }}")
    };
    let f = fleet(
        &env,
        "f.toml",
        &[service("web", "1", "/", &env_line("a", "hunter2"))],
    );
    env.ok(&["apply", "-f", &f]);
    let code = |args: &[&str]| env.run(args).status.code();
    assert_eq!(code(&["plan", "-f", &f, "--detailed-exitcode"]), Some(0));

    let f = fleet(
        &env,
        "f.toml",
        &[service("web", "1", "/", &env_line("b", "swordfish"))],
    );
    let plan = env.run(&["plan", "-f", &f, "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", show(&plan));
    let text = out(&plan);
    assert!(text.contains("env.MODE: \"a\" -> \"b\""), "{text}");
    assert!(text.contains("env.PASSWORD: (secret) changed"), "{text}");
    let json = env.ok(&["--json", "plan", "-f", &f]);
    for shown in [&text, &json] {
        assert!(
            !shown.contains("hunter2") && !shown.contains("swordfish"),
            "{shown}"
        );
    }
    // Nor anywhere else a release's config is shown.
    for args in [
        &["--json", "releases", "web"][..],
        &["releases", "web"],
        &["--json", "status"],
        &["--json", "ps"],
    ] {
        let shown = env.ok(args);
        assert!(!shown.contains("hunter2"), "{args:?}: {shown}");
    }

    // A rollout setting alone is a change too.
    let f = fleet(
        &env,
        "f.toml",
        &[service(
            "web",
            "1",
            "/",
            &format!("{}\nstrategy = \"recreate\"", env_line("a", "hunter2")),
        )],
    );
    let plan = env.run(&["plan", "-f", &f, "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", show(&plan));
    assert!(out(&plan).contains("strategy: rolling"), "{}", show(&plan));

    // Any error is 1 under the flag (a bad fleet file is 2 without it).
    let bad = fleet(
        &env,
        "bad.toml",
        &["[service.web]\nreplicas = 1\n".to_string()],
    );
    assert_eq!(code(&["plan", "-f", &bad]), Some(2));
    assert_eq!(code(&["plan", "-f", &bad, "--detailed-exitcode"]), Some(1));
}

/// Regression: `plan` printed "refused: quarantined" and then the rollout
/// steps that would never run.
#[test]
fn a_quarantined_release_is_refused_in_plan_without_steps() {
    let Some(env) = common::web_env() else { return };
    env.ok(&[
        "apply",
        "-f",
        &fleet(&env, "f.toml", &[service("web", "1", "/", "")]),
    ]);
    let f = fleet(&env, "f.toml", &[service("web", "1", "/missing", "")]);
    let o = env.run(&["apply", "-f", &f]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));

    let plan = env.run(&["plan", "-f", &f]);
    let text = out(&plan);
    assert!(
        text.contains("refused: this image and config are quarantined"),
        "{text}"
    );
    assert!(
        !text.contains("rollout:") && !text.contains(" 1. "),
        "{text}"
    );
    let json: Value = env.json(&["plan", "-f", &f]);
    let web = &json["services"][0];
    assert!(web["refused"].is_string(), "{json}");
    assert_eq!(web["steps"], serde_json::json!([]), "{json}");
    assert_eq!(
        env.run(&["plan", "-f", &f, "--detailed-exitcode"])
            .status
            .code(),
        Some(1)
    );

    // status: the fleet asks for the failed release.
    let s = status_of(&env, "web").unwrap();
    assert_eq!(s["sync"]["state"], "out-of-sync", "{s}");
    assert!(
        s["sync"]["reason"]
            .as_str()
            .unwrap()
            .contains("asks for release 2, which failed (quarantined"),
        "{s}"
    );
}

/// Regression: a service removed from the fleet file kept running, and
/// nothing could delete a service.
#[test]
fn an_orphan_is_listed_then_pruned_and_service_rm_removes_the_rest() {
    let Some(env) = common::web_env() else { return };
    let both = fleet(
        &env,
        "f.toml",
        &[service("api", "1", "/", ""), service("web", "1", "/", "")],
    );
    env.ok(&["apply", "-f", &both]);
    assert_eq!(instances_of(&env, "api"), 1);

    let web_only = fleet(&env, "f.toml", &[service("web", "1", "/", "")]);
    let plan = env.run(&["plan", "-f", &web_only, "--detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "orphans alone change nothing: {}",
        show(&plan)
    );
    assert!(
        out(&plan).contains("orphan: api: not in the fleet file (apply --prune removes it)"),
        "{}",
        show(&plan)
    );
    let plan = env.run(&["plan", "-f", &web_only, "--prune", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", show(&plan));
    assert!(
        out(&plan).contains("orphan: api: would be removed"),
        "{}",
        show(&plan)
    );

    // Without --prune, apply leaves it alone.
    env.ok(&["apply", "-f", &web_only]);
    assert_eq!(instances_of(&env, "api"), 1);

    let o = env.ok(&["apply", "-f", &web_only, "--prune"]);
    assert!(o.contains("api: removed"), "{o}");
    assert_eq!(instances_of(&env, "api"), 0);
    assert!(status_of(&env, "api").is_none());
    assert!(status_of(&env, "web").is_some());
    let removed: Vec<Value> = ledger(&env)
        .into_iter()
        .filter(|e| e["action"] == "service.remove")
        .collect();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["details"]["service"], "api");
    assert!(removed[0]["actor"].is_string());
    // Its history stays.
    assert!(env.ok(&["releases", "api"]).contains("apply web:1"));

    // `service rm`: the same, by name.
    let o = env.ok(&["service", "rm", "web", "-m", "retired"]);
    assert!(o.contains("web: removed"), "{o}");
    assert_eq!(instances_of(&env, "web"), 0);
    assert!(statuses(&env).is_empty());
    assert!(ledger(&env).iter().any(|e| e["action"] == "service.remove"
        && e["details"]["service"] == "web"
        && e["details"]["reason"] == "retired"));
    assert_eq!(env.run(&["service", "rm", "web"]).status.code(), Some(4));

    // Applying it again revives it; its release numbers carry on.
    let o = env.ok(&["apply", "-f", &web_only]);
    assert!(o.contains("rolled out release 2"), "{o}");
    assert_eq!(instances_of(&env, "web"), 1);
}

/// Regression: a second service on a port another service holds passed
/// `plan` and `apply`; `serve` only logged "Address already in use".
#[test]
fn a_second_fleet_claiming_a_held_port_is_refused_naming_both() {
    let Some(env) = common::web_env() else { return };
    let port = common::free_port();
    let ports = format!("ports = [{port}]");
    env.ok(&[
        "apply",
        "-f",
        &fleet(&env, "a.toml", &[service("web", "1", "/", &ports)]),
    ]);

    let other = fleet(&env, "b.toml", &[service("api", "1", "/", &ports)]);
    let plan = env.run(&["plan", "-f", &other]);
    assert_eq!(plan.status.code(), Some(2), "{}", show(&plan));
    let e = err(&plan);
    assert!(
        e.contains(&format!("port {port}"))
            && e.contains("service api")
            && e.contains("service web"),
        "{e}"
    );
    let apply = env.run(&["apply", "-f", &other]);
    assert_eq!(apply.status.code(), Some(2), "{}", show(&apply));
    assert!(
        status_of(&env, "api").is_none(),
        "nothing of api was recorded"
    );

    env.ok(&["service", "rm", "web"]);
    env.ok(&["plan", "-f", &other]);
}

/// A running `drover serve`, stopped (SIGTERM) when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        common::stop(&mut self.0, Duration::from_secs(10));
    }
}

/// Regression: `apply --detach` exited 0 and nothing told whether the
/// rollout it handed to `serve` later failed.
#[test]
fn apply_detach_returns_the_release_and_rollout_status_follows_it() {
    let Some(env) = common::web_env() else { return };
    let good = fleet(&env, "f.toml", &[service("web", "1", "/", "")]);

    // No serve: the release is recorded, still rolling, and apply says
    // nothing rolls it out.
    let o = env.run(&["apply", "-f", &good, "--detach"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(out(&o).contains("recorded release 1"), "{}", show(&o));
    assert!(err(&o).contains("no `drover serve` runs"), "{}", show(&o));
    let o = env.run(&["--json", "rollout", "status", "web"]);
    assert_eq!(o.status.code(), Some(5), "still rolling: {}", show(&o));
    let json = common::doc(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(json["state"], "rolling", "{json}");

    let _serve = Serve(
        env.cmd()
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
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let o = env.run(&["rollout", "status", "web", "--watch", "--timeout", "60s"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(out(&o).contains("web: release 1 healthy"), "{}", show(&o));

    // A release that fails its gate under serve: failed, rolled back.
    let bad = fleet(&env, "f.toml", &[service("web", "1", "/missing", "")]);
    let o = env.run(&["--json", "apply", "-f", &bad, "--detach"]);
    assert!(o.status.success(), "{}", show(&o));
    let reports = common::items(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(reports[0]["created"], 2, "{}", show(&o));
    let o = env.run(&["rollout", "status", "web", "--watch", "--timeout", "60s"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "as apply's failed deploy: {}",
        show(&o)
    );
    assert!(
        out(&o).contains("web: release 2 failed") && err(&o).contains("release 1 runs"),
        "{}",
        show(&o)
    );
    let json = common::doc(&out(&env.run(&["--json", "rollout", "status", "web"])));
    assert_eq!(json["state"], "failed", "{json}");
    assert_eq!(json["running"], 1, "{json}");
}

//! Rollouts across the hosts of a fleet, through the real binary: three
//! stores (three hosts) over one PostgreSQL database, each running
//! `drover serve --join` on loopback. Replicas are placed 2/2/2 and each
//! host starts and stops only its own; a rolling update holds its bounds
//! fleet-wide; a failing release is rolled back and quarantined fleet-wide;
//! a host killed with its instances is marked down and its instances are
//! replaced on the others, and it comes back fenced, stopping nothing the
//! others run; `drover drain` moves every instance off a host.
//!
//! Ports: every host picks an instance's port among the ports no live
//! instance *of the fleet* was given (one database), so instances of three
//! hosts on one machine never collide.

use crate::common;
use crate::hosts::Serve;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Env, eventually, show};
use drover_core::state::pgtest::{self, Backend};
use serde_json::Value;

/// How long a host may be silent before it is marked down, in the tests.
const HOST_TIMEOUT: &str = "3s";

/// The bound on replacing a dead host's instances, from its death: the
/// timeout (3 s), one fleet check (1 s), and a rollout of two replicas
/// (start, health gate) with room for a loaded machine.
const REPLACED_WITHIN: Duration = Duration::from_secs(45);

/// Three hosts h1, h2, h3 (zones a, b, c) over one database, with `web:1`
/// and `web:2` built on h1, or `None` (skip) without PostgreSQL, busybox
/// or root. The other hosts get h1's blobs copied into their own stores:
/// what a pull by digest from the fleet's registry does (a build on each
/// host cannot stand in for it: the image's names are fleet-wide, so a
/// second host's build finds them recorded and its blob store empty).
fn three_hosts() -> Option<[Env; 3]> {
    let h1 = common::web_env()?;
    h1.state.as_ref()?;
    Some(three_from(h1))
}

/// h1 (with the images built) and two more stores on its database.
fn three_from(h1: Env) -> [Env; 3] {
    let h2 = h1.sharing();
    let h3 = h1.sharing();
    // h1 signed the images: every host trusts its key (fleet-wide).
    let key = h1.store().join("keys/host.pub");
    h1.ok(&["policy", "trust", key.to_str().unwrap(), "--name", "h1"]);
    let blobs = h1.store().join("blobs/sha256");
    for env in [&h2, &h3] {
        env.ok(&["key", "show"]);
        let to = env.store().join("blobs/sha256");
        std::fs::create_dir_all(&to).unwrap();
        for b in std::fs::read_dir(&blobs).unwrap().flatten() {
            std::fs::copy(b.path(), to.join(b.file_name())).unwrap();
        }
    }
    [h1, h2, h3]
}

fn join(env: &Env, name: &str, zone: &str) -> Serve {
    join_on(env, name, zone, "127.0.0.1")
}

/// [`join`] with the host's proxies listening on `bind` (a loopback
/// address of its own, so three hosts' proxies share a port).
fn join_on(env: &Env, name: &str, zone: &str, bind: &str) -> Serve {
    Serve::start(
        env,
        &[
            "--bind",
            bind,
            "--join",
            "--host",
            name,
            "--label",
            &format!("zone={zone}"),
            "--address",
            "127.0.0.1",
            "--host-timeout",
            HOST_TIMEOUT,
        ],
    )
}

fn hosts(env: &Env) -> BTreeMap<String, Value> {
    env.items(&["hosts"])
        .into_iter()
        .map(|h| (h["name"].as_str().unwrap().to_string(), h))
        .collect()
}

/// The service's live instances, not lost, fleet-wide.
fn live(env: &Env) -> Vec<Value> {
    env.items(&["ps"])
        .into_iter()
        .filter(|i| {
            i["service"] == "web"
                && matches!(
                    i["state"].as_str(),
                    Some("running" | "created" | "stopping")
                )
                && i["lost"].is_null()
        })
        .collect()
}

/// One line per instance: id, host, release, slot, ready, for messages.
fn summary(env: &Env) -> String {
    live(env)
        .iter()
        .map(|i| {
            format!(
                "{} {} r{} s{} {}",
                i["id"].as_str().unwrap_or_default(),
                i["host"].as_str().unwrap_or("-"),
                i["release"],
                i["slot"],
                if i["ready_at"].is_null() {
                    "unready"
                } else {
                    "ready"
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Of those, the ones in traffic: ready, not draining.
fn ready(list: &[Value]) -> Vec<&Value> {
    list.iter()
        .filter(|i| i["state"] == "running" && !i["ready_at"].is_null() && i["drain_at"].is_null())
        .collect()
}

fn per_host(list: &[&Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in list {
        *out.entry(i["host"].as_str().unwrap_or("-").to_string())
            .or_default() += 1;
    }
    out
}

fn fleet(env: &Env, tag: &str, health_path: &str) -> String {
    fleet_with(env, tag, health_path, "")
}

/// [`fleet`] with `extra` lines in the service's table.
fn fleet_with(env: &Env, tag: &str, health_path: &str, extra: &str) -> String {
    common::write_fleet(
        env,
        &format!(
            r#"
[service.web]
image = "web:{tag}"
replicas = 6
min_healthy = "0s"
max_surge = 2
max_unavailable = 1
spread_by = "zone"
{extra}

[service.web.health]
kind = "http"
path = "{health_path}"
interval = "200ms"
timeout = "200ms"
retries = 2
start_period = "1s"
deadline = "10s"
"#
        ),
    )
}

fn web_status(env: &Env) -> Value {
    env.items(&["status"])
        .into_iter()
        .find(|s| s["name"] == "web")
        .expect("service web")
}

/// Six ready instances of release `n`, on each of `on` and nowhere else.
fn settled(env: &Env, n: i64, on: &[&str]) -> bool {
    let all = live(env);
    let r = ready(&all);
    let hosts: BTreeSet<String> = per_host(&r).into_keys().collect();
    all.len() == 6
        && r.len() == 6
        && r.iter().all(|i| i["release"] == n)
        && hosts == on.iter().map(|h| h.to_string()).collect()
}

/// Six ready instances of release `n`, two on each of `on`.
fn even(env: &Env, n: i64, on: &[&str]) -> bool {
    let want: BTreeMap<String, usize> = on.iter().map(|h| (h.to_string(), 6 / on.len())).collect();
    settled(env, n, on) && per_host(&ready(&live(env))) == want
}

/// Pids of processes whose command line names `store` (its serve and the
/// monitors of its instances).
fn pids_naming(store: &std::path::Path) -> Vec<u32> {
    let needle = store.to_str().unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(needle) && pid != std::process::id() {
            out.push(pid);
        }
    }
    out
}

fn kill9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

#[test]
fn replicas_spread_roll_fail_over_and_drain_across_three_hosts() {
    pgtest::with(Backend::Postgres, fleet_scenario);
}

fn fleet_scenario() {
    let Some([e1, e2, e3]) = three_hosts() else {
        return;
    };
    // Declared after the stores: the serves stop first when dropped.
    let s1 = join(&e1, "h1", "a");
    let s2 = join(&e2, "h2", "b");
    let mut s3 = Some(join(&e3, "h3", "c"));
    assert!(
        eventually(Duration::from_secs(20), || {
            let h = hosts(&e1);
            h.len() == 3 && h.values().all(|h| h["state"] == "up")
        }),
        "the hosts did not join:\n{}\n{}",
        s1.log(),
        s2.log()
    );
    let logs = |s3: &Option<Serve>| {
        format!(
            "h1:\n{}\nh2:\n{}\nh3:\n{}",
            s1.log(),
            s2.log(),
            s3.as_ref().map(Serve::log).unwrap_or_default()
        )
    };

    // 1. Six replicas over three hosts: 2/2/2, each started by its host.
    let out = e1.run(&["apply", "-f", &fleet(&e1, "1", "/")]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        eventually(Duration::from_secs(60), || even(
            &e1,
            1,
            &["h1", "h2", "h3"]
        )),
        "not 2/2/2: {:?}\n{}",
        summary(&e1),
        logs(&s3)
    );
    let counts: BTreeMap<String, i64> = hosts(&e1)
        .into_iter()
        .map(|(n, h)| (n, h["instances"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        counts.values().collect::<Vec<_>>(),
        [&2, &2, &2],
        "{counts:?}"
    );
    let status = web_status(&e1);
    let on: BTreeSet<&str> = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["host"].as_str())
        .collect();
    assert_eq!(on, ["h1", "h2", "h3"].into(), "{status}");
    let keyid: BTreeMap<String, String> = hosts(&e1)
        .into_iter()
        .map(|(n, h)| (n, h["keyid"].as_str().unwrap().to_string()))
        .collect();
    let stores: BTreeMap<&str, &Env> = [("h1", &e1), ("h2", &e2), ("h3", &e3)].into();
    let starts = e1.items(&["audit", "--action", "instance.start"]);
    for i in live(&e1) {
        let (id, host) = (i["id"].as_str().unwrap(), i["host"].as_str().unwrap());
        // Its bundle is in its own host's store only, and its host's key
        // signed its start.
        for (name, env) in &stores {
            assert_eq!(
                env.store().join("instances").join(id).exists(),
                *name == host,
                "instance {id} of {host} in {name}'s store"
            );
        }
        let start = starts
            .iter()
            .find(|e| e.to_string().contains(id))
            .unwrap_or_else(|| panic!("no instance.start of {id}"));
        assert_eq!(
            start["keyid"].as_str(),
            Some(keyid[host].as_str()),
            "{start}"
        );
    }
    let placements = per_host(&ready(&live(&e1)));
    assert_eq!(placements.len(), 3, "{placements:?}");

    // 2. A rolling update to release 2: at most one replica unavailable
    // and two extra, fleet-wide, sampled all along; it ends all new.
    let out = e1.run(&["apply", "-f", &fleet(&e1, "2", "/")]);
    assert!(out.status.success(), "{}", show(&out));
    let (mut least, mut most) = (usize::MAX, 0);
    let t = Instant::now();
    while !settled(&e1, 2, &["h1", "h2", "h3"]) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the rollout did not finish: {:?}\n{}",
            summary(&e1),
            logs(&s3)
        );
        let all = live(&e1);
        least = least.min(ready(&all).len());
        most = most.max(all.len());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        least >= 5,
        "{least} ready at the worst moment (max_unavailable 1)"
    );
    assert!(most <= 8, "{most} live at the busiest moment (max_surge 2)");

    // 3. A release whose check fails is rolled back fleet-wide and
    // quarantined.
    let out = e1.run(&["apply", "-f", &fleet(&e1, "1", "/missing")]);
    assert!(
        eventually(Duration::from_secs(90), || {
            let r = e1.items(&["releases", "web"]);
            r.len() == 3 && r[2]["outcome"] == "failed"
        }),
        "release 3 did not fail: {}\n{}",
        show(&out),
        logs(&s3)
    );
    assert!(
        eventually(Duration::from_secs(90), || {
            let s = web_status(&e1);
            s["quarantined"].as_array().is_some_and(|q| !q.is_empty())
                && ready(&live(&e1)).len() == 6
                && settled(&e1, 2, &["h1", "h2", "h3"])
        }),
        "not rolled back: {:?}\n{}",
        summary(&e1),
        logs(&s3)
    );
    // Back to release 2, the one it replaced.
    assert_eq!(web_status(&e1)["release"], 2);
    let back = 2;
    assert!(
        eventually(Duration::from_secs(60), || settled(
            &e1,
            back,
            &["h1", "h2", "h3"]
        )),
        "{:?}",
        live(&e1)
    );

    // 4. h3 dies with its instances (kill -9 of its serve, monitors and
    // processes): marked down, its two replicas replaced on h1 and h2.
    let kept: BTreeSet<String> = live(&e1)
        .iter()
        .filter(|i| i["host"] != "h3")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    let doomed: Vec<u32> = live(&e1)
        .iter()
        .filter(|i| i["host"] == "h3")
        .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
        .collect();
    assert_eq!(doomed.len(), 2);
    let died = Instant::now();
    s3.take().unwrap().kill9();
    for pid in pids_naming(&e3.store()).into_iter().chain(doomed) {
        kill9(pid);
    }
    assert!(
        eventually(REPLACED_WITHIN, || settled(&e1, back, &["h1", "h2"])
            && hosts(&e1)["h3"]["state"] == "down"),
        "h3's replicas were not replaced within {REPLACED_WITHIN:?}: {:?} {:?}\n{}",
        hosts(&e1),
        summary(&e1),
        logs(&s3)
    );
    eprintln!("h3's replicas replaced {:?} after it died", died.elapsed());
    let now: BTreeSet<String> = live(&e1)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kept.is_subset(&now),
        "a survivor was replaced: {kept:?} {now:?}"
    );
    let down = e1.items(&["audit", "--action", "host.down"]);
    assert_eq!(down.len(), 1, "{down:?}");

    // h3 comes back: fenced, it stops what was counted lost and nothing
    // else; no instance moves back (no rebalancing).
    s3 = Some(join(&e3, "h3", "c"));
    assert!(
        eventually(Duration::from_secs(20), || hosts(&e1)["h3"]["state"]
            == "up"),
        "{}",
        logs(&s3)
    );
    std::thread::sleep(Duration::from_secs(3));
    let after: BTreeSet<String> = live(&e1)
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(after, now, "h3's return changed what runs");
    assert_eq!(e1.items(&["audit", "--action", "host.fenced"]).len(), 1);

    // 5. Drain h2: its replicas move to h1 and h3; it shows drained. Undo
    // makes it eligible again.
    let out = e1.ok(&["drain", "h2"]);
    assert!(out.contains("replaced on other hosts"), "{out}");
    assert!(
        eventually(Duration::from_secs(60), || settled(
            &e1,
            back,
            &["h1", "h3"]
        ) && hosts(&e1)["h2"]["state"]
            == "drained"),
        "h2 did not drain: {} {:?}\n{}",
        summary(&e1),
        hosts(&e1)["h2"]["state"],
        logs(&s3)
    );
    e1.ok(&["drain", "--undo", "h2"]);
    assert_eq!(hosts(&e1)["h2"]["state"], "up");
    e1.ok(&["audit", "verify"]);
    drop(s3);
}

/// How long each step of the load test may take to settle fleet-wide.
const STEP_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn two_deploys_and_a_rollback_across_hosts_fail_no_request() {
    pgtest::with(Backend::Postgres, load_scenario);
}

/// wrk against h2's proxy (127.0.0.2; the hosts' proxies listen on
/// 127.0.0.1, .2 and .3, one port) while six replicas over three hosts
/// roll to release 2, to 3 (web:1 again), and are rolled back: not one
/// request fails (non-2xx, connect, read, write or timeout errors).
fn load_scenario() {
    let Some([e1, e2, e3]) = three_hosts() else {
        return;
    };
    if !common::require("wrk") {
        return;
    }
    let port = common::free_port();
    let ports = format!("ports = [{port}]\ndrain = \"5s\"");
    let s1 = join_on(&e1, "h1", "a", "127.0.0.1");
    let s2 = join_on(&e2, "h2", "b", "127.0.0.2");
    let s3 = join_on(&e3, "h3", "c", "127.0.0.3");
    let logs = || format!("h1:\n{}\nh2:\n{}\nh3:\n{}", s1.log(), s2.log(), s3.log());
    assert!(
        eventually(Duration::from_secs(20), || {
            let h = hosts(&e1);
            h.len() == 3 && h.values().all(|h| h["state"] == "up")
        }),
        "the hosts did not join:\n{}",
        logs()
    );
    let all = ["h1", "h2", "h3"];
    let out = e1.run(&["apply", "-f", &fleet_with(&e1, "1", "/", &ports)]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        eventually(STEP_WITHIN, || even(&e1, 1, &all)),
        "not 2/2/2: {:?}\n{}",
        summary(&e1),
        logs()
    );
    // Every host's proxy answers.
    for addr in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        assert!(
            eventually(Duration::from_secs(10), || get_at(addr, port).is_some()),
            "{addr}:{port} does not answer\n{}",
            logs()
        );
    }
    let step = |what: &str, want: i64| {
        assert!(
            eventually(STEP_WITHIN, || web_status(&e1)["release"] == want
                && settled(&e1, want, &all)),
            "{what}: not settled on release {want}: {:?}\n{}",
            summary(&e1),
            logs()
        );
    };
    let (requests, errors, non2xx, text) = crate::serve::wrk_during_at("127.0.0.2", port, || {
        let out = e1.run(&[
            "apply",
            "-f",
            &fleet_with(&e1, "2", "/", &ports),
            "-m",
            "two",
        ]);
        assert!(out.status.success(), "deploy 2: {}", show(&out));
        step("deploy 2", 2);
        let out = e1.run(&[
            "apply",
            "-f",
            &fleet_with(&e1, "1", "/", &ports),
            "-m",
            "three",
        ]);
        assert!(out.status.success(), "deploy 3: {}", show(&out));
        step("deploy 3", 3);
        let out = e1.run(&["rollback", "web"]);
        assert!(out.status.success(), "rollback: {}", show(&out));
        let rel = e1.items(&["releases", "web"]);
        assert_eq!(rel.len(), 4, "1 + 2 deploys + 1 rollback: {rel:?}");
        step("rollback", 4);
    });
    eprintln!("{text}");
    assert!(requests > 100, "wrk made only {requests} requests:\n{text}");
    assert_eq!(
        (errors, non2xx),
        (0, 0),
        "failed requests:\n{text}\n{}",
        logs()
    );
    // The rollback runs web:2 again.
    assert_eq!(get_at("127.0.0.2", port).as_deref(), Some("version two\n"));
    drop((s1, s2, s3));
}

/// `common::get` against `addr`: the body of a 200 to `GET /`.
fn get_at(addr: &str, port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((addr, port)).ok()?;
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

/// The bound on finishing a rollout once PostgreSQL is back: the serves'
/// reconnection backoff, the rest of a rollout of six, and room for a
/// loaded machine. It takes 2–3 s (a pass the outage cut off gave up the
/// service's deploy lease unheard, and its serve takes it again at once;
/// before that, it waited out the 30 s lease).
const RESUMED_WITHIN: Duration = Duration::from_secs(60);

#[test]
fn a_rollout_resumes_after_postgresql_restarts() {
    pgtest::with(Backend::Postgres, restart_scenario);
}

/// On a PostgreSQL cluster of its own: three hosts roll six replicas from
/// release 1 to 2; mid-rollout PostgreSQL stops (fast shutdown) for 3 s.
/// Every host's proxy answers all along, no instance is started or stopped
/// and nothing is written to the ledger while it is down, and the rollout
/// completes once it is back.
fn restart_scenario() {
    if !common::require("busybox") || common::web_env().is_none() {
        return;
    }
    // Declared first: stopped last, after the serves and the stores.
    let Some(pg) = pgtest::Private::start() else {
        return;
    };
    let h1 = Env {
        dir: tempfile::tempdir().unwrap(),
        state: Some(pg.url("drover")),
    };
    common::web_image(&h1, "1", "version one\n", "/", common::WEB_SERVER);
    common::web_image(&h1, "2", "version two\n", "/", common::WEB_SERVER);
    let [e1, e2, e3] = three_from(h1);
    let port = common::free_port();
    let ports = format!("ports = [{port}]\ndrain = \"5s\"");
    let s1 = join_on(&e1, "h1", "a", "127.0.0.1");
    let s2 = join_on(&e2, "h2", "b", "127.0.0.2");
    let s3 = join_on(&e3, "h3", "c", "127.0.0.3");
    let logs = || format!("h1:\n{}\nh2:\n{}\nh3:\n{}", s1.log(), s2.log(), s3.log());
    assert!(
        eventually(Duration::from_secs(20), || {
            let h = hosts(&e1);
            h.len() == 3 && h.values().all(|h| h["state"] == "up")
        }),
        "the hosts did not join:\n{}",
        logs()
    );
    let all = ["h1", "h2", "h3"];
    let addrs = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let out = e1.run(&["apply", "-f", &fleet_with(&e1, "1", "/", &ports)]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        eventually(STEP_WITHIN, || even(&e1, 1, &all)
            && addrs.iter().all(|a| get_at(a, port).is_some())),
        "not 2/2/2: {:?}\n{}",
        summary(&e1),
        logs()
    );

    // The rollout to release 2, caught midway: some new replicas ready,
    // not all.
    let mut apply = e1
        .cmd()
        .args([
            "apply",
            "--detach",
            "-f",
            &fleet_with(&e1, "2", "/", &ports),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(STEP_WITHIN, || {
            let r = ready(&live(&e1))
                .iter()
                .filter(|i| i["release"] == 2)
                .count();
            (1..6).contains(&r)
        }),
        "the rollout did not start: {:?}\n{}",
        summary(&e1),
        logs()
    );
    let _ = apply.wait();
    let seq = e1
        .items(&["audit"])
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap();
    // What runs: every process naming a store (serves, monitors,
    // instances), and the pids of the ready instances.
    let procs = || -> BTreeSet<u32> {
        [&e1, &e2, &e3]
            .iter()
            .flat_map(|e| pids_naming(&e.store()))
            .collect()
    };
    // Read last, right before the stop: the rollout goes on meanwhile,
    // and an instance draining by then is not in `serving`.
    let before = procs();
    let snapshot = live(&e1);
    let serving: Vec<u32> = ready(&snapshot)
        .iter()
        .map(|i| i["pid"].as_u64().expect("a ready instance's pid") as u32)
        .collect();
    pg.down("fast");
    // Checked with PostgreSQL down, asserted once it is up again (a failed
    // test must leave the stores' cleanup a database to use).
    let down = Instant::now();
    let mut failed: Option<String> = None;
    let mut probes = 0;
    while failed.is_none() && down.elapsed() < Duration::from_secs(3) {
        for a in addrs {
            if get_at(a, port).is_none() {
                failed = Some(format!("{a}:{port} failed while PostgreSQL was down"));
            }
            probes += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing was started, and no ready instance stopped. (A start in
    // flight when PostgreSQL stopped may be undone.)
    let during = procs();
    if failed.is_none() && !during.is_subset(&before) {
        failed = Some(format!(
            "processes started while PostgreSQL was down: {:?}",
            during.difference(&before).collect::<Vec<_>>()
        ));
    }
    if let Some(pid) = serving.iter().find(|p| !during.contains(p))
        && failed.is_none()
    {
        failed = Some(format!(
            "ready instance {pid} stopped while PostgreSQL was down"
        ));
    }
    let midway = format!("{serving:?} of {snapshot:?}");
    let back = clock_now();
    pg.up();
    if let Some(f) = failed {
        panic!("{f}; midway: {midway}\n{}", logs());
    }
    eprintln!("{probes} requests answered while PostgreSQL was down; midway: {midway}");
    let t = Instant::now();
    assert!(
        eventually(RESUMED_WITHIN, || settled(&e1, 2, &all)),
        "the rollout did not resume within {RESUMED_WITHIN:?}: {:?}\n{}",
        summary(&e1),
        logs()
    );
    eprintln!(
        "the rollout finished {:?} after PostgreSQL came back",
        t.elapsed()
    );
    for a in addrs {
        assert_eq!(get_at(a, port).as_deref(), Some("version two\n"), "{a}");
    }
    // Nothing was appended to the ledger while it was down.
    for e in e1.items(&["audit"]) {
        if e["seq"].as_u64().unwrap() > seq {
            let time = e["time"].as_str().unwrap();
            assert!(time[..19] >= back[..], "written while down: {e}");
        }
    }
    e1.ok(&["audit", "verify"]);
    drop((s1, s2, s3));
}

/// Now, UTC, to the second (`YYYY-MM-DDTHH:MM:SS`), as the ledger writes it.
fn clock_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

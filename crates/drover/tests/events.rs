//! `drover events`: a real deploy (busybox httpd, health-gated) told as
//! events from the ledger — release created / healthy, instances started —
//! filtered by service and time, and followed (`-f`) as it happens. Needs
//! root (CI runs as root).

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Env;
use serde_json::Value;

/// Services `web` and `api`, one instance each, of `web:<tag>`.
fn fleet(env: &Env, tag: &str) -> String {
    let mut text = String::new();
    for name in ["web", "api"] {
        text.push_str(&format!(
            r#"
[service.{name}]
image = "web:{tag}"
min_healthy = "0s"
replicas = 1

[service.{name}.health]
kind = "http"
path = "/"
interval = "200ms"
timeout = "200ms"
retries = 2
start_period = "1s"
deadline = "10s"
"#
        ));
    }
    common::write_fleet(env, &text)
}

/// `drover --json events ARGS`: one JSON object a line.
fn events(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json", "events"];
    all.extend_from_slice(args);
    env.ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn has(events: &[Value], kind: &str, service: &str, release: i64) -> bool {
    events
        .iter()
        .any(|e| e["type"] == kind && e["service"] == service && e["release"] == release)
}

#[test]
fn a_deploy_is_told_as_events_filtered_by_service_and_time_and_followed() {
    let Some(env) = common::web_env() else { return };
    let f = fleet(&env, "1");
    env.ok(&["apply", "-f", &f]);

    let all = events(&env, &[]);
    for service in ["web", "api"] {
        assert!(has(&all, "release.created", service, 1), "{all:#?}");
        assert!(has(&all, "release.healthy", service, 1), "{all:#?}");
        assert!(has(&all, "instance.started", service, 1), "{all:#?}");
    }
    let started = all
        .iter()
        .find(|e| e["type"] == "instance.started" && e["service"] == "web")
        .unwrap();
    assert!(
        started["instance"].as_str().is_some_and(|i| !i.is_empty()),
        "{started}"
    );
    assert!(
        started["time"].as_str().unwrap().ends_with('Z'),
        "{started}"
    );
    assert!(
        started["reason"].as_str().unwrap().contains("pid"),
        "{started}"
    );
    // Events are in ledger order.
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{seqs:?}");

    // --service: only that service's.
    let web = events(&env, &["--service", "web"]);
    assert!(
        !web.is_empty() && web.iter().all(|e| e["service"] == "web"),
        "{web:#?}"
    );
    assert!(has(&web, "release.healthy", "web", 1));

    // The lines people read.
    let text = env.ok(&["events", "--service", "web"]);
    let healthy = text
        .lines()
        .find(|l| l.contains("release.healthy"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(healthy.contains("web@1"), "{text}");
    assert!(
        healthy.as_bytes()[4] == b'-' && healthy.contains("Z  "),
        "{text}"
    );

    // -f, started before the next deploy, prints its events as they come.
    let mut follower = env
        .cmd()
        .args(["--json", "events", "-f", "--service", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let f = fleet(&env, "2");
    env.ok(&["apply", "-f", &f, "-m", "ship v2"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !has(&seen, "release.healthy", "web", 2) && Instant::now() < deadline {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(v);
        }
    }
    common::stop(&mut follower, Duration::from_secs(2));
    assert!(has(&seen, "release.created", "web", 2), "{seen:#?}");
    assert!(has(&seen, "release.healthy", "web", 2), "{seen:#?}");
    assert!(seen.iter().all(|e| e["service"] == "web"), "{seen:#?}");
    let created = seen
        .iter()
        .find(|e| e["type"] == "release.created" && e["release"] == 2)
        .unwrap();
    assert!(
        created["reason"].as_str().unwrap().contains("ship v2"),
        "{created}"
    );

    // --since the second release's creation: nothing of the first.
    let since = created["time"].as_str().unwrap();
    let later = events(&env, &["--since", since]);
    assert!(has(&later, "release.created", "web", 2), "{later:#?}");
    assert!(
        later
            .iter()
            .all(|e| e["release"] != 1 || e["type"] != "release.created"),
        "{later:#?}"
    );
    assert!(
        later.iter().all(|e| e["time"].as_str().unwrap() >= since),
        "{later:#?}"
    );
    // --until before it: nothing of the second.
    let earlier = events(&env, &["--until", since]);
    assert!(has(&earlier, "release.healthy", "web", 1), "{earlier:#?}");
    assert!(!has(&earlier, "release.created", "web", 2), "{earlier:#?}");
    // A duration back from now.
    assert!(!events(&env, &["--since", "1h"]).is_empty());
    assert!(events(&env, &["--until", "1h"]).is_empty());
}

/// A revocation is an event too, of no service.
#[test]
fn a_revocation_is_an_event_of_no_service() {
    let env = Env::new();
    let bogus = format!("sha256:{}", "ab".repeat(32));
    env.ok(&["revoke", &bogus, "--reason", "leaked key"]);
    let all = events(&env, &[]);
    let revoked = all
        .iter()
        .find(|e| e["type"] == "image.revoked")
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(revoked["image"], bogus.as_str());
    assert_eq!(revoked["reason"], "leaked key");
    assert!(events(&env, &["--service", "web"]).is_empty());
    let text = env.ok(&["events"]);
    assert!(
        text.contains("image.revoked") && text.contains("leaked key"),
        "{text}"
    );
}

/// Drift found by `serve`'s scan, and the drifted instance condemned
/// (`instance.condemn`, ledgered where it happens) and healed away.
#[test]
fn drift_found_by_serve_is_told_with_the_condemned_instance() {
    let Some(env) = common::web_env() else { return };
    env.ok(&["apply", "-f", &fleet(&env, "1")]);
    let started = events(&env, &["--service", "web"]);
    let id = started
        .iter()
        .find(|e| e["type"] == "instance.started")
        .and_then(|e| e["instance"].as_str())
        .unwrap()
        .to_string();
    // Behind drover's back: the instance's runtime config changed.
    common::tamper_env(&env, &id, "INJECTED=1");

    let mut serve = env
        .cmd()
        .args(["serve", "--bind", "127.0.0.1", "--interval", "500ms"])
        .args(["--drift-interval", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let condemned = |all: &[Value]| {
        all.iter()
            .any(|e| e["type"] == "instance.condemned" && e["instance"] == id.as_str())
    };
    let seen = common::eventually(Duration::from_secs(30), || {
        condemned(&events(&env, &["--service", "web"]))
    });
    common::stop(&mut serve, Duration::from_secs(10));
    let all = events(&env, &["--service", "web"]);
    assert!(seen, "{all:#?}");
    let drift = all
        .iter()
        .find(|e| e["type"] == "drift.found" && e["instance"] == id.as_str())
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert!(
        drift["reason"].as_str().unwrap().contains("replaced"),
        "{drift}"
    );
    let condemn = all
        .iter()
        .find(|e| e["type"] == "instance.condemned")
        .unwrap();
    assert!(
        condemn["reason"].as_str().unwrap().starts_with("drift"),
        "{condemn}"
    );
    assert_eq!(condemn["release"], 1);
    // Condemned once, however many scans saw it.
    assert_eq!(
        all.iter()
            .filter(|e| e["type"] == "instance.condemned")
            .count(),
        1
    );
}

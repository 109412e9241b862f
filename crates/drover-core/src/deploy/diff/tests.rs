use std::collections::BTreeMap;

use super::*;
use crate::deploy::plan::Strategy;
use crate::deploy::spec::{CrashLoop, ProxyMode};
use crate::runtime::DriverKind;

fn config(env: &[(&str, &str)], secret: &[&str]) -> ReleaseConfig {
    ReleaseConfig {
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        secret_env: secret.iter().map(|s| s.to_string()).collect(),
        volumes: vec![],
        tmpfs: vec![],
        limits: Default::default(),
        cap_add: vec![],
        health: None,
        deadline_ms: 60_000,
        driver: DriverKind::Embedded,
        userns_opt_out: None,
        init: None,
        logs: Default::default(),
    }
}

fn shown(changes: &[Change]) -> Vec<String> {
    changes.iter().map(ToString::to_string).collect()
}

fn diff(a: &ReleaseConfig, b: &ReleaseConfig) -> Vec<Change> {
    let d = Digest::of(b"x");
    let c = |config| Content {
        image: &d,
        image_ref: "web:1",
        config,
    };
    content(&c(a), &c(b))
}

#[test]
fn env_changes_show_old_and_new_values_and_added_and_removed_keys() {
    let a = config(&[("MODE", "a"), ("OLD", "x")], &[]);
    let b = config(&[("MODE", "b"), ("NEW", "1")], &[]);
    assert_eq!(
        shown(&diff(&a, &b)),
        [
            "env.MODE: \"a\" -> \"b\"",
            "env.NEW: (unset) -> \"1\"",
            "env.OLD: \"x\" -> (unset)",
        ]
    );
    assert!(diff(&a, &a).is_empty());
}

/// A secret value never appears in a change, its text nor its JSON.
#[test]
fn secret_values_are_masked_in_every_form() {
    let a = config(&[("PASSWORD", "hunter2"), ("A", "1")], &["PASSWORD"]);
    let b = config(&[("PASSWORD", "swordfish"), ("A", "1")], &["PASSWORD"]);
    let changes = diff(&a, &b);
    assert_eq!(shown(&changes), ["env.PASSWORD: (secret) changed"]);
    let json = serde_json::to_string(&changes).unwrap();
    assert!(
        !json.contains("hunter2") && !json.contains("swordfish"),
        "{json}"
    );
    assert!(json.contains("\"secret\":true"), "{json}");

    // Added, removed, or marked secret on one side only: still masked.
    let none = config(&[], &[]);
    assert_eq!(
        shown(&diff(&none, &b)),
        [
            "env.A: (unset) -> \"1\"",
            "env.PASSWORD: (unset) -> (secret)",
            "secret_env: (unset) -> [\"PASSWORD\"]",
        ]
    );
    let plain = config(&[("PASSWORD", "hunter2"), ("A", "1")], &[]);
    let shown_now = shown(&diff(&plain, &b)).join("\n");
    assert!(
        !shown_now.contains("hunter2") && !shown_now.contains("swordfish"),
        "{shown_now}"
    );

    // The masked config keeps the names, not the values.
    let m = b.masked();
    assert_eq!(m.env["PASSWORD"], SECRET);
    assert_eq!(m.env["A"], "1");
}

#[test]
fn a_config_without_secrets_keeps_its_digest_form() {
    let c = config(&[("A", "1")], &[]);
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("secret_env"), "{json}");
}

#[test]
fn image_and_nested_fields_are_named_by_path() {
    let (d1, d2) = (Digest::of(b"1"), Digest::of(b"2"));
    let mut b = config(&[], &[]);
    b.limits.memory_bytes = Some(1 << 20);
    let a = config(&[], &[]);
    let changes = content(
        &Content {
            image: &d1,
            image_ref: "web:1",
            config: &a,
        },
        &Content {
            image: &d2,
            image_ref: "web:2",
            config: &b,
        },
    );
    assert_eq!(
        shown(&changes),
        [
            format!(
                "image: sha256:{}… -> sha256:{}… (web:2)",
                d1.short(),
                d2.short()
            ),
            "limits.memory_bytes: (unset) -> 1048576".to_string(),
        ]
    );
}

#[test]
fn rollout_changes_name_each_setting() {
    let a = Rollout {
        replicas: 2,
        strategy: Strategy::Rolling {
            max_surge: 1,
            max_unavailable: 0,
        },
        ports: vec![8080],
        proxy: ProxyMode::Http,
        drain_ms: 10_000,
        min_healthy_ms: 10_000,
        crash_loop: CrashLoop::default(),
        constraints: Default::default(),
        spread_by: None,
    };
    assert!(rollout(&a, &a).is_empty());
    let b = Rollout {
        replicas: 3,
        strategy: Strategy::Recreate,
        ports: vec![8081],
        proxy: ProxyMode::Tcp,
        drain_ms: 10_000,
        min_healthy_ms: 0,
        crash_loop: CrashLoop {
            restarts: 5,
            ..CrashLoop::default()
        },
        constraints: [("zone".to_string(), ["a".to_string()].into())].into(),
        spread_by: Some("zone".into()),
    };
    assert_eq!(
        shown(&rollout(&a, &b)),
        [
            "constraints.zone: (unset) -> [\"a\"]",
            "crash_loop.restarts: 3 -> 5",
            "min_healthy_ms: 10000 -> 0",
            "ports: [8080] -> [8081]",
            "proxy: \"http\" -> \"tcp\"",
            "replicas: 2 -> 3",
            "spread_by: (unset) -> \"zone\"",
            "strategy: rolling (max_surge 1, max_unavailable 0) -> recreate",
        ]
    );
}

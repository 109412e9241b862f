use std::collections::BTreeMap;

use super::*;
use crate::deploy::Report;

/// The samples of an exposition, `name{labels}` → value, and the `# TYPE`
/// of each family.
fn parse(text: &str) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (key, value) = line.rsplit_once(' ').unwrap();
            samples.insert(key.to_string(), value.parse().unwrap());
        }
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    (samples, types)
}

fn report(service: &str) -> Report {
    Report {
        service: service.into(),
        ..Report::default()
    }
}

#[test]
fn events_are_counted_under_their_names_and_labels() {
    let m = Metrics::new(None);
    m.proxy_request("web", 200, Duration::from_millis(3));
    m.proxy_request("web", 200, Duration::from_millis(30));
    m.proxy_request("web", 503, Duration::from_millis(1));
    m.proxy_upstream_error("web", "connect");
    m.proxy_retry("web");
    m.proxy_connection("db", true);
    m.proxy_connection("db", false);
    // A rollout to release 2, then a heal of one instance.
    let mut r = report("web");
    (r.release, r.started, r.stopped) = (Some(2), 2, 2);
    m.pass(&r, Some(1));
    let mut r = report("web");
    (r.release, r.started, r.healed) = (Some(2), 1, 1);
    m.pass(&r, Some(2));
    // A failed rollout, rolled back.
    let mut r = report("web");
    (r.release, r.failed) = (Some(2), Some(3));
    r.rollback_reason = Some("health_check");
    r.gate_probes = vec![
        (true, Duration::from_millis(3)),
        (false, Duration::from_millis(9)),
    ];
    r.error = Some(crate::Error::Usage("unhealthy".into()).into());
    m.pass(&r, Some(2));
    // A crash loop: backed off.
    let mut r = report("web");
    (r.release, r.crashed_young) = (Some(2), 1);
    m.pass(&r, Some(2));
    m.health_probe("web", true, Duration::from_millis(2));
    m.health_probe("web", false, Duration::from_millis(500));
    m.drift_scan(Duration::from_millis(20), Some(1));
    m.drift_scan(Duration::from_millis(20), None);

    let (s, types) = parse(&m.encode());
    let want = [
        (
            r#"drover_proxy_requests_total{service="web",code="200"}"#,
            2.0,
        ),
        (
            r#"drover_proxy_requests_total{service="web",code="503"}"#,
            1.0,
        ),
        (
            r#"drover_proxy_request_duration_seconds_count{service="web"}"#,
            3.0,
        ),
        (
            r#"drover_proxy_request_duration_seconds_bucket{le="0.004",service="web"}"#,
            2.0,
        ),
        (
            r#"drover_proxy_upstream_errors_total{service="web",kind="connect"}"#,
            1.0,
        ),
        (r#"drover_proxy_retries_total{service="web"}"#, 1.0),
        (
            r#"drover_proxy_connections_total{service="db",result="joined"}"#,
            1.0,
        ),
        (
            r#"drover_proxy_connections_total{service="db",result="refused"}"#,
            1.0,
        ),
        (
            r#"drover_rollouts_total{service="web",result="succeeded"}"#,
            1.0,
        ),
        (
            r#"drover_rollouts_total{service="web",result="failed"}"#,
            1.0,
        ),
        (
            r#"drover_rollbacks_total{service="web",reason="health_check"}"#,
            1.0,
        ),
        (r#"drover_heals_total{service="web"}"#, 1.0),
        (r#"drover_backoffs_total{service="web"}"#, 1.0),
        (r#"drover_drift_scans_total{result="ok"}"#, 1.0),
        (r#"drover_drift_scans_total{result="error"}"#, 1.0),
        ("drover_drift_findings_total", 1.0),
        (
            r#"drover_health_probes_total{service="web",result="ok",phase="serving"}"#,
            1.0,
        ),
        (
            r#"drover_health_probes_total{service="web",result="failed",phase="serving"}"#,
            1.0,
        ),
        (
            r#"drover_health_probes_total{service="web",result="ok",phase="rollout"}"#,
            1.0,
        ),
        (
            r#"drover_health_probes_total{service="web",result="failed",phase="rollout"}"#,
            1.0,
        ),
        (
            r#"drover_health_probe_duration_seconds_count{service="web",phase="serving"}"#,
            2.0,
        ),
        (
            r#"drover_health_probe_duration_seconds_count{service="web",phase="rollout"}"#,
            2.0,
        ),
        ("drover_drift_scan_duration_seconds_count", 2.0),
    ];
    for (key, value) in want {
        assert_eq!(s.get(key), Some(&value), "{key} in {s:#?}");
    }
    for (family, kind) in [
        ("drover_proxy_requests", "counter"),
        ("drover_proxy_request_duration_seconds", "histogram"),
        ("drover_heals", "counter"),
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(
            types.get(family).map(String::as_str),
            Some(kind),
            "{types:#?}"
        );
    }
    // The process's own, from /proc.
    assert!(s["process_resident_memory_bytes"] > 1e6, "{s:#?}");
    assert!(s["process_open_fds"] >= 3.0, "{s:#?}");
    let now = crate::clock::now_ms() as f64 / 1000.0;
    let started = s["process_start_time_seconds"];
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "{started} vs {now}"
    );
}

#[test]
fn a_busy_pass_counts_nothing() {
    let m = Metrics::new(None);
    let mut r = report("web");
    r.error = Some(
        crate::Error::Busy {
            what: "web".into(),
            reason: "locked".into(),
        }
        .into(),
    );
    r.healed = 1;
    m.pass(&r, None);
    let (s, _) = parse(&m.encode());
    assert!(!s.keys().any(|k| k.contains("service=")), "{s:#?}");
}

#[test]
fn proc_stat_is_read_past_an_odd_command_name() {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
    // majflt cmajflt utime stime cutime cstime prio nice threads itreal
    // starttime vsize rss
    let stat = "42 (dr (o) ver) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                12345 104857600 2000 rest";
    let v = parse_stat(stat, 1_000_000.0).unwrap();
    assert_eq!(v.cpu_seconds, 3.0);
    assert_eq!(v.threads, 7);
    assert_eq!(v.start_time_seconds, 1_000_123.45);
    assert_eq!(v.virtual_bytes, 104_857_600);
    assert!(parse_stat("garbage", 0.0).is_none());
}

#[test]
fn an_empty_store_scrapes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let m = Metrics::new(Some(dir.path().to_path_buf()));
    let text = m.encode();
    let (_, types) = parse(&text);
    assert_eq!(
        types.get("drover_service_release_info").map(String::as_str),
        Some("gauge"),
        "{text}"
    );
    assert_eq!(
        types.get("drover_instances").map(String::as_str),
        Some("gauge")
    );
    assert_eq!(
        types.get("drover_ledger_entries").map(String::as_str),
        Some("counter")
    );
}

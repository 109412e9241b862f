use serde_json::{Value, json};

use super::*;
use crate::ledger::NewEntry;

const IMAGE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn entry(action: &str, subjects: &[&str], details: Value) -> Entry {
    Entry {
        seq: 7,
        time: "2026-12-06T03:01:02.345Z".into(),
        actor: "alice@host".into(),
        action: action.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        details,
        prev_hash: String::new(),
        hash: String::new(),
        keyid: None,
        signature: None,
    }
}

fn one(e: &Entry) -> Event {
    let mut all = from_entry(e);
    assert_eq!(all.len(), 1, "{} means one event: {all:?}", e.action);
    all.remove(0)
}

#[test]
fn release_create_is_release_created_with_its_image() {
    let e = one(&entry(
        "release.create",
        &["web#3", IMAGE],
        json!({"service": "web", "release": 3, "image": IMAGE, "image_ref": "web:2",
               "parent": 2, "rollback_of": null, "message": ""}),
    ));
    assert_eq!(e.kind, Kind::ReleaseCreated);
    assert_eq!((e.service.as_deref(), e.release), (Some("web"), Some(3)));
    assert_eq!(e.image.as_deref(), Some(IMAGE));
    assert_eq!(e.reason, "image web:2");
    assert_eq!((e.seq, e.actor.as_str()), (7, "alice@host"));
    assert_eq!(e.subject(), "web@3");
}

#[test]
fn release_rollback_is_a_new_release_and_the_parent_rolled_back() {
    let all = from_entry(&entry(
        "release.rollback",
        &["web#5", IMAGE],
        json!({"service": "web", "release": 5, "image": IMAGE, "image_ref": "web:1",
               "parent": 4, "rollback_of": 3, "message": "rollback by hand"}),
    ));
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(
        (all[0].kind, all[0].release),
        (Kind::ReleaseCreated, Some(5))
    );
    assert_eq!(all[0].reason, "image web:1: rollback by hand");
    assert_eq!(
        (all[1].kind, all[1].release),
        (Kind::ReleaseRolledBack, Some(4))
    );
    assert_eq!(
        all[1].reason,
        "rolled back to release 3's content as release 5"
    );
}

#[test]
fn release_healthy_and_failed_carry_their_reason() {
    let ok = one(&entry(
        "release.healthy",
        &["web#3", IMAGE],
        json!({"service": "web", "release": 3, "reason": null}),
    ));
    assert_eq!(ok.kind, Kind::ReleaseHealthy);
    assert_eq!(ok.reason, "rolled out: every instance ready");
    let bad = one(&entry(
        "release.failed",
        &["web#3", IMAGE],
        json!({"service": "web", "release": 3, "reason": "instance x: health check failed"}),
    ));
    assert_eq!(bad.kind, Kind::ReleaseFailed);
    assert_eq!(bad.reason, "instance x: health check failed");
}

#[test]
fn release_quarantine_is_release_quarantined() {
    let e = one(&entry(
        "release.quarantine",
        &["web#3", IMAGE],
        json!({"service": "web", "release": 3, "reason": "failed"}),
    ));
    assert_eq!(
        (e.kind, e.reason.as_str()),
        (Kind::ReleaseQuarantined, "failed")
    );
}

#[test]
fn service_rollback_to_an_existing_release_is_the_failed_one_rolled_back() {
    let e = one(&entry(
        "service.rollback",
        &["web#3"],
        json!({"service": "web", "from": 3, "to": 2, "automatic": true, "reason": "unhealthy"}),
    ));
    assert_eq!(e.kind, Kind::ReleaseRolledBack);
    assert_eq!(e.release, Some(3));
    assert_eq!(e.reason, "back to release 2: unhealthy");
}

/// The new release's entry says it (see the test above): not twice.
#[test]
fn service_rollback_that_made_a_release_is_no_event_of_its_own() {
    let e = entry(
        "service.rollback",
        &["web#4"],
        json!({"service": "web", "from": 4, "to": 5, "rollback_of": 3, "reason": "crash loop"}),
    );
    assert!(from_entry(&e).is_empty());
}

fn instance_details(extra: Value) -> Value {
    let mut d = json!({"image": IMAGE, "driver": "libcontainer", "from": "created",
                       "to": "running", "service": "web", "release": 3});
    d.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    d
}

#[test]
fn instance_start_is_instance_started() {
    let e = one(&entry(
        "instance.start",
        &["0123456789abcdef", IMAGE],
        instance_details(json!({"pid": 42})),
    ));
    assert_eq!(e.kind, Kind::InstanceStarted);
    assert_eq!(e.instance.as_deref(), Some("0123456789abcdef"));
    assert_eq!(e.reason, "running, pid 42");
    assert_eq!(e.subject(), "web@3 0123456789ab");
}

#[test]
fn instance_exit_and_stop_say_how_it_ended() {
    let exit = one(&entry(
        "instance.exit",
        &["i1", IMAGE],
        instance_details(json!({"exit": "code 1"})),
    ));
    assert_eq!(
        (exit.kind, exit.reason.as_str()),
        (Kind::InstanceExited, "exited: code 1")
    );
    let stop = one(&entry(
        "instance.stop",
        &["i1", IMAGE],
        instance_details(json!({"exit": "signal 15"})),
    ));
    assert_eq!(
        (stop.kind, stop.reason.as_str()),
        (Kind::InstanceStopped, "stopped: signal 15")
    );
}

#[test]
fn instance_lost_names_why() {
    let e = one(&entry(
        "instance.lost",
        &["i1", IMAGE],
        instance_details(json!({"why": "recorded on another boot"})),
    ));
    assert_eq!(
        (e.kind, e.reason.as_str()),
        (Kind::InstanceLost, "recorded on another boot")
    );
}

#[test]
fn instance_delete_is_instance_removed() {
    let e = one(&entry(
        "instance.delete",
        &["i1", IMAGE],
        instance_details(json!({})),
    ));
    assert_eq!(e.kind, Kind::InstanceRemoved);
}

#[test]
fn instance_unhealthy_keeps_the_check_failure() {
    let e = one(&entry(
        "instance.unhealthy",
        &["i1"],
        json!({"service": "web", "reason": "GET / timed out"}),
    ));
    assert_eq!(e.kind, Kind::InstanceUnhealthy);
    assert_eq!(
        (e.service.as_deref(), e.reason.as_str()),
        (Some("web"), "GET / timed out")
    );
}

#[test]
fn service_heal_is_instance_healed() {
    let e = one(&entry(
        "service.heal",
        &["i1", IMAGE],
        json!({"service": "web", "release": 3, "instance": "i1", "exit": "code 137", "seconds": 12}),
    ));
    assert_eq!(e.kind, Kind::InstanceHealed);
    assert_eq!(e.instance.as_deref(), Some("i1"));
    assert_eq!(e.reason, "found dead (code 137) after 12 s; replaced");
}

#[test]
fn instance_drift_is_drift_found() {
    let d = json!({"service": "web", "release": 3, "findings": 2,
                   "paths": ["/etc/passwd", "/bin/sh"], "action": "replaced"});
    let e = one(&entry("instance.drift", &["i1", IMAGE], d));
    assert_eq!(e.kind, Kind::DriftFound);
    assert_eq!(e.reason, "2 finding(s): /etc/passwd, /bin/sh (replaced)");
    assert_eq!(e.instance.as_deref(), Some("i1"));
}

#[test]
fn instance_condemn_is_instance_condemned() {
    let e = one(&entry(
        "instance.condemn",
        &["i1", IMAGE],
        json!({"service": "web", "release": 3, "reason": "drift: 2 finding(s)"}),
    ));
    assert_eq!(e.kind, Kind::InstanceCondemned);
    assert_eq!(
        (e.release, e.reason.as_str()),
        (Some(3), "drift: 2 finding(s)")
    );
}

#[test]
fn service_backoff_says_when_it_tries_again() {
    let e = one(&entry(
        "service.backoff",
        &["web"],
        json!({"service": "web", "failures": 2, "backoff_ms": 4000, "reason": "crashed"}),
    ));
    assert_eq!(e.kind, Kind::ServiceBackoff);
    assert_eq!(e.reason, "failure 2, next try in 4s: crashed");
    assert_eq!(e.subject(), "web");
}

#[test]
fn service_remove_is_service_removed() {
    let e = one(&entry(
        "service.remove",
        &["web"],
        json!({"service": "web", "release": null, "reason": "not in the fleet file"}),
    ));
    assert_eq!(e.kind, Kind::ServiceRemoved);
    assert_eq!(e.reason, "not in the fleet file");
}

#[test]
fn policy_refuse_is_policy_refused_naming_the_rule() {
    let e = one(&entry(
        "policy.refuse",
        &["evil:1"],
        json!({"rule": "signed_by", "reason": "no signature", "operation": "run"}),
    ));
    assert_eq!(e.kind, Kind::PolicyRefused);
    assert_eq!(e.image.as_deref(), Some("evil:1"));
    assert_eq!(e.reason, "run refused by rule signed_by: no signature");
    assert_eq!(e.subject(), "evil:1");
}

#[test]
fn revocations_are_image_revoked_and_unrevoked() {
    let r = one(&entry(
        "image.revoke",
        &[IMAGE],
        json!({"reason": "CVE", "reference": "web:1"}),
    ));
    assert_eq!((r.kind, r.reason.as_str()), (Kind::ImageRevoked, "CVE"));
    assert_eq!(r.image.as_deref(), Some(IMAGE));
    let u = one(&entry(
        "image.unrevoke",
        &[IMAGE],
        json!({"reason": "wrong one"}),
    ));
    assert_eq!(
        (u.kind, u.reason.as_str()),
        (Kind::ImageUnrevoked, "wrong one")
    );
}

#[test]
fn token_entries_are_token_events() {
    let c = one(&entry(
        "token.create",
        &["ci"],
        json!({"name": "ci", "role": "deploy"}),
    ));
    assert_eq!(
        (c.kind, c.reason.as_str()),
        (Kind::TokenCreated, "role deploy")
    );
    assert_eq!(c.subject(), "token ci");
    let r = one(&entry("token.revoke", &["ci"], json!({"name": "ci"})));
    assert_eq!(r.kind, Kind::TokenRevoked);
    let d = one(&entry(
        "api.denied",
        &["viewer"],
        json!({"token": "viewer", "role": "read", "needed": "deploy",
               "method": "POST", "path": "/api/v1/services/web/rollback"}),
    ));
    assert_eq!(d.kind, Kind::ApiDenied);
    assert_eq!(d.token.as_deref(), Some("viewer"));
    assert_eq!(
        d.reason,
        "POST /api/v1/services/web/rollback needs role deploy, the token has read"
    );
}

#[test]
fn a_host_down_and_its_fencing_are_host_events() {
    let d = one(&entry(
        "host.down",
        &["h2", "i1", "i2"],
        json!({"host": "h2", "epoch": 3, "lost": ["i1", "i2"], "reason": "no heartbeat for 16.0 s"}),
    ));
    assert_eq!(d.kind, Kind::HostDown);
    assert_eq!(d.subject(), "host h2");
    assert_eq!(
        d.reason,
        "down (epoch 3): no heartbeat for 16.0 s; 2 instance(s) counted lost"
    );
    let f = one(&entry(
        "host.fenced",
        &["h2", "i1"],
        json!({"host": "h2", "epoch": 3, "stopped": ["i1"]}),
    ));
    assert_eq!(f.kind, Kind::HostFenced);
    assert_eq!(f.host.as_deref(), Some("h2"));
    assert!(
        f.reason.contains("stopped 1 stale instance(s)"),
        "{}",
        f.reason
    );
    // Joining, draining and trusting keys are not events.
    for action in ["host.join", "host.drain", "key.trust", "key.untrust"] {
        assert!(
            from_entry(&entry(action, &["h2"], json!({}))).is_empty(),
            "{action}"
        );
    }
}

#[test]
fn entries_that_are_not_events_mean_none() {
    for action in [
        "image.build",
        "tag.set",
        "store.gc",
        "image.sign",
        "instance.debug",
    ] {
        assert!(
            from_entry(&entry(action, &["x"], json!({}))).is_empty(),
            "{action}"
        );
    }
}

#[test]
fn kinds_serialize_as_their_names() {
    let e = one(&entry("image.revoke", &[IMAGE], json!({"reason": "CVE"})));
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["type"], "image.revoked");
    assert_eq!(v["seq"], 7);
    assert!(
        v.get("service").is_none(),
        "absent fields are left out: {v}"
    );
    let back: Event = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);
    assert_eq!(Kind::ReleaseRolledBack.to_string(), "release.rolled_back");
}

crate::state::pgtest::backends! {
fn read_filters_by_service_and_time_and_resumes_after_its_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = crate::state::pgtest::open(&dir.path().join("drover.db")).unwrap();
    let put = |db: &mut Db, service: &str| {
        db.write(|tx| {
            tx.record(NewEntry::new(
                "service.remove",
                [service.to_string()],
                json!({"service": service, "reason": "gone"}),
            ))
            .map(drop)
        })
        .unwrap();
    };
    put(&mut db, "web");
    db.write(|tx| {
        tx.record(NewEntry::new("tag.set", ["x"], json!({})))
            .map(drop)
    })
    .unwrap();
    put(&mut db, "api");
    let all = read(db.read(), &Query::default(), 1).unwrap();
    assert_eq!(all.events.len(), 2);
    assert_eq!(all.next, 4);
    let web = Query {
        service: Some("web".into()),
        ..Query::default()
    };
    let only = read(db.read(), &web, 1).unwrap();
    assert_eq!(only.events.len(), 1);
    assert_eq!(only.events[0].service.as_deref(), Some("web"));
    let future = Query {
        since: Some("2999-01-01T00:00:00.000Z".into()),
        ..Query::default()
    };
    assert!(read(db.read(), &future, 1).unwrap().events.is_empty());
    put(&mut db, "web");
    let more = read(db.read(), &Query::default(), all.next).unwrap();
    assert_eq!(more.events.len(), 1);
    assert_eq!(more.events[0].seq, 4);
}
}

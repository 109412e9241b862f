use std::collections::BTreeMap;

use super::*;
use crate::state::pgtest::{self, backends};

fn host(name: &str, zone: &str, state: HostState) -> Host {
    Host {
        name: name.into(),
        labels: [("zone".to_string(), zone.to_string())].into(),
        state,
        capacity: None,
        instances: 0,
    }
}

fn three() -> Vec<Host> {
    vec![
        host("h1", "a", HostState::Up),
        host("h2", "b", HostState::Up),
        host("h3", "c", HostState::Up),
    ]
}

fn rollout() -> Placing {
    Placing {
        spread_by: Some("zone".into()),
        ..Placing::default()
    }
}

/// Place slots one after another, as a pass starting them does.
fn fill(hosts: &[Host], slots: impl IntoIterator<Item = u32>) -> BTreeMap<u32, String> {
    let mut others = BTreeMap::new();
    for slot in slots {
        let p = choose("web", &rollout(), hosts, &others, slot, None).unwrap();
        others.insert(slot, p.host);
    }
    others
}

fn per_host(m: &BTreeMap<u32, String>) -> BTreeMap<&str, usize> {
    let mut out = BTreeMap::new();
    for h in m.values() {
        *out.entry(h.as_str()).or_default() += 1;
    }
    out
}

#[test]
fn six_slots_one_at_a_time_land_two_per_host() {
    let placed = fill(&three(), 0..6);
    assert_eq!(per_host(&placed), [("h1", 2), ("h2", 2), ("h3", 2)].into());
    // The same answer on every host: it depends on the data only.
    assert_eq!(placed, fill(&three(), 0..6));
}

#[test]
fn high_slots_do_not_skew_the_spread() {
    // A rollout's new instances take slots past the replicas while the
    // old ones hold the low ones: those count as nothing here.
    let placed = fill(&three(), [6, 7, 8, 9, 10, 11]);
    assert_eq!(per_host(&placed), [("h1", 2), ("h2", 2), ("h3", 2)].into());
}

#[test]
fn a_wanted_placement_is_kept_while_its_host_is_up_and_moves_when_it_is_down() {
    let mut hosts = three();
    let others: BTreeMap<u32, String> = [(0, "h1".into()), (1, "h2".into())].into();
    let p = choose("web", &rollout(), &hosts, &others, 2, Some("h1")).unwrap();
    assert_eq!((p.host.as_str(), p.reason), ("h1", Reason::Kept));
    hosts[0].state = HostState::Down;
    let others: BTreeMap<u32, String> = [(1, "h2".into())].into();
    let p = choose("web", &rollout(), &hosts, &others, 2, Some("h1")).unwrap();
    assert_eq!((p.host.as_str(), p.reason), ("h3", Reason::HostDown));
    assert_eq!(p.slot, 2);
}

#[test]
fn a_draining_host_gets_nothing_and_no_host_left_is_an_error_naming_each() {
    let mut hosts = three();
    hosts[1].state = HostState::Draining;
    let placed = fill(&hosts, 0..4);
    assert!(!placed.values().any(|h| h == "h2"), "{placed:?}");
    hosts[0].state = HostState::Down;
    hosts[2].state = HostState::Draining;
    let e = choose("web", &rollout(), &hosts, &BTreeMap::new(), 3, None).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("slot 3")
            && text.contains("h1 down")
            && text.contains("h2 draining")
            && text.contains("h3 draining"),
        "{text}"
    );
}

backends! {
fn placements_are_recorded_replaced_and_retired() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = pgtest::open(&dir.path().join("state.db")).unwrap();
    db.write(|tx| {
        tx.place("web", 0, 1, "h1", 7, "spread")?;
        tx.place("web", 1, 1, "h2", 7, "spread")?;
        tx.place("web", 1, 1, "h3", 8, "replace:host-down")?;
        tx.place("api", 0, 1, "h1", 3, "spread")
    })
    .unwrap();
    let got: Vec<(u32, String, i64, String)> = db
        .read()
        .placements("web")
        .unwrap()
        .into_iter()
        .map(|p| (p.slot, p.host, p.token, p.reason))
        .collect();
    assert_eq!(
        got,
        [
            (0, "h1".into(), 7, "spread".into()),
            (1, "h3".into(), 8, "replace:host-down".into())
        ]
    );
    db.write(|tx| tx.retire_placement("web", 0, 1)).unwrap();
    let left = db.read().placements("web").unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].slot, 1);
    // Placed again: wanted again.
    db.write(|tx| tx.place("web", 0, 1, "h2", 9, "spread")).unwrap();
    assert_eq!(db.read().placements("web").unwrap().len(), 2);
    assert_eq!(db.read().placements("api").unwrap().len(), 1);
}
}

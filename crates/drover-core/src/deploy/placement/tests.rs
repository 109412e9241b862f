use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn host(name: &str, labels: &[(&str, &str)]) -> Host {
    Host {
        name: name.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        state: HostState::Up,
        capacity: None,
        instances: 0,
    }
}

fn hosts(names: &[&str]) -> Vec<Host> {
    names.iter().map(|n| host(n, &[])).collect()
}

fn spec(replicas: u32) -> Spec {
    Spec {
        service: "web".into(),
        replicas,
        ..Spec::default()
    }
}

fn spread(replicas: u32, label: &str) -> Spec {
    Spec {
        spread_by: Some(label.into()),
        ..spec(replicas)
    }
}

fn constrained(replicas: u32, label: &str, values: &[&str]) -> Spec {
    let mut s = spec(replicas);
    s.constraints
        .insert(label.into(), values.iter().map(|v| v.to_string()).collect());
    s
}

/// Two zones, a and b, of two hosts each.
fn zones() -> Vec<Host> {
    vec![
        host("a1", &[("zone", "a")]),
        host("a2", &[("zone", "a")]),
        host("b1", &[("zone", "b")]),
        host("b2", &[("zone", "b")]),
    ]
}

/// Where each slot is, as the next call's `current`.
fn now(d: &Decision) -> BTreeMap<u32, String> {
    d.placed.iter().map(|p| (p.slot, p.host.clone())).collect()
}

/// Replicas per host, by host name (hosts with none left out).
fn per_host(d: &Decision) -> Vec<(String, u32)> {
    d.per_host()
        .into_iter()
        .map(|(h, n)| (h.to_string(), n))
        .collect()
}

/// Replicas per value of `label`.
fn per_domain(d: &Decision, hosts: &[Host], label: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for p in &d.placed {
        let h = hosts.iter().find(|h| h.name == p.host).unwrap();
        *out.entry(h.labels[label].clone()).or_default() += 1;
    }
    out
}

fn with_state(mut hosts: Vec<Host>, name: &str, state: HostState) -> Vec<Host> {
    hosts.iter_mut().find(|h| h.name == name).unwrap().state = state;
    hosts
}

/// The slots whose host changed from `before` to `after`.
fn moved(before: &BTreeMap<u32, String>, after: &Decision) -> Vec<u32> {
    after
        .placed
        .iter()
        .filter(|p| before.get(&p.slot).is_some_and(|h| *h != p.host))
        .map(|p| p.slot)
        .collect()
}

#[test]
fn six_replicas_over_three_hosts_are_two_two_two() {
    let hs = hosts(&["h1", "h2", "h3"]);
    let d = place(&spec(6), &hs, &BTreeMap::new());
    assert!(d.unplaced.is_empty());
    assert_eq!(
        per_host(&d),
        [("h1".into(), 2), ("h2".into(), 2), ("h3".into(), 2)]
    );
    assert!(d.placed.iter().all(|p| p.reason == Reason::Spread));
    assert_eq!(
        d.placed.iter().map(|p| p.slot).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    // Placed again from where they are: nothing moves.
    let again = place(&spec(6), &hs, &now(&d));
    assert!(again.placed.iter().all(|p| p.reason == Reason::Kept));
    assert_eq!(now(&again), now(&d));
}

#[test]
fn spread_by_zone_fills_zones_evenly_then_hosts_within_them() {
    let hs = zones();
    let d = place(&spread(4, "zone"), &hs, &BTreeMap::new());
    assert_eq!(
        per_host(&d),
        [
            ("a1".into(), 1),
            ("a2".into(), 1),
            ("b1".into(), 1),
            ("b2".into(), 1)
        ]
    );
    // Odd counts: the zones differ by one at most, and so do the hosts of
    // a zone.
    for n in 0..=9 {
        let d = place(&spread(n, "zone"), &hs, &BTreeMap::new());
        let z = per_domain(&d, &hs, "zone");
        let (a, b) = (
            z.get("a").copied().unwrap_or(0),
            z.get("b").copied().unwrap_or(0),
        );
        assert!(a.abs_diff(b) <= 1, "{n} replicas: zones {z:?}");
        assert_eq!(a + b, n);
        let on = |h: &str| d.per_host().get(h).copied().unwrap_or(0);
        assert!(on("a1").abs_diff(on("a2")) <= 1, "{n}: {:?}", d.per_host());
        assert!(on("b1").abs_diff(on("b2")) <= 1, "{n}: {:?}", d.per_host());
    }
    // Zones of unequal size: the zone counts, not the host counts, come
    // first: zone a's one host takes half.
    let uneven = vec![
        host("a1", &[("zone", "a")]),
        host("b1", &[("zone", "b")]),
        host("b2", &[("zone", "b")]),
        host("b3", &[("zone", "b")]),
    ];
    let d = place(&spread(4, "zone"), &uneven, &BTreeMap::new());
    assert_eq!(d.per_host().get("a1"), Some(&2));
    assert_eq!(
        per_domain(&d, &uneven, "zone"),
        BTreeMap::from([("a".into(), 2), ("b".into(), 2)])
    );
}

#[test]
fn without_the_spread_label_a_host_is_not_eligible() {
    let mut hs = zones();
    hs.push(host("bare", &[]));
    let d = place(&spread(5, "zone"), &hs, &BTreeMap::new());
    assert!(d.placed.iter().all(|p| p.host != "bare"));
    // Its slot moves off once the host loses the label.
    let mut keep = BTreeMap::new();
    keep.insert(0, "bare".to_string());
    let d = place(&spread(1, "zone"), &hs, &keep);
    assert_eq!(d.placed[0].reason, Reason::Constraint);
    assert_eq!(d.placed[0].from.as_deref(), Some("bare"));
    // No host has it: each slot says why.
    let d = place(&spread(1, "rack"), &hs, &BTreeMap::new());
    assert_eq!(d.unplaced.len(), 1);
    assert_eq!(
        d.unplaced[0].excluded[0],
        Exclusion {
            host: "a1".into(),
            why: Why::NoSpreadLabel {
                label: "rack".into()
            }
        }
    );
}

#[test]
fn constraints_take_a_value_or_one_of_a_set() {
    let hs = vec![
        host("h1", &[("zone", "a"), ("disk", "ssd")]),
        host("h2", &[("zone", "b"), ("disk", "hdd")]),
        host("h3", &[("zone", "c"), ("disk", "ssd")]),
        host("h4", &[("zone", "a")]),
    ];
    // Equality.
    let d = place(&constrained(4, "disk", &["ssd"]), &hs, &BTreeMap::new());
    assert_eq!(per_host(&d), [("h1".into(), 2), ("h3".into(), 2)]);
    // Membership.
    let d = place(&constrained(6, "zone", &["a", "b"]), &hs, &BTreeMap::new());
    assert_eq!(
        per_host(&d),
        [("h1".into(), 2), ("h2".into(), 2), ("h4".into(), 2)]
    );
    // Two labels: both hold.
    let mut both = constrained(3, "zone", &["a", "c"]);
    both.constraints
        .insert("disk".into(), BTreeSet::from(["ssd".to_string()]));
    let d = place(&both, &hs, &BTreeMap::new());
    assert!(d.placed.iter().all(|p| p.host == "h1" || p.host == "h3"));
    assert_eq!(d.placed.len(), 3);
}

#[test]
fn a_slot_no_host_can_take_says_why_for_every_host() {
    let mut hs = vec![
        host("h1", &[("zone", "a")]),
        host("h2", &[("zone", "b")]),
        host("h3", &[]),
        host("h4", &[("zone", "c")]),
        host("h5", &[("zone", "c")]),
    ];
    hs[3].state = HostState::Down;
    hs[4].state = HostState::Draining;
    let d = place(&constrained(2, "zone", &["c", "d"]), &hs, &BTreeMap::new());
    assert!(d.placed.is_empty());
    assert_eq!(d.unplaced.len(), 2);
    let why: Vec<String> = d.unplaced[0]
        .excluded
        .iter()
        .map(|e| format!("{} {}", e.host, e.why))
        .collect();
    assert_eq!(
        why,
        [
            "h1 zone=a, the service wants zone=one of c, d",
            "h2 zone=b, the service wants zone=one of c, d",
            "h3 no label zone, the service wants zone=one of c, d",
            "h4 down",
            "h5 draining",
        ]
    );
    assert_eq!(
        d.unplaced[0].to_string(),
        format!("slot 0 has no host: {}", why.join("; "))
    );
    let err = d.into_result("web").unwrap_err().to_string();
    assert!(
        err.starts_with(
            "service web: 2 of its slots cannot be placed: slot 0 has no host: h1 zone=a"
        ),
        "{err}"
    );
    // No hosts at all.
    let d = place(&spec(1), &[], &BTreeMap::new());
    assert_eq!(
        d.unplaced[0].to_string(),
        "slot 0 has no host: no host has joined the fleet"
    );
    // A slot that had a host says which, and why it left.
    let mut had = BTreeMap::new();
    had.insert(0, "h4".to_string());
    let d = place(
        &spec(1),
        &with_state(hosts(&["h4"]), "h4", HostState::Down),
        &had,
    );
    assert_eq!(
        d.unplaced[0].to_string(),
        "slot 0 has no host (it leaves h4: replace:host-down): h4 down"
    );
}

#[test]
fn a_host_down_moves_only_its_slots() {
    let hs = hosts(&["h1", "h2", "h3"]);
    let before = now(&place(&spec(6), &hs, &BTreeMap::new()));
    let down = with_state(hs.clone(), "h2", HostState::Down);
    let d = place(&spec(6), &down, &before);
    let theirs: Vec<u32> = before
        .iter()
        .filter(|(_, h)| *h == "h2")
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(moved(&before, &d), theirs);
    for p in &d.placed {
        if theirs.contains(&p.slot) {
            assert_eq!(p.reason, Reason::HostDown);
            assert_eq!(p.from.as_deref(), Some("h2"));
        } else {
            assert_eq!(p.reason, Reason::Kept);
        }
    }
    // They fan out: one each to the others, not both onto one.
    assert_eq!(per_host(&d), [("h1".into(), 3), ("h3".into(), 3)]);
    // A host gone from the list is down as far as its slots go.
    let gone: Vec<Host> = hs.iter().filter(|h| h.name != "h2").cloned().collect();
    assert_eq!(place(&spec(6), &gone, &before), d);
    // Back up: nothing moves back (a move is a new instance).
    let back = place(&spec(6), &hs, &now(&d));
    assert!(back.moves().next().is_none());
}

#[test]
fn a_host_down_in_a_zone_is_replaced_in_that_zone_first() {
    let hs = zones();
    let before = now(&place(&spread(4, "zone"), &hs, &BTreeMap::new()));
    let d = place(
        &spread(4, "zone"),
        &with_state(hs.clone(), "a1", HostState::Down),
        &before,
    );
    assert_eq!(moved(&before, &d).len(), 1);
    assert_eq!(d.per_host().get("a2"), Some(&2));
    assert_eq!(
        per_domain(&d, &hs, "zone"),
        BTreeMap::from([("a".into(), 2), ("b".into(), 2)])
    );
}

#[test]
fn draining_moves_its_slots_and_nothing_else() {
    let hs = hosts(&["h1", "h2", "h3"]);
    let before = now(&place(&spec(6), &hs, &BTreeMap::new()));
    let d = place(
        &spec(6),
        &with_state(hs, "h3", HostState::Draining),
        &before,
    );
    assert!(d.placed.iter().all(|p| p.host != "h3"));
    for p in &d.placed {
        if before[&p.slot] == "h3" {
            assert_eq!((p.reason, p.from.as_deref()), (Reason::Drain, Some("h3")));
        } else {
            assert_eq!((p.reason, &p.host), (Reason::Kept, &before[&p.slot]));
        }
    }
    assert_eq!(d.moves().count(), 2);
}

#[test]
fn adding_a_host_moves_nothing_and_it_takes_the_next_slots() {
    let hs = hosts(&["h1", "h2"]);
    let before = now(&place(&spec(4), &hs, &BTreeMap::new()));
    let more = hosts(&["h1", "h2", "h3"]);
    let d = place(&spec(4), &more, &before);
    assert!(d.moves().next().is_none());
    // Scaled up, the new slots go to the empty host first.
    let d = place(&spec(6), &more, &before);
    assert_eq!(d.moves().count(), 2);
    assert!(
        d.moves()
            .all(|p| p.host == "h3" && p.reason == Reason::Spread && p.from.is_none())
    );
    // A new zone: nothing moves either; new slots go there.
    let hs = zones();
    let before = now(&place(&spread(4, "zone"), &hs, &BTreeMap::new()));
    let mut more = hs.clone();
    more.push(host("c1", &[("zone", "c")]));
    assert!(
        place(&spread(4, "zone"), &more, &before)
            .moves()
            .next()
            .is_none()
    );
    let d = place(&spread(5, "zone"), &more, &before);
    assert_eq!(d.placed[4].host, "c1");
}

#[test]
fn scaling_down_drops_the_highest_slots_and_keeps_the_rest() {
    let hs = hosts(&["h1", "h2", "h3"]);
    let before = now(&place(&spec(6), &hs, &BTreeMap::new()));
    let d = place(&spec(3), &hs, &before);
    assert_eq!(d.placed.len(), 3);
    assert!(
        d.placed
            .iter()
            .all(|p| p.reason == Reason::Kept && before[&p.slot] == p.host)
    );
    assert_eq!(place(&spec(0), &hs, &before), Decision::default());
}

#[test]
fn a_constraint_changed_moves_the_slots_that_no_longer_qualify() {
    let hs = vec![
        host("h1", &[("zone", "a")]),
        host("h2", &[("zone", "b")]),
        host("h3", &[("zone", "a")]),
    ];
    let before = now(&place(&spec(3), &hs, &BTreeMap::new()));
    let d = place(&constrained(3, "zone", &["a"]), &hs, &before);
    for p in &d.placed {
        assert_ne!(p.host, "h2");
        if before[&p.slot] == "h2" {
            assert_eq!(p.reason, Reason::Constraint);
        } else {
            assert_eq!(p.reason, Reason::Kept);
        }
    }
}

#[test]
fn capacity_limits_new_placements_but_never_moves_a_kept_one() {
    let mut hs = hosts(&["h1", "h2", "h3"]);
    hs[0].capacity = Some(3);
    hs[0].instances = 2; // room for one more
    hs[1].capacity = Some(10);
    hs[1].instances = 10; // full
    let d = place(&spec(4), &hs, &BTreeMap::new());
    assert_eq!(per_host(&d), [("h1".into(), 1), ("h3".into(), 3)]);
    // Everything full: why, per host, with the counts.
    hs[2].capacity = Some(1);
    let d = place(&spec(3), &hs, &BTreeMap::new());
    assert_eq!(d.placed.len(), 2);
    assert_eq!(d.unplaced.len(), 1);
    assert_eq!(
        d.unplaced[0].to_string(),
        "slot 2 has no host: h1 full (3 of 3 instances); h2 full (10 of 10 instances); \
         h3 full (1 of 1 instances)"
    );
    // Over capacity after the fact (another service grew): kept.
    let before = now(&d);
    hs[0].instances = 5;
    let again = place(&spec(2), &hs, &before);
    assert!(again.moves().next().is_none());
}

#[test]
fn max_per_host_caps_a_host_and_the_lowest_slots_keep() {
    let hs = hosts(&["h1", "h2"]);
    let capped = Spec {
        max_per_host: Some(2),
        ..spec(5)
    };
    let d = place(&capped, &hs, &BTreeMap::new());
    assert_eq!(per_host(&d), [("h1".into(), 2), ("h2".into(), 2)]);
    assert_eq!(d.unplaced.len(), 1);
    assert_eq!(d.unplaced[0].excluded[0].why, Why::MaxPerHost { max: 2 });
    // Three on h1 before the cap: the highest of them moves.
    let before: BTreeMap<u32, String> = (0..3).map(|s| (s, "h1".to_string())).collect();
    let d = place(
        &Spec {
            max_per_host: Some(2),
            ..spec(3)
        },
        &hs,
        &before,
    );
    assert_eq!(moved(&before, &d), [2]);
    assert_eq!(d.placed[2].reason, Reason::Constraint);
}

#[test]
fn the_same_input_in_any_host_order_places_the_same() {
    let hs = vec![
        host("a1", &[("zone", "a")]),
        host("a2", &[("zone", "a")]),
        host("b1", &[("zone", "b")]),
        host("c1", &[("zone", "c")]),
        host("c2", &[("zone", "c")]),
    ];
    let s = spread(7, "zone");
    let first = place(&s, &hs, &BTreeMap::new());
    let mut order = hs.clone();
    for i in 0..20 {
        order.rotate_left(1 + i % 3);
        if i % 2 == 0 {
            order.reverse();
        }
        assert_eq!(place(&s, &order, &BTreeMap::new()), first);
    }
    // Another service places differently (its own hash), still evenly.
    let other = Spec {
        service: "api".into(),
        ..s.clone()
    };
    let d = place(&other, &hs, &BTreeMap::new());
    assert_eq!(d.placed.len(), 7);
}

#[test]
fn every_small_fleet_keeps_the_invariants() {
    // Exhaustively: 1-4 hosts, each up, draining or down; 0-7 replicas;
    // spread by zone or not; from nothing, and from a placement on an
    // all-up fleet (then some hosts change state).
    let names = ["h1", "h2", "h3", "h4"];
    for n in 1..=names.len() {
        for states in 0..3usize.pow(n as u32) {
            let hs: Vec<Host> = (0..n)
                .map(|i| {
                    let zone = if i % 2 == 0 { "a" } else { "b" };
                    let mut h = host(names[i], &[("zone", zone)]);
                    h.state = match states / 3usize.pow(i as u32) % 3 {
                        0 => HostState::Up,
                        1 => HostState::Draining,
                        _ => HostState::Down,
                    };
                    h
                })
                .collect();
            let all_up: Vec<Host> = hs
                .iter()
                .map(|h| Host {
                    state: HostState::Up,
                    ..h.clone()
                })
                .collect();
            for replicas in 0..=7 {
                for s in [spec(replicas), spread(replicas, "zone")] {
                    let before = now(&place(&s, &all_up, &BTreeMap::new()));
                    for current in [BTreeMap::new(), before.clone()] {
                        let d = place(&s, &hs, &current);
                        check(&s, &hs, &current, &d);
                    }
                }
            }
        }
    }
}

/// What holds of every decision.
fn check(s: &Spec, hs: &[Host], current: &BTreeMap<u32, String>, d: &Decision) {
    let ctx = || format!("{s:?} on {hs:?} from {current:?}: {d:?}");
    // Every slot is answered once, in order.
    let mut slots: Vec<u32> = d.placed.iter().map(|p| p.slot).collect();
    slots.extend(d.unplaced.iter().map(|u| u.slot));
    slots.sort_unstable();
    assert_eq!(slots, (0..s.replicas).collect::<Vec<_>>(), "{}", ctx());
    // Placed on an eligible host, always.
    for p in &d.placed {
        let h = hs.iter().find(|h| h.name == p.host).expect("a listed host");
        assert!(
            rule_out(s, h).is_none(),
            "slot {} on {}: {}",
            p.slot,
            p.host,
            ctx()
        );
        if p.reason == Reason::Kept {
            assert_eq!(current.get(&p.slot), Some(&p.host), "{}", ctx());
            assert!(p.from.is_none());
        } else {
            assert_eq!(p.from.as_ref(), current.get(&p.slot), "{}", ctx());
        }
    }
    // Nothing moves that could stay: a slot on a host that is still
    // eligible keeps it (no max_per_host here).
    if s.max_per_host.is_none() {
        for p in &d.placed {
            if let Some(h) = current
                .get(&p.slot)
                .and_then(|n| hs.iter().find(|h| h.name == *n))
                && rule_out(s, h).is_none()
            {
                assert_eq!(p.reason, Reason::Kept, "{}", ctx());
            }
        }
    }
    // Unplaced only when no host has room, and then every host says why.
    for u in &d.unplaced {
        assert_eq!(u.excluded.len(), hs.len(), "{}", ctx());
    }
    if !d.unplaced.is_empty() {
        let mut tally = Tally::default();
        for p in &d.placed {
            tally.add(s, hs.iter().find(|h| h.name == p.host).unwrap());
        }
        assert!(
            hs.iter().all(|h| exclusion(s, h, &tally).is_some()),
            "a host had room: {}",
            ctx()
        );
    }
    // The same input in another order: the same decision.
    let mut rev = hs.to_vec();
    rev.reverse();
    assert_eq!(&place(s, &rev, current), d, "{}", ctx());
}

fn arb_host(i: usize) -> impl Strategy<Value = Host> {
    (
        0..4u8,
        prop::option::of(0..6u32),
        0..4u32,
        prop::bool::ANY,
        0..3u8,
    )
        .prop_map(move |(zone, capacity, instances, ssd, st)| {
            let mut labels = BTreeMap::new();
            if zone < 3 {
                labels.insert("zone".to_string(), format!("z{zone}"));
            }
            labels.insert(
                "disk".to_string(),
                if ssd { "ssd" } else { "hdd" }.to_string(),
            );
            Host {
                name: format!("h{i}"),
                labels,
                state: match st {
                    0 => HostState::Up,
                    1 => HostState::Draining,
                    _ => HostState::Down,
                },
                capacity,
                instances,
            }
        })
}

fn arb_hosts() -> impl Strategy<Value = Vec<Host>> {
    (0..7usize).prop_flat_map(|n| (0..n).map(arb_host).collect::<Vec<_>>())
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        0..12u32,
        prop::bool::ANY,
        prop::option::of(prop::collection::btree_set(
            prop::sample::select(vec!["z0", "z1", "z2"]),
            1..=2,
        )),
        prop::bool::ANY,
        prop::option::of(1..4u32),
    )
        .prop_map(|(replicas, by_zone, zones, ssd, max_per_host)| {
            let mut constraints = Constraints::new();
            if let Some(z) = zones {
                constraints.insert("zone".into(), z.iter().map(|v| v.to_string()).collect());
            }
            if ssd {
                constraints.insert("disk".into(), BTreeSet::from(["ssd".to_string()]));
            }
            Spec {
                service: "web".into(),
                replicas,
                constraints,
                spread_by: by_zone.then(|| "zone".to_string()),
                max_per_host,
            }
        })
}

proptest! {
    #[test]
    fn any_fleet_keeps_the_invariants(
        s in arb_spec(),
        hs in arb_hosts(),
        current in prop::collection::btree_map(0..12u32, 0..8usize, 0..12),
        seed in 0..1000usize,
    ) {
        // Current placements on hosts that exist, and some that do not (h7).
        let current: BTreeMap<u32, String> =
            current.into_iter().map(|(slot, i)| (slot, format!("h{i}"))).collect();
        let d = place(&s, &hs, &current);
        check(&s, &hs, &current, &d);
        // Any order of the hosts: the same decision.
        let mut shuffled = hs.clone();
        if !shuffled.is_empty() {
            let len = shuffled.len();
            shuffled.rotate_left(seed % len);
            shuffled.swap(0, seed % len);
        }
        prop_assert_eq!(place(&s, &shuffled, &current), d.clone());
        // Placed again from where it is, on the same fleet: nothing moves
        // (no max_per_host overflow can remain after one pass).
        let again = place(&s, &hs, &now(&d));
        prop_assert!(again.moves().next().is_none(), "{:?}", again);
    }

    #[test]
    fn unconstrained_spread_is_even(
        zones in prop::collection::vec(0..3u8, 1..8),
        replicas in 0..20u32,
        by_zone in prop::bool::ANY,
    ) {
        // Every host up, no constraints, no capacity: placed from nothing,
        // every slot is placed, spread domains differ by one at most, and so
        // do the hosts of a domain (of the fleet, without spread_by).
        let hs: Vec<Host> = zones
            .iter()
            .enumerate()
            .map(|(i, z)| host(&format!("h{i}"), &[("zone", &format!("z{z}"))]))
            .collect();
        let s = if by_zone { spread(replicas, "zone") } else { spec(replicas) };
        let d = place(&s, &hs, &BTreeMap::new());
        prop_assert!(d.unplaced.is_empty());
        prop_assert_eq!(d.placed.len() as u32, replicas);
        let on = d.per_host();
        let count = |h: &Host| on.get(h.name.as_str()).copied().unwrap_or(0);
        if by_zone {
            let mut domains: BTreeMap<&str, u32> = BTreeMap::new();
            for h in &hs {
                *domains.entry(h.labels["zone"].as_str()).or_default() += count(h);
            }
            let (lo, hi) = (domains.values().min().unwrap(), domains.values().max().unwrap());
            prop_assert!(hi - lo <= 1, "zones {:?}", domains);
        }
        let mut groups: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for h in &hs {
            let key = if by_zone { h.labels["zone"].as_str() } else { "" };
            groups.entry(key).or_default().push(count(h));
        }
        for (g, counts) in groups {
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "hosts of {:?}: {:?}", g, counts);
        }
    }
}

#[test]
fn one_host_says_placement_waits_for_hosts_in_one_line() {
    assert_eq!(one_host_note(&Constraints::new(), None), None);
    let s = constrained(1, "zone", &["a"]);
    assert_eq!(
        one_host_note(&s.constraints, Some("zone")).unwrap(),
        "constraints (zone) and spread_by (zone) apply when hosts join a fleet \
         (`drover serve --join`); this store has none, so every replica runs on this host"
    );
    assert!(
        one_host_note(&Constraints::new(), Some("rack"))
            .unwrap()
            .starts_with("spread_by (rack) apply")
    );
}

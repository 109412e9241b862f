//! The rollout planner: a pure function from what runs now to the next step
//! towards what should run. The executor calls it again after every step,
//! with fresh observations, so a step that failed, a process that died or an
//! `apply` killed halfway is simply seen on the next call (level-triggered:
//! no plan is ever stored).
//!
//! Instances of the desired release are "new", all others "old". An old
//! instance counts as serving while it is ready; a new one once it has
//! passed its health check.
//!
//! Each instance of a service holds a replica slot (0, 1, …; like a
//! StatefulSet's ordinals): a new one takes the lowest slot no live
//! instance holds ([`free_slots`]), and extras are stopped highest slot
//! first. A service whose volumes have one writer rolls "stop before
//! start" ([`for_volumes`]), so an old instance and its replacement never
//! mount a volume together, and a replacement takes its predecessor's slot
//! and so its per-replica volume.

use serde::{Deserialize, Serialize};

/// How a service moves from one release to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Strategy {
    /// Stop every old instance, then start the new ones.
    Recreate,
    /// Replace a few at a time: at most `max_surge` instances above the
    /// replica count, at most `max_unavailable` below it.
    Rolling {
        max_surge: u32,
        max_unavailable: u32,
    },
    /// Start a full set of new instances; once all are healthy, stop every
    /// old one at once.
    BlueGreen,
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Recreate => "recreate",
            Strategy::Rolling { .. } => "rolling",
            Strategy::BlueGreen => "blue-green",
        }
    }
}

/// What the planner knows of one live instance of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub release: i64,
    /// Serving: passed its health check (new), or still up (old).
    pub ready: bool,
    /// Its replica slot (none for instances from before slots).
    pub slot: Option<u32>,
}

/// The strategy a service really rolls with. With `single_writer` (the
/// desired release, or one being replaced, mounts a read-write volume that
/// is not shared, per-replica volumes included) no two instances may hold
/// it at once, so a new instance starts only after an old one stopped:
/// rolling becomes `max_surge = 0` (and `max_unavailable` at least 1),
/// blue-green becomes recreate; recreate already is. The one place that
/// says so: the executor and `drover plan` both ask it.
pub fn for_volumes(strategy: Strategy, single_writer: bool) -> Strategy {
    if !single_writer {
        return strategy;
    }
    match strategy {
        Strategy::Rolling {
            max_unavailable, ..
        } => Strategy::Rolling {
            max_surge: 0,
            max_unavailable: max_unavailable.max(1),
        },
        Strategy::BlueGreen | Strategy::Recreate => Strategy::Recreate,
    }
}

/// What `drover plan` says about [`for_volumes`]'s change, if it changed
/// anything; `held` says why, a clause each ("volume data is single-writer").
pub fn single_writer_note(strategy: Strategy, held: &[String]) -> Option<String> {
    let why = held.join("; ");
    match (strategy, for_volumes(strategy, !held.is_empty())) {
        (a, b) if a == b => None,
        (
            _,
            Strategy::Rolling {
                max_unavailable, ..
            },
        ) => Some(format!(
            "rolling {}, each old instance stopped before its replacement starts: {why}",
            if max_unavailable == 1 {
                "one at a time".to_string()
            } else {
                format!("{max_unavailable} at a time")
            }
        )),
        (_, _) => Some(format!(
            "recreate instead of blue-green, every old instance stopped before a new one starts: \
             {why}"
        )),
    }
}

/// The `count` lowest slots that none of `held` (the slots of the
/// service's live instances) is.
pub fn free_slots(held: impl IntoIterator<Item = Option<u32>>, count: u32) -> Vec<u32> {
    let held: std::collections::BTreeSet<u32> = held.into_iter().flatten().collect();
    (0..)
        .filter(|s| !held.contains(s))
        .take(count as usize)
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "step")]
pub enum Step {
    /// Start this many instances of the desired release.
    Start { count: u32 },
    /// Stop and remove these instances.
    Stop { ids: Vec<String> },
    /// Nothing can move until a new instance becomes healthy.
    Wait,
    /// The desired release runs with the desired replicas, all healthy.
    Done,
}

/// The next step for a service that should run `replicas` instances of
/// release `desired`, given the live instances `seen`.
pub fn next_step(desired: i64, replicas: u32, strategy: Strategy, seen: &[Seen]) -> Step {
    let replicas = replicas as usize;
    let (new, old): (Vec<&Seen>, Vec<&Seen>) = seen.iter().partition(|s| s.release == desired);
    let new_ready = new.iter().filter(|s| s.ready).count();

    // Too many of the desired release (a crashed apply, a scale-down):
    // drop the extras, unready ones first.
    if new.len() > replicas {
        return Step::Stop {
            ids: by_readiness(&new)
                .into_iter()
                .take(new.len() - replicas)
                .collect(),
        };
    }
    // Old instances that are not serving cost nothing to remove.
    let dead_weight: Vec<String> = old
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.id.clone())
        .collect();
    if !dead_weight.is_empty() {
        return Step::Stop { ids: dead_weight };
    }

    match strategy {
        Strategy::Recreate => {
            if !old.is_empty() {
                Step::Stop { ids: ids(&old) }
            } else if new.len() < replicas {
                Step::Start {
                    count: (replicas - new.len()) as u32,
                }
            } else if new_ready < replicas {
                Step::Wait
            } else {
                Step::Done
            }
        }
        Strategy::BlueGreen => {
            if new.len() < replicas {
                Step::Start {
                    count: (replicas - new.len()) as u32,
                }
            } else if new_ready < replicas {
                Step::Wait
            } else if !old.is_empty() {
                Step::Stop { ids: ids(&old) }
            } else {
                Step::Done
            }
        }
        Strategy::Rolling {
            max_surge,
            max_unavailable,
        } => {
            let (surge, unavailable) = (max_surge as usize, max_unavailable as usize);
            // Serving now: ready new ones and every old one (all ready here).
            let serving = new_ready + old.len();
            let floor = replicas.saturating_sub(unavailable);
            let stoppable = serving.saturating_sub(floor).min(old.len());
            if stoppable > 0 {
                return Step::Stop {
                    ids: by_slot(&old).into_iter().take(stoppable).collect(),
                };
            }
            let room = (replicas + surge).saturating_sub(new.len() + old.len());
            let wanted = replicas - new.len();
            if wanted > 0 && room > 0 {
                return Step::Start {
                    count: wanted.min(room) as u32,
                };
            }
            if new_ready < new.len() {
                Step::Wait
            } else if old.is_empty() && new.len() == replicas {
                Step::Done
            } else {
                // Only reachable with max_surge = max_unavailable = 0, which
                // the fleet file refuses; waiting would hang, so say so.
                Step::Wait
            }
        }
    }
}

fn ids(list: &[&Seen]) -> Vec<String> {
    list.iter().map(|s| s.id.clone()).collect()
}

/// Highest slot first (one without a slot before any with one), then in
/// the order given (oldest first): a StatefulSet's order.
fn by_slot(list: &[&Seen]) -> Vec<String> {
    let mut v: Vec<&&Seen> = list.iter().collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.slot.map_or(u64::MAX, u64::from)));
    v.into_iter().map(|s| s.id.clone()).collect()
}

/// Unready first, then the highest slot first (one without a slot before
/// any with one), then in the order given (oldest first).
fn by_readiness(list: &[&Seen]) -> Vec<String> {
    let mut v: Vec<&&Seen> = list.iter().collect();
    v.sort_by_key(|s| {
        (
            s.ready,
            std::cmp::Reverse(s.slot.map_or(u64::MAX, u64::from)),
        )
    });
    v.into_iter().map(|s| s.id.clone()).collect()
}

/// The steps a rollout will take if every new instance becomes healthy and
/// nothing else changes: what `drover plan` shows. New instances get ids
/// `new-1`, `new-2`, … .
pub fn simulate(desired: i64, replicas: u32, strategy: Strategy, seen: &[Seen]) -> Vec<Step> {
    let mut world: Vec<Seen> = seen.to_vec();
    let mut steps = Vec::new();
    let mut started = 0;
    // Every step makes progress, so this bound is generous.
    for _ in 0..(4 * (replicas as usize + seen.len()) + 8) {
        let step = next_step(desired, replicas, strategy, &world);
        match &step {
            Step::Done => break,
            Step::Start { count } => {
                for slot in free_slots(world.iter().map(|s| s.slot), *count) {
                    started += 1;
                    world.push(Seen {
                        id: format!("new-{started}"),
                        release: desired,
                        ready: false,
                        slot: Some(slot),
                    });
                }
            }
            Step::Stop { ids } => world.retain(|s| !ids.contains(&s.id)),
            Step::Wait => {
                for s in world.iter_mut().filter(|s| s.release == desired) {
                    s.ready = true;
                }
            }
        }
        steps.push(step);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old(n: usize) -> Vec<Seen> {
        (0..n)
            .map(|i| Seen {
                id: format!("old-{i}"),
                release: 1,
                ready: true,
                slot: None,
            })
            .collect()
    }

    /// Run the planner against a simulated world where new instances become
    /// healthy on the next Wait, checking the strategy's promises at every
    /// step.
    fn roll(replicas: u32, strategy: Strategy, start: Vec<Seen>) -> Vec<Step> {
        let steps = simulate(2, replicas, strategy, &start);
        let initially = start.iter().filter(|s| s.ready).count() as u32;
        let mut world = start;
        let mut n = 0;
        for step in &steps {
            match step {
                Step::Start { count } => {
                    for _ in 0..*count {
                        n += 1;
                        world.push(Seen {
                            id: format!("new-{n}"),
                            release: 2,
                            ready: false,
                            slot: None,
                        });
                    }
                }
                Step::Stop { ids } => world.retain(|s| !ids.contains(&s.id)),
                Step::Wait => world.iter_mut().for_each(|s| s.ready = true),
                Step::Done => {}
            }
            let serving = world.iter().filter(|s| s.ready).count() as u32;
            if let Strategy::Rolling {
                max_surge,
                max_unavailable,
            } = strategy
            {
                let most = (replicas + max_surge).max(initially);
                assert!(world.len() as u32 <= most, "surge: {steps:?}");
                let least = initially.min(replicas.saturating_sub(max_unavailable));
                assert!(serving >= least, "unavailable: {steps:?}");
            }
            if strategy == Strategy::BlueGreen {
                let least = initially.min(replicas);
                assert!(serving >= least, "blue-green went below: {steps:?}");
            }
        }
        assert!(world.iter().all(|s| s.release == 2 && s.ready), "{steps:?}");
        assert_eq!(world.len() as u32, replicas, "{steps:?}");
        steps
    }

    #[test]
    fn every_strategy_converges_within_its_bounds() {
        for replicas in 0..=6 {
            for have in 0..=6 {
                roll(replicas, Strategy::Recreate, old(have));
                roll(
                    replicas,
                    Strategy::BlueGreen,
                    old(have.min(replicas as usize)),
                );
                for surge in 0..=3 {
                    for unavailable in 0..=3 {
                        if surge == 0 && unavailable == 0 {
                            continue;
                        }
                        let s = Strategy::Rolling {
                            max_surge: surge,
                            max_unavailable: unavailable,
                        };
                        roll(replicas, s, old(have.min(replicas as usize)));
                    }
                }
            }
        }
    }

    #[test]
    fn rolling_one_at_a_time_alternates_start_wait_stop() {
        let s = Strategy::Rolling {
            max_surge: 1,
            max_unavailable: 0,
        };
        let steps = roll(2, s, old(2));
        assert_eq!(
            steps,
            [
                Step::Start { count: 1 },
                Step::Wait,
                Step::Stop {
                    ids: vec!["old-0".into()]
                },
                Step::Start { count: 1 },
                Step::Wait,
                Step::Stop {
                    ids: vec!["old-1".into()]
                },
            ]
        );
    }

    #[test]
    fn recreate_stops_everything_first_and_blue_green_last() {
        let steps = roll(2, Strategy::Recreate, old(2));
        assert_eq!(
            steps[0],
            Step::Stop {
                ids: vec!["old-0".into(), "old-1".into()]
            }
        );
        let steps = roll(2, Strategy::BlueGreen, old(2));
        assert_eq!(steps[0], Step::Start { count: 2 });
        assert_eq!(
            steps.last().unwrap(),
            &Step::Stop {
                ids: vec!["old-0".into(), "old-1".into()]
            }
        );
    }

    #[test]
    fn leftovers_of_a_killed_apply_are_cleaned_up() {
        // Three of the new release where two are wanted (one unready), and
        // an old one that stopped serving.
        let seen = vec![
            Seen {
                id: "a".into(),
                release: 2,
                ready: true,
                slot: None,
            },
            Seen {
                id: "b".into(),
                release: 2,
                ready: false,
                slot: None,
            },
            Seen {
                id: "c".into(),
                release: 2,
                ready: true,
                slot: None,
            },
            Seen {
                id: "d".into(),
                release: 1,
                ready: false,
                slot: None,
            },
        ];
        let s = Strategy::Rolling {
            max_surge: 1,
            max_unavailable: 0,
        };
        assert_eq!(
            next_step(2, 2, s, &seen),
            Step::Stop {
                ids: vec!["b".into()]
            }
        );
        let seen: Vec<Seen> = seen.into_iter().filter(|s| s.id != "b").collect();
        assert_eq!(
            next_step(2, 2, s, &seen),
            Step::Stop {
                ids: vec!["d".into()]
            }
        );
        let seen: Vec<Seen> = seen.into_iter().filter(|s| s.id != "d").collect();
        assert_eq!(next_step(2, 2, s, &seen), Step::Done);
    }

    fn slotted(n: u32, release: i64) -> Vec<Seen> {
        (0..n)
            .map(|i| Seen {
                id: format!("r{release}-{i}"),
                release,
                ready: true,
                slot: Some(i),
            })
            .collect()
    }

    #[test]
    fn new_instances_take_the_lowest_free_slots() {
        assert_eq!(free_slots([], 2), [0, 1]);
        assert_eq!(free_slots([Some(0), Some(2), None], 3), [1, 3, 4]);
        assert!(free_slots([Some(0)], 0).is_empty());
    }

    #[test]
    fn a_scale_down_stops_the_highest_slots_first() {
        let mut seen = slotted(3, 2);
        seen.rotate_left(1); // the order seen is not the slot order
        let s = Strategy::Rolling {
            max_surge: 1,
            max_unavailable: 0,
        };
        assert_eq!(
            next_step(2, 1, s, &seen),
            Step::Stop {
                ids: vec!["r2-2".into(), "r2-1".into()]
            }
        );
    }

    #[test]
    fn a_single_writer_volume_makes_every_strategy_stop_before_start() {
        let rolling = |max_surge, max_unavailable| Strategy::Rolling {
            max_surge,
            max_unavailable,
        };
        assert_eq!(for_volumes(rolling(1, 0), true), rolling(0, 1));
        assert_eq!(for_volumes(rolling(3, 2), true), rolling(0, 2));
        assert_eq!(for_volumes(Strategy::BlueGreen, true), Strategy::Recreate);
        assert_eq!(for_volumes(Strategy::Recreate, true), Strategy::Recreate);
        for s in [rolling(1, 0), Strategy::BlueGreen, Strategy::Recreate] {
            assert_eq!(for_volumes(s, false), s);
        }
        let note =
            single_writer_note(rolling(1, 0), &["volume data is single-writer".into()]).unwrap();
        assert_eq!(
            note,
            "rolling one at a time, each old instance stopped before its replacement starts: \
             volume data is single-writer"
        );
        assert!(single_writer_note(rolling(1, 0), &[]).is_none());
        assert!(single_writer_note(Strategy::Recreate, &["data".into()]).is_none());
        let note = single_writer_note(Strategy::BlueGreen, &["a".into(), "b".into()]).unwrap();
        assert!(note.starts_with("recreate instead of blue-green"), "{note}");

        // Under the adapted strategy, from any start: never more instances
        // than replicas (or than there were), and every replacement takes
        // a slot below the replica count, so per-replica volume k is only
        // ever mounted by the instance in slot k, one at a time.
        let strategies = [
            rolling(1, 0),
            rolling(0, 1),
            rolling(2, 3),
            Strategy::Recreate,
            Strategy::BlueGreen,
        ];
        for replicas in 0..=5u32 {
            for have in 0..=5u32 {
                for s in strategies {
                    let s = for_volumes(s, true);
                    let mut world = slotted(have, 1);
                    let steps = simulate(2, replicas, s, &world);
                    let mut n = 0;
                    for step in &steps {
                        match step {
                            Step::Start { count } => {
                                for slot in free_slots(world.iter().map(|w| w.slot), *count) {
                                    n += 1;
                                    assert!(slot < replicas, "{s:?} {steps:?}");
                                    world.push(Seen {
                                        id: format!("new-{n}"),
                                        release: 2,
                                        ready: false,
                                        slot: Some(slot),
                                    });
                                }
                            }
                            Step::Stop { ids } => world.retain(|w| !ids.contains(&w.id)),
                            Step::Wait => world.iter_mut().for_each(|w| w.ready = true),
                            Step::Done => {}
                        }
                        assert!(
                            world.len() as u32 <= replicas.max(have),
                            "{s:?} from {have} to {replicas}: {steps:?}"
                        );
                        let mut slots: Vec<u32> = world.iter().filter_map(|w| w.slot).collect();
                        slots.sort_unstable();
                        slots.dedup();
                        assert_eq!(slots.len(), world.len(), "a slot held twice: {steps:?}");
                    }
                    assert!(world.iter().all(|w| w.release == 2 && w.ready));
                    let mut slots: Vec<u32> = world.iter().filter_map(|w| w.slot).collect();
                    slots.sort_unstable();
                    assert_eq!(slots, (0..replicas).collect::<Vec<_>>(), "{steps:?}");
                }
            }
        }
    }

    #[test]
    fn an_unchanged_service_needs_nothing() {
        let seen = vec![Seen {
            id: "a".into(),
            release: 2,
            ready: true,
            slot: None,
        }];
        for s in [Strategy::Recreate, Strategy::BlueGreen] {
            assert_eq!(next_step(2, 1, s, &seen), Step::Done);
            assert!(simulate(2, 1, s, &seen).is_empty());
        }
    }
}

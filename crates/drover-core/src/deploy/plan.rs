//! The rollout planner: a pure function from what runs now to the next step
//! towards what should run. The executor calls it again after every step,
//! with fresh observations, so a step that failed, a process that died or an
//! `apply` killed halfway is simply seen on the next call (level-triggered:
//! no plan is ever stored).
//!
//! Instances of the desired release are "new", all others "old". An old
//! instance counts as serving while it is ready; a new one once it has
//! passed its health check.

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
                    ids: ids(&old).into_iter().take(stoppable).collect(),
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

/// Unready first, then in the order given (oldest first).
fn by_readiness(list: &[&Seen]) -> Vec<String> {
    let mut v: Vec<&&Seen> = list.iter().collect();
    v.sort_by_key(|s| s.ready);
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
                for _ in 0..*count {
                    started += 1;
                    world.push(Seen {
                        id: format!("new-{started}"),
                        release: desired,
                        ready: false,
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
            },
            Seen {
                id: "b".into(),
                release: 2,
                ready: false,
            },
            Seen {
                id: "c".into(),
                release: 2,
                ready: true,
            },
            Seen {
                id: "d".into(),
                release: 1,
                ready: false,
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

    #[test]
    fn an_unchanged_service_needs_nothing() {
        let seen = vec![Seen {
            id: "a".into(),
            release: 2,
            ready: true,
        }];
        for s in [Strategy::Recreate, Strategy::BlueGreen] {
            assert_eq!(next_step(2, 1, s, &seen), Step::Done);
            assert!(simulate(2, 1, s, &seen).is_empty());
        }
    }
}

//! Placement: which host runs each replica slot of a service. A pure
//! function, like the rollout planner ([`super::plan`]): the caller reads
//! the hosts and the current placements, asks [`place`], and records what
//! it returns. Nothing here does I/O, reads a clock or keeps state.
//!
//! The rules, in order:
//!
//! 1. **Keep.** A slot keeps its host while that host is up (not draining,
//!    not down) and still eligible: the service's `constraints` hold on its
//!    labels, it has the `spread_by` label, and keeping it does not put more
//!    of the service there than `max_per_host` (the lowest slots keep).
//!    Nothing moves that need not: a move is a new instance. So adding a
//!    host moves nothing (no rebalancing, as Nomad's and Kubernetes'
//!    schedulers do not); new and replaced slots go to the emptiest domain,
//!    so the spread evens out as slots come and go.
//! 2. **Choose.** Every other slot (new, or its host went down, drains or
//!    no longer qualifies) goes, lowest slot first, to an eligible up host
//!    with room, minimising in order: the service's replicas in the host's
//!    `spread_by` domain (hosts with the same value of that label), its
//!    replicas on the host, and a rendezvous hash of (service, slot, host).
//!    The hash makes the choice independent of the order hosts are listed
//!    in, and gives each slot its own order of hosts, so the slots of a
//!    failed host fan out over the others instead of piling onto one.
//! 3. **Say why not.** A slot no host can take is left unplaced, with every
//!    host and what excluded it (down, draining, which constraint, no
//!    spread label, full): an [`Unplaced`] the caller shows, not a panic.
//!
//! A host's capacity limits new placements only: a kept slot is never moved
//! to make room.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::digest::Digest;
use crate::error::Error;

/// A service's `constraints`: each host label it names, and the values a
/// host may have for it (`zone = "a"` is `{zone: {a}}`, `zone = ["a", "b"]`
/// is `{zone: {a, b}}`). A host qualifies when every named label has one of
/// its values.
pub type Constraints = BTreeMap<String, BTreeSet<String>>;

/// What [`place`] is asked to place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    pub service: String,
    /// Slots `0..replicas` are placed; placements of higher slots (a scale
    /// down) are dropped.
    pub replicas: u32,
    pub constraints: Constraints,
    /// Spread the replicas over the values of this host label; a host
    /// without it is not eligible.
    pub spread_by: Option<String>,
    /// At most this many of the service's replicas on one host.
    pub max_per_host: Option<u32>,
}

/// A host's state, as far as placement cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Takes new placements and keeps its own.
    Up,
    /// Its placements move off (maintenance: `drover drain`).
    Draining,
    /// Its instances are lost: its placements are replaced elsewhere.
    Down,
}

impl HostState {
    /// A host's state as recorded: `up`; `draining` and `drained` (its
    /// placements move off); `down` and `left` (they are replaced).
    pub fn parse(s: &str) -> Option<HostState> {
        match s {
            "up" => Some(HostState::Up),
            "draining" | "drained" => Some(HostState::Draining),
            "down" | "left" => Some(HostState::Down),
            _ => None,
        }
    }
}

/// One host, as placement sees it. Names are unique (a fleet's hosts are
/// keyed by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: HostState,
    /// The most instances (of every service) it runs; `None`: no limit.
    pub capacity: Option<u32>,
    /// The instances it runs of *other* services (this service's are
    /// counted from the placements).
    pub instances: u32,
}

/// Why a slot is where [`place`] puts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// It stays on its host.
    #[serde(rename = "kept")]
    Kept,
    /// A new slot (or one never placed), placed by the spread rule.
    #[serde(rename = "spread")]
    Spread,
    /// Its host is down (or no longer in the fleet): replaced elsewhere.
    #[serde(rename = "replace:host-down")]
    HostDown,
    /// Its host drains: moved off.
    #[serde(rename = "drain")]
    Drain,
    /// Its host no longer qualifies (constraints, spread label,
    /// max_per_host): moved.
    #[serde(rename = "constraint")]
    Constraint,
}

impl Reason {
    /// As recorded in a placement's `reason`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Kept => "kept",
            Reason::Spread => "spread",
            Reason::HostDown => "replace:host-down",
            Reason::Drain => "drain",
            Reason::Constraint => "constraint",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one slot should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub slot: u32,
    pub host: String,
    pub reason: Reason,
    /// The host it moves from, when it moves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// A slot no host can take, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unplaced {
    pub slot: u32,
    /// Why it needed a host (never [`Reason::Kept`]).
    pub reason: Reason,
    /// The host it had, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Every host, by name, and what excluded it.
    pub excluded: Vec<Exclusion>,
}

/// One host a slot could not go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exclusion {
    pub host: String,
    pub why: Why,
}

/// What `drover plan` says of a service's `constraints` and `spread_by` on
/// a store that is not part of a fleet: they are recorded, and take effect
/// when hosts join. `None` when it has neither.
pub fn one_host_note(constraints: &Constraints, spread_by: Option<&str>) -> Option<String> {
    let mut what = Vec::new();
    if !constraints.is_empty() {
        let labels: Vec<&str> = constraints.keys().map(String::as_str).collect();
        what.push(format!("constraints ({})", labels.join(", ")));
    }
    if let Some(label) = spread_by {
        what.push(format!("spread_by ({label})"));
    }
    if what.is_empty() {
        return None;
    }
    Some(format!(
        "{} apply when hosts join a fleet (`drover serve --join`); this store has none, \
         so every replica runs on this host",
        what.join(" and ")
    ))
}

/// What excludes a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Why {
    Down,
    Draining,
    /// A constraint's label is missing (`has: None`) or has another value.
    Constraint {
        label: String,
        allowed: BTreeSet<String>,
        has: Option<String>,
    },
    /// It lacks the `spread_by` label.
    NoSpreadLabel {
        label: String,
    },
    /// It runs `max` of the service already.
    MaxPerHost {
        max: u32,
    },
    /// It runs `instances` of its `capacity`.
    Full {
        capacity: u32,
        instances: u32,
    },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Down => f.write_str("down"),
            Why::Draining => f.write_str("draining"),
            Why::Constraint {
                label,
                allowed,
                has,
            } => {
                let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
                let allowed = match allowed[..] {
                    [one] => one.to_string(),
                    _ => format!("one of {}", allowed.join(", ")),
                };
                match has {
                    Some(v) => write!(f, "{label}={v}, the service wants {label}={allowed}"),
                    None => write!(f, "no label {label}, the service wants {label}={allowed}"),
                }
            }
            Why::NoSpreadLabel { label } => write!(f, "no label {label} (the service's spread_by)"),
            Why::MaxPerHost { max } => write!(f, "runs {max} of the service (max_per_host {max})"),
            Why::Full {
                capacity,
                instances,
            } => write!(f, "full ({instances} of {capacity} instances)"),
        }
    }
}

impl fmt::Display for Unplaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {} has no host", self.slot)?;
        if let Some(from) = &self.from {
            write!(f, " (it leaves {from}: {})", self.reason)?;
        }
        if self.excluded.is_empty() {
            return f.write_str(": no host has joined the fleet");
        }
        f.write_str(": ")?;
        let each: Vec<String> = self
            .excluded
            .iter()
            .map(|e| format!("{} {}", e.host, e.why))
            .collect();
        f.write_str(&each.join("; "))
    }
}

/// What [`place`] decided: every slot `0..replicas`, placed or not, by
/// slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub placed: Vec<Placement>,
    pub unplaced: Vec<Unplaced>,
}

impl Decision {
    /// The placements that are not where they were.
    pub fn moves(&self) -> impl Iterator<Item = &Placement> {
        self.placed.iter().filter(|p| p.reason != Reason::Kept)
    }

    /// Replicas of the service per host, for the placed slots.
    pub fn per_host(&self) -> BTreeMap<&str, u32> {
        let mut out = BTreeMap::new();
        for p in &self.placed {
            *out.entry(p.host.as_str()).or_default() += 1;
        }
        out
    }

    /// Every slot placed: the placements; else an error naming each slot
    /// that has no host and why (the service's, or the fleet's, to fix).
    pub fn into_result(self, service: &str) -> Result<Vec<Placement>, Error> {
        if self.unplaced.is_empty() {
            return Ok(self.placed);
        }
        let each: Vec<String> = self.unplaced.iter().map(ToString::to_string).collect();
        Err(Error::Failed(format!(
            "service {service}: {} of its slots cannot be placed: {}",
            self.unplaced.len(),
            each.join(". ")
        )))
    }
}

/// Place every slot `0..spec.replicas` of a service on `hosts`, given where
/// its slots are now (`current`, slot → host name). Deterministic: the same
/// spec, hosts (in any order) and current placements give the same
/// decision. See the module's rules.
pub fn place(spec: &Spec, hosts: &[Host], current: &BTreeMap<u32, String>) -> Decision {
    let mut sorted: Vec<&Host> = hosts.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut tally = Tally::default();
    let mut placed = Vec::new();
    let mut todo = Vec::new();
    for slot in 0..spec.replicas {
        let Some(name) = current.get(&slot) else {
            todo.push((slot, Reason::Spread, None));
            continue;
        };
        let Some(host) = sorted.iter().find(|h| h.name == *name) else {
            todo.push((slot, Reason::HostDown, Some(name.clone())));
            continue;
        };
        let why = match host.state {
            HostState::Down => Some(Reason::HostDown),
            HostState::Draining => Some(Reason::Drain),
            HostState::Up => (rule_out(spec, host).is_some()
                || spec
                    .max_per_host
                    .is_some_and(|max| tally.on_host(host) >= max))
            .then_some(Reason::Constraint),
        };
        match why {
            Some(reason) => todo.push((slot, reason, Some(name.clone()))),
            None => {
                tally.add(spec, host);
                placed.push(Placement {
                    slot,
                    host: host.name.clone(),
                    reason: Reason::Kept,
                    from: None,
                });
            }
        }
    }
    let mut unplaced = Vec::new();
    for (slot, reason, from) in todo {
        let best = sorted
            .iter()
            .filter(|h| exclusion(spec, h, &tally).is_none())
            .min_by_key(|h| {
                (
                    tally.in_domain(spec, h),
                    tally.on_host(h),
                    rendezvous(&spec.service, slot, &h.name),
                    h.name.as_str(),
                )
            });
        match best {
            Some(host) => {
                tally.add(spec, host);
                placed.push(Placement {
                    slot,
                    host: host.name.clone(),
                    reason,
                    from,
                });
            }
            None => unplaced.push(Unplaced {
                slot,
                reason,
                from,
                excluded: sorted
                    .iter()
                    .filter_map(|h| {
                        exclusion(spec, h, &tally).map(|why| Exclusion {
                            host: h.name.clone(),
                            why,
                        })
                    })
                    .collect(),
            }),
        }
    }
    placed.sort_by_key(|p| p.slot);
    Decision { placed, unplaced }
}

/// What rules `host` out for the service whatever else runs: its state, a
/// constraint, a missing spread label.
fn rule_out(spec: &Spec, host: &Host) -> Option<Why> {
    match host.state {
        HostState::Down => return Some(Why::Down),
        HostState::Draining => return Some(Why::Draining),
        HostState::Up => {}
    }
    for (label, allowed) in &spec.constraints {
        let has = host.labels.get(label);
        if !has.is_some_and(|v| allowed.contains(v)) {
            return Some(Why::Constraint {
                label: label.clone(),
                allowed: allowed.clone(),
                has: has.cloned(),
            });
        }
    }
    if let Some(label) = &spec.spread_by
        && !host.labels.contains_key(label)
    {
        return Some(Why::NoSpreadLabel {
            label: label.clone(),
        });
    }
    None
}

/// What keeps one more slot of the service off `host`, given what is
/// placed so far.
fn exclusion(spec: &Spec, host: &Host, tally: &Tally) -> Option<Why> {
    if let Some(why) = rule_out(spec, host) {
        return Some(why);
    }
    let mine = tally.on_host(host);
    if let Some(max) = spec.max_per_host
        && mine >= max
    {
        return Some(Why::MaxPerHost { max });
    }
    let instances = host.instances.saturating_add(mine);
    match host.capacity {
        Some(capacity) if instances >= capacity => Some(Why::Full {
            capacity,
            instances,
        }),
        _ => None,
    }
}

/// The service's replicas placed so far, per host and per spread domain.
#[derive(Default)]
struct Tally {
    hosts: BTreeMap<String, u32>,
    domains: BTreeMap<String, u32>,
}

impl Tally {
    fn add(&mut self, spec: &Spec, host: &Host) {
        *self.hosts.entry(host.name.clone()).or_default() += 1;
        if let Some(d) = domain(spec, host) {
            *self.domains.entry(d.to_string()).or_default() += 1;
        }
    }

    fn on_host(&self, host: &Host) -> u32 {
        self.hosts.get(&host.name).copied().unwrap_or(0)
    }

    fn in_domain(&self, spec: &Spec, host: &Host) -> u32 {
        domain(spec, host).map_or(0, |d| self.domains.get(d).copied().unwrap_or(0))
    }
}

/// The host's value of the service's `spread_by` label.
fn domain<'h>(spec: &Spec, host: &'h Host) -> Option<&'h str> {
    spec.spread_by
        .as_ref()
        .and_then(|l| host.labels.get(l))
        .map(String::as_str)
}

/// The rendezvous (highest random weight) score of `host` for a slot:
/// the first 8 bytes of sha256("service\0slot\0host"); the lowest wins.
fn rendezvous(service: &str, slot: u32, host: &str) -> u64 {
    let d = Digest::of(format!("{service}\0{slot}\0{host}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_bytes()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests;

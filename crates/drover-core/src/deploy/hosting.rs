//! Where a service's instances run on a fleet (stores joined with
//! `drover serve --join`, sharing one database).
//!
//! The holder of a service's lease is its only scheduler, and it acts on
//! its own host only: it never starts, probes or stops another host's
//! processes. A pass counts the whole fleet's instances (rows: state,
//! `ready_at`, `lost`) for the service's surge and availability bounds, so
//! they hold fleet-wide. When the next step is a start, each new slot is
//! placed with [`placement::place`] and recorded as a desired placement
//! (`placements` table); the pass starts the ones placed on its own host
//! and leaves the rest to their hosts: it ends ([`Hosting`] says on whom it
//! waits), the lease is free, and each host's serve — whose reconciler of
//! the service takes the lease next — computes the same step and realizes
//! what is placed on it (start, health gate, ready), or stops its own
//! instances the rollout no longer wants (drained first). The lease makes
//! these steps one at a time across the fleet, exactly as on one host.
//!
//! An instance counted lost (its host was marked down) is gone: its slot is
//! placed again elsewhere (`replace:host-down`). One on a draining host is
//! in the way, like a condemned one: it is replaced on another host first,
//! then its own host drains and stops it (`drover drain`).
//!
//! Fencing: before a pass creates an instance on its host, the host's row
//! must still be at this store's epoch and `up` or `draining`
//! ([`check_host`]); a fenced host starts nothing.

use std::collections::BTreeMap;

use super::placement::{self, Host, HostState, Placement, Reason, Spec};
use super::spec::Rollout;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::state::Tx;
use crate::store::Store;

/// What placement reads of a service's rollout settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placing {
    pub constraints: placement::Constraints,
    pub spread_by: Option<String>,
}

impl From<&Rollout> for Placing {
    fn from(r: &Rollout) -> Self {
        Placing {
            constraints: r.constraints.clone(),
            spread_by: r.spread_by.clone(),
        }
    }
}

/// A fleet service's pass: who this host is, and the fleet's hosts.
#[derive(Debug, Clone)]
pub struct Hosting {
    /// This store's host and the epoch it joined at.
    pub me: String,
    pub epoch: i64,
    pub hosts: Vec<Host>,
    /// The wanted placements of the target release, slot → host.
    pub placed: BTreeMap<u32, String>,
}

impl Hosting {
    /// The fleet as `service` sees it, or `None` when this store never
    /// joined one (then everything is local, as before fleets).
    pub fn load(store: &Store, service: &str, target: Option<i64>) -> Result<Option<Hosting>> {
        let Some((me, epoch)) = crate::state::hosts::local_host(store.root()) else {
            return Ok(None);
        };
        let r = store.db().read();
        let per_host: BTreeMap<String, i64> = r.instances_per_host()?.into_iter().collect();
        let hosts = r
            .hosts()?
            .into_iter()
            .map(|h| Host {
                labels: serde_json::from_str(&h.labels).unwrap_or_default(),
                state: HostState::parse(&h.state).unwrap_or(HostState::Down),
                capacity: None,
                instances: per_host.get(&h.name).copied().unwrap_or(0) as u32,
                name: h.name,
            })
            .collect();
        let placed = r
            .placements(service)?
            .into_iter()
            .filter(|p| Some(p.release) == target)
            .map(|p| (p.slot, p.host))
            .collect();
        Ok(Some(Hosting {
            me,
            epoch,
            hosts,
            placed,
        }))
    }

    /// Whether `i` runs on this host.
    pub fn mine(&self, i: &Instance) -> bool {
        !i.elsewhere(Some(&self.me))
    }

    /// Whether `i` must move: its host is down, draining or gone.
    pub fn misplaced(&self, i: &Instance) -> bool {
        let Some(host) = &i.host else {
            return false;
        };
        self.hosts
            .iter()
            .find(|h| h.name == *host)
            .is_none_or(|h| h.state != HostState::Up)
    }
}

/// Where slot `slot` of `service` goes, given the hosts and where its other
/// instances that stay run (`others`, slot → host); `wanted`: the slot's
/// recorded placement, kept while its host is eligible. Pure: the same
/// answer on every host.
pub fn choose(
    service: &str,
    rollout: &Placing,
    hosts: &[Host],
    others: &BTreeMap<u32, String>,
    slot: u32,
    wanted: Option<&str>,
) -> Result<Placement> {
    // `place` fills slots lowest first: the others are renumbered below
    // this one, so no empty slot of theirs is placed (and counted) first.
    let mut current: BTreeMap<u32, String> = others
        .iter()
        .filter(|(s, _)| **s != slot)
        .enumerate()
        .map(|(n, (_, h))| (n as u32, h.clone()))
        .collect();
    let at = current.len() as u32;
    if let Some(h) = wanted {
        current.insert(at, h.to_string());
    }
    let spec = Spec {
        service: service.to_string(),
        replicas: at + 1,
        constraints: rollout.constraints.clone(),
        spread_by: rollout.spread_by.clone(),
        max_per_host: None,
    };
    let decision = placement::place(&spec, hosts, &current);
    if let Some(p) = decision.placed.iter().find(|p| p.slot == at) {
        // A slot placed anew after its host went away says so.
        let mut p = p.clone();
        p.slot = slot;
        if p.reason == Reason::Spread
            && let Some(from) = wanted
            && from != p.host
        {
            p.reason = Reason::HostDown;
            p.from = Some(from.to_string());
        }
        return Ok(p);
    }
    let unplaced: Vec<_> = decision
        .unplaced
        .into_iter()
        .filter(|u| u.slot == at)
        .map(|mut u| {
            u.slot = slot;
            u
        })
        .collect();
    Err(Error::Failed(format!(
        "service {service}: slot {slot} cannot be placed: {}",
        unplaced
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    )))
}

/// Fencing: this host may create or start instances only while its row is
/// at `epoch` and `up` or `draining` (see the module docs).
pub fn check_host(tx: &Tx<'_>, me: &str, epoch: i64) -> Result<()> {
    match tx.read().host(me)? {
        Some(h) if h.epoch == epoch && matches!(h.state.as_str(), "up" | "draining") => Ok(()),
        Some(h) => Err(Error::Busy {
            what: format!("host {me}"),
            reason: format!(
                "this host was fenced: its row is {} at epoch {}, this store joined at epoch \
                 {epoch}; it starts nothing until its serve joins again",
                h.state, h.epoch
            ),
        }),
        None => Err(Error::not_found(format!("host {me}"))),
    }
}

/// Make sure the image a placement on host `me` runs is in this store:
/// if it is not, pull it by digest from the fleet's registry, admitted by
/// the fleet's policy ([`crate::fleet::fetch_image`]) — each host keeps its
/// own blob store.
pub fn ensure_image(store: &mut Store, image: &Digest, me: &str) -> Result<()> {
    crate::fleet::fetch_image(store, image).map_err(|e| match e {
        Error::NotFound { what, hint } => Error::NotFound {
            what: format!("{what} (host {me})"),
            hint,
        },
        e => e,
    })
}

#[cfg(test)]
mod tests;

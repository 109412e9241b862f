//! `drover status`: each service with its release, instances, health,
//! quarantines, revocations and sync with its fleet file.

use std::time::Duration;

use serde::Serialize;

use super::release::{self, Outcome};
use super::{gate, sync};
use crate::digest::Digest;
use crate::error::Result;
use crate::instance::{self, State};
use crate::store::Store;
use crate::trust::policy;

/// One service as `drover status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub release: Option<i64>,
    pub image: Option<Digest>,
    pub outcome: Option<Outcome>,
    pub replicas: u32,
    /// Live instances of the desired release that pass their health check now.
    pub ready: u32,
    pub strategy: &'static str,
    pub ports: Vec<u16>,
    pub instances: Vec<InstanceStatus>,
    /// Release contents that failed for this service and will not be
    /// redeployed without --force.
    pub quarantined: Vec<release::Quarantined>,
    /// Restarts and back-off, as `drover serve` recorded them.
    pub health: release::ServiceHealth,
    /// Why the current release's image was revoked, if it was.
    pub revoked: Option<String>,
    /// Whether it runs what its fleet file last asked for.
    pub sync: sync::Sync,
    /// Its ports another service (earlier by name) holds: `serve` proxies
    /// them to that one, never here. `apply` refuses this since it checks;
    /// older stores may have it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports_held_elsewhere: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub release: Option<i64>,
    pub image: Digest,
    pub state: State,
    /// Exited unseen: recorded on another host or boot, or its monitor
    /// died with it (`instance::Instance::is_lost`).
    pub lost: bool,
    /// The fleet host it runs on (none: a store that never joined).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    /// `None` when the release has no health check, or the instance is of
    /// another release.
    pub healthy: Option<bool>,
    /// Passed its health gate and takes traffic (unless draining).
    pub ready: bool,
    pub draining: bool,
    /// Why it is being replaced.
    pub condemned: Option<String>,
    /// Why its image was revoked, if it was.
    pub revoked: Option<String>,
}

/// Every service: current release, ready / desired, its instances (each
/// probed once).
pub fn status(store: &mut Store) -> Result<Vec<ServiceStatus>> {
    let instances = instance::refresh(store.db_mut(), false)?;
    let db = store.db();
    let me = instance::this_host(db);
    // Revocation reaches images built on a revoked one too; each image is
    // looked up once.
    let mut revoked: std::collections::BTreeMap<Digest, Option<String>> = Default::default();
    let mut revoked_of = |d: &Digest| -> Result<Option<String>> {
        if let Some(r) = revoked.get(d) {
            return Ok(r.clone());
        }
        let r = policy::revocation_of(store, d)?.map(|r| {
            if r.via.is_empty() {
                r.revocation.reason
            } else {
                format!("{} (its base {})", r.revocation.reason, r.revocation.digest)
            }
        });
        revoked.insert(*d, r.clone());
        Ok(r)
    };
    let mut out = Vec::new();
    let mut port_owner: std::collections::BTreeMap<u16, String> = Default::default();
    for svc in release::services(db.read())? {
        let ports_held_elsewhere = svc
            .rollout
            .ports
            .iter()
            .filter_map(|p| match port_owner.entry(*p) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(svc.name.clone());
                    None
                }
                std::collections::btree_map::Entry::Occupied(o) => {
                    Some(format!("port {p} is held by service {}", o.get()))
                }
            })
            .collect();
        let current = match svc.desired {
            Some(n) => Some(release::release(db.read(), &svc.name, n)?),
            None => None,
        };
        let mut list = Vec::new();
        let mut ready = 0;
        for i in instances
            .iter()
            .filter(|i| i.service.as_deref() == Some(svc.name.as_str()))
        {
            let mine = current.as_ref().filter(|r| i.release == Some(r.number));
            // Another fleet host's instance is judged by its row (its host
            // probes it); one counted lost is gone.
            let here = !i.elsewhere(me.as_deref());
            let healthy = match mine {
                _ if i.lost.is_some() => Some(false),
                Some(_) if !here => None,
                Some(r) if i.state == State::Running => r.config.health.as_ref().map(|h| {
                    let timeout = Duration::from_millis(h.timeout_ms.min(1000));
                    gate::probe_instance(store.root(), i, &h.probe, timeout).is_ok()
                }),
                _ => None,
            };
            if mine.is_some() && i.state == State::Running && healthy != Some(false) {
                ready += 1;
            }
            list.push(InstanceStatus {
                id: i.id.clone(),
                release: i.release,
                image: i.image,
                state: i.state,
                lost: i.is_lost() || i.lost.is_some(),
                host: i.host.clone(),
                pid: i.pid,
                port: i.port,
                healthy,
                ready: i.ready_at.is_some(),
                draining: i.drain_at.is_some(),
                condemned: i.condemned.clone(),
                revoked: revoked_of(&i.image)?,
            });
        }
        let quarantined = release::quarantine_list(db.read(), &svc.name)?;
        out.push(ServiceStatus {
            name: svc.name.clone(),
            release: svc.desired,
            image: current.as_ref().map(|r| r.image),
            outcome: current.as_ref().map(|r| r.outcome),
            replicas: svc.rollout.replicas,
            ready,
            strategy: svc.rollout.strategy.name(),
            ports: svc.rollout.ports.clone(),
            instances: list,
            quarantined,
            health: release::health(db.read(), &svc.name)?,
            revoked: match &current {
                Some(r) => revoked_of(&r.image)?,
                None => None,
            },
            sync: sync::of_service(db.read(), &svc, &mut revoked_of)?,
            ports_held_elsewhere,
        });
    }
    Ok(out)
}

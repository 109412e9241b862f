//! `plan`: what `apply` would do to a fleet, without doing it — new
//! releases and what they change field by field, rollout steps, refusals,
//! services out of sync, and orphans.

use serde::Serialize;

use super::placement;
use super::plan::{self, Seen, Step};
use super::spec::{ReleaseConfig, ServiceSpec};
use super::{
    diff, needs_release, release, remove, requested, resolve, sync, to_pull, with_content,
};
use crate::digest::Digest;
use crate::error::Result;
use crate::instance::{self, Access, State};
use crate::store::Store;
use crate::trust::policy::{self, Origin};

/// What `apply` would do to one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    pub service: String,
    pub image_ref: String,
    pub image: Digest,
    /// The registry image `apply` would pull first (the store lacks it).
    pub pull: Option<String>,
    /// The service is not recorded yet (or was removed).
    pub new_service: bool,
    /// The release `apply` would create, if any.
    pub new_release: Option<i64>,
    /// What the new release changes from the running one, field by field.
    pub changes: Vec<diff::Change>,
    /// Rollout settings that change without a new release.
    pub rollout_changes: Vec<diff::Change>,
    /// Why `apply` would refuse (a quarantined image, the deploy policy);
    /// then `steps` is empty.
    pub refused: Option<String>,
    /// Set when apply leaves the service running another release than the
    /// fleet file's (a manual rollback stands).
    pub out_of_sync: Option<sync::Sync>,
    pub strategy: &'static str,
    pub steps: Vec<Step>,
    /// How the rollout differs from what the strategy says, and why (a
    /// single-writer volume: stop before start).
    pub notes: Vec<String>,
}

impl ServicePlan {
    /// Whether `apply` would change anything for this service.
    pub fn changes_anything(&self) -> bool {
        self.refused.is_none()
            && (self.new_release.is_some()
                || !self.rollout_changes.is_empty()
                || self.steps.iter().any(|s| *s != Step::Done))
    }
}

/// A recorded service the fleet file does not declare.
#[derive(Debug, Clone, Serialize)]
pub struct Orphan {
    pub service: String,
    /// The release it runs.
    pub release: Option<i64>,
    /// Its live instances.
    pub instances: usize,
    /// `apply --prune` removes it (planned with `plan --prune`).
    pub prune: bool,
}

/// What `apply` would do to a fleet.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub services: Vec<ServicePlan>,
    pub orphans: Vec<Orphan>,
}

impl Plan {
    /// Whether `apply` (with the same `--prune`) would change anything.
    pub fn changes_anything(&self) -> bool {
        self.services.iter().any(ServicePlan::changes_anything)
            || self.orphans.iter().any(|o| o.prune)
    }

    /// Whether `apply` would refuse a service.
    pub fn refuses(&self) -> bool {
        self.services.iter().any(|s| s.refused.is_some())
    }
}

/// What `apply` would do, without doing it (read-only; takes no lock).
/// With `prune`, orphans are planned for removal. A service claiming a
/// port another recorded service holds is an error naming both.
pub fn plan(store: &mut Store, fleet: &[ServiceSpec], prune: bool) -> Result<Plan> {
    let instances = instance::refresh(store.db_mut(), false)?;
    let policy = policy::load_for(store)?;
    let db = store.db();
    remove::check_ports(db.read(), fleet, prune)?;
    let mut out = Vec::new();
    for spec in fleet {
        // An image still to be pulled is new here: its config is not known
        // yet, so neither are config changes or quarantine.
        let pull = to_pull(store, spec);
        let (image, config) = match pull {
            Some((_, digest)) => (digest, None),
            None => {
                let (image, config) = resolve(store, spec)?;
                (image, Some(config))
            }
        };
        let svc = release::service(db.read(), &spec.name)?;
        let current = match svc.as_ref().and_then(|s| s.desired) {
            Some(n) => Some(release::release(db.read(), &spec.name, n)?),
            None => None,
        };
        let unchanged = config.as_ref().is_some_and(|config| {
            let asked = requested(&image, config);
            !needs_release(svc.as_ref(), current.as_ref(), &asked, &image, config)
        });
        let mut changes = Vec::new();
        let mut new_release = None;
        let mut refused = None;
        let mut out_of_sync = None;
        let new_service = svc.as_ref().is_none_or(|s| s.removed.is_some());
        if !unchanged {
            if let Some(r) = &current {
                match &config {
                    Some(config) => {
                        changes = diff::content(
                            &diff::Content {
                                image: &r.image,
                                image_ref: &r.image_ref,
                                config: &r.config,
                            },
                            &diff::Content {
                                image: &image,
                                image_ref: &spec.image,
                                config,
                            },
                        )
                    }
                    // The config of an image still to be pulled is not
                    // known: only the image can be compared.
                    None if r.image != image => changes.push(diff::Change {
                        field: "image".into(),
                        old: Some(format!("sha256:{}…", r.image.short())),
                        new: Some(format!("sha256:{}… ({})", image.short(), spec.image)),
                        secret: false,
                    }),
                    None => {}
                }
            }
            new_release = Some(db.read().next_release_number(&spec.name)?);
            if let Some(config) = &config
                && let Some((n, why)) =
                    release::quarantined(db.read(), &spec.name, &image, &config.digest())?
            {
                refused = Some(format!(
                    "this image and config are quarantined: release {n} failed ({why}); \
                     `apply --force` deploys it anyway"
                ));
            }
        } else if let (Some(config), Some(r)) = (&config, &current)
            && (r.image != image || r.config_digest != config.digest())
        {
            // Apply leaves a manual rollback standing: say so, naming both.
            let fleet = match svc.as_ref().and_then(|s| s.fleet_release) {
                Some(n) => Some(n),
                None => with_content(db.read(), &spec.name, &image, config)?,
            };
            if let Some(f) = fleet {
                let f = release::release(db.read(), &spec.name, f)?;
                out_of_sync = Some(sync::out_of_sync(&spec.name, &f, Some(r)));
            }
        }
        let rollout_changes = match svc.as_ref().filter(|s| s.removed.is_none()) {
            Some(s) => diff::rollout(&s.rollout, &spec.rollout()),
            None => Vec::new(),
        };
        // What `apply` would ask the policy (an image still to be pulled:
        // only its registry, until it is here).
        let origin = match &spec.registry {
            Some(r) => Origin::Registry(&r.registry),
            None => Origin::Local,
        };
        let verdict = match pull {
            Some(_) => policy
                .registry_problem(origin)
                .map(|reason| policy::Refusal {
                    image: spec.image.clone(),
                    rule: "allowed_registries",
                    reason,
                }),
            None => match policy.evaluate(store, &image, origin)? {
                policy::Verdict::Refused(r) => Some(r),
                policy::Verdict::Allowed { .. } => None,
            },
        };
        if let Some(r) = verdict {
            refused = Some(format!(
                "the policy refuses it: rule {}: {}",
                r.rule, r.reason
            ));
        }
        let target = new_release.or(current.as_ref().map(|r| r.number));
        let seen: Vec<Seen> = instances
            .iter()
            .filter(|i| i.service.as_deref() == Some(spec.name.as_str()) && i.state.is_live())
            .map(|i| Seen {
                id: i.id.clone(),
                release: i.release.unwrap_or(-1),
                ready: i.state == State::Running,
                slot: i.slot,
            })
            .collect();
        // As converge decides it: the fleet's volumes (the new release's),
        // else those the live instances hold.
        let mut single_writer: Vec<String> = spec
            .volumes
            .iter()
            .filter(|v| v.single_writer())
            .map(|v| v.name.clone())
            .collect();
        if single_writer.is_empty() {
            for i in instances
                .iter()
                .filter(|i| i.service.as_deref() == Some(spec.name.as_str()) && i.state.is_live())
            {
                for h in i.volumes.iter().filter(|h| h.access == Access::Exclusive) {
                    if !single_writer.contains(&h.name) {
                        single_writer.push(h.name.clone());
                    }
                }
            }
        }
        let mut held: Vec<String> = Vec::new();
        if !single_writer.is_empty() {
            let one = if single_writer.len() == 1 {
                "is"
            } else {
                "are"
            };
            held.push(format!(
                "volume {} {one} single-writer",
                single_writer.join(", ")
            ));
        }
        if let Some(port) = config.as_ref().and_then(ReleaseConfig::fixed_port) {
            held.push(format!(
                "port {port} is fixed (the health check's), one instance holds it at a time"
            ));
        }
        // A refused service gets no steps: none of them would run.
        let strategy = plan::for_volumes(spec.strategy, !held.is_empty());
        let steps = match target {
            Some(n) if refused.is_none() => plan::simulate(n, spec.replicas, strategy, &seen),
            _ => vec![],
        };
        let mut notes: Vec<String> = match &steps[..] {
            [] => vec![],
            _ => plan::single_writer_note(spec.strategy, &held)
                .into_iter()
                .collect(),
        };
        // No store is part of a fleet yet (hosts join with `serve --join`):
        // placement settings are recorded, and said to wait for hosts.
        notes.extend(placement::one_host_note(
            &spec.constraints,
            spec.spread_by.as_deref(),
        ));
        out.push(ServicePlan {
            service: spec.name.clone(),
            image_ref: spec.image.clone(),
            image,
            pull: pull.map(|(r, _)| r.to_string()),
            new_service,
            new_release,
            changes,
            rollout_changes,
            refused,
            out_of_sync,
            strategy: spec.strategy.name(),
            steps,
            notes,
        });
    }
    let mut orphans = Vec::new();
    for name in remove::orphans(db.read(), fleet)? {
        let svc = release::service(db.read(), &name)?;
        orphans.push(Orphan {
            release: svc.and_then(|s| s.desired),
            instances: instances
                .iter()
                .filter(|i| i.service.as_deref() == Some(name.as_str()) && i.state.is_live())
                .count(),
            service: name,
            prune,
        });
    }
    Ok(Plan {
        services: out,
        orphans,
    })
}

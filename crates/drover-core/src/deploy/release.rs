//! Services, releases and quarantine: the deploy side of the state's
//! `releases` noun. Reads take a [`Reader`]; writes take the caller's [`Tx`]
//! (in which the caller has checked its deploy lease) and record their
//! ledger entry there.

use serde_json::json;

use super::spec::{ReleaseConfig, Rollout};
use crate::digest::Digest;
use crate::error::Result;
use crate::ledger::{self, NewEntry};
use crate::state::{NewReleaseRow, Reader, ReleaseOf, ServiceOf, Tx};

pub use crate::state::{Outcome, Quarantined, ServiceHealth};

/// A release of a service: its image, its config, who, when, why; its outcome.
pub type Release = ReleaseOf<ReleaseConfig>;

/// A service as last applied: its rollout and the release that should run.
pub type Service = ServiceOf<Rollout>;

pub fn service(r: Reader<'_>, name: &str) -> Result<Option<Service>> {
    r.service(name)
}

pub fn services(r: Reader<'_>) -> Result<Vec<Service>> {
    r.services()
}

pub fn release(r: Reader<'_>, service: &str, number: i64) -> Result<Release> {
    r.release(service, number)
}

/// Everything quarantined for `service`, oldest first.
pub fn quarantine_list(r: Reader<'_>, service: &str) -> Result<Vec<Quarantined>> {
    r.quarantine(service)
}

/// Every release of `service`, oldest first.
pub fn releases(r: Reader<'_>, service: &str) -> Result<Vec<Release>> {
    r.releases(service)
}

/// Why this release content (image and config) is quarantined for
/// `service`, if it is: (the release that failed, why).
pub fn quarantined(
    r: Reader<'_>,
    service: &str,
    image: &Digest,
    config: &Digest,
) -> Result<Option<(i64, String)>> {
    r.quarantined(service, image, config)
}

/// Record what the fleet asked for (and which release should run).
pub fn save_service(
    tx: &Tx<'_>,
    name: &str,
    rollout: &Rollout,
    requested: &Digest,
    desired: Option<i64>,
) -> Result<()> {
    tx.save_service(name, rollout, requested, desired)
}

/// Point `service` at release `desired` (a rollback's target, say).
pub fn set_desired(tx: &Tx<'_>, service: &str, desired: Option<i64>) -> Result<()> {
    tx.set_desired(service, desired)
}

/// Record which release's content the fleet file asks for (see
/// [`Service::fleet_release`]).
pub fn set_fleet_release(tx: &Tx<'_>, service: &str, release: Option<i64>) -> Result<()> {
    tx.set_fleet_release(service, release)
}

/// Mark `service` removed, with a `service.remove` ledger entry: it no
/// longer runs, listens or is reconciled; its releases and history stay.
/// The caller has stopped its instances.
pub fn mark_removed(tx: &Tx<'_>, service: &str, last: Option<i64>, reason: &str) -> Result<()> {
    tx.mark_removed(service, &Digest::of(b""))?;
    tx.record(NewEntry::new(
        "service.remove",
        [service.to_string()],
        json!({"service": service, "release": last, "reason": reason}),
    ))
    .map(drop)
}

/// Forget what the fleet last asked for, so the next `apply` of the same
/// file is judged afresh (after a failed release: it meets the quarantine).
pub fn forget_request(tx: &Tx<'_>, service: &str) -> Result<()> {
    tx.set_requested(service, &Digest::of(b""))
}

/// What a new release is made of.
pub struct NewRelease<'a> {
    pub service: &'a str,
    pub image: Digest,
    pub image_ref: &'a str,
    pub config: &'a ReleaseConfig,
    pub message: &'a str,
    pub parent: Option<i64>,
    pub rollback_of: Option<i64>,
}

/// Append the next release of a service (`release.create`, or
/// `release.rollback` when it repeats an earlier one).
pub fn create(tx: &Tx<'_>, r: NewRelease<'_>) -> Result<Release> {
    let config_digest = r.config.digest();
    let number = tx.insert_release(NewReleaseRow {
        service: r.service,
        image: &r.image,
        image_ref: r.image_ref,
        config: r.config,
        config_digest: &config_digest,
        author: &ledger::actor(),
        message: r.message,
        parent: r.parent,
        rollback_of: r.rollback_of,
    })?;
    let action = if r.rollback_of.is_some() {
        "release.rollback"
    } else {
        "release.create"
    };
    let mut details = json!({
        "service": r.service, "release": number, "image": r.image.to_string(),
        "image_ref": r.image_ref, "config_digest": config_digest.to_string(),
        "parent": r.parent, "rollback_of": r.rollback_of, "message": r.message,
    });
    // Container root is host root in this release: the ledger says why.
    if let Some(why) = &r.config.userns_opt_out {
        details["userns_opt_out"] = json!(why);
    }
    tx.record(NewEntry::new(
        action,
        [format!("{}#{number}", r.service), r.image.to_string()],
        details,
    ))?;
    release(tx.read(), r.service, number)
}

/// Settle a pending release (`release.healthy` / `release.failed`).
pub fn settle(
    tx: &Tx<'_>,
    service: &str,
    number: i64,
    outcome: Outcome,
    reason: Option<&str>,
) -> Result<()> {
    let changed = tx.settle_release(service, number, outcome, reason)?;
    if changed {
        let r = release(tx.read(), service, number)?;
        tx.record(NewEntry::new(
            format!("release.{}", outcome.as_str()),
            [format!("{service}#{number}"), r.image.to_string()],
            json!({"service": service, "release": number, "reason": reason}),
        ))?;
    }
    Ok(())
}

/// Keep release `r`'s content (its image with its config) from being
/// deployed to its service again without `--force`.
pub fn quarantine(tx: &Tx<'_>, r: &Release, reason: &str) -> Result<()> {
    let (service, image, number) = (r.service.as_str(), &r.image, r.number);
    tx.quarantine(service, number, image, &r.config_digest, reason)?;
    tx.record(NewEntry::new(
        "release.quarantine",
        [format!("{service}#{number}"), image.to_string()],
        json!({"service": service, "release": number, "image": image.to_string(),
                   "config_digest": r.config_digest.to_string(), "reason": reason}),
    ))
    .map(drop)
}

/// Mask the secret env values (see [`ReleaseConfig::secret_env`]) in the
/// launch records of service instances, for showing them (`ps --json`).
pub fn mask_secrets(r: Reader<'_>, instances: &mut [crate::instance::Instance]) -> Result<()> {
    let mut secrets: std::collections::BTreeMap<(String, i64), Vec<String>> = Default::default();
    for i in instances.iter_mut() {
        let (Some(service), Some(number)) = (i.service.clone(), i.release) else {
            continue;
        };
        let key = (service, number);
        if !secrets.contains_key(&key) {
            let names = match release(r, &key.0, key.1) {
                Ok(rel) => rel.config.secret_env,
                Err(e) if e.kind() == crate::error::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e),
            };
            secrets.insert(key.clone(), names);
        }
        let names = &secrets[&key];
        for var in &mut i.launch.env {
            if let Some((k, _)) = var.split_once('=')
                && names.iter().any(|n| n == k)
            {
                *var = format!("{k}={}", super::diff::SECRET);
            }
        }
    }
    Ok(())
}

/// The recorded health of `service` (all zero if it never had a pass).
pub fn health(r: Reader<'_>, service: &str) -> Result<ServiceHealth> {
    r.service_health(service)
}

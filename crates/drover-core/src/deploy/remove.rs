//! Services that leave the fleet: `drover service rm`, `apply --prune`, the
//! orphans `plan` lists, and the proxy ports recorded services hold.
//!
//! A removed service keeps its row (marked `removed`), its releases and its
//! ledger history; it no longer runs, is reconciled, or listens, so its
//! ports are free. Applying the name again revives it, and its release
//! numbers carry on.
//!
//! Removal is two fenced steps under the service's deploy lock: first the
//! service is pointed at no release (and forgets what the fleet asked), and
//! converged there — its instances drained and stopped, as any converge
//! stops them; then it is marked removed, with a `service.remove` ledger
//! entry. If it is interrupted between the two, the service is still
//! recorded with no release: `drover serve` keeps it at no instances, `plan`
//! lists it as an orphan again, and the next removal finishes.

use std::collections::BTreeMap;
use std::time::Instant;

use super::spec::ServiceSpec;
use super::{Failure, Options, Report, converge, lock, lock_name, release};
use crate::error::{Error, Result};
use crate::state::Reader;
use crate::store::Store;

/// Recorded services (not removed) that `fleet` does not declare.
pub fn orphans(r: Reader<'_>, fleet: &[ServiceSpec]) -> Result<Vec<String>> {
    Ok(release::services(r)?
        .into_iter()
        .map(|s| s.name)
        .filter(|name| !fleet.iter().any(|s| &s.name == name))
        .collect())
}

/// Refuse a fleet in which a service claims a proxy port that a recorded
/// service outside the fleet holds (unless `prune` removes that one
/// first): two services cannot listen on one port. Within one file,
/// `fleet::parse` refuses it already.
pub fn check_ports(r: Reader<'_>, fleet: &[ServiceSpec], prune: bool) -> Result<()> {
    if prune {
        return Ok(());
    }
    let mut held: BTreeMap<u16, String> = BTreeMap::new();
    for svc in release::services(r)? {
        if fleet.iter().any(|s| s.name == svc.name) {
            continue;
        }
        for p in &svc.rollout.ports {
            held.insert(*p, svc.name.clone());
        }
    }
    let clashes: Vec<String> = fleet
        .iter()
        .flat_map(|s| s.ports.iter().map(move |p| (s, p)))
        .filter_map(|(s, p)| {
            held.get(p).map(|other| {
                format!(
                    "port {p}: service {} claims it, but service {other} holds it (recorded by \
                     an earlier apply, not in this fleet file); pick another port, or remove \
                     {other} first (`drover service rm {other}`, or `apply --prune` where it \
                     is no longer declared)",
                    s.name
                )
            })
        })
        .collect();
    if clashes.is_empty() {
        Ok(())
    } else {
        Err(Error::Usage(clashes.join("; ")))
    }
}

/// `drover service rm`: converge `service` to no instances (draining them
/// first), then mark it removed with a `service.remove` ledger entry
/// saying `reason`.
pub fn remove(store: &mut Store, service: &str, reason: &str, opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let mut report = Report {
        service: service.to_string(),
        ..Report::default()
    };
    let mut lease = lock::acquire(store.db_mut(), &lock_name(service), !opts.no_wait)?;
    let result = remove_locked(store, service, reason, &mut lease, &mut report);
    let released = lease.release(store.db_mut());
    report.seconds = started.elapsed().as_secs_f64();
    result.and(released)?;
    Ok(report)
}

/// [`remove`] for one of many (`apply --prune`): a failure is the report's.
pub(super) fn remove_reported(
    store: &mut Store,
    service: &str,
    reason: &str,
    opts: &Options,
) -> Report {
    remove(store, service, reason, opts).unwrap_or_else(|e| Report {
        service: service.to_string(),
        error: Some(Failure::from(e)),
        ..Report::default()
    })
}

fn remove_locked(
    store: &mut Store,
    service: &str,
    reason: &str,
    lease: &mut lock::Lease,
    report: &mut Report,
) -> Result<()> {
    let svc = release::service(store.db().read(), service)?
        .filter(|s| s.removed.is_none())
        .ok_or_else(|| Error::NotFound {
            what: format!("service {service}"),
            hint: Some("`drover status` lists services".into()),
        })?;
    store.db_mut().write(|tx| {
        lease.check(tx)?;
        release::set_desired(tx, service, None)?;
        release::forget_request(tx, service)
    })?;
    // With no desired release, a converge stops every instance, drained.
    converge::converge_or_roll_back(store, service, lease, report)?;
    store.db_mut().write(|tx| {
        lease.check(tx)?;
        // A removal interrupted after its first step left no release to name.
        let last = svc.desired;
        release::mark_removed(tx, service, last, reason)
    })?;
    report.removed = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::deploy::fleet;
    use crate::digest::Digest;
    use crate::error::ErrorKind;
    use crate::state::Db;
    use crate::state::pgtest::{self, backends};

    fn record(db: &mut Db, fleet_text: &str) {
        for spec in fleet::parse(fleet_text, Path::new("a.toml")).unwrap() {
            db.write(|tx| {
                release::save_service(tx, &spec.name, &spec.rollout(), &Digest::of(b"x"), None)
            })
            .unwrap();
        }
    }

    backends! {
    fn orphans_and_ports_held_outside_the_fleet() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = pgtest::open(&dir.path().join("state.db")).unwrap();
        record(
            &mut db,
            "[service.web]\nimage = \"w\"\nports = [8080]\n[service.old]\nimage = \"o\"\n",
        );
        let other = fleet::parse(
            "[service.api]\nimage = \"a\"\nports = [8080]\n",
            Path::new("b.toml"),
        )
        .unwrap();
        assert_eq!(orphans(db.read(), &other).unwrap(), ["old", "web"]);
        let e = check_ports(db.read(), &other, false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        let e = e.to_string();
        assert!(
            e.contains("port 8080: service api claims it, but service web holds it"),
            "{e}"
        );
        // Pruning frees it; so does the holder being in the same fleet
        // (it gives the port up there, or fleet::parse refuses the clash).
        check_ports(db.read(), &other, true).unwrap();
        let both = fleet::parse(
            "[service.web]\nimage = \"w\"\nports = [9090]\n[service.api]\nimage = \"a\"\nports = [8080]\n",
            Path::new("b.toml"),
        )
        .unwrap();
        check_ports(db.read(), &both, false).unwrap();
        // A removed service holds nothing and is no orphan.
        db.write(|tx| release::mark_removed(tx, "web", None, "test"))
            .unwrap();
        check_ports(db.read(), &other, false).unwrap();
        assert_eq!(orphans(db.read(), &other).unwrap(), ["old"]);
        let web = release::service(db.read(), "web").unwrap().unwrap();
        assert!(web.removed.is_some() && web.desired.is_none());
        // Recorded again (a new apply): revived.
        record(&mut db, "[service.web]\nimage = \"w\"\n");
        assert!(
            release::service(db.read(), "web")
                .unwrap()
                .unwrap()
                .removed
                .is_none()
        );
    }
    }
}

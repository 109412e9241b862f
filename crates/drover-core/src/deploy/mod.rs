//! Deploy by replacement: services, releases, rollouts, health gates and
//! rollback.
//!
//! `apply` turns each service of a fleet file into (at most) one new,
//! immutable, numbered release and then *converges*: a loop that observes
//! the service's instances, asks the pure planner ([`plan::next_step`]) for
//! the next step under the service's strategy, performs it, and looks again
//! — until the desired release runs with the desired replicas, all healthy.
//! Nothing about a rollout is kept in memory that matters: if `apply` is
//! killed at any moment, the next one observes what is there and carries
//! on, so it ends with exactly the desired instances (every instance row is
//! written before its process starts, so none is unknown).
//!
//! When a new instance fails its health gate ([`gate`]), the rollout stops:
//! the release is marked failed, its content (image and config) is
//! quarantined for the service,
//! the service is pointed back at the previous release and converges to it
//! (rolling and blue-green never went below their floor, so the old
//! instances kept serving), and `apply` fails naming the check and the log.
//!
//! A service whose image names a registry by digest has it pulled first
//! (with its referrers, such as its baseline) if the store lacks it; `plan`
//! only says it would.
//!
//! Every image is put to the store's deploy policy
//! ([`crate::trust::policy`]) before a release of it is made: `apply` checks
//! each service's image (and the registry it comes from), `rollback` its
//! target's. A refusal fails that service with [`Error::Refused`] and a
//! `policy.refuse` ledger entry. A release whose image is revoked later is
//! handled by the converge pass (see [`converge`]).
//!
//! Each service is deployed under its own lock ([`lock`]): a lease with a
//! fencing token that every write checks.
//!
//! What the fleet file asks and what runs are compared field by field
//! ([`diff`]): `plan` shows every change, `status` and `plan` a service out
//! of sync with its fleet file ([`sync`]). Services no longer declared are
//! orphans until `apply --prune` or `service rm` removes them ([`remove`]).
//! `plan` ([`preview`]) and `status` ([`status`]) only read, and take no lock.

pub mod converge;
pub mod diff;
pub mod fleet;
pub mod gate;
pub mod hosting;
pub mod lock;
pub mod placement;
pub mod plan;
mod preview;
pub mod release;
pub mod remove;
pub mod spec;
mod status;
pub mod sync;
pub mod traffic;

pub use preview::{Orphan, Plan, ServicePlan, plan};
pub use status::{InstanceStatus, ServiceStatus, status};

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use self::lock::Lease;

use self::release::{NewRelease, Outcome, Release};
use self::spec::{ReleaseConfig, ServiceSpec};
use crate::builder::HEALTH_LABEL;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::health::HealthCheck;
use crate::instance::VolumeSpec;
use crate::state::Reader;
use crate::store::Store;
use crate::store::registry::{self, Remote};
use crate::trust::policy::{self, Operation, Origin};

/// How long an old instance gets to stop after its stop signal.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Deploy a quarantined release content anyway.
    pub force: bool,
    /// Fail at once if another deploy holds a service's lock.
    pub no_wait: bool,
    /// Recorded with new releases.
    pub message: Option<String>,
    /// Only record what should run (new releases, rollout settings); leave
    /// converging to `drover serve`.
    pub detach: bool,
    /// Remove recorded services the fleet file no longer declares.
    pub prune: bool,
    /// Told of the bytes the images `apply` pulls receive.
    pub progress: crate::progress::Shared,
}

/// What one service's deploy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub service: String,
    /// The release running at the end.
    pub release: Option<i64>,
    /// A release this deploy created.
    pub created: Option<i64>,
    /// The release that failed and was rolled back, if any.
    pub failed: Option<i64>,
    pub started: u32,
    pub stopped: u32,
    pub seconds: f64,
    /// Of `seconds`, the time spent waiting for new instances to pass their
    /// health checks; the rest is drover's (and the runtime's) own.
    pub health_wait_seconds: f64,
    /// Of `seconds`, the time spent draining instances before stopping them.
    pub drain_wait_seconds: f64,
    /// Instances found dead and replaced.
    pub healed: u32,
    /// Of those, the ones that died within [`converge::MIN_UPTIME`] of starting.
    #[serde(skip)]
    pub crashed_young: u32,
    /// Of `healed`, the instances of the release the pass converged to:
    /// what a crash loop is counted from.
    #[serde(skip)]
    pub healed_current: u32,
    /// How long pulling the image from its registry took, when this
    /// deploy pulled it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_seconds: Option<f64>,
    /// The health-check probes of the rollout's gates and stability
    /// windows: whether each passed, how long it took.
    #[serde(skip)]
    pub gate_probes: Vec<(bool, Duration)>,
    /// Why the pass rolled a release back, for the metrics' label:
    /// `health_check` (a new release failed its gate or window) or
    /// `crash_loop` (a healthy release's instances kept dying).
    #[serde(skip)]
    pub rollback_reason: Option<&'static str>,
    /// Why the deploy failed; in JSON, its message.
    pub error: Option<Failure>,
    /// What went wrong without stopping the deploy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The service was removed (`apply --prune`, `service rm`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// The instances found dead and replaced (what `serve` logs; in JSON,
    /// each one's line).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heals: Vec<Heal>,
    /// On a fleet: the pass did what this host could and left the rest to
    /// the hosts named here ([`hosting`]); the rollout is not over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// One instance found dead and replaced: which, how it exited, its last
/// lines of output. Displayed (and serialized) as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heal {
    pub instance: String,
    pub release: Option<i64>,
    pub slot: Option<u32>,
    /// How it exited ("exit code 3", "killed by signal 9", …).
    pub exit: String,
    /// Its last lines of output, each cut to 200 characters.
    pub last_output: Vec<String>,
}

impl fmt::Display for Heal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "instance {} (release {}, slot {}) exited: {}; replacing it",
            self.instance,
            self.release.map_or("-".into(), |n| n.to_string()),
            self.slot.map_or("-".into(), |n| n.to_string()),
            self.exit
        )?;
        if self.last_output.is_empty() {
            f.write_str("; it wrote nothing")?;
        } else {
            f.write_str("; last output:")?;
            for l in &self.last_output {
                write!(f, " | {l}")?;
            }
        }
        write!(f, " (drover logs {})", self.instance)
    }
}

impl Serialize for Heal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Report {
    /// Another deploy held the service's lock, so this one did nothing.
    pub fn busy(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|f| f.kind == ErrorKind::Busy)
    }

    /// Whether serve's reconciler backs the service off after this pass
    /// (`reconcile::record`'s rule): it failed without rolling back, or
    /// instances crashed young.
    pub fn backs_off(&self) -> bool {
        match &self.error {
            Some(_) => !self.busy() && self.failed.is_none(),
            None => self.crashed_young > 0,
        }
    }
}

/// Why one service's deploy failed: the error's kind and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.message)
    }
}

/// `Ok` when every service of `reports` deployed; else the error a deploy
/// command ends with, naming every failure. Its kind is
/// [`ErrorKind::Busy`] when each failure was another deploy holding a lock,
/// [`ErrorKind::Refused`] when each was the deploy policy, and
/// [`ErrorKind::Internal`] otherwise: a deploy that was tried and failed,
/// whatever the cause.
pub fn outcome(reports: &[Report]) -> Result<()> {
    let failures: Vec<&Failure> = reports.iter().filter_map(|r| r.error.as_ref()).collect();
    let Some(first) = failures.first() else {
        return Ok(());
    };
    let kind = match first.kind {
        k @ (ErrorKind::Busy | ErrorKind::Refused) if failures.iter().all(|f| f.kind == k) => k,
        _ => ErrorKind::Internal,
    };
    Err(Error::Deploy {
        kind,
        messages: failures.iter().map(|f| f.message.clone()).collect(),
    })
}

/// The release content and image a service spec asks for.
fn resolve(store: &Store, spec: &ServiceSpec) -> Result<(Digest, ReleaseConfig)> {
    // A registry image is pinned by its digest, which says what runs; the
    // name says where it came from (`fetch`), not what the store calls it.
    let image = match spec.registry.as_ref().and_then(|r| r.digest) {
        Some(d) => store.resolve(&d.to_string())?.digest,
        None => store.resolve(&spec.image)?.digest,
    };
    let manifest = store.manifest(&image)?;
    let config = store.image_config(&manifest)?;
    let health = match &spec.health {
        Some(h) => Some(h.clone()),
        None => match config.config.labels.get(HEALTH_LABEL) {
            Some(json) => Some(serde_json::from_str::<HealthCheck>(json).map_err(|e| {
                Error::corrupt(
                    format!("image {image}"),
                    format!("label {HEALTH_LABEL}: {e}"),
                )
            })?),
            None => None,
        },
    };
    if let Some(port) = health.as_ref().and_then(|h| h.probe.fixed_port()) {
        let whose = if spec.health.is_some() {
            ""
        } else {
            " (the image's)"
        };
        // Instances share the host network, each on its own `PORT`: a check
        // on a fixed port reaches whichever replica holds it, not the one it
        // checks — it would call a replica that cannot even bind healthy.
        if spec.replicas > 1 {
            return Err(Error::Usage(format!(
                "service {}: {} replicas, but its health check{whose} probes port {port}, a \
                 fixed port: instances share the host network, so every replica's check would \
                 reach whichever one holds {port} (and only one can bind it). Make the program \
                 listen on $PORT and drop `port` from the check (each instance is then probed \
                 on its own), or run 1 replica",
                spec.name, spec.replicas,
            )));
        }
        // The program binds its fixed port on every address: the service's
        // proxy cannot listen there too.
        if spec.ports.contains(&port) {
            return Err(Error::Usage(format!(
                "service {}: ports = [{port}], but its program listens on {port} itself (its \
                 health check{whose} probes {port}): the proxy cannot listen there too. Choose \
                 another port for the proxy; it sends the traffic on to {port}",
                spec.name,
            )));
        }
    }
    let volumes = spec.volumes.iter().map(VolumeSpec::canonical).collect();
    Ok((
        image,
        ReleaseConfig {
            env: spec.env.clone(),
            secret_env: spec.secret_env.clone(),
            volumes,
            tmpfs: spec.tmpfs.clone(),
            limits: spec.limits.clone(),
            cap_add: spec.cap_add.clone(),
            health,
            deadline_ms: spec.deadline_ms,
            driver: spec.driver,
            userns_opt_out: spec.userns_opt_out.clone(),
            init: spec.init,
            logs: spec.logs,
        },
    ))
}

/// The registry to pull `spec`'s image from, if the store lacks it.
fn to_pull<'a>(store: &Store, spec: &'a ServiceSpec) -> Option<(&'a Remote, Digest)> {
    let remote = spec.registry.as_ref()?;
    let digest = remote.digest?;
    (!store.has_blob(&digest)).then_some((remote, digest))
}

/// Pull `spec`'s registry image if the store lacks it. If the store has it,
/// fetch the referrers (signatures, provenance, SBOM) the registry lists and
/// the store lacks, such as those attached after an earlier pull: one
/// referrers listing when there is nothing new. That refresh is best effort:
/// the image itself is here and verified, so a registry that cannot be
/// reached does not stop the deploy; the failure goes in `report.warnings`.
fn fetch(
    store: &mut Store,
    spec: &ServiceSpec,
    progress: &crate::progress::Shared,
    report: &mut Report,
) -> Result<()> {
    let Some(remote) = spec.registry.as_ref() else {
        return Ok(());
    };
    let Some(digest) = remote.digest else {
        return Ok(());
    };
    // The allow-list covers any contact with a registry, a referrers refresh too.
    policy::enforce_pull(store, &spec.image, &remote.registry, Operation::Apply)?;
    let opts = || -> Result<registry::Options> {
        Ok(registry::Options {
            insecure: spec.insecure_registry,
            credentials: registry::credentials(&remote.registry)?,
            platform: None,
            progress: progress.clone(),
        })
    };
    if to_pull(store, spec).is_some() {
        let began = Instant::now();
        registry::pull(store, remote, &opts()?)?;
        report.pull_seconds = Some(began.elapsed().as_secs_f64());
    } else if let Err(e) = opts().and_then(|o| registry::pull_referrers(store, remote, &digest, &o))
    {
        report.warnings.push(format!(
            "image {digest} is in the store, but its referrers could not be refreshed: {e}"
        ));
    }
    Ok(())
}

fn requested(image: &Digest, config: &ReleaseConfig) -> Digest {
    Digest::of(format!("{image}\n{}", config.digest()).as_bytes())
}

/// Whether applying `asked` (image and config) makes a new release: not when
/// the fleet asks for what it asked for last time (so a manual rollback
/// stands), nor when the running release already has that content.
fn needs_release(
    svc: Option<&release::Service>,
    current: Option<&Release>,
    asked: &Digest,
    image: &Digest,
    config: &ReleaseConfig,
) -> bool {
    let same_request = svc.is_some_and(|s| s.requested == *asked);
    let same_content =
        current.is_some_and(|r| r.image == *image && r.config_digest == config.digest());
    !(same_request || same_content)
}

/// The newest release of `service` with this content, if any.
fn with_content(
    r: Reader<'_>,
    service: &str,
    image: &Digest,
    config: &ReleaseConfig,
) -> Result<Option<i64>> {
    let digest = config.digest();
    Ok(release::releases(r, service)?
        .into_iter()
        .rev()
        .find(|r| r.image == *image && r.config_digest == digest)
        .map(|r| r.number))
}

fn lock_name(service: &str) -> String {
    format!("service {service}")
}

/// Deploy every service of a fleet. Each service gets a report; a failed
/// one has `error` set (and the others still deploy).
pub fn apply(store: &mut Store, fleet: &[ServiceSpec], opts: &Options) -> Result<Vec<Report>> {
    remove::check_ports(store.db().read(), fleet, opts.prune)?;
    let mut reports = Vec::new();
    // Pruned first: the ports they free may be the fleet's.
    if opts.prune {
        for name in remove::orphans(store.db().read(), fleet)? {
            let reason = "no longer declared by the fleet file (apply --prune)";
            reports.push(remove::remove_reported(store, &name, reason, opts));
        }
    }
    for spec in fleet {
        let started = Instant::now();
        let mut report = Report {
            service: spec.name.clone(),
            ..Report::default()
        };
        // Pulled before the lock is taken: a slow download holds up no
        // other deploy of the service.
        let result = fetch(store, spec, &opts.progress, &mut report)
            .and_then(|()| lock::acquire(store.db_mut(), &lock_name(&spec.name), !opts.no_wait))
            .and_then(|mut lease| {
                let result = apply_service(store, spec, opts, &mut lease, &mut report);
                result.and(lease.release(store.db_mut()))
            });
        report.seconds = started.elapsed().as_secs_f64();
        report.error = result.err().map(Failure::from);
        reports.push(report);
    }
    Ok(reports)
}

fn apply_service(
    store: &mut Store,
    spec: &ServiceSpec,
    opts: &Options,
    lease: &mut Lease,
    report: &mut Report,
) -> Result<()> {
    let (image, config) = resolve(store, spec)?;
    let origin = match &spec.registry {
        Some(r) => Origin::Registry(&r.registry),
        None => Origin::Local,
    };
    policy::enforce(store, &image, origin, Operation::Apply)?;
    let rollout = spec.rollout();
    let asked = requested(&image, &config);
    let message = opts
        .message
        .clone()
        .unwrap_or_else(|| format!("apply {}", spec.image));
    let name = spec.name.as_str();
    let mut refused = None;
    let mut out_of_sync = None;
    report.created = store.db_mut().write(|tx| {
        lease.check(tx)?;
        let svc = release::service(tx.read(), name)?;
        let desired = svc.as_ref().and_then(|s| s.desired);
        let current = match desired {
            Some(d) => Some(release::release(tx.read(), name, d)?),
            None => None,
        };
        if !needs_release(svc.as_ref(), current.as_ref(), &asked, &image, &config) {
            release::save_service(tx, name, &rollout, &asked, desired)?;
            // The fleet asks what it asked before: a manual rollback stands,
            // but is named (with the way back).
            let fleet = match svc.as_ref().and_then(|s| s.fleet_release) {
                Some(n) => Some(n),
                None => with_content(tx.read(), name, &image, &config)?,
            };
            let fleet = match current.as_ref() {
                Some(c) if c.image == image && c.config_digest == config.digest() => Some(c.number),
                _ => fleet,
            };
            release::set_fleet_release(tx, name, fleet)?;
            if let (Some(f), Some(c)) = (fleet, current.as_ref())
                && f != c.number
            {
                let f = release::release(tx.read(), name, f)?;
                if !sync::same_content(&f, c) {
                    out_of_sync = sync::out_of_sync(name, &f, Some(c)).reason;
                }
            }
            return Ok(None);
        }
        if let Some((n, why)) = release::quarantined(tx.read(), name, &image, &config.digest())?
            && !opts.force
        {
            release::set_fleet_release(tx, name, Some(n))?;
            refused = Some(Error::Usage(format!(
                "service {name}: image {image} with this config is quarantined: release {n} with \
                 them failed ({why}); change the image or config, or deploy it anyway with --force"
            )));
            return Ok(None);
        }
        if svc.is_none() {
            // Releases refer to their service: record it first.
            release::save_service(tx, name, &rollout, &asked, None)?;
        }
        let r = release::create(
            tx,
            NewRelease {
                service: name,
                image,
                image_ref: &spec.image,
                config: &config,
                message: &message,
                parent: desired,
                rollback_of: None,
            },
        )?;
        release::save_service(tx, name, &rollout, &asked, Some(r.number))?;
        release::set_fleet_release(tx, name, Some(r.number))?;
        Ok(Some(r.number))
    })?;
    if let Some(why) = out_of_sync {
        report.warnings.push(format!(
            "service {name} is out of sync with the fleet file: {why}"
        ));
    }
    // Even when the fleet's request is refused, what runs is brought back
    // to the desired release (a crashed rollback leaves it half done).
    let recorded = release::service(store.db().read(), name)?.is_some();
    let converged = if recorded && !opts.detach {
        converge::converge_or_roll_back(store, name, lease, report)
    } else {
        Ok(())
    };
    match refused {
        Some(e) => Err(e),
        None => converged,
    }
}

/// One reconcile pass over `service` as it is recorded (no fleet file): what
/// `drover serve` runs, forever. Fails with [`Error::Busy`] at once if a
/// deploy holds the service's lock (it is converging the service already).
pub fn reconcile(store: &mut Store, service: &str) -> Report {
    let started = Instant::now();
    let mut report = Report {
        service: service.to_string(),
        ..Report::default()
    };
    let result = lock::acquire(store.db_mut(), &lock_name(service), false).and_then(|mut lease| {
        let result = converge::converge_or_roll_back(store, service, &mut lease, &mut report);
        result.and(lease.release(store.db_mut()))
    });
    report.seconds = started.elapsed().as_secs_f64();
    report.error = result.err().map(Failure::from);
    report
}

/// What `drover serve` does to a healthy release that crash-loops
/// (`why`): roll the service back to the last release that was healthy and
/// stable (see [`converge`]), then converge to it. Does nothing when the
/// service no longer runs release `number`; fails at once if a deploy holds
/// the service's lock.
pub fn revert(store: &mut Store, service: &str, number: i64, why: &str) -> Report {
    let started = Instant::now();
    let mut report = Report {
        service: service.to_string(),
        ..Report::default()
    };
    let result = lock::acquire(store.db_mut(), &lock_name(service), false).and_then(|mut lease| {
        let result =
            converge::revert_crash_loop(store, service, number, why, &mut lease).and_then(|to| {
                let Some((new, of)) = to else {
                    return Ok(());
                };
                report.created = Some(new);
                report.failed = Some(number);
                report.rollback_reason = Some("crash_loop");
                report.warnings.push(format!(
                    "release {number} is in a crash loop ({why}): rolled back to release {of}'s \
                     content as release {new}; release {number}'s content is quarantined"
                ));
                converge::converge_or_roll_back(store, service, &mut lease, &mut report)
            });
        result.and(lease.release(store.db_mut()))
    });
    report.seconds = started.elapsed().as_secs_f64();
    report.error = result.err().map(Failure::from);
    report
}

/// `drover rollback`: a new release with release `to`'s content (default:
/// the last healthy release before the current one), rolled out by the
/// service's strategy.
pub fn rollback(
    store: &mut Store,
    service: &str,
    to: Option<i64>,
    opts: &Options,
) -> Result<Report> {
    let started = Instant::now();
    let mut report = Report {
        service: service.to_string(),
        ..Report::default()
    };
    let mut lease = lock::acquire(store.db_mut(), &lock_name(service), !opts.no_wait)?;
    let result = (|| {
        // The target was admitted once; the policy may have changed since
        // (a revocation, a key no longer trusted): ask again.
        let (_, target) = rollback_target(store.db().read(), service, to)?;
        policy::enforce(store, &target.image, Origin::Local, Operation::Rollback)?;
        report.created = Some(store.db_mut().write(|tx| {
            lease.check(tx)?;
            let (current, target) = rollback_target(tx.read(), service, to)?;
            if let Some((n, why)) =
                release::quarantined(tx.read(), service, &target.image, &target.config_digest)?
                && !opts.force
            {
                return Err(Error::Usage(format!(
                    "service {service}: release {}'s content (image {}) is quarantined: release {n} \
                     with it failed ({why}); roll back to it anyway with --force",
                    target.number, target.image
                )));
            }
            let message = opts
                .message
                .clone()
                .unwrap_or_else(|| format!("rollback to release {}", target.number));
            let r = release::create(tx,
                NewRelease {
                    service,
                    image: target.image,
                    image_ref: &target.image_ref,
                    config: &target.config,
                    message: &message,
                    parent: Some(current),
                    rollback_of: Some(target.number),
                },
            )?;
            release::set_desired(tx, service, Some(r.number))?;
            Ok(r.number)
        })?);
        if opts.detach {
            // Recorded as desired: `drover serve` rolls it out.
            return Ok(());
        }
        converge::converge_or_roll_back(store, service, &mut lease, &mut report)
    })();
    let released = lease.release(store.db_mut());
    report.seconds = started.elapsed().as_secs_f64();
    result.and(released)?;
    Ok(report)
}

/// The release a rollback of `service` goes back to (`to`, or the last
/// healthy release before the current one), and the current release.
fn rollback_target(r: Reader<'_>, service: &str, to: Option<i64>) -> Result<(i64, Release)> {
    let svc = release::service(r, service)?
        .filter(|s| s.removed.is_none())
        .ok_or_else(|| Error::NotFound {
            what: format!("service {service}"),
            hint: Some("`drover status` lists services".into()),
        })?;
    let current = svc.desired.ok_or_else(|| {
        Error::Usage(format!(
            "service {service} has no release to roll back from"
        ))
    })?;
    let target = match to {
        Some(n) => release::release(r, service, n)?,
        None => release::releases(r, service)?
            .into_iter()
            .rev()
            .find(|r| r.number < current && r.outcome == Outcome::Healthy)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "service {service}: no healthy release before release {current}; \
                     name one with --to"
                ))
            })?,
    };
    if target.number == current {
        return Err(Error::Usage(format!(
            "service {service} already runs release {current}"
        )));
    }
    Ok((current, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heal is one line for people (serve's log message, apply's JSON)
    /// and fields for machines (serve's log event).
    #[test]
    fn a_heal_reads_as_one_line_and_serializes_as_it() {
        let h = Heal {
            instance: "3f9c".into(),
            release: Some(4),
            slot: None,
            exit: "exit code 3".into(),
            last_output: vec!["starting".into(), "boom".into()],
        };
        let line = "instance 3f9c (release 4, slot -) exited: exit code 3; replacing it; \
                    last output: | starting | boom (drover logs 3f9c)";
        assert_eq!(h.to_string(), line);
        assert_eq!(serde_json::to_value(&h).unwrap(), line);
        let quiet = Heal {
            last_output: vec![],
            ..h
        };
        assert!(
            quiet
                .to_string()
                .contains("replacing it; it wrote nothing (drover")
        );
    }

    fn failed(service: &str, e: Error) -> Report {
        Report {
            service: service.into(),
            error: Some(e.into()),
            ..Report::default()
        }
    }

    fn busy(service: &str) -> Report {
        failed(
            service,
            Error::Busy {
                what: format!("service {service}"),
                reason: "another deploy holds its lock".into(),
            },
        )
    }

    fn refused(service: &str) -> Report {
        failed(
            service,
            Error::Refused {
                image: "sha256:x".into(),
                rule: "revoked".into(),
                reason: "bad".into(),
            },
        )
    }

    fn kind_of(reports: &[Report]) -> Option<ErrorKind> {
        outcome(reports).err().map(|e| e.kind())
    }

    #[test]
    fn a_deploys_outcome_takes_its_kind_from_its_failures() {
        let ok = Report::default();
        assert_eq!(kind_of(&[]), None);
        assert_eq!(kind_of(std::slice::from_ref(&ok)), None);
        assert_eq!(
            kind_of(&[ok.clone(), busy("a"), busy("b")]),
            Some(ErrorKind::Busy)
        );
        assert_eq!(
            kind_of(&[refused("a"), ok.clone()]),
            Some(ErrorKind::Refused)
        );
        // Mixed causes, or any other cause, are a failed deploy.
        assert_eq!(
            kind_of(&[busy("a"), refused("b")]),
            Some(ErrorKind::Internal)
        );
        let quarantined = failed("a", Error::Usage("quarantined".into()));
        assert_eq!(kind_of(&[quarantined]), Some(ErrorKind::Internal));
        // Every failure is named, and the JSON form of a report keeps its
        // message as a string.
        let e = outcome(&[busy("a"), refused("b")]).unwrap_err().to_string();
        assert!(
            e.contains("service a is busy") && e.contains("policy refuses"),
            "{e}"
        );
        let json = serde_json::to_value(busy("a")).unwrap();
        assert_eq!(
            json["error"],
            "service a is busy: another deploy holds its lock"
        );
        assert!(busy("a").busy() && !refused("a").busy());
    }
}

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
//! Each service is deployed under its own lock ([`lock`]): a lease with a
//! fencing token that every write checks.

pub mod fleet;
pub mod gate;
pub mod lock;
pub mod plan;
pub mod release;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use self::gate::{Gate, Verdict};
use self::lock::Lease;
use self::plan::{Seen, Step};
use self::release::{NewRelease, Outcome, Release};
use self::spec::{ReleaseConfig, Rollout, ServiceSpec};
use crate::build::HEALTH_LABEL;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::health::HealthCheck;
use crate::instance::{self, Instance, RunOptions, State, VolumeSpec};
use crate::ledger::{self, NewEntry};
use crate::runtime;
use crate::store::Store;

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
    pub error: Option<String>,
    /// The error was another deploy holding the lock (exit code 5).
    #[serde(skip)]
    pub busy: bool,
}

/// The release content and image a service spec asks for.
fn resolve(store: &Store, spec: &ServiceSpec) -> Result<(Digest, ReleaseConfig)> {
    let image = store.resolve(&spec.image)?.digest;
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
    let volumes = spec
        .volumes
        .iter()
        .map(|v| {
            format!(
                "{}:{}{}",
                v.name,
                v.target,
                if v.read_only { ":ro" } else { "" }
            )
        })
        .collect();
    Ok((
        image,
        ReleaseConfig {
            env: spec.env.clone(),
            volumes,
            limits: spec.limits.clone(),
            cap_add: spec.cap_add.clone(),
            health,
            deadline_ms: spec.deadline_ms,
            driver: spec.driver,
        },
    ))
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

fn lock_name(service: &str) -> String {
    format!("service {service}")
}

/// Deploy every service of a fleet. Each service gets a report; a failed
/// one has `error` set (and the others still deploy).
pub fn apply(store: &mut Store, fleet: &[ServiceSpec], opts: &Options) -> Result<Vec<Report>> {
    let mut reports = Vec::new();
    for spec in fleet {
        let started = Instant::now();
        let mut report = Report {
            service: spec.name.clone(),
            ..Report::default()
        };
        let result = lock::acquire(store.db_mut(), &lock_name(&spec.name), !opts.no_wait).and_then(
            |mut lease| {
                let result = apply_service(store, spec, opts, &mut lease, &mut report);
                result.and(lease.release(store.db_mut()))
            },
        );
        report.seconds = started.elapsed().as_secs_f64();
        if let Err(e) = result {
            report.busy = matches!(e, Error::Busy { .. });
            report.error = Some(e.to_string());
        }
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
    let rollout = Rollout {
        replicas: spec.replicas,
        strategy: spec.strategy,
        ports: spec.ports.clone(),
    };
    let asked = requested(&image, &config);
    let message = opts
        .message
        .clone()
        .unwrap_or_else(|| format!("apply {}", spec.image));
    let name = spec.name.as_str();
    let mut refused = None;
    report.created = store.db_mut().write(|tx, path| {
        lease.check(tx, path)?;
        let svc = release::service(tx, path, name)?;
        let desired = svc.as_ref().and_then(|s| s.desired);
        let current = match desired {
            Some(d) => Some(release::release(tx, path, name, d)?),
            None => None,
        };
        if !needs_release(svc.as_ref(), current.as_ref(), &asked, &image, &config) {
            release::save_service(tx, path, name, &rollout, &asked, desired)?;
            return Ok(None);
        }
        if let Some((n, why)) = release::quarantined(tx, path, name, &image, &config.digest())?
            && !opts.force
        {
            refused = Some(Error::Usage(format!(
                "service {name}: image {image} with this config is quarantined: release {n} with \
                 them failed ({why}); change the image or config, or deploy it anyway with --force"
            )));
            return Ok(None);
        }
        if svc.is_none() {
            // Releases refer to their service: record it first.
            release::save_service(tx, path, name, &rollout, &asked, None)?;
        }
        let r = release::create(
            tx,
            path,
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
        release::save_service(tx, path, name, &rollout, &asked, Some(r.number))?;
        Ok(Some(r.number))
    })?;
    // Even when the fleet's request is refused, what runs is brought back
    // to the desired release (a crashed rollback leaves it half done).
    let converged = if release::service(store.db().conn(), store.db().path(), name)?.is_some() {
        converge_or_roll_back(store, name, lease, report)
    } else {
        Ok(())
    };
    match refused {
        Some(e) => Err(e),
        None => converged,
    }
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
        report.created = Some(store.db_mut().write(|tx, path| {
            lease.check(tx, path)?;
            let svc = release::service(tx, path, service)?.ok_or_else(|| Error::NotFound {
                what: format!("service {service}"),
                hint: Some("`drover status` lists services".into()),
            })?;
            let current = svc.desired.ok_or_else(|| {
                Error::Usage(format!("service {service} has no release to roll back from"))
            })?;
            let all = release::releases(tx, path, service)?;
            let target = match to {
                Some(n) => release::release(tx, path, service, n)?,
                None => all
                    .iter()
                    .rev()
                    .find(|r| r.number < current && r.outcome == Outcome::Healthy)
                    .cloned()
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
            if let Some((n, why)) =
                release::quarantined(tx, path, service, &target.image, &target.config_digest)?
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
            let r = release::create(
                tx,
                path,
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
            release::set_desired(tx, path, service, Some(r.number))?;
            Ok(r.number)
        })?);
        converge_or_roll_back(store, service, &mut lease, &mut report)
    })();
    let released = lease.release(store.db_mut());
    report.seconds = started.elapsed().as_secs_f64();
    result.and(released)?;
    Ok(report)
}

/// Why a rollout stopped.
enum Failure {
    /// A new instance failed its health gate. `unready`: the new instances
    /// that had not passed theirs (they serve nobody).
    Health {
        instance: String,
        why: String,
        unready: BTreeSet<String>,
    },
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Other(e)
    }
}

/// Converge the service to its desired release; if that fails its health
/// gate, roll back to the previous one (see the module docs).
fn converge_or_roll_back(
    store: &mut Store,
    service: &str,
    lease: &mut Lease,
    report: &mut Report,
) -> Result<()> {
    let db_path = store.db().path().to_path_buf();
    let svc = release::service(store.db().conn(), &db_path, service)?
        .ok_or_else(|| Error::not_found(format!("service {service}")))?;
    let desired = match svc.desired {
        Some(n) => Some(release::release(store.db().conn(), &db_path, service, n)?),
        None => None,
    };
    match converge(
        store,
        service,
        desired.as_ref(),
        &svc.rollout,
        lease,
        report,
        &BTreeSet::new(),
    ) {
        Ok(()) => {
            report.release = svc.desired;
            if let Some(r) = &desired {
                store.db_mut().write(|tx, path| {
                    lease.check(tx, path)?;
                    release::settle(tx, path, service, r.number, Outcome::Healthy, None)
                })?;
            }
            Ok(())
        }
        Err(Failure::Other(e)) => Err(e),
        Err(Failure::Health {
            instance,
            why,
            unready,
        }) => {
            let failed = desired.expect("only a release's instances are gated");
            let logs = keep_logs(store, service, failed.number);
            let reason = format!("instance {instance}: {why}");
            let back_to = failed.parent;
            store.db_mut().write(|tx, path| {
                lease.check(tx, path)?;
                release::settle(
                    tx,
                    path,
                    service,
                    failed.number,
                    Outcome::Failed,
                    Some(&reason),
                )?;
                release::quarantine(tx, path, &failed, &reason)?;
                release::set_desired(tx, path, service, back_to)?;
                release::forget_request(tx, path, service)?;
                ledger::append(
                    tx,
                    path,
                    NewEntry::new(
                        "service.rollback",
                        [format!("{service}#{}", failed.number)],
                        json!({"service": service, "from": failed.number, "to": back_to,
                               "automatic": true, "reason": reason}),
                    ),
                )
                .map(drop)
            })?;
            report.failed = Some(failed.number);
            let previous = match back_to {
                Some(n) => Some(release::release(store.db().conn(), &db_path, service, n)?),
                None => None,
            };
            match converge(
                store,
                service,
                previous.as_ref(),
                &svc.rollout,
                lease,
                report,
                &unready,
            ) {
                Ok(()) => report.release = back_to,
                Err(Failure::Health { instance, why, .. }) => {
                    return Err(Error::Failed(format!(
                        "service {service}: release {} failed ({reason}), and rolling back to \
                         release {} failed too: instance {instance}: {why}",
                        failed.number,
                        back_to.unwrap_or_default()
                    )));
                }
                Err(Failure::Other(e)) => return Err(e),
            }
            let back = match back_to {
                Some(n) => format!("rolled back to release {n}"),
                None => "no earlier release to roll back to; its instances were removed".into(),
            };
            Err(Error::Failed(format!(
                "service {service}: release {} failed: {reason}. {back}. Its image {} with its \
                 config is quarantined for {service} (applying it again needs --force). Logs of \
                 its instances: {}",
                failed.number,
                failed.image,
                logs.display()
            )))
        }
    }
}

/// Copy the logs of a failed release's instances to
/// `<store>/logs/<service>/release-<n>/` before they are removed.
fn keep_logs(store: &Store, service: &str, number: i64) -> PathBuf {
    let dir = store
        .root()
        .join("logs")
        .join(service)
        .join(format!("release-{number}"));
    let _ = fs::create_dir_all(&dir);
    if let Ok(all) = instance::list(store.db(), false) {
        for i in all
            .iter()
            .filter(|i| i.service.as_deref() == Some(service) && i.release == Some(number))
        {
            let log = runtime::log_path(&i.bundle(store.root()));
            let _ = fs::copy(&log, dir.join(format!("{}.log", i.id)));
        }
    }
    dir
}

/// The options an instance of `r` runs with.
fn run_options(service: &str, r: &Release) -> Result<RunOptions> {
    let volumes = r
        .config
        .volumes
        .iter()
        .map(|v| VolumeSpec::parse(v))
        .collect::<Result<_>>()?;
    Ok(RunOptions {
        env: r.config.env.clone().into_iter().collect(),
        volumes,
        limits: r.config.limits.clone(),
        cap_add: r.config.cap_add.clone(),
        driver: r.config.driver,
        service: Some(service.to_string()),
        release: Some(r.number),
        ..RunOptions::default()
    })
}

/// Move the service's instances to `desired` (none: no instances) with
/// `rollout`, step by step; see the module docs. `unready`: instances known
/// not to serve (a failed rollout's), removed before anything that does.
fn converge(
    store: &mut Store,
    service: &str,
    desired: Option<&Release>,
    rollout: &Rollout,
    lease: &mut Lease,
    report: &mut Report,
    unready: &BTreeSet<String>,
) -> std::result::Result<(), Failure> {
    let target = desired.map(|r| r.number);
    let mut gates: BTreeMap<String, Gate> = BTreeMap::new();
    let mut ready: BTreeSet<String> = BTreeSet::new();
    loop {
        lease.renew(store.db_mut())?;
        let mine: Vec<Instance> = instance::refresh(store.db_mut(), false)?
            .into_iter()
            .filter(|i| i.service.as_deref() == Some(service))
            .collect();
        // One being created (by the monitor of an `apply` that was killed)
        // is running or gone in a moment: look again then.
        if mine.iter().any(Instance::is_starting) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // Instances that are not running serve nobody: remove them. One of
        // the desired release that died while gated failed its gate.
        for i in mine.iter().filter(|i| !i.state.is_live()) {
            if i.release == target && gates.contains_key(&i.id) && !ready.contains(&i.id) {
                let exit = i.exit.map(|e| e.to_string()).unwrap_or_default();
                return Err(Failure::Health {
                    instance: i.id.clone(),
                    why: format!("its process exited ({exit}) before passing its health check"),
                    unready: unready_of(&mine.iter().collect::<Vec<_>>(), target, &ready),
                });
            }
            instance::remove(store, &i.id, true)?;
        }
        let live: Vec<&Instance> = mine.iter().filter(|i| i.state.is_live()).collect();
        let seen: Vec<Seen> = live
            .iter()
            .map(|i| Seen {
                id: i.id.clone(),
                release: i.release.unwrap_or(-1),
                ready: if i.release == target {
                    ready.contains(&i.id)
                } else {
                    i.state == State::Running && !unready.contains(&i.id)
                },
            })
            .collect();
        let step = match target {
            Some(n) => plan::next_step(n, rollout.replicas, rollout.strategy, &seen),
            None if seen.is_empty() => Step::Done,
            None => Step::Stop {
                ids: seen.iter().map(|s| s.id.clone()).collect(),
            },
        };
        if matches!(step, Step::Start { .. } | Step::Stop { .. }) {
            // Fenced: a deploy whose lease was taken over changes nothing.
            store.db_mut().write(|tx, path| lease.check(tx, path))?;
        }
        match step {
            Step::Done => return Ok(()),
            Step::Start { count } => {
                let r = desired.expect("only a release is started");
                let opts = run_options(service, r)?;
                let mut failed = None;
                for inst in instance::run_many(store, &r.image.to_string(), &opts, count)? {
                    match inst {
                        Ok(inst) => {
                            report.started += 1;
                            gates.insert(inst.id.clone(), new_gate(r, &inst));
                        }
                        // A release whose instances cannot even start has
                        // failed as surely as one that never gets healthy.
                        Err(e) => failed = Some(e),
                    }
                }
                if let Some(e) = failed {
                    let all = instance::list(store.db(), false)?;
                    let mine: Vec<&Instance> = all
                        .iter()
                        .filter(|i| i.service.as_deref() == Some(service))
                        .collect();
                    return Err(Failure::Health {
                        instance: "a new instance".into(),
                        why: format!("it could not start: {e}"),
                        unready: unready_of(&mine, target, &ready),
                    });
                }
            }
            Step::Stop { ids } => {
                instance::stop_many(store, &ids, STOP_GRACE)?;
                for id in ids {
                    instance::remove(store, &id, true)?;
                    report.stopped += 1;
                }
            }
            Step::Wait => {
                let t = Instant::now();
                let r = desired.expect("only a release's instances are waited for");
                let waiting: Vec<&&Instance> = live
                    .iter()
                    .filter(|i| i.release == target && !ready.contains(&i.id))
                    .collect();
                // Probe until one passes (the planner then has a move) or
                // 100 ms go by (then look at the processes again), rather
                // than re-observing every instance between probes.
                while t.elapsed() < Duration::from_millis(100) {
                    let mut passed = false;
                    for i in &waiting {
                        let gate = gates.entry(i.id.clone()).or_insert_with(|| new_gate(r, i));
                        let driver =
                            runtime::driver(i.driver, &instance::runtime_root(store.root()));
                        let mut exec = |args: &[String], timeout: Duration| {
                            driver.exec(&i.id, args, timeout).map_err(|e| e.to_string())
                        };
                        match gate.poll(true, &mut exec) {
                            Verdict::Healthy => passed |= ready.insert(i.id.clone()),
                            Verdict::Pending => {}
                            Verdict::Failed(why) => {
                                return Err(Failure::Health {
                                    instance: i.id.clone(),
                                    why,
                                    unready: unready_of(&live, target, &ready),
                                });
                            }
                        }
                    }
                    if passed {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                report.health_wait_seconds += t.elapsed().as_secs_f64();
            }
        }
    }
}

/// The instances of release `target` that have not passed their gate.
fn unready_of(
    list: &[&Instance],
    target: Option<i64>,
    ready: &BTreeSet<String>,
) -> BTreeSet<String> {
    list.iter()
        .filter(|i| i.release == target && !ready.contains(&i.id))
        .map(|i| i.id.clone())
        .collect()
}

fn new_gate(r: &Release, i: &Instance) -> Gate {
    Gate::new(
        r.config.health.clone(),
        Duration::from_millis(r.config.deadline_ms),
        i.port.unwrap_or(0),
    )
}

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
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub release: Option<i64>,
    pub image: Digest,
    pub state: State,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    /// `None` when the release has no health check, or the instance is of
    /// another release.
    pub healthy: Option<bool>,
}

/// Every service: current release, ready / desired, its instances (each
/// probed once).
pub fn status(store: &mut Store) -> Result<Vec<ServiceStatus>> {
    let instances = instance::refresh(store.db_mut(), false)?;
    let db = store.db();
    let mut out = Vec::new();
    for svc in release::services(db.conn(), db.path())? {
        let current = match svc.desired {
            Some(n) => Some(release::release(db.conn(), db.path(), &svc.name, n)?),
            None => None,
        };
        let mut list = Vec::new();
        let mut ready = 0;
        for i in instances
            .iter()
            .filter(|i| i.service.as_deref() == Some(svc.name.as_str()))
        {
            let mine = current.as_ref().filter(|r| i.release == Some(r.number));
            let healthy = match mine {
                Some(r) if i.state == State::Running => {
                    let driver = runtime::driver(i.driver, &instance::runtime_root(store.root()));
                    let mut exec = |args: &[String], t: Duration| {
                        driver.exec(&i.id, args, t).map_err(|e| e.to_string())
                    };
                    r.config.health.as_ref().map(|h| {
                        let timeout = Duration::from_millis(h.timeout_ms.min(1000));
                        gate::probe(&h.probe, i.port.unwrap_or(0), timeout, &mut exec).is_ok()
                    })
                }
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
                pid: i.pid,
                port: i.port,
                healthy,
            });
        }
        let quarantined = release::quarantine_list(db.conn(), db.path(), &svc.name)?;
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
        });
    }
    Ok(out)
}

/// What `apply` would do to one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    pub service: String,
    pub image_ref: String,
    pub image: Digest,
    /// The release `apply` would create, if any.
    pub new_release: Option<i64>,
    /// What differs from the running release.
    pub changes: Vec<String>,
    /// Why `apply` would refuse (a quarantined image).
    pub blocked: Option<String>,
    pub strategy: &'static str,
    pub steps: Vec<Step>,
}

/// What `apply` would do, without doing it (read-only; takes no lock).
pub fn plan(store: &mut Store, fleet: &[ServiceSpec]) -> Result<Vec<ServicePlan>> {
    let instances = instance::refresh(store.db_mut(), false)?;
    let db = store.db();
    let mut out = Vec::new();
    for spec in fleet {
        let (image, config) = resolve(store, spec)?;
        let asked = requested(&image, &config);
        let svc = release::service(db.conn(), db.path(), &spec.name)?;
        let current = match svc.as_ref().and_then(|s| s.desired) {
            Some(n) => Some(release::release(db.conn(), db.path(), &spec.name, n)?),
            None => None,
        };
        let unchanged = !needs_release(svc.as_ref(), current.as_ref(), &asked, &image, &config);
        let mut changes = Vec::new();
        let mut new_release = None;
        let mut blocked = None;
        if !unchanged {
            match &current {
                None => changes.push("new service".to_string()),
                Some(r) => {
                    if r.image != image {
                        changes.push(format!("image {} -> {}", r.image.short(), image.short()));
                    }
                    if r.config_digest != config.digest() {
                        changes.push(config_changes(&r.config, &config));
                    }
                }
            }
            new_release = Some(release::next_number(db.conn(), db.path(), &spec.name)?);
            if let Some((n, why)) =
                release::quarantined(db.conn(), db.path(), &spec.name, &image, &config.digest())?
            {
                blocked = Some(format!(
                    "this image and config are quarantined: release {n} failed ({why}); needs --force"
                ));
            }
        }
        let target = new_release.or(current.as_ref().map(|r| r.number));
        let seen: Vec<Seen> = instances
            .iter()
            .filter(|i| i.service.as_deref() == Some(spec.name.as_str()) && i.state.is_live())
            .map(|i| Seen {
                id: i.id.clone(),
                release: i.release.unwrap_or(-1),
                ready: i.state == State::Running,
            })
            .collect();
        let steps = match target {
            Some(n) => plan::simulate(n, spec.replicas, spec.strategy, &seen),
            None => vec![],
        };
        out.push(ServicePlan {
            service: spec.name.clone(),
            image_ref: spec.image.clone(),
            image,
            new_release,
            changes,
            blocked,
            strategy: spec.strategy.name(),
            steps,
        });
    }
    Ok(out)
}

/// Which parts of a release config differ, for people.
fn config_changes(a: &ReleaseConfig, b: &ReleaseConfig) -> String {
    let (a, b) = (json!(a), json!(b));
    let keys: Vec<&str> = [
        "env",
        "volumes",
        "limits",
        "cap_add",
        "health",
        "deadline_ms",
        "driver",
    ]
    .into_iter()
    .filter(|k| a[k] != b[k])
    .collect();
    format!("config: {}", keys.join(", "))
}

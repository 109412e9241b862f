//! One reconcile pass for one service: converge what runs to the desired
//! release, and roll back a rollout that fails its health gate. `apply`,
//! `rollback` and `serve` all run exactly this.
//!
//! What a pass does, each time it looks:
//! - instances whose process is gone are removed (a `service.heal` ledger
//!   entry says so) and replaced by the planner's next start;
//! - condemned instances (drift, a failing check) and drained ones count as
//!   another release's, so the service's strategy replaces them with its
//!   surge and availability bounds, exactly like a rollout;
//! - an instance that passes its gate is marked ready, and only then takes
//!   traffic; one that is to stop is drained first ([`super::traffic`]);
//! - a new instance takes the lowest replica slot no live instance of the
//!   service holds, which names its per-replica volumes, so a healed
//!   instance's replacement mounts what it did; a service with a
//!   single-writer volume rolls stop-before-start ([`plan::for_volumes`]).
//!
//! A rollout that fails (the desired release has never been healthy) is
//! rolled back; a release that *was* healthy is never rolled back by itself:
//! its failing replacements are condemned, and the pass fails so the caller
//! can back off (a crash loop, shown by `drover status`).
//!
//! A desired release whose image was revoked ([`off_revoked`]) is never
//! scaled up or healed. With the policy's `replace_revoked` (the default),
//! the pass first rolls the service back to its most recent healthy release
//! whose image is not revoked (a new release, like any rollback), and the
//! strategy then replaces the revoked instances. Without it, or with no
//! such release, the pass changes nothing and fails with
//! [`Error::Refused`] (rule `revoked`), so `serve` backs off and `status`
//! shows why; the revoked instances keep running until an operator deploys
//! another image — drover does not stop a service by itself, nor pick an
//! image nobody reviewed.
//!
//! Only revocation is checked here, every pass (one indexed lookup): a
//! release's image passed the whole policy when the release was made.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;

use super::gate::{self, Gate, Verdict, Window};
use super::hosting::{self, Hosting};
use super::lock::Lease;
use super::plan::{self, Seen, Step};
use super::release::{self, Outcome, Release};
use super::spec::Rollout;
use super::{Heal, Report, STOP_GRACE, diff, traffic};
use crate::clock;
use crate::error::{Error, Result};
use crate::instance::{self, Access, Instance, RunOptions, State, VolumeSpec};
use crate::ledger::NewEntry;
use crate::runtime;

use crate::store::Store;
use crate::trust::policy;

/// An instance that dies sooner than this after starting counts towards a
/// crash loop.
pub const MIN_UPTIME: Duration = Duration::from_secs(10);

/// Why a rollout stopped.
enum Failure {
    /// A new instance failed its health gate. `unready`: the new instances
    /// that had not passed theirs (they serve nobody).
    Health {
        instance: String,
        why: String,
        unready: BTreeSet<String>,
    },
    /// On a fleet: this host did its part of the step; the rest is other
    /// hosts' ([`hosting`]), named here.
    Elsewhere(String),
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Other(e)
    }
}

/// Converge the service to its desired release; if that fails its health
/// gate, roll back to the previous one (see the module docs).
pub(super) fn converge_or_roll_back(
    store: &mut Store,
    service: &str,
    lease: &mut Lease,
    report: &mut Report,
) -> Result<()> {
    let svc = release::service(store.db().read(), service)?
        .ok_or_else(|| Error::not_found(format!("service {service}")))?;
    let desired = match svc.desired {
        Some(n) => Some(release::release(store.db().read(), service, n)?),
        None => None,
    };
    let desired = match desired {
        Some(r) => Some(off_revoked(store, service, r, lease, report)?),
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
            report.release = desired.as_ref().map(|r| r.number);
            if let Some(r) = &desired {
                store.db_mut().write(|tx| {
                    lease.check(tx)?;
                    release::settle(tx, service, r.number, Outcome::Healthy, None)
                })?;
            }
            Ok(())
        }
        Err(Failure::Elsewhere(waiting)) => {
            report.release = desired.as_ref().map(|r| r.number);
            report.waiting = Some(waiting);
            Ok(())
        }
        Err(Failure::Other(e)) => Err(e),
        Err(Failure::Health {
            instance,
            why,
            unready,
        }) if desired
            .as_ref()
            .is_some_and(|r| r.outcome == Outcome::Healthy) =>
        {
            // A healthy release is not rolled back because a replacement
            // failed: the failing instances are replaced later, after the
            // caller's back-off.
            let r = desired.expect("checked above");
            for id in &unready {
                traffic::condemn(
                    store.db_mut(),
                    id,
                    &format!("failed its health check: {why}"),
                )?;
            }
            let logs = keep_logs(service, r.number);
            Err(Error::Failed(format!(
                "service {service}: release {} (healthy before) did not get back to {} healthy \
                 instances: instance {instance}: {why}. Logs: {}",
                r.number, svc.rollout.replicas, logs
            )))
        }
        Err(Failure::Health {
            instance,
            why,
            unready,
        }) => {
            let failed = desired.expect("only a release's instances are gated");
            let logs = keep_logs(service, failed.number);
            let reason = format!("instance {instance}: {why}");
            let back_to = failed.parent;
            store.db_mut().write(|tx| {
                lease.check(tx)?;
                release::settle(tx, service, failed.number, Outcome::Failed, Some(&reason))?;
                release::quarantine(tx, &failed, &reason)?;
                release::set_desired(tx, service, back_to)?;
                release::forget_request(tx, service)?;
                tx.record(NewEntry::new(
                    "service.rollback",
                    [format!("{service}#{}", failed.number)],
                    json!({"service": service, "from": failed.number, "to": back_to,
                               "automatic": true, "reason": reason}),
                ))
                .map(drop)
            })?;
            report.failed = Some(failed.number);
            report.rollback_reason = Some("health_check");
            let previous = match back_to {
                Some(n) => Some(release::release(store.db().read(), service, n)?),
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
                Err(Failure::Elsewhere(waiting)) => {
                    report.release = back_to;
                    report.waiting = Some(waiting);
                }
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
                failed.number, failed.image, logs
            )))
        }
    }
}

/// `desired` itself when its image is not revoked; otherwise the release
/// the service was rolled back to, or [`Error::Refused`] (see the module
/// docs).
fn off_revoked(
    store: &mut Store,
    service: &str,
    desired: Release,
    lease: &mut Lease,
    report: &mut Report,
) -> Result<Release> {
    let Some(rev) = policy::revocation_of(store, &desired.image)? else {
        return Ok(desired);
    };
    let refused = |why: String| Error::Refused {
        image: desired.image.to_string(),
        rule: "revoked".into(),
        reason: format!(
            "{}, and service {service} runs it (release {}): {why}; nothing of \
             the service is started or healed until it runs another image (`drover apply` one, \
             or `drover rollback {service} --to N`)",
            rev.describe(),
            desired.number
        ),
    };
    if !policy::load_for(store)?.replace_revoked {
        return Err(refused("replace_revoked is off".into()));
    }
    let (target, passed) = fallback(store, service, &desired, |r| {
        (r.image == desired.image).then_some("the same (revoked) image")
    })?;
    let Some(target) = target else {
        return Err(refused(format!(
            "no earlier healthy release has an image the policy allows{}",
            passed_over(&passed)
        )));
    };
    let reason = format!("image {} is revoked: {}", desired.image, rev.describe());
    // What the fleet file asks for, and how the release chosen differs.
    let svc = release::service(store.db().read(), service)?;
    let fleet = match svc.and_then(|s| s.fleet_release) {
        Some(n) => Some(release::release(store.db().read(), service, n)?),
        None => None,
    };
    let differs: Vec<String> = fleet
        .as_ref()
        .map(|f| {
            diff::content(&diff::Content::of(f), &diff::Content::of(&target))
                .iter()
                .map(ToString::to_string)
                .collect()
        })
        .unwrap_or_default();
    let extra = json!({
        "revoked": desired.image,
        "chosen": CHOICE,
        "passed_over": passed,
        "fleet_release": fleet.as_ref().map(|f| f.number),
        "differs_from_fleet": differs,
    });
    let r = store.db_mut().write(|tx| {
        lease.check(tx)?;
        fall_back(tx, service, &desired, &target, &reason, extra)
    })?;
    let fleet_note = match (&fleet, differs.is_empty()) {
        (Some(f), false) => format!(
            "; it differs from the fleet file's release {}: {}",
            f.number,
            differs.join(", ")
        ),
        _ => String::new(),
    };
    report.warnings.push(format!(
        "service {service}: {reason}: rolled back to release {}'s content as release {}          ({CHOICE}{}){fleet_note}",
        target.number,
        r.number,
        passed_over(&passed),
    ));
    Ok(r)
}

/// How [`fallback`] chooses, for people (status, ledger, README).
const CHOICE: &str = "the newest release that was healthy and stable, is not quarantined, \
                      and whose image today's policy allows";

/// A release [`fallback`] passed over, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct PassedOver {
    pub release: i64,
    pub why: String,
}

/// "; passed over release 4 (failed its rollout), …", or nothing.
fn passed_over(passed: &[PassedOver]) -> String {
    if passed.is_empty() {
        return String::new();
    }
    let each: Vec<String> = passed
        .iter()
        .map(|p| format!("release {} ({})", p.release, p.why))
        .collect();
    format!("; passed over {}", each.join(", "))
}

/// The release `service` falls back to when `from` cannot stay: the most
/// recent one that was healthy *and stable* (never found crash-looping
/// later), is not quarantined, is not `same` as `from` as the caller means
/// it (`same` says how), and whose image passes today's whole policy (it is
/// deployed without anyone asking for it, so revocation alone is not
/// enough). With it, the newer releases passed over and why.
fn fallback(
    store: &Store,
    service: &str,
    from: &Release,
    same: impl Fn(&Release) -> Option<&'static str>,
) -> Result<(Option<Release>, Vec<PassedOver>)> {
    let policy = policy::load_for(store)?;
    let db = store.db();
    let mut passed = Vec::new();
    for r in release::releases(db.read(), service)?.into_iter().rev() {
        if r.number == from.number {
            continue;
        }
        let why = match r.outcome {
            Outcome::Failed => Some("it failed its rollout".to_string()),
            Outcome::Pending => Some("it never finished its rollout".to_string()),
            Outcome::Healthy => None,
        };
        let why = match why {
            Some(w) => Some(w),
            None if r.unstable.is_some() => Some(format!(
                "it crash-looped after it was healthy: {}",
                r.unstable.as_deref().unwrap_or_default()
            )),
            None => same(&r).map(|s| format!("it has {s}")),
        };
        let why = match why {
            Some(w) => Some(w),
            None => release::quarantined(db.read(), service, &r.image, &r.config_digest)?
                .map(|(n, q)| format!("its content is quarantined since release {n}: {q}")),
        };
        let why = match why {
            Some(w) => Some(w),
            None => match policy.evaluate(store, &r.image, policy::Origin::Local)? {
                policy::Verdict::Allowed { .. } => None,
                policy::Verdict::Refused(f) => Some(format!(
                    "the policy refuses its image ({}: {})",
                    f.rule, f.reason
                )),
            },
        };
        match why {
            None => return Ok((Some(r), passed)),
            Some(why) => passed.push(PassedOver {
                release: r.number,
                why,
            }),
        }
    }
    Ok((None, passed))
}

/// Point `service` from release `from` to a new release with `target`'s
/// content, because of `reason`, with a `service.rollback` ledger entry
/// (`extra` merged into its details). The fleet's request is forgotten, so
/// applying the same file again meets `from`'s quarantine, if any.
fn fall_back(
    tx: &crate::state::Tx<'_>,
    service: &str,
    from: &Release,
    target: &Release,
    reason: &str,
    extra: serde_json::Value,
) -> Result<Release> {
    let r = release::create(
        tx,
        release::NewRelease {
            service,
            image: target.image,
            image_ref: &target.image_ref,
            config: &target.config,
            message: &format!("automatic rollback to release {}: {reason}", target.number),
            parent: Some(from.number),
            rollback_of: Some(target.number),
        },
    )?;
    release::set_desired(tx, service, Some(r.number))?;
    release::forget_request(tx, service)?;
    let mut details = json!({"service": service, "from": from.number, "to": r.number,
                             "rollback_of": target.number, "automatic": true,
                             "reason": reason});
    if let (Some(d), serde_json::Value::Object(more)) = (details.as_object_mut(), extra) {
        d.extend(more);
    }
    tx.record(NewEntry::new(
        "service.rollback",
        [format!("{service}#{}", from.number)],
        details,
    ))?;
    Ok(r)
}

/// Roll `service` back from release `number`, healthy once, because it
/// crash-loops (`why`): to the last release that was healthy and stable,
/// as a new release. `number` is marked unstable and its content
/// quarantined, as a failed rollout's is. Returns the new release and the
/// one whose content it repeats; [`Error::Failed`] when there is none to go
/// back to (the service then only backs off), and `Ok(None)` when the
/// service no longer runs `number`.
pub(super) fn revert_crash_loop(
    store: &mut Store,
    service: &str,
    number: i64,
    why: &str,
    lease: &mut Lease,
) -> Result<Option<(i64, i64)>> {
    let Some(svc) = release::service(store.db().read(), service)? else {
        return Ok(None);
    };
    if svc.desired != Some(number) {
        return Ok(None);
    }
    let from = release::release(store.db().read(), service, number)?;
    if from.outcome != Outcome::Healthy {
        // A rollout still pending fails (and rolls back) by its gate.
        return Ok(None);
    }
    let same = |r: &Release| {
        (r.image == from.image && r.config_digest == from.config_digest)
            .then_some("the same content")
    };
    let (target, passed) = fallback(store, service, &from, same)?;
    let Some(target) = target else {
        return Err(Error::Failed(format!(
            "service {service}: release {number} is in a crash loop ({why}), and no earlier \
             release was healthy and stable with other content the policy allows{}: backing \
             off; deploy a fixed release, or `drover rollback {service} --to N`",
            passed_over(&passed)
        )));
    };
    let reason = format!("crash loop: {why}");
    store
        .db_mut()
        .write(|tx| {
            lease.check(tx)?;
            if tx.mark_unstable(service, number, &reason)? {
                release::quarantine(tx, &from, &reason)?;
            }
            let extra = json!({"chosen": CHOICE, "passed_over": passed});
            let r = fall_back(tx, service, &from, &target, &reason, extra)?;
            Ok((r.number, target.number))
        })
        .map(Some)
}

/// Where the logs of release `number`'s instances are read: they are kept
/// when the instances are removed (`instance::log::keep`).
fn keep_logs(service: &str, number: i64) -> String {
    format!("`drover logs {service}@{number}`")
}

/// The options an instance of `r` runs with (its slot aside).
fn run_options(service: &str, r: &Release) -> Result<RunOptions> {
    let volumes = r
        .config
        .volumes
        .iter()
        .map(|v| VolumeSpec::parse_template(v))
        .collect::<Result<_>>()?;
    Ok(RunOptions {
        env: r.config.env.clone().into_iter().collect(),
        volumes,
        tmpfs: r.config.tmpfs.clone(),
        limits: r.config.limits.clone(),
        cap_add: r.config.cap_add.clone(),
        driver: r.config.driver,
        service: Some(service.to_string()),
        release: Some(r.number),
        userns: r.config.userns_opt_out.is_none(),
        init: r.config.init,
        logs: (!r.config.logs.is_default()).then_some(r.config.logs),
        // A program on a fixed port gets it as `$PORT` too, and the proxy
        // sends its traffic there.
        port: r.config.fixed_port(),
        ..RunOptions::default()
    })
}

/// Whether the service must roll stop-before-start: the desired release,
/// or a live instance (of any release), mounts a volume with one writer;
/// or the desired release listens on a fixed port (the old instance holds
/// it until it stops).
fn single_writer(desired: Option<&Release>, live: &[&Instance]) -> bool {
    desired.is_some_and(|r| {
        !r.config.single_writer_volumes().is_empty() || r.config.fixed_port().is_some()
    }) || live
        .iter()
        .any(|i| i.volumes.iter().any(|h| h.access == Access::Exclusive))
}

/// The release an instance counts as for the planner: its own, unless it
/// is condemned or drained — then it is in the way, like an old one.
fn counts_as(i: &Instance) -> i64 {
    if i.condemned.is_some() || i.drain_at.is_some() {
        -1
    } else {
        i.release.unwrap_or(-1)
    }
}

/// How many of a dead instance's last lines of output its heal line shows.
const HEAL_LINES: usize = 5;

/// What `serve` says of a dead instance it replaces: which, how it ended,
/// and its last lines (each cut to 200 characters), from its log.
fn heal_line(store: &Store, i: &Instance) -> Heal {
    let log = runtime::log_path(&i.bundle(store.root()));
    let last_output = instance::log::read::last_lines(&log, HEAL_LINES)
        .iter()
        .map(|l| {
            let l = l.trim();
            let mut cut: String = l.chars().take(200).collect();
            if cut.len() < l.len() {
                cut.push('…');
            }
            cut
        })
        .collect();
    Heal {
        instance: i.id.clone(),
        release: i.release,
        slot: i.slot,
        exit: i
            .exit
            .map_or("exit status unknown".into(), |e| e.to_string()),
        last_output,
    }
}

/// Remove an instance found dead, with a `service.heal` ledger entry (once,
/// even if a pass dies between the entry and the removal); its replacement
/// is the planner's next start. Returns how long it had run, if this call
/// recorded it.
fn heal(store: &mut Store, service: &str, i: &Instance) -> Result<Option<Option<Duration>>> {
    let lived = match (&i.started, &i.finished) {
        (Some(a), Some(b)) => clock::parse_rfc3339_secs(a)
            .zip(clock::parse_rfc3339_secs(b))
            .map(|(a, b)| Duration::from_secs((b - a).max(0) as u64)),
        _ => None,
    };
    let exit = i.exit.map(|e| e.to_string()).unwrap_or_default();
    let recorded = store.db_mut().write(|tx| {
        // Already recorded, or not a crash at all: a stop someone asked for
        // whose instance was not removed yet.
        let skip = tx.read().heal_recorded_or_stopped(&i.id)?;
        if skip {
            return Ok(false);
        }
        tx.record(NewEntry::new(
            "service.heal",
            [i.id.clone(), i.image.to_string()],
            json!({"service": service, "release": i.release, "instance": i.id,
                       "exit": exit, "seconds": lived.map(|d| d.as_secs())}),
        ))
        .map(|_| true)
    })?;
    instance::remove(store, &i.id, true)?;
    Ok(recorded.then_some(lived))
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
    let min_healthy = Duration::from_millis(rollout.min_healthy_ms);
    let mut gates: BTreeMap<String, Gate> = BTreeMap::new();
    // Passed their gates: in traffic.
    let mut ready: BTreeSet<String> = BTreeSet::new();
    // Of those, the ones that stayed up and passing for `min_healthy`
    // since: healthy, and what the planner counts as serving.
    let mut stable: BTreeSet<String> = BTreeSet::new();
    let mut windows: BTreeMap<String, Window> = BTreeMap::new();
    // Passed their gates, not yet marked ready in the database: written
    // with the next step's fencing check, before anything is stopped.
    let mut newly_ready: Vec<String> = Vec::new();
    loop {
        lease.renew(store.db_mut())?;
        // On a fleet: the hosts as they are now (one may have gone down
        // or be draining since the last look).
        let fleet = Hosting::load(store, service, target)?;
        let here = |i: &Instance| fleet.as_ref().is_none_or(|f| f.mine(i));
        let mine: Vec<Instance> = instance::refresh(store.db_mut(), false)?
            .into_iter()
            .filter(|i| i.service.as_deref() == Some(service))
            .collect();
        // One being created (by the monitor of an `apply` that was killed)
        // is running or gone in a moment: look again then.
        if mine.iter().any(|i| here(i) && i.is_starting()) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        // Passed its gate before (in this process or another): it serves,
        // and is healthy once its window is over.
        for i in &mine {
            // Another host's: only its row says how it is; it is healthy
            // once its window is over, which its own host watches.
            if !here(i) {
                if let Some(at) = i.ready_at
                    && i.release == target
                    && counts_as(i) != -1
                {
                    ready.insert(i.id.clone());
                    if clock::now_ms() - at >= min_healthy.as_millis() as i64 {
                        stable.insert(i.id.clone());
                    }
                }
                continue;
            }
            if let Some(at) = i.ready_at
                && i.release == target
                && counts_as(i) != -1
                && ready.insert(i.id.clone())
            {
                let ago = Duration::from_millis((clock::now_ms() - at).max(0) as u64);
                if ago >= min_healthy {
                    stable.insert(i.id.clone());
                } else {
                    let since = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
                    let r = desired.expect("a target instance has a release");
                    windows.insert(
                        i.id.clone(),
                        Window::new(r.config.health.clone(), port_of(i), since, min_healthy),
                    );
                }
            }
        }
        // Instances that are not running serve nobody: remove them. One of
        // the desired release that died while gated failed its gate; one
        // that died inside its window failed it as surely.
        // (Another host's dead instances are its own to heal.)
        for i in mine.iter().filter(|i| !i.state.is_live() && here(i)) {
            let in_window = ready.contains(&i.id) && !stable.contains(&i.id);
            let gated = gates.contains_key(&i.id) && !ready.contains(&i.id);
            if i.release == target && (gated || in_window) {
                let exit = i.exit.map(|e| e.to_string()).unwrap_or_default();
                let why = match windows.get_mut(&i.id) {
                    Some(w) if in_window => match w.poll(false, &mut |_, _| Err(String::new())) {
                        Verdict::Failed(why) => why.replacen(
                            "its process exited",
                            &format!("its process exited ({exit})"),
                            1,
                        ),
                        _ => format!("its process exited ({exit}) inside its min_healthy window"),
                    },
                    _ => format!("its process exited ({exit}) before passing its health check"),
                };
                return Err(Failure::Health {
                    instance: i.id.clone(),
                    why,
                    unready: unready_of(&mine.iter().collect::<Vec<_>>(), target, &stable),
                });
            }
            let said = heal_line(store, i);
            if let Some(lived) = heal(store, service, i)? {
                report.heals.push(said);
                report.healed += 1;
                if i.release == target {
                    report.healed_current += 1;
                }
                if lived.is_none_or(|d| d < MIN_UPTIME) {
                    report.crashed_young += 1;
                }
            }
        }
        // Counted lost (its host is down): gone; its slot is placed again.
        let live: Vec<&Instance> = mine
            .iter()
            .filter(|i| i.state.is_live() && i.lost.is_none())
            .collect();
        let seen: Vec<Seen> = live
            .iter()
            .map(|i| {
                // On a host that is down or draining: in the way, like a
                // condemned one.
                let release = match fleet.as_ref().is_some_and(|f| f.misplaced(i)) {
                    true => -1,
                    false => counts_as(i),
                };
                Seen {
                    id: i.id.clone(),
                    release,
                    ready: if release == -1 {
                        i.state == State::Running && i.ready_at.is_some() && i.drain_at.is_none()
                    } else if i.release == target {
                        stable.contains(&i.id)
                    } else {
                        i.state == State::Running && !unready.contains(&i.id)
                    },
                    slot: i.slot,
                }
            })
            .collect();
        let strategy = plan::for_volumes(rollout.strategy, single_writer(desired, &live));
        let step = match target {
            Some(n) => plan::next_step(n, rollout.replicas, strategy, &seen),
            None if seen.is_empty() => Step::Done,
            None => Step::Stop {
                ids: seen.iter().map(|s| s.id.clone()).collect(),
            },
        };
        if matches!(step, Step::Start { .. } | Step::Stop { .. }) || !newly_ready.is_empty() {
            // Fenced: a deploy whose lease was taken over changes nothing.
            store.db_mut().write(|tx| {
                lease.check(tx)?;
                traffic::mark_ready(tx, &newly_ready)
            })?;
            newly_ready.clear();
        }
        // On a fleet, this host carries out its own part of the step only.
        let mut placed_here: Option<Vec<u32>> = None;
        let step = match (&fleet, step) {
            (None, step) => step,
            (Some(_), Step::Done) => {
                retire_placements(store, service, target, &live, lease)?;
                Step::Done
            }
            (Some(f), Step::Start { count }) => {
                let slots = plan::free_slots(live.iter().map(|i| i.slot), count);
                let (local, remote) =
                    place_slots(store, service, rollout, f, target, &live, &slots, lease)?;
                match local.is_empty() {
                    false => {
                        placed_here = Some(local);
                        Step::Start { count }
                    }
                    true => {
                        local_wait_or(f, &live, target, &stable, format!("placed on {remote}"))?
                    }
                }
            }
            (Some(f), Step::Stop { ids }) => {
                let (local, remote): (Vec<String>, Vec<String>) = ids
                    .into_iter()
                    .partition(|id| live.iter().any(|i| i.id == *id && f.mine(i)));
                match local.is_empty() {
                    false => Step::Stop { ids: local },
                    true => local_wait_or(
                        f,
                        &live,
                        target,
                        &stable,
                        format!("their hosts stopping {}", hosts_of(&live, &remote)),
                    )?,
                }
            }
            (Some(f), Step::Wait) => local_wait_or(
                f,
                &live,
                target,
                &stable,
                "the health gates of instances on other hosts".into(),
            )?,
        };
        match step {
            Step::Done => return Ok(()),
            Step::Start { count } => {
                let r = desired.expect("only a release is started");
                let opts = run_options(service, r)?;
                let slots = match placed_here {
                    Some(slots) => {
                        let f = fleet.as_ref().expect("placed on a fleet");
                        hosting::ensure_image(store, &r.image, &f.me)?;
                        store.db_mut().write(|tx| {
                            lease.check(tx)?;
                            hosting::check_host(tx, &f.me, f.epoch)
                        })?;
                        slots
                    }
                    None => plan::free_slots(live.iter().map(|i| i.slot), count),
                };
                let each: Vec<RunOptions> = slots
                    .into_iter()
                    .map(|slot| RunOptions {
                        slot: Some(slot),
                        ..opts.clone()
                    })
                    .collect();
                let mut failed = None;
                for inst in instance::run_many(store, &r.image, &r.image.to_string(), &each)? {
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
                        unready: unready_of(&mine, target, &stable),
                    });
                }
            }
            Step::Stop { ids } => {
                let drain = Duration::from_millis(rollout.drain_ms);
                report.drain_wait_seconds +=
                    traffic::drain(store.db_mut(), lease, service, &ids, drain)?.as_secs_f64();
                lease.renew(store.db_mut())?;
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
                    .filter(|i| {
                        i.release == target
                            && counts_as(i) != -1
                            && !stable.contains(&i.id)
                            && here(i)
                    })
                    .collect();
                // Probe until one passes its gate (it goes into traffic at
                // once) or ends its window (the planner then has a move), or
                // 100 ms go by (then look at the processes again), rather
                // than re-observing every instance between probes.
                while t.elapsed() < Duration::from_millis(100) {
                    let mut passed = false;
                    for i in &waiting {
                        let verdict = if ready.contains(&i.id) {
                            let w = windows.entry(i.id.clone()).or_insert_with(|| {
                                Window::new(
                                    r.config.health.clone(),
                                    port_of(i),
                                    Instant::now(),
                                    min_healthy,
                                )
                            });
                            match w.poll(true, &mut gate::exec_in(store.root(), i)) {
                                Verdict::Healthy => {
                                    stable.insert(i.id.clone());
                                    passed = true;
                                    continue;
                                }
                                v => v,
                            }
                        } else {
                            let gate = gates.entry(i.id.clone()).or_insert_with(|| new_gate(r, i));
                            match gate.poll(true, &mut gate::exec_in(store.root(), i)) {
                                Verdict::Healthy => {
                                    ready.insert(i.id.clone());
                                    newly_ready.push(i.id.clone());
                                    if min_healthy.is_zero() {
                                        stable.insert(i.id.clone());
                                    } else {
                                        windows.insert(
                                            i.id.clone(),
                                            Window::new(
                                                r.config.health.clone(),
                                                port_of(i),
                                                Instant::now(),
                                                min_healthy,
                                            ),
                                        );
                                    }
                                    passed = true;
                                    continue;
                                }
                                v => v,
                            }
                        };
                        if let Verdict::Failed(why) = verdict {
                            take_probes(report, &mut gates, &mut windows);
                            return Err(Failure::Health {
                                instance: i.id.clone(),
                                why,
                                unready: unready_of(&live, target, &stable),
                            });
                        }
                    }
                    if passed {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                take_probes(report, &mut gates, &mut windows);
                report.health_wait_seconds += t.elapsed().as_secs_f64();
            }
        }
    }
}

/// Move the gates' and windows' probes into the report (serve counts them).
fn take_probes(
    report: &mut Report,
    gates: &mut BTreeMap<String, Gate>,
    windows: &mut BTreeMap<String, Window>,
) {
    for g in gates.values_mut() {
        report.gate_probes.extend(g.take_probed());
    }
    for w in windows.values_mut() {
        report.gate_probes.extend(w.take_probed());
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
        port_of(i),
    )
}

fn port_of(i: &Instance) -> u16 {
    i.port.unwrap_or(0)
}

/// On a fleet: place `slots` of release `target` (the step's new
/// instances) and record the placements under the lease. Returns the slots
/// placed on this host, and who has the others, for people.
#[allow(clippy::too_many_arguments)]
fn place_slots(
    store: &mut Store,
    service: &str,
    rollout: &Rollout,
    fleet: &Hosting,
    target: Option<i64>,
    live: &[&Instance],
    slots: &[u32],
    lease: &mut Lease,
) -> Result<(Vec<u32>, String)> {
    let Some(release) = target else {
        return Ok((Vec::new(), String::new()));
    };
    // Where the instances that stay run: the target release's (another
    // release's are on their way out, so a rollout ends spread as evenly
    // as a fresh start).
    let mut others: BTreeMap<u32, String> = live
        .iter()
        .filter(|i| i.release == target && counts_as(i) != -1 && !fleet.misplaced(i))
        .filter_map(|i| Some((i.slot?, i.host.clone().unwrap_or_else(|| fleet.me.clone()))))
        .collect();
    // And the placements other hosts have not realized yet.
    for (slot, host) in &fleet.placed {
        let held = live.iter().any(|i| i.slot == Some(*slot));
        if !held && !slots.contains(slot) {
            others.entry(*slot).or_insert_with(|| host.clone());
        }
    }
    let mut placed = Vec::new();
    for &slot in slots {
        let wanted = fleet.placed.get(&slot).map(String::as_str);
        let p = hosting::choose(
            service,
            &rollout.into(),
            &fleet.hosts,
            &others,
            slot,
            wanted,
        )?;
        others.insert(slot, p.host.clone());
        placed.push(p);
    }
    store.db_mut().write(|tx| {
        lease.check(tx)?;
        for p in &placed {
            if fleet.placed.get(&p.slot) != Some(&p.host) {
                tx.place(
                    service,
                    p.slot,
                    release,
                    &p.host,
                    lease.token,
                    p.reason.as_str(),
                )?;
            }
        }
        Ok(())
    })?;
    let local = placed
        .iter()
        .filter(|p| p.host == fleet.me)
        .map(|p| p.slot)
        .collect();
    let remote: Vec<String> = placed
        .iter()
        .filter(|p| p.host != fleet.me)
        .map(|p| format!("slot {} on host {}", p.slot, p.host))
        .collect();
    Ok((local, remote.join(", ")))
}

/// On a fleet, when the step is other hosts' to carry out: gate this
/// host's own new instances meanwhile if it has any (a [`Step::Wait`]),
/// else end the pass, waiting for `what`.
fn local_wait_or(
    fleet: &Hosting,
    live: &[&Instance],
    target: Option<i64>,
    stable: &BTreeSet<String>,
    what: String,
) -> std::result::Result<Step, Failure> {
    let gating = live.iter().any(|i| {
        fleet.mine(i) && i.release == target && counts_as(i) != -1 && !stable.contains(&i.id)
    });
    match gating {
        true => Ok(Step::Wait),
        false => Err(Failure::Elsewhere(format!("waiting for {what}"))),
    }
}

/// "instance a1b2 on host h2, …".
fn hosts_of(live: &[&Instance], ids: &[String]) -> String {
    let each: Vec<String> = ids
        .iter()
        .map(|id| {
            let host = live
                .iter()
                .find(|i| i.id == *id)
                .and_then(|i| i.host.clone())
                .unwrap_or_default();
            format!("instance {id} on host {host}")
        })
        .collect();
    each.join(", ")
}

/// On a fleet, once the service runs as wanted: retire the placements no
/// live instance of release `target` realizes (other releases', moved
/// slots').
fn retire_placements(
    store: &mut Store,
    service: &str,
    target: Option<i64>,
    live: &[&Instance],
    lease: &mut Lease,
) -> Result<()> {
    let stale: Vec<(u32, i64)> = store
        .db()
        .read()
        .placements(service)?
        .into_iter()
        .filter(|p| {
            Some(p.release) != target
                || !live.iter().any(|i| {
                    i.release == target
                        && i.slot == Some(p.slot)
                        && i.host.as_ref() == Some(&p.host)
                })
        })
        .map(|p| (p.slot, p.release))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    store.db_mut().write(|tx| {
        lease.check(tx)?;
        for (slot, release) in &stale {
            tx.retire_placement(service, *slot, *release)?;
        }
        Ok(())
    })
}

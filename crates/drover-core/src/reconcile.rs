//! The reconciler of `drover serve`: the pass `apply` runs
//! ([`deploy::reconcile`]), run forever.
//!
//! It is level-triggered: a pass looks at what is recorded and what runs,
//! never at what happened, so it does not matter who changed what — an
//! `apply` from another shell, an instance that crashed, a drift scan that
//! condemned one, or a `serve` that restarted and adopts what runs. A pass
//! runs for a service when something that matters changed (a monitor
//! recorded an exit, `apply` made a release, a drift scan condemned an
//! instance: see [`fingerprint`]), and otherwise every `interval`.
//!
//! Between passes, the instances in traffic are probed by their release's
//! health check at its interval; one that fails `retries` times in a row
//! leaves traffic at once and is replaced (`instance.unhealthy`).
//!
//! A pass that fails, or that had to replace instances which died young (a
//! crash loop), backs the service off: 1 s, 2 s, 4 s … up to `max_backoff`,
//! reset once the service stays clean for a while after its last back-off.
//! The back-off and restart count live in the database (`service_health`),
//! so `drover status` shows them. They belong to the release that should
//! run: pointing the service at another one (`apply`, `rollback`) starts
//! them afresh.
//!
//! A release that was healthy and then crash-loops — its instances restarted
//! (exited and healed, or failed their checks in traffic) `crash_loop.restarts`
//! times within `crash_loop.within`, default 3 in 5 minutes — is rolled back
//! to the last release that was healthy and stable ([`deploy::revert`]), with
//! a `service.rollback` ledger entry saying why; its content is quarantined
//! like a failed rollout's. With no such release the service keeps backing
//! off, and `status` says why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::clock;
use crate::deploy::converge::MIN_UPTIME;
use crate::deploy::release::{ServiceHealth, health};
use crate::deploy::{self, Report, gate, release, traffic};
use crate::error::Result;
use crate::instance::{self, Instance, State};
use crate::ledger::NewEntry;
use crate::state::Db;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct Options {
    /// How often a service gets a pass when nothing changed.
    pub interval: Duration,
    /// The longest back-off of a failing service.
    pub max_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// The first back-off of a failing service; each failure in a row doubles it.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// How soon to try again when a deploy holds the service's lock.
const BUSY_RETRY: Duration = Duration::from_millis(200);

/// The back-off after `failures` failures in a row.
fn backoff(failures: i64, max: Duration) -> Duration {
    let doublings = (failures - 1).clamp(0, 20) as u32;
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(max)
}

/// Record what a pass did in `service_health` (and a `service.backoff`
/// ledger entry when it backs the service off). `unhealthy`: instances of
/// the desired release taken out of traffic for failing their checks since
/// the last pass, which count as restarts like the ones healed. Returns the
/// record, and the release to roll back with why, if it crash-loops.
fn record(
    db: &mut Db,
    report: &Report,
    max: Duration,
    unhealthy: u32,
) -> Result<(ServiceHealth, Option<(i64, String)>)> {
    let svc = release::service(db.read(), &report.service)?;
    let desired = svc.as_ref().and_then(|s| s.desired);
    let mut h = health(db.read(), &report.service)?;
    if h.release != desired {
        // Another release runs: the counts were the old one's.
        h.failures = 0;
        h.backoff_until = None;
        h.recent.clear();
        h.release = desired;
    }
    h.restarts += i64::from(report.healed);
    let now = clock::now_ms();
    let restarted = report.healed_current + unhealthy;
    h.recent
        .extend(std::iter::repeat_n(now, restarted as usize));
    let mut revert = None;
    if let (Some(svc), Some(n)) = (&svc, desired) {
        let cl = svc.rollout.crash_loop;
        h.recent.retain(|t| now - t <= cl.within_ms as i64);
        if cl.enabled() && restarted > 0 && h.recent.len() >= cl.restarts as usize {
            revert = Some((
                n,
                format!(
                    "{} restarts of its instances within {}",
                    h.recent.len(),
                    crate::grammar::format_duration(cl.within_ms)
                ),
            ));
        }
    }
    let failed = match &report.error {
        // A rollout that failed and was rolled back left the service as it
        // was: nothing to back off from.
        Some(e) if report.failed.is_some() => {
            h.last_error = Some(e.to_string());
            None
        }
        Some(e) => Some(e.to_string()),
        None if report.crashed_young > 0 => Some(format!(
            "{} instance(s) exited within {} s of starting",
            report.crashed_young,
            MIN_UPTIME.as_secs()
        )),
        None => None,
    };
    // The rule serve's metrics count back-offs by.
    debug_assert_eq!(failed.is_some(), report.backs_off(), "{report:?}");
    match &failed {
        Some(why) => {
            h.failures += 1;
            h.backoff_until = Some(clock::now_ms() + backoff(h.failures, max).as_millis() as i64);
            h.last_error = Some(if report.error.is_none() && h.failures > 1 {
                format!("crash loop: {why}, {} times in a row", h.failures)
            } else {
                why.clone()
            });
        }
        // Clean: the count resets once the service has stayed clean for
        // MIN_UPTIME past its last back-off (a crash loop has clean passes
        // between its crashes).
        None if h
            .backoff_until
            .is_none_or(|t| clock::now_ms() > t + MIN_UPTIME.as_millis() as i64) =>
        {
            h.failures = 0;
            h.backoff_until = None;
        }
        None => {}
    }
    db.write(|tx| {
        tx.save_service_health(&report.service, &h)?;
        if let (Some(why), Some(until)) = (&failed, h.backoff_until) {
            tx.record(NewEntry::new(
                "service.backoff",
                [report.service.clone()],
                json!({"service": report.service, "failures": h.failures,
                           "backoff_ms": (until - clock::now_ms()).max(0),
                           "reason": why}),
            ))?;
        }
        Ok(())
    })?;
    Ok((h, revert))
}

/// What a change that calls for a pass moves: an instance's state (a
/// monitor recorded an exit), a service or its releases (`apply`,
/// `rollback`), a condemned instance (a drift scan), a revocation made or
/// lifted (`drover revoke`). Heartbeats, leases and drains do not, so they
/// cost no pass.
fn fingerprint(db: &Db) -> Result<String> {
    db.read().changes()
}

/// Runs passes when they are due; see the module docs.
pub struct Reconciler {
    opts: Options,
    /// Only this service (a reconciler per service lets one service's long
    /// rollout hold up nobody else).
    only: Option<String>,
    next: BTreeMap<String, Instant>,
    seen: Option<String>,
    /// Serving instances' health checks: failures in a row, next probe.
    watch: BTreeMap<String, (u32, Instant)>,
    /// Instances of each service's desired release taken out of traffic
    /// for failing their checks, not yet counted by a pass.
    unhealthy: BTreeMap<String, u32>,
    /// The serving instances' probes since [`Reconciler::take_probes`]
    /// (at most [`KEEP_PROBES`]: the oldest go first).
    probes: Vec<Probe>,
}

/// One probe of a serving instance's health check.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub service: String,
    pub ok: bool,
    pub took: Duration,
}

/// How many probes a reconciler keeps for [`Reconciler::take_probes`].
const KEEP_PROBES: usize = 1024;

impl Reconciler {
    /// A reconciler of every service.
    pub fn new(opts: Options) -> Self {
        Reconciler {
            opts,
            only: None,
            next: BTreeMap::new(),
            seen: None,
            watch: BTreeMap::new(),
            unhealthy: BTreeMap::new(),
            probes: Vec::new(),
        }
    }

    /// A reconciler of one service.
    pub fn for_service(opts: Options, service: &str) -> Self {
        Reconciler {
            only: Some(service.to_string()),
            ..Reconciler::new(opts)
        }
    }

    /// The serving instances' probes since the last call (serve counts
    /// them in its metrics).
    pub fn take_probes(&mut self) -> Vec<Probe> {
        std::mem::take(&mut self.probes)
    }

    /// Run every pass that is due now; returns their reports.
    pub fn round(&mut self, store: &mut Store) -> Result<Vec<Report>> {
        let now = fingerprint(store.db())?;
        let changed = self.seen.as_ref() != Some(&now);
        self.seen = Some(now);
        let services: Vec<String> = {
            let db = store.db();
            release::services(db.read())?
                .into_iter()
                .map(|s| s.name)
                .filter(|name| self.only.as_ref().is_none_or(|o| o == name))
                .collect()
        };
        let mut reports = Vec::new();
        for name in &services {
            let now = Instant::now();
            let h = {
                let db = store.db();
                health(db.read(), name)?
            };
            if h.backoff_until.is_some_and(|t| t > clock::now_ms()) {
                continue;
            }
            let due = changed || self.next.get(name).is_none_or(|t| *t <= now);
            if !due {
                continue;
            }
            let report = deploy::reconcile(store, name);
            let mut revert = None;
            let again = if report.busy() {
                BUSY_RETRY
            } else {
                let unhealthy = self.unhealthy.remove(name).unwrap_or(0);
                revert = record(store.db_mut(), &report, self.opts.max_backoff, unhealthy)?.1;
                // On a fleet, a rollout other hosts carry on is looked at
                // again soon: this host may have the next step.
                match report.waiting {
                    Some(_) => BUSY_RETRY,
                    None => self.opts.interval,
                }
            };
            self.next.insert(name.clone(), Instant::now() + again);
            reports.push(report);
            if let Some((number, why)) = revert {
                let report = deploy::revert(store, name, number, &why);
                if !report.busy() {
                    record(store.db_mut(), &report, self.opts.max_backoff, 0)?;
                }
                reports.push(report);
            }
        }
        for name in &services {
            self.watch_health(store, name)?;
        }
        // What the passes changed themselves shows as a change next round:
        // one more pass, which finds nothing to do.
        Ok(reports)
    }
}

impl Reconciler {
    /// Probe the service's serving instances by its release's health check,
    /// each at the check's interval; `retries` failures in a row take an
    /// instance out of traffic and condemn it (the next pass replaces it).
    fn watch_health(&mut self, store: &mut Store, service: &str) -> Result<()> {
        let (check, serving) = {
            let db = store.db();
            let Some(svc) = release::service(db.read(), service)? else {
                return Ok(());
            };
            let Some(n) = svc.desired else {
                return Ok(());
            };
            let r = release::release(db.read(), service, n)?;
            let Some(check) = r.config.health else {
                return Ok(());
            };
            // Another fleet host's instances are its own to probe.
            let me = instance::this_host(db);
            let serving: Vec<Instance> = instance::list(db, false)?
                .into_iter()
                .filter(|i| {
                    i.service.as_deref() == Some(service)
                        && !i.elsewhere(me.as_deref())
                        && i.lost.is_none()
                        && i.release == Some(n)
                        && i.state == State::Running
                        && i.ready_at.is_some()
                        && i.drain_at.is_none()
                        && i.condemned.is_none()
                })
                .collect();
            (check, serving)
        };
        let ids: Vec<&str> = serving.iter().map(|i| i.id.as_str()).collect();
        self.watch.retain(|id, _| ids.contains(&id.as_str()));
        let now = Instant::now();
        for i in &serving {
            let (failures, next) = self.watch.entry(i.id.clone()).or_insert((0, now));
            if *next > now {
                continue;
            }
            *next = now + Duration::from_millis(check.interval_ms.max(100));
            let timeout = Duration::from_millis(check.timeout_ms.max(1));
            let began = Instant::now();
            let probed = gate::probe_instance(store.root(), i, &check.probe, timeout);
            if self.probes.len() >= KEEP_PROBES {
                self.probes.remove(0);
            }
            self.probes.push(Probe {
                service: service.to_string(),
                ok: probed.is_ok(),
                took: began.elapsed(),
            });
            match probed {
                Ok(()) => *failures = 0,
                Err(e) => {
                    *failures += 1;
                    if *failures >= check.retries.max(1) {
                        let why = format!(
                            "{} failed {} time(s) in a row: {e}",
                            gate::describe(&check, i.port.unwrap_or(0)),
                            failures
                        );
                        traffic::fail(store.db_mut(), &i.id, service, &why)?;
                        *self.unhealthy.entry(service.to_string()).or_default() += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::pgtest::{self, backends};

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let max = Duration::from_secs(60);
        let got: Vec<u64> = (1..=9).map(|f| backoff(f, max).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(1000, max), max);
    }

    backends! {
    fn failures_back_off_and_a_clean_pass_resets() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = pgtest::open(&dir.path().join("state.db")).unwrap();
        let max = Duration::from_secs(60);
        let young = Report {
            service: "web".into(),
            healed: 1,
            crashed_young: 1,
            ..Report::default()
        };
        let h = record(&mut db, &young, max, 0).unwrap().0;
        assert_eq!((h.restarts, h.failures), (1, 1));
        assert!(
            h.last_error
                .as_deref()
                .unwrap()
                .contains("exited within 10 s")
        );
        let until = h.backoff_until.unwrap() - clock::now_ms();
        assert!((500..=1000).contains(&until), "{until}");
        let h = record(&mut db, &young, max, 0).unwrap().0;
        assert_eq!(h.failures, 2);
        assert!(h.last_error.as_deref().unwrap().starts_with("crash loop"));
        assert!(h.backoff_until.unwrap() - clock::now_ms() > 1500);
        let clean = Report {
            service: "web".into(),
            ..Report::default()
        };
        let h = record(&mut db, &clean, max, 0).unwrap().0;
        assert_eq!(
            h.failures, 2,
            "a clean pass right after a crash is no recovery"
        );
        db.write(|tx| {
            tx.sql()
                .execute("UPDATE service_health SET backoff_until = 0", ())
                .unwrap();
            Ok(())
        })
        .unwrap();
        let h = record(&mut db, &clean, max, 0).unwrap().0;
        assert_eq!((h.restarts, h.failures, h.backoff_until), (2, 0, None));
        assert_eq!(health(db.read(), "web").unwrap(), h);
        let entries: i64 = db
            .sql()
            .query_row(
                "SELECT count(*) FROM ledger WHERE action = 'service.backoff'",
                (),
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(entries, 2);
    }
    }
}

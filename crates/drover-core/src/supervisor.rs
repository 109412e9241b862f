//! What `drover serve` runs until it is told to stop: the reconcilers, the
//! traffic thread that keeps the proxies in step with the database, and the
//! drift scanner; each on a plain thread of its own.
//!
//! ```text
//!  reconcile threads  reconcile::Reconciler, one per service: a deploy pass
//!                     when the database changed or `interval` passed (self-
//!                     healing, rollouts recorded by `apply --detach`,
//!                     condemned instances); one service's long rollout holds
//!                     up no other
//!  traffic thread     every 50 ms: the services' ports → the proxies'
//!                     listeners; routable instances (on a fleet: every
//!                     host's, local first) → each service's routes;
//!                     drains acknowledged (on a fleet: by this host); a
//!                     heartbeat so deploys wait for drains; serve's lock
//!                     renewed
//!  drift thread       every `drift_interval`: scan instances (budgeted);
//!                     condemn the drifted ones (the reconciler replaces them)
//! ```
//!
//! Everything the threads share goes through the state database, so a
//! restarted `serve` (or an `apply` from a shell meanwhile) picks up exactly
//! where things are. Stopping `serve` stops nothing that runs: instances
//! keep running, and the next `serve` adopts them.
//!
//! **The proxies are not here.** They are async (hyper, tokio) and live in
//! the `drover-proxy` crate, which knows nothing of the database; this crate
//! stays free of async. The traffic thread drives them through the
//! [`Proxies`] trait, in plain data: which ports each service wants
//! ([`Listen`]), which instances each may route to ([`Backend`]), and back
//! how many requests an instance still has in flight. The binary implements
//! the trait over `drover_proxy::Proxies`, and owns the runtime and the
//! signal handling; a stop flag ([`Supervisor::stopping`],
//! [`Supervisor::stop`]) is all that crosses the other way. What the threads
//! do is logged as `tracing` events with the service, instance and release
//! as fields (the binary installs the subscriber that prints them), and
//! counted in [`Options::metrics`] (each pass's report and each drift scan,
//! in one place each: [`Metrics::pass`], [`Metrics::drift_scan`]).
//!
//! **Restarts refuse nothing.** A new serve takes over from a running one
//! ([`handover`]): it receives the listening sockets, accepts on them and
//! routes as the database says while it waits for serve's lock
//! ([`wait_for_lock`]); the old one, told so, stops ([`Supervisor::hand_over`]):
//! its reconcilers first, then its listeners, finishing what is in flight
//! without acknowledging drains (its successor does, once it holds the
//! lock). Under systemd the sockets also go to its fd store ([`systemd`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::deploy::spec::ProxyMode;
use crate::deploy::{lock, release, traffic};
use crate::drift;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::reconcile::{self, Reconciler};
use crate::store::Store;
use tracing::{debug, error, info, warn};

pub mod handover;
pub mod systemd;

/// How often the traffic thread syncs routes with the database.
const SYNC: Duration = Duration::from_millis(50);
/// How often the proxy heartbeat is written.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The lock that makes `serve` one per store; on a store joined to a fleet
/// (whose state others share), one per host: [`serve_lock`].
const SERVE_LOCK: &str = "serve";
/// How often the reconciler looks for changes made by others.
const POLL: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct Options {
    /// The store directory; each thread opens the store itself.
    pub store: PathBuf,
    pub reconcile: reconcile::Options,
    /// How often instances are scanned for drift (`None`: never).
    pub drift_interval: Option<Duration>,
    pub drift_budget: drift::Budget,
    /// Where the threads count what they do (heals, rollouts, drift scans).
    pub metrics: Arc<Metrics>,
}

/// What one service wants of its proxy: its ports, and what they speak.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    pub ports: Vec<u16>,
    pub mode: ProxyMode,
}

/// One place a service's traffic may go: an instance, by id, and where it
/// listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    /// It runs on this host: the proxy prefers such backends, and sends a
    /// service's requests to other hosts' instances only while it has none
    /// it can reach ([`traffic::routes`]).
    pub local: bool,
}

/// The proxies the traffic thread drives. Every call returns at once.
pub trait Proxies {
    /// Open and close listeners as `wanted` says (service → ports). A
    /// service missing from it, or whose mode changed, loses its listeners.
    fn listen(&mut self, wanted: &BTreeMap<String, Listen>);
    /// Replace each proxied service's routable backends; a service missing
    /// from `routes` gets none. When this returns, no new request goes to a
    /// backend left out.
    fn route(&mut self, routes: BTreeMap<String, Vec<Backend>>);
    /// The services with listeners (still finishing requests after
    /// [`Proxies::stop_accepting`] counts), by name.
    fn listening(&self) -> Vec<String>;
    /// Requests or connections of `service` in flight to instance `id`.
    fn in_flight(&self, service: &str, id: &str) -> usize;
    /// Stop accepting; let what is in flight finish.
    fn stop_accepting(&mut self);
    /// Whether anything is in flight anywhere.
    fn busy(&self) -> bool;
}

/// The name of serve's lock: `serve`, or `serve:HOST` for the serve that
/// joins (or joined) the fleet as `host` — the hosts of a fleet share one
/// database, and each runs its own serve.
fn serve_lock(host: Option<&str>) -> String {
    match host {
        Some(host) => format!("{SERVE_LOCK}:{host}"),
        None => SERVE_LOCK.to_string(),
    }
}

/// serve's lock for the store as it stands: per host once it joined.
fn serve_lock_of(store: &Store) -> String {
    let host = crate::state::hosts::local_host(store.root()).map(|(name, _)| name);
    serve_lock(host.as_deref())
}

/// Take the lock that makes `serve` one per store (`dir`, as the user
/// named it), or one per `host` when it joins a fleet: two would scan,
/// taint and proxy against each other. Hand it to [`start`].
pub fn lock(store: &mut Store, dir: &Path, host: Option<&str>) -> Result<lock::Lease> {
    lock::acquire(store.db_mut(), &serve_lock(host), false).map_err(|e| match e {
        Error::Busy { reason, .. } => Error::Busy {
            what: format!("store {}", dir.display()),
            reason: format!(
                "another `drover serve` runs for it: {}",
                reason
                    .replace("another deploy holds its lock: ", "")
                    .replace("; wait for it, or leave out --no-wait to queue", "")
            ) + "; to replace it without refusing a connection, run `drover serve --takeover` \
                 (or send it SIGHUP)",
        },
        e => e,
    })
}

/// Before holding serve's lock: keep `proxies` listening and routing as
/// the database says, acknowledging no drain (the lock's holder does),
/// until the lock is free — its holder handed over and stopped — for at
/// most `wait`. `primed` is called once, after the first sync: the proxies
/// then accept on every port with the routes in place.
pub fn wait_for_lock(
    store: &mut Store,
    dir: &Path,
    host: Option<&str>,
    proxies: &mut impl Proxies,
    primed: impl FnOnce(),
    wait: Duration,
) -> Result<lock::Lease> {
    let services = release::services(store.db().read())?;
    let mut by_service = routes_of(store)?;
    proxies.route(by_service);
    proxies.listen(&wanted(&services));
    primed();
    let deadline = Instant::now() + wait;
    loop {
        match lock(store, dir, host) {
            Err(Error::Busy { .. }) if Instant::now() < deadline => {}
            other => return other,
        }
        thread::sleep(SYNC);
        let services = release::services(store.db().read())?;
        by_service = routes_of(store)?;
        proxies.route(by_service);
        proxies.listen(&wanted(&services));
    }
}

/// The pid of the `drover serve` that holds the store's lock, if one does
/// and it runs on this host.
pub fn serve_pid(store: &mut Store) -> Result<Option<u32>> {
    let name = serve_lock_of(store);
    let holder = lock::holder(store.db_mut(), &name)?;
    Ok(holder.and_then(|h| {
        let words: Vec<&str> = h.split_whitespace().collect();
        let i = words.iter().position(|w| *w == "pid")?;
        words.get(i + 1)?.parse().ok()
    }))
}

/// Whether a `drover serve` runs for this store (holds its lock): what
/// `apply --detach` records is rolled out only while one does.
pub fn running(store: &mut Store) -> Result<bool> {
    let name = serve_lock_of(store);
    Ok(lock::holder(store.db_mut(), &name)?.is_some())
}

/// The running threads.
pub struct Supervisor {
    /// The reconciler and drift scans end.
    stop: Arc<AtomicBool>,
    /// Then the proxies.
    quiet: Arc<AtomicBool>,
    /// A successor acknowledges drains from here on.
    handed: Arc<AtomicBool>,
    reconciler: thread::JoinHandle<()>,
    traffic: thread::JoinHandle<()>,
    drift: Option<io::Result<thread::JoinHandle<()>>>,
}

/// Start the threads. `lease` is serve's lock ([`lock`]): the traffic
/// thread renews it, and stops everything if it is lost.
pub fn start(
    opts: Options,
    lease: lock::Lease,
    proxies: impl Proxies + Send + 'static,
) -> io::Result<Supervisor> {
    let stop = Arc::new(AtomicBool::new(false));
    let quiet = Arc::new(AtomicBool::new(false));
    let handed = Arc::new(AtomicBool::new(false));
    let reconciler = {
        let (stop, store, ropts, metrics) = (
            stop.clone(),
            opts.store.clone(),
            opts.reconcile.clone(),
            opts.metrics.clone(),
        );
        thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || reconcile_loop(&store, ropts, &stop, &metrics))?
    };
    let traffic = {
        let (stop, quiet, store) = (stop.clone(), quiet.clone(), opts.store.clone());
        let handed = handed.clone();
        thread::Builder::new()
            .name("traffic".into())
            .spawn(move || {
                let flags = Flags {
                    stop: &stop,
                    quiet: &quiet,
                    handed: &handed,
                };
                traffic_loop(&store, proxies, lease, flags)
            })?
    };
    let drift = opts.drift_interval.map(|every| {
        let (stop, store, budget, metrics) = (
            stop.clone(),
            opts.store.clone(),
            opts.drift_budget.clone(),
            opts.metrics.clone(),
        );
        thread::Builder::new()
            .name("drift".into())
            .spawn(move || drift_loop(&store, every, &budget, &stop, &metrics))
    });
    Ok(Supervisor {
        stop,
        quiet,
        handed,
        reconciler,
        traffic,
        drift,
    })
}

impl Supervisor {
    /// Whether the threads are stopping on their own (serve lost its lock).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stop, in order, and return when the proxies are done (within about
    /// 7 s): first the work that stops instances, while the proxies still
    /// carry traffic and acknowledge drains — a pass in progress is safe to
    /// abandon (the next serve or apply carries on), but gets a moment to
    /// end; then the proxies, which stop accepting and let requests finish.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wind_down();
    }

    /// Stop for a successor that already accepts on the same sockets: as
    /// [`Supervisor::stop`], but drains are left to the successor to
    /// acknowledge (it may still have requests in flight to an instance
    /// this one is done with).
    pub fn hand_over(self) {
        self.handed.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        self.wind_down();
    }

    fn wind_down(self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.reconciler.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if let Some(Ok(d)) = self.drift
            && d.is_finished()
        {
            let _ = d.join();
        }
        self.quiet.store(true, Ordering::SeqCst);
        let _ = self.traffic.join();
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        thread::sleep(d.min(Duration::from_millis(50)));
    }
}

/// One reconciler thread per service, started as services appear; each
/// ends when its service is gone or serve stops.
fn reconcile_loop(
    store: &Path,
    opts: reconcile::Options,
    stop: &Arc<AtomicBool>,
    metrics: &Arc<Metrics>,
) {
    let db = match Store::open_unleased(store) {
        Ok(s) => s,
        Err(e) => return error!(error = %e, "the reconcilers cannot open the store"),
    };
    // On PostgreSQL, one listener per process keeps the change generation
    // every reconciler reads (state/notify.rs) instead of polling the
    // server; the services are re-read only when it moves.
    let changes = match db.db().location() {
        crate::state::Location::Postgres { url, .. } => crate::state::notify::listen(url),
        crate::state::Location::Sqlite(_) => None,
    };
    let mut seen = None;
    let mut workers: BTreeMap<String, thread::JoinHandle<()>> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        if let Some(c) = &changes {
            let now = Some(c.generation());
            if now == seen && workers.values().all(|w| !w.is_finished()) {
                sleep_unless(stop, POLL);
                continue;
            }
            seen = now;
        }
        match release::services(db.db().read()) {
            Ok(services) => {
                workers.retain(|_, w| !w.is_finished());
                for svc in services {
                    if workers.contains_key(&svc.name) {
                        continue;
                    }
                    let (store, opts, stop, name, metrics) = (
                        store.to_path_buf(),
                        opts.clone(),
                        stop.clone(),
                        svc.name.clone(),
                        metrics.clone(),
                    );
                    match thread::Builder::new()
                        .name(format!("reconcile {name}"))
                        .spawn(move || reconcile_service(&store, opts, &name, &stop, &metrics))
                    {
                        Ok(w) => {
                            debug!(service = %svc.name, "reconciler started");
                            workers.insert(svc.name, w);
                        }
                        Err(e) => error!(
                            service = %svc.name,
                            error = %e,
                            "cannot start the service's reconciler thread"
                        ),
                    }
                }
            }
            // The traffic thread says once that the database is out of reach.
            Err(e) if crate::state::is_unreachable(&e) => {
                debug!(error = %e, "cannot read the services")
            }
            Err(e) => warn!(error = %e, "cannot read the services"),
        }
        sleep_unless(stop, POLL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while workers.values().any(|w| !w.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}

fn reconcile_service(
    store: &Path,
    opts: reconcile::Options,
    service: &str,
    stop: &AtomicBool,
    metrics: &Metrics,
) {
    let mut store = match Store::open_unleased(store) {
        Ok(s) => s,
        Err(e) => return error!(%service, error = %e, "the reconciler cannot open the store"),
    };
    let mut r = Reconciler::for_service(opts, service);
    // The release the last pass left running: a pass that ends on another
    // one rolled it out. At the start, the release of the instances running
    // now, so a serve restarted beside them (that may scale them up) counts
    // no rollout.
    let mut running = running_release(&store, service);
    while !stop.load(Ordering::SeqCst) {
        let round = r.round(&mut store);
        for p in r.take_probes() {
            metrics.health_probe(&p.service, p.ok, p.took);
        }
        match round {
            Ok(reports) if reports.is_empty() && !service_exists(&store, service) => {
                return debug!(%service, "service removed; its reconciler ends");
            }
            Ok(reports) => {
                for rep in reports {
                    metrics.pass(&rep, running);
                    if !rep.busy() && rep.release.is_some() {
                        running = rep.release;
                    }
                    log_pass(&rep);
                }
            }
            Err(e) => {
                warn!(%service, error = %e, "the reconciler's pass failed");
                sleep_unless(stop, Duration::from_secs(1));
            }
        }
        sleep_unless(stop, POLL);
    }
}

/// The newest release of `service` with a running instance, if any.
fn running_release(store: &Store, service: &str) -> Option<i64> {
    let db = store.db();
    let rows = db.read().instances(false).ok()?;
    rows.iter()
        .filter(|i| i.service.as_deref() == Some(service) && i.state == "running")
        .filter_map(|i| i.release)
        .max()
}

/// What one pass did, as events: its warnings, each instance it healed, its
/// failure, or what it started and stopped. A pass that did nothing, or
/// found the service's lock held, says so only at trace level.
fn log_pass(rep: &crate::deploy::Report) {
    let service = rep.service.as_str();
    for w in &rep.warnings {
        warn!(%service, release = rep.release, "{w}");
    }
    for h in &rep.heals {
        warn!(
            %service,
            instance = %h.instance,
            release = h.release,
            slot = h.slot,
            exit = %h.exit,
            "{h}"
        );
    }
    let did = rep.started + rep.stopped + rep.healed > 0;
    match &rep.error {
        Some(e) if rep.busy() => tracing::trace!(%service, reason = %e, "pass skipped"),
        Some(e) => warn!(
            %service,
            release = rep.release,
            failed_release = rep.failed,
            "{e}"
        ),
        None if did => info!(
            %service,
            release = rep.release,
            started = rep.started,
            stopped = rep.stopped,
            replaced = rep.healed,
            seconds = (rep.seconds * 100.0).round() / 100.0,
            "instances started or stopped"
        ),
        None => tracing::trace!(%service, release = rep.release, "pass: nothing to do"),
    }
}

fn service_exists(store: &Store, service: &str) -> bool {
    let db = store.db();
    release::service(db.read(), service).is_ok_and(|s| s.is_some_and(|s| s.removed.is_none()))
}

/// The traffic thread's flags: stop the reconcilers; stop the proxies;
/// a successor took over.
struct Flags<'a> {
    stop: &'a AtomicBool,
    quiet: &'a AtomicBool,
    handed: &'a AtomicBool,
}

fn traffic_loop(store: &Path, mut proxies: impl Proxies, mut lease: lock::Lease, flags: Flags<'_>) {
    let Flags {
        stop,
        quiet,
        handed,
    } = flags;
    let mut store = match Store::open_unleased(store) {
        Ok(s) => s,
        Err(e) => return error!(error = %e, "the traffic thread cannot open the store"),
    };
    let holder = lock::me();
    let mut last_beat = Instant::now() - HEARTBEAT;
    let mut closing: Option<Instant> = None;
    let mut out_of_reach = false;
    loop {
        match lease.renew(store.db_mut()) {
            Ok(()) => {}
            // Nobody can take the lock meanwhile without the database
            // either; once it answers, a lock lost by then stops us.
            Err(e) if crate::state::is_unreachable(&e) => out_of_reach_once(&mut out_of_reach, &e),
            Err(e) => {
                error!(error = %e, "serve lost its lock; stopping");
                stop.store(true, Ordering::SeqCst);
                quiet.store(true, Ordering::SeqCst);
            }
        }
        if quiet.load(Ordering::SeqCst) && closing.is_none() {
            // Stop accepting; keep syncing (drains are still acknowledged)
            // until what is in flight is done, for at most 5 s.
            proxies.stop_accepting();
            closing = Some(Instant::now());
        }
        if let Some(t) = closing
            && (!proxies.busy() || t.elapsed() > Duration::from_secs(5))
        {
            break;
        }
        let ack = !handed.load(Ordering::SeqCst);
        match sync(&mut store, &mut proxies, closing.is_none(), ack) {
            // (A renewal may not touch the database; a sync always does.)
            Ok(()) if std::mem::take(&mut out_of_reach) => {
                info!("the state database answers again");
            }
            Ok(()) => {}
            Err(e) if crate::state::is_unreachable(&e) => out_of_reach_once(&mut out_of_reach, &e),
            Err(e) => warn!(error = %e, "cannot bring the proxies in line with the database"),
        }
        // Deploys wait for the drains of services with a live proxy.
        if last_beat.elapsed() >= HEARTBEAT {
            let names: Vec<String> = proxies.listening();
            match traffic::heartbeat(store.db_mut(), &names, &holder) {
                Err(e) if crate::state::is_unreachable(&e) => {
                    out_of_reach_once(&mut out_of_reach, &e)
                }
                Err(e) => warn!(error = %e, "cannot write the proxies' heartbeat"),
                Ok(()) => {}
            }
            last_beat = Instant::now();
        }
        thread::sleep(SYNC);
    }
    // Deploys no longer wait for this serve's drains.
    let _ = traffic::unregister(store.db_mut(), &holder);
    let _ = lease.release(store.db_mut());
}

/// Say once (per outage) that the state database is out of reach, and what
/// serve does meanwhile.
fn out_of_reach_once(said: &mut bool, e: &crate::error::Error) {
    if !std::mem::replace(said, true) {
        warn!(
            error = %e,
            "the state database is out of reach: serving on with the routes it last gave and \
             changing nothing until it answers"
        );
    }
}

/// Routes first, then listeners: a listener opened now accepts only once
/// its service has somewhere to send requests.
fn sync(store: &mut Store, proxies: &mut impl Proxies, listen: bool, ack: bool) -> Result<()> {
    let services = {
        let db = store.db();
        release::services(db.read())?
    };
    route(store, proxies, ack)?;
    if listen {
        proxies.listen(&wanted(&services));
    }
    Ok(())
}

/// What the services' ports and modes ask of the proxies. `plan` and
/// `apply` refuse a port another service holds; should two recorded
/// services claim one anyway (applied before that check, or racing), the
/// first by name keeps it, rather than both fighting over the socket.
fn wanted(services: &[release::Service]) -> BTreeMap<String, Listen> {
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for s in services {
        let ports: Vec<u16> = s
            .rollout
            .ports
            .iter()
            .copied()
            .filter(|p| taken.insert(*p))
            .collect();
        if !ports.is_empty() {
            out.insert(
                s.name.clone(),
                Listen {
                    ports,
                    mode: s.rollout.proxy,
                },
            );
        }
    }
    out
}

/// The routable instances, as recorded, by service: on a fleet, every
/// host's, each where this host reaches it.
fn routes_of(store: &Store) -> Result<BTreeMap<String, Vec<Backend>>> {
    let mut by_service: BTreeMap<String, Vec<Backend>> = BTreeMap::new();
    for r in traffic::routes(store.db())? {
        by_service.entry(r.service).or_default().push(Backend {
            id: r.instance,
            addr: r.addr,
            local: r.local,
        });
    }
    Ok(by_service)
}

/// Give each proxy the routable instances, as recorded, and (with `ack`)
/// acknowledge the drains that are done.
fn route(store: &mut Store, proxies: &mut impl Proxies, ack: bool) -> Result<()> {
    let by_service = routes_of(store)?;
    let routed: BTreeSet<String> = by_service
        .values()
        .flatten()
        .map(|b| b.id.clone())
        .collect();
    proxies.route(by_service);
    if !ack {
        return Ok(());
    }
    // Drains: an instance of a service this process proxies, out of the
    // routes just installed (a drain that began after they were read waits
    // for the next sync), with nothing in flight, is done.
    let listening = proxies.listening();
    for (service, id) in traffic::draining(store.db())? {
        if !listening.contains(&service) {
            continue;
        }
        if !routed.contains(&id) && proxies.in_flight(&service, &id) == 0 {
            traffic::ack_drained(store.db_mut(), &id)?;
        }
    }
    Ok(())
}

fn drift_loop(
    store: &Path,
    every: Duration,
    budget: &drift::Budget,
    stop: &AtomicBool,
    metrics: &Metrics,
) {
    let mut store = match Store::open_unleased(store) {
        Ok(s) => s,
        Err(e) => return error!(error = %e, "the drift scanner cannot open the store"),
    };
    while !stop.load(Ordering::SeqCst) {
        let began = Instant::now();
        let swept = drift::sweep(
            &mut store,
            &drift::Target::All,
            budget,
            drift::Remedy::Replace,
        );
        let drifted = swept.as_ref().ok().map(|found| {
            found
                .instances
                .iter()
                .filter(|d| !d.findings.is_empty())
                .count()
        });
        metrics.drift_scan(began.elapsed(), drifted);
        match swept {
            Ok(found) => {
                debug!(
                    instances = found.instances.len(),
                    drifted = drifted.unwrap_or(0),
                    seconds = (began.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                    "drift scan done"
                );
                for d in found.instances.iter().filter(|d| !d.findings.is_empty()) {
                    warn!(
                        service = %d.service.as_deref().unwrap_or("-"),
                        instance = %d.instance,
                        findings = d.findings.len(),
                        first = %d.findings[0],
                        "instance {} drifted: {} finding(s), first {}; replacing it",
                        d.instance,
                        d.findings.len(),
                        d.findings[0]
                    );
                }
            }
            Err(e) => warn!(error = %e, "drift scan failed"),
        }
        sleep_unless(stop, every);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Proxies that only keep a diary, and are busy until told otherwise.
    #[derive(Clone, Default)]
    struct Fake {
        diary: Arc<Mutex<Vec<String>>>,
        busy: Arc<AtomicBool>,
        /// The services it says it listens for.
        listening: Vec<String>,
        /// The last routes it was given.
        routes: Arc<Mutex<BTreeMap<String, Vec<Backend>>>>,
    }

    impl Fake {
        fn wrote(&self, what: &str) -> bool {
            self.diary.lock().unwrap().iter().any(|l| l == what)
        }
    }

    impl Proxies for Fake {
        fn listen(&mut self, wanted: &BTreeMap<String, Listen>) {
            let names: Vec<&String> = wanted.keys().collect();
            self.diary.lock().unwrap().push(format!("listen {names:?}"));
        }
        fn route(&mut self, routes: BTreeMap<String, Vec<Backend>>) {
            let names: Vec<&String> = routes.keys().collect();
            self.diary.lock().unwrap().push(format!("route {names:?}"));
            *self.routes.lock().unwrap() = routes;
        }
        fn listening(&self) -> Vec<String> {
            self.listening.clone()
        }
        fn in_flight(&self, _: &str, _: &str) -> usize {
            0
        }
        fn stop_accepting(&mut self) {
            self.diary.lock().unwrap().push("stop accepting".into());
        }
        fn busy(&self) -> bool {
            self.busy.load(Ordering::SeqCst)
        }
    }

    fn options(dir: &Path) -> Options {
        Options {
            store: dir.to_path_buf(),
            reconcile: reconcile::Options::default(),
            drift_interval: None,
            drift_budget: drift::Budget {
                threads: 1,
                bytes_per_sec: None,
                low_priority: false,
            },
            metrics: Arc::new(Metrics::new(None)),
        }
    }

    /// Regression: two recorded services on one port made serve log
    /// "Address already in use" forever; the first by name keeps it.
    #[test]
    fn a_port_claimed_twice_goes_to_one_service() {
        let svc = |name: &str, ports: Vec<u16>| release::Service {
            name: name.into(),
            // As stored: fields added to Rollout later take their defaults.
            rollout: serde_json::from_value(serde_json::json!({
                "replicas": 1, "strategy": {"kind": "recreate"}, "ports": ports,
            }))
            .unwrap(),
            requested: crate::Digest::of(b""),
            desired: None,
            fleet_release: None,
            removed: None,
            created: String::new(),
            updated: String::new(),
        };
        let w = wanted(&[svc("api", vec![8080, 8081]), svc("web", vec![8080, 9090])]);
        assert_eq!(w["api"].ports, [8080, 8081]);
        assert_eq!(w["web"].ports, [9090]);
        let w = wanted(&[svc("api", vec![8080]), svc("web", vec![8080])]);
        assert!(!w.contains_key("web"), "{w:?}");
    }

    #[test]
    fn one_serve_per_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let _lease = lock(&mut store, dir.path(), None).unwrap();
        let mut other = Store::open(dir.path()).unwrap();
        let e = lock(&mut other, dir.path(), None).unwrap_err();
        assert!(
            e.to_string().contains("another `drover serve` runs for it"),
            "{e}"
        );
    }

    /// The hosts of a fleet share one database: each host's serve holds
    /// its own lock, and a second serve for one host is still refused.
    #[test]
    fn one_serve_per_host_of_a_fleet() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let _h1 = lock(&mut store, dir.path(), Some("h1")).unwrap();
        let mut other = Store::open(dir.path()).unwrap();
        let _h2 = lock(&mut other, dir.path(), Some("h2")).unwrap();
        let e = lock(&mut other, dir.path(), Some("h1")).unwrap_err();
        assert!(
            e.to_string().contains("another `drover serve` runs for it"),
            "{e}"
        );
    }

    /// The proxies are told to stop accepting only after the reconciler
    /// stopped, and `stop` waits for what they have in flight; then the
    /// store is free for the next serve.
    #[test]
    fn stop_lets_the_proxies_finish_then_frees_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let lease = lock(&mut store, dir.path(), None).unwrap();
        let fake = Fake::default();
        fake.busy.store(true, Ordering::SeqCst);
        let running = start(options(dir.path()), lease, fake.clone()).unwrap();
        let t0 = Instant::now();
        while !fake.wrote("route []") && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(fake.wrote("listen []"), "{:?}", fake.diary.lock().unwrap());
        assert!(fake.wrote("route []"), "{:?}", fake.diary.lock().unwrap());
        assert!(!running.stopping());

        let stopping = thread::spawn(move || running.stop());
        while !fake.wrote("stop accepting") {
            assert!(t0.elapsed() < Duration::from_secs(10), "never told to stop");
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(Duration::from_millis(200));
        assert!(!stopping.is_finished(), "stop did not wait for the proxies");
        fake.busy.store(false, Ordering::SeqCst);
        stopping.join().unwrap();
        let diary = fake.diary.lock().unwrap();
        let told = diary.iter().filter(|l| *l == "stop accepting").count();
        assert_eq!(told, 1, "{diary:?}");
        // While closing, routes are still synced but no listener opened.
        let after = diary.iter().position(|l| l == "stop accepting").unwrap();
        assert!(!diary[after..].iter().any(|l| l.starts_with("listen")));
        assert!(diary[after..].iter().any(|l| l == "route []"), "{diary:?}");

        let mut store = Store::open(dir.path()).unwrap();
        lock(&mut store, dir.path(), None).expect("the lock was released");
    }

    /// On a store that joined the fleet as h1, the traffic thread routes
    /// to h2's instances at h2's address (h1's own at loopback, preferred),
    /// beats as h1's proxy, and acknowledges a drain as h1 only: h2's live
    /// proxy still holds it.
    #[test]
    fn on_a_fleet_the_traffic_thread_routes_across_hosts_and_acks_as_its_host() {
        use crate::state::DbContext;
        use crate::state::sql::params;
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        crate::state::hosts::write_local_host(dir.path(), "h1", 1).unwrap();
        store
            .db_mut()
            .write(|tx| {
                for (name, address) in [("h1", "198.18.0.11"), ("h2", "198.18.0.12")] {
                    tx.sql()
                        .execute(
                            "INSERT INTO hosts (name, address, state, heartbeat, joined, updated) \
                             VALUES (?1, ?2, 'up', 0, 'now', 'now')",
                            params![name, address],
                        )
                        .db_ctx(tx.path())?;
                }
                for (n, (id, host)) in [("a", "h2"), ("b", "h1")].into_iter().enumerate() {
                    tx.sql()
                        .execute(
                            "INSERT INTO instances (id, image, image_ref, driver, state, port, \
                             created, stop_signal, launch, service, host, ready_at) \
                             VALUES (?1, ?2, 'x', 'fake', 'running', ?3, ?4, 15, '{}', 'web', \
                             ?5, 1)",
                            params![
                                id,
                                format!("sha256:{}", "a".repeat(64)),
                                8000 + n as i64,
                                format!("2026-01-01T00:00:0{n}Z"),
                                host
                            ],
                        )
                        .db_ctx(tx.path())?;
                }
                // h2's proxy routes web too.
                tx.fleet_proxy_beat("h2", "web", "p2")
            })
            .unwrap();
        let lease = lock(&mut store, dir.path(), Some("h1")).unwrap();
        let fake = Fake {
            listening: vec!["web".into()],
            ..Fake::default()
        };
        let running = start(options(dir.path()), lease, fake.clone()).unwrap();
        let t0 = Instant::now();
        let routed = || fake.routes.lock().unwrap().get("web").cloned();
        while routed().is_none() && t0.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(10));
        }
        let b = |id: &str, addr: &str, local| Backend {
            id: id.into(),
            addr: addr.parse().unwrap(),
            local,
        };
        assert_eq!(
            routed(),
            Some(vec![
                b("a", "198.18.0.12:8000", false),
                b("b", "127.0.0.1:8001", true)
            ])
        );

        store
            .db_mut()
            .write(|tx| {
                tx.fleet_proxy_beat("h2", "web", "p2")?;
                tx.start_drain("a", 1)
            })
            .unwrap();
        let acked = |store: &Store| store.db().read().draining_on("h1").unwrap().is_empty();
        while !acked(&store) && t0.elapsed() < Duration::from_secs(10) {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(acked(&store), "h1's proxy acknowledged the drain");
        assert!(
            fake.routes.lock().unwrap()["web"]
                .iter()
                .all(|r| r.id != "a"),
            "a left h1's routes"
        );
        let ids = ["a".to_string()];
        assert_eq!(
            store.db().read().draining_on("h2").unwrap(),
            [("web".to_string(), "a".to_string())],
            "h2's proxy has not acknowledged it"
        );
        assert_eq!(store.db().read().fleet_undrained(&ids, 3_000).unwrap(), 1);
        let beats = |store: &Store| -> i64 {
            store
                .db()
                .read()
                .sql()
                .query_row(
                    "SELECT count(*) FROM proxy_beats WHERE host = 'h1' AND service = 'web'",
                    (),
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!(beats(&store), 1, "h1's proxy beats for web");
        running.stop();
        assert_eq!(
            beats(&store),
            0,
            "a stopped serve's proxy no longer holds drains up"
        );
    }
}

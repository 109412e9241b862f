//! `drover serve`: the reconciler, the traffic proxies and the drift
//! scanner, running until SIGTERM or SIGINT.
//!
//! ```text
//!  reconcile threads  drover_core::reconcile, one per service: a deploy pass
//!                     when the database changed or `interval` passed (self-
//!                     healing, rollouts recorded by `apply --detach`,
//!                     condemned instances); one service's long rollout holds
//!                     up no other
//!  traffic thread     every 50 ms: routable instances from the database →
//!                     each service's proxy routes; drains acknowledged; one
//!                     listener per service port, opened and closed as the
//!                     fleet changes; a heartbeat so deploys wait for drains
//!  drift thread       every `drift_interval`: scan instances (budgeted);
//!                     condemn the drifted ones (the reconciler replaces them)
//!  tokio runtime      the proxies (proxy.rs) and the signal handler
//! ```
//!
//! Everything the threads share goes through the state database, so a
//! restarted `serve` (or an `apply` from a shell meanwhile) picks up exactly
//! where things are. Stopping `serve` stops nothing that runs: instances
//! keep running, and the next `serve` adopts them.

pub mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use drover_core::deploy::spec::ProxyMode;
use drover_core::deploy::{lock, release, traffic};
use drover_core::drift;
use drover_core::reconcile::{self, Reconciler};
use drover_core::store::Store;
use tokio::sync::watch;

use self::proxy::{Backend, Mode, Routes};

/// How often the traffic thread syncs routes with the database.
const SYNC: Duration = Duration::from_millis(50);
/// How often the proxy heartbeat is written.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The lock that makes `serve` one per store.
const SERVE_LOCK: &str = "serve";
/// How often the reconciler looks for changes made by others.
const POLL: Duration = Duration::from_millis(100);

pub struct Config {
    pub store: PathBuf,
    /// Address the proxies listen on.
    pub bind: IpAddr,
    pub reconcile: reconcile::Options,
    /// How often instances are scanned for drift (`None`: never).
    pub drift_interval: Option<Duration>,
    pub drift_budget: drift::Budget,
}

/// Print one line about what serve did, with a timestamp.
fn say(what: impl std::fmt::Display) {
    eprintln!("{} {what}", drover_core::clock::now_rfc3339());
}

pub fn run(cfg: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // `stop`: the reconciler and drift scans end; `quiet`: then the proxies.
    let stop = Arc::new(AtomicBool::new(false));
    let quiet = Arc::new(AtomicBool::new(false));
    // One serve per store: two would scan, taint and proxy against each
    // other. Fail early, in the foreground.
    let mut store =
        Store::open(&cfg.store).with_context(|| format!("opening {}", cfg.store.display()))?;
    let lease = lock::acquire(store.db_mut(), SERVE_LOCK, false).map_err(|e| match e {
        drover_core::Error::Busy { reason, .. } => drover_core::Error::Busy {
            what: format!("store {}", cfg.store.display()),
            reason: format!(
                "another `drover serve` runs for it: {}",
                reason
                    .replace("another deploy holds its lock: ", "")
                    .replace("; wait for it, or leave out --no-wait to queue", "")
            ),
        },
        e => e,
    })?;
    drop(store);
    say(format_args!(
        "serve: store {}, proxies on {}, drift scans {}",
        cfg.store.display(),
        cfg.bind,
        cfg.drift_interval
            .map_or("off".into(), |d| format!("every {} s", d.as_secs_f64()))
    ));

    let reconciler = {
        let (stop, store, opts) = (stop.clone(), cfg.store.clone(), cfg.reconcile.clone());
        thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || reconcile_loop(&store, opts, &stop))?
    };
    let traffic = {
        let (stop, quiet, store, bind) = (stop.clone(), quiet.clone(), cfg.store.clone(), cfg.bind);
        let handle = rt.handle().clone();
        thread::Builder::new()
            .name("traffic".into())
            .spawn(move || traffic_loop(&store, bind, &handle, lease, &stop, &quiet))?
    };
    let drift = cfg.drift_interval.map(|every| {
        let (stop, store, budget) = (stop.clone(), cfg.store.clone(), cfg.drift_budget.clone());
        thread::Builder::new()
            .name("drift".into())
            .spawn(move || drift_loop(&store, every, &budget, &stop))
    });

    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let lost = async {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = term.recv() => say("serve: SIGTERM, stopping (instances keep running)"),
            _ = int.recv() => say("serve: SIGINT, stopping (instances keep running)"),
            _ = lost => {}
        }
        anyhow::Ok(())
    })?;
    // First the work that stops instances, while the proxies still carry
    // traffic and acknowledge drains: a pass in progress is safe to abandon
    // (the next serve or apply carries on), but gets a moment to end.
    stop.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !reconciler.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if let Some(Ok(d)) = drift
        && d.is_finished()
    {
        let _ = d.join();
    }
    // Then the proxies: they stop accepting and let requests finish.
    quiet.store(true, Ordering::SeqCst);
    let _ = traffic.join();
    rt.shutdown_timeout(Duration::from_secs(1));
    say("serve: stopped");
    Ok(())
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        thread::sleep(d.min(Duration::from_millis(50)));
    }
}

/// One reconciler thread per service, started as services appear; each
/// ends when its service is gone or serve stops.
fn reconcile_loop(store: &std::path::Path, opts: reconcile::Options, stop: &Arc<AtomicBool>) {
    let db = match Store::open(store) {
        Ok(s) => s,
        Err(e) => return say(format_args!("reconcile: cannot open the store: {e}")),
    };
    let mut workers: BTreeMap<String, thread::JoinHandle<()>> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        match release::services(db.db().conn(), db.db().path()) {
            Ok(services) => {
                workers.retain(|_, w| !w.is_finished());
                for svc in services {
                    if workers.contains_key(&svc.name) {
                        continue;
                    }
                    let (store, opts, stop, name) = (
                        store.to_path_buf(),
                        opts.clone(),
                        stop.clone(),
                        svc.name.clone(),
                    );
                    match thread::Builder::new()
                        .name(format!("reconcile {name}"))
                        .spawn(move || reconcile_service(&store, opts, &name, &stop))
                    {
                        Ok(w) => {
                            workers.insert(svc.name, w);
                        }
                        Err(e) => say(format_args!("reconcile {}: no thread: {e}", svc.name)),
                    }
                }
            }
            Err(e) => say(format_args!("reconcile: {e}")),
        }
        sleep_unless(stop, POLL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while workers.values().any(|w| !w.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
}

fn reconcile_service(
    store: &std::path::Path,
    opts: reconcile::Options,
    service: &str,
    stop: &AtomicBool,
) {
    let mut store = match Store::open(store) {
        Ok(s) => s,
        Err(e) => {
            return say(format_args!(
                "reconcile {service}: cannot open the store: {e}"
            ));
        }
    };
    let mut r = Reconciler::for_service(opts, service);
    while !stop.load(Ordering::SeqCst) {
        match r.round(&mut store) {
            Ok(reports) if reports.is_empty() && !service_exists(&store, service) => return,
            Ok(reports) => {
                for rep in reports {
                    let did = rep.started + rep.stopped + rep.healed > 0;
                    if let Some(e) = &rep.error {
                        if !rep.busy() {
                            say(format_args!("reconcile {}: {e}", rep.service));
                        }
                    } else if did {
                        say(format_args!(
                            "reconcile {}: release {} — started {}, stopped {}, replaced {} \
                             dead ({:.2} s)",
                            rep.service,
                            rep.release.map_or("-".into(), |n| n.to_string()),
                            rep.started,
                            rep.stopped,
                            rep.healed,
                            rep.seconds
                        ));
                    }
                }
            }
            Err(e) => {
                say(format_args!("reconcile {service}: {e}"));
                sleep_unless(stop, Duration::from_secs(1));
            }
        }
        sleep_unless(stop, POLL);
    }
}

fn service_exists(store: &Store, service: &str) -> bool {
    let db = store.db();
    release::service(db.conn(), db.path(), service).is_ok_and(|s| s.is_some())
}

/// One service's proxying: its routes and its listeners.
struct Proxied {
    routes: Routes,
    listeners: BTreeMap<u16, watch::Sender<bool>>,
    mode: ProxyMode,
}

fn traffic_loop(
    store: &std::path::Path,
    bind: IpAddr,
    rt: &tokio::runtime::Handle,
    mut lease: lock::Lease,
    stop: &AtomicBool,
    quiet: &AtomicBool,
) {
    let mut store = match Store::open(store) {
        Ok(s) => s,
        Err(e) => return say(format_args!("traffic: cannot open the store: {e}")),
    };
    let holder = lock::me();
    let mut proxied: BTreeMap<String, Proxied> = BTreeMap::new();
    let mut failed_binds: BTreeSet<(String, u16)> = BTreeSet::new();
    let mut last_beat = Instant::now() - HEARTBEAT;
    let mut closing: Option<Instant> = None;
    loop {
        if let Err(e) = lease.renew(store.db_mut()) {
            say(format_args!("serve: lost its lock ({e}); stopping"));
            stop.store(true, Ordering::SeqCst);
            quiet.store(true, Ordering::SeqCst);
        }
        if quiet.load(Ordering::SeqCst) && closing.is_none() {
            // Stop accepting; keep syncing (drains are still acknowledged)
            // until what is in flight is done, for at most 5 s.
            for p in proxied.values() {
                for tx in p.listeners.values() {
                    let _ = tx.send(true);
                }
            }
            closing = Some(Instant::now());
        }
        if let Some(t) = closing {
            let busy = proxied
                .values()
                .any(|p| p.routes.stats().backends.iter().any(|b| b.in_flight > 0));
            if !busy || t.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        if let Err(e) = sync(
            &mut store,
            bind,
            rt,
            &mut proxied,
            &mut failed_binds,
            closing.is_none(),
        ) {
            say(format_args!("traffic: {e}"));
        }
        // Deploys wait for the drains of services with a live proxy.
        if last_beat.elapsed() >= HEARTBEAT {
            let names: Vec<String> = proxied
                .iter()
                .filter(|(_, p)| !p.listeners.is_empty())
                .map(|(n, _)| n.clone())
                .collect();
            if let Err(e) = traffic::heartbeat(store.db_mut(), &names, &holder) {
                say(format_args!("traffic: {e}"));
            }
            last_beat = Instant::now();
        }
        thread::sleep(SYNC);
    }
    // Deploys no longer wait for this serve's drains.
    let _ = traffic::unregister(store.db_mut(), &holder);
    let _ = lease.release(store.db_mut());
}

fn sync(
    store: &mut Store,
    bind: IpAddr,
    rt: &tokio::runtime::Handle,
    proxied: &mut BTreeMap<String, Proxied>,
    failed_binds: &mut BTreeSet<(String, u16)>,
    listen: bool,
) -> anyhow::Result<()> {
    let services = {
        let db = store.db();
        release::services(db.conn(), db.path())?
    };
    if listen {
        listeners(&services, bind, rt, proxied, failed_binds);
    }
    route(store, proxied)
}

/// Open and close listeners as the services' ports and modes say.
fn listeners(
    services: &[release::Service],
    bind: IpAddr,
    rt: &tokio::runtime::Handle,
    proxied: &mut BTreeMap<String, Proxied>,
    failed_binds: &mut BTreeSet<(String, u16)>,
) {
    let wanted: BTreeMap<String, (Vec<u16>, ProxyMode)> = services
        .iter()
        .filter(|s| !s.rollout.ports.is_empty())
        .map(|s| (s.name.clone(), (s.rollout.ports.clone(), s.rollout.proxy)))
        .collect();
    proxied.retain(|name, p| {
        let keep = wanted.get(name).is_some_and(|(_, mode)| *mode == p.mode);
        if !keep {
            for tx in p.listeners.values() {
                let _ = tx.send(true);
            }
        }
        keep
    });
    for (name, (ports, mode)) in &wanted {
        let p = proxied.entry(name.clone()).or_insert_with(|| Proxied {
            routes: Routes::new(),
            listeners: BTreeMap::new(),
            mode: *mode,
        });
        p.listeners.retain(|port, tx| {
            let keep = ports.contains(port);
            if !keep {
                let _ = tx.send(true);
            }
            keep
        });
        for port in ports {
            if p.listeners.contains_key(port) {
                continue;
            }
            let addr = SocketAddr::new(bind, *port);
            match std::net::TcpListener::bind(addr).and_then(|l| {
                l.set_nonblocking(true)?;
                let _guard = rt.enter();
                tokio::net::TcpListener::from_std(l)
            }) {
                Ok(listener) => {
                    let (tx, rx) = watch::channel(false);
                    let mode = *mode;
                    let routes = p.routes.clone();
                    let label = format!("{name} {addr}");
                    rt.spawn(async move {
                        if let Err(e) = proxy::serve(listener, mode, routes, rx).await {
                            say(format_args!("proxy {label}: {e}"));
                        }
                    });
                    p.listeners.insert(*port, tx);
                    failed_binds.remove(&(name.clone(), *port));
                    say(format_args!(
                        "proxy {name}: listening on {addr} ({})",
                        match mode {
                            Mode::Http => "http/1.1, h2c",
                            Mode::Tcp => "tcp",
                        }
                    ));
                }
                Err(e) => {
                    if failed_binds.insert((name.clone(), *port)) {
                        say(format_args!("proxy {name}: cannot listen on {addr}: {e}"));
                    }
                }
            }
        }
    }
}

/// Give each proxy the routable instances, as recorded, and acknowledge the
/// drains that are done.
fn route(store: &mut Store, proxied: &BTreeMap<String, Proxied>) -> anyhow::Result<()> {
    // Routes: the routable instances, as recorded.
    let mut by_service: BTreeMap<String, Vec<Backend>> = BTreeMap::new();
    for r in traffic::routes(store.db())? {
        by_service.entry(r.service).or_default().push(Backend {
            id: r.instance,
            addr: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), r.port),
        });
    }
    let routed: BTreeSet<String> = by_service
        .values()
        .flatten()
        .map(|b| b.id.clone())
        .collect();
    for (name, p) in proxied.iter() {
        p.routes.set(by_service.remove(name).unwrap_or_default());
    }
    // Drains: an instance of a service this process proxies, out of the
    // routes just installed (a drain that began after they were read waits
    // for the next sync), with nothing in flight, is done.
    for (service, id) in traffic::draining(store.db())? {
        let Some(p) = proxied.get(&service).filter(|p| !p.listeners.is_empty()) else {
            continue;
        };
        if !routed.contains(&id) && p.routes.in_flight(&id) == 0 {
            traffic::ack_drained(store.db_mut(), &id)?;
        }
    }
    Ok(())
}

fn drift_loop(store: &std::path::Path, every: Duration, budget: &drift::Budget, stop: &AtomicBool) {
    let mut store = match Store::open(store) {
        Ok(s) => s,
        Err(e) => return say(format_args!("drift: cannot open the store: {e}")),
    };
    while !stop.load(Ordering::SeqCst) {
        match drift::sweep(
            &mut store,
            &drift::Target::All,
            budget,
            drift::Remedy::Replace,
        ) {
            Ok(found) => {
                for d in found.instances.iter().filter(|d| !d.findings.is_empty()) {
                    say(format_args!(
                        "drift {}: {} finding(s), first {}; replacing it",
                        d.instance,
                        d.findings.len(),
                        d.findings[0]
                    ));
                }
            }
            Err(e) => say(format_args!("drift: {e}")),
        }
        sleep_unless(stop, every);
    }
}

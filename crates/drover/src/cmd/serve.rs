//! `drover serve`: parse the arguments, take the store's serve lock, start
//! drover-core's supervisor threads (reconcilers, traffic, drift) with the
//! proxies of drover-proxy on a tokio runtime, and keep them running until
//! SIGTERM or SIGINT. Stopping serve stops nothing that runs. What they do
//! is logged through `tracing` ([`crate::logging`] prints it).
//!
//! Restarts refuse no connection: `serve --takeover` receives the running
//! serve's listening sockets (drover-core's `supervisor::handover`), and
//! SIGHUP makes serve start that successor itself from the binary on disk
//! (after `drover upgrade`, the new one). Under systemd the sockets also
//! go to the fd store and come back at the next start (`supervisor::systemd`).
//!
//! Metrics: one `drover_core::metrics::Metrics` is fed by the supervisor's
//! threads and, through [`ProxyMetrics`], by the proxies; the admin
//! listener (`--admin`, [`crate::admin`]) serves it at `/metrics`, and
//! the HTTP API; its socket is handed over with the proxies'.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use drover_core::deploy::spec::ProxyMode;
use drover_core::drift::Budget;
use drover_core::grammar;
use drover_core::hosts::{Agent, JoinOptions};
use drover_core::metrics::Metrics;
use drover_core::reconcile;
use drover_core::store::Store;
use drover_core::supervisor::{self, Backend, Listen, handover, systemd};
use drover_proxy::Mode;
use tracing::{error, info, warn};

use super::Ctx;
use crate::admin;
use crate::logging::LogFormat;

#[derive(clap::Args)]
pub struct Args {
    /// Address the services' proxies listen on (use 0.0.0.0 for every
    /// interface).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// How often each service gets a pass when nothing changed; a change
    /// (an instance exiting, an `apply` elsewhere) is seen within 0.1 s.
    #[arg(long, default_value = "1s", value_parser = duration)]
    interval: Duration,
    /// The longest back-off of a failing or crash-looping service.
    #[arg(long, default_value = "60s", value_parser = duration)]
    max_backoff: Duration,
    /// How often instances are scanned for drift ("0" turns scans off).
    #[arg(long, default_value = "5m", value_parser = duration)]
    drift_interval: Duration,
    /// Threads a drift scan may use.
    #[arg(long, default_value_t = 1)]
    drift_threads: usize,
    /// Bytes per second a drift scan may read, e.g. "200m" ("0": unlimited).
    #[arg(long, default_value = "200m", value_name = "SIZE", value_parser = rate)]
    drift_rate: u64,
    /// Take over from the serve running for this store without refusing a
    /// connection: receive its listening sockets, accept on them, then let
    /// it finish what is in flight and stop. With none running, start.
    #[arg(long)]
    takeover: bool,
    /// Address of the admin listener: Prometheus metrics at /metrics and
    /// the HTTP API at /api/v1/ ("off": none). Loopback by default; a
    /// successor (`--takeover`) is handed its socket.
    #[arg(long, value_name = "ADDR", default_value = admin::DEFAULT_ADDR, value_parser = admin_addr)]
    admin: AdminAddr,
    /// Serve the admin listener over TLS with this PEM certificate chain
    /// (with --admin-key). Without it, tokens cross the network in clear:
    /// keep --admin on loopback then.
    #[arg(long, value_name = "PEM", requires = "admin_key")]
    admin_cert: Option<PathBuf>,
    /// The PEM private key of --admin-cert.
    #[arg(long, value_name = "PEM", requires = "admin_cert")]
    admin_key: Option<PathBuf>,
    /// How serve (and the monitors it starts) log: `text`, a line for
    /// people, or `json`, one object per line (default: text; json under
    /// `-o json`). Levels: DROVER_LOG (e.g. "debug", "drover=debug").
    #[arg(long, value_enum, value_name = "FORMAT", env = crate::logging::FORMAT_ENV)]
    log_format: Option<LogFormat>,
    /// Join the fleet as a host: register this store's host (its host key
    /// is pinned at first join), beat every 3 s, and mark down hosts whose
    /// heartbeat lapsed. A host that was marked down while away stops its
    /// stale instances first (`host.fenced`). See `drover hosts`.
    #[arg(long)]
    join: bool,
    /// The host's name in the fleet (default: this machine's host name).
    #[arg(long, value_name = "NAME", requires = "join")]
    host: Option<String>,
    /// A label of the host (repeatable), e.g. `zone=a`.
    #[arg(long = "label", value_name = "KEY=VALUE", requires = "join", value_parser = drover_core::hosts::label)]
    labels: Vec<(String, String)>,
    /// Where other hosts reach this host's instances (an IP address or
    /// name).
    #[arg(long, value_name = "ADDR", requires = "join")]
    address: Option<String>,
    /// A host whose heartbeat is older than this is marked down, its
    /// instances counted lost.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = duration)]
    host_timeout: Duration,
}

impl Args {
    /// `--log-format`, or `DROVER_LOG_FORMAT`.
    pub fn log_format(&self) -> Option<LogFormat> {
        self.log_format
    }
}

/// `--admin`: an address, or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AdminAddr {
    Off,
    At(SocketAddr),
}

fn admin_addr(s: &str) -> Result<AdminAddr, String> {
    match s {
        "off" => Ok(AdminAddr::Off),
        s => s.parse().map(AdminAddr::At).map_err(|_| {
            format!("{s:?} is not an address and port (like 127.0.0.1:9465), nor \"off\"")
        }),
    }
}

/// Where and how the admin listener listens.
struct Admin {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The proxies' requests, counted in serve's metrics.
struct ProxyMetrics(Arc<Metrics>);

impl drover_proxy::Observe for ProxyMetrics {
    fn request(&self, service: &str, status: u16, elapsed: Duration) {
        self.0.proxy_request(service, status, elapsed);
    }
    fn upstream_error(&self, service: &str, kind: &'static str) {
        self.0.proxy_upstream_error(service, kind);
    }
    fn retry(&self, service: &str) {
        self.0.proxy_retry(service);
    }
    fn connection(&self, service: &str, joined: bool) {
        self.0.proxy_connection(service, joined);
    }
}

/// How long a successor waits for the serve it takes over from to finish
/// its requests and release the store (it takes at most about 7 s).
const TAKEOVER_WAIT: Duration = Duration::from_secs(30);

fn duration(s: &str) -> Result<Duration, String> {
    grammar::duration_ms(s).map(Duration::from_millis)
}

/// A size, or "0" for no limit.
fn rate(s: &str) -> Result<u64, String> {
    match s {
        "0" => Ok(0),
        s => grammar::size(s),
    }
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    // First, while this process has one thread.
    let sd = systemd::take();
    let opts = supervisor::Options {
        store: ctx.store_dir.clone(),
        reconcile: reconcile::Options {
            interval: a.interval,
            max_backoff: a.max_backoff,
        },
        drift_interval: (!a.drift_interval.is_zero()).then_some(a.drift_interval),
        drift_budget: Budget {
            threads: a.drift_threads.max(1),
            bytes_per_sec: (a.drift_rate > 0).then_some(a.drift_rate),
            low_priority: true,
        },
        metrics: Arc::new(Metrics::new(Some(ctx.store_dir.clone()))),
    };
    let admin = match a.admin {
        AdminAddr::Off => None,
        AdminAddr::At(addr) => {
            let tls = match (&a.admin_cert, &a.admin_key) {
                (Some(cert), Some(key)) => Some(admin::tls(cert, key)?),
                _ => None,
            };
            Some(Admin { addr, tls })
        }
    };
    let join = match a.join {
        false => None,
        true => Some(JoinOptions {
            name: match &a.host {
                Some(h) => h.clone(),
                None => drover_core::hosts::default_name()?,
            },
            labels: a.labels.iter().cloned().collect(),
            address: a.address.clone(),
            timeout: a.host_timeout,
        }),
    };
    serve(opts, a.bind, a.takeover, admin, sd, join)?;
    Ok(ExitCode::SUCCESS)
}

fn serve(
    opts: supervisor::Options,
    bind: IpAddr,
    takeover: bool,
    admin: Option<Admin>,
    sd: systemd::Environment,
    join: Option<JoinOptions>,
) -> anyhow::Result<()> {
    // The binary as named now: after `drover upgrade` renamed a new one
    // over it, SIGHUP starts that one.
    let exe = std::env::current_exe().context("finding the drover binary")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut store = Store::open_unleased(&opts.store)
        .with_context(|| format!("opening {}", opts.store.display()))?;
    let state = store.db().location().clone();
    let notify = sd.notify_socket.clone();
    let mut proxies = Proxies {
        inner: drover_proxy::Proxies::new(rt.handle().clone(), bind),
        notify: notify.clone(),
        stored: BTreeSet::new(),
    };
    proxies
        .inner
        .observe(Arc::new(ProxyMetrics(opts.metrics.clone())));
    // Sockets systemd kept (fd store) or made (socket activation).
    let mut inherited: Vec<std::net::TcpListener> =
        sd.fds.into_iter().map(|(_, fd)| fd.into()).collect();
    // The admin socket a predecessor handed over, if any.
    let mut admin_socket = None;
    let predecessor = if takeover {
        take_over(&mut store, &opts.store, &mut inherited, &mut admin_socket)?
    } else {
        None
    };
    proxies.inner.adopt(inherited);
    // Joined, serve is one per host: the fleet's hosts share the database.
    let host = join.as_ref().map(|j| j.name.as_str());
    let lease = match predecessor {
        Some(p) => {
            let mut p = Some(p);
            supervisor::wait_for_lock(
                &mut store,
                &opts.store,
                host,
                &mut proxies,
                || {
                    if let Some(p) = p.take()
                        && let Err(e) = p.go()
                    {
                        warn!(error = %e, "the running serve did not confirm the takeover");
                    }
                },
                TAKEOVER_WAIT,
            )
            .context("waiting for the serve taken over from to stop")?
        }
        // Fail early, in the foreground, if another serve runs.
        None => supervisor::lock(&mut store, &opts.store, host)?,
    };
    // Joined: before any reconcile (and before the proxies route), stop
    // what a fence left behind, then be up.
    let joined = match &join {
        Some(j) => {
            let joined = drover_core::hosts::join(&mut store, j)?;
            info!(host = %joined.name, epoch = joined.epoch, fenced = ?joined.fenced, "joined the fleet");
            Some(joined)
        }
        None => None,
    };
    drop(store);
    let admin_handed = admin::Handed::default();
    if let Some(Admin { addr, tls }) = admin {
        if tls.is_none() && !addr.ip().is_loopback() {
            warn!(
                %addr,
                "admin: {addr} is not loopback and there is no --admin-cert: API tokens \
                 would cross the network in clear"
            );
        }
        let state = Arc::new(admin::State {
            metrics: opts.metrics.clone(),
            api: Arc::new(crate::api::Api::new(
                opts.store.clone(),
                opts.metrics.clone(),
            )),
            tls,
        });
        admin::spawn(rt.handle(), addr, state, admin_socket, admin_handed.clone());
    }
    let drift = opts
        .drift_interval
        .map_or("off".into(), |d| format!("every {} s", d.as_secs_f64()));
    info!(
        store = %opts.store.display(),
        state = %format!("{} {}", state.backend(), state.describe()),
        bind = %bind,
        %drift,
        takeover,
        "started"
    );
    let sockets = proxies.inner.sockets();
    let store_dir = opts.store.clone();
    let running = supervisor::start(opts, lease, proxies)?;
    let agent = match (joined, &join) {
        (Some(joined), Some(j)) => Some(Agent::start(store_dir.clone(), joined, j)?),
        _ => None,
    };
    if let Some(n) = &notify {
        let _ = systemd::notify(n, &format!("READY=1\nMAINPID={}", std::process::id()), &[]);
    }

    // Successors ask here; `handed` turns true once one took over.
    let handed = Arc::new(AtomicBool::new(false));
    let mut _socket_file = None;
    match handover::Server::bind(&store_dir) {
        Ok(server) => {
            _socket_file = Some(server.file());
            let (handed, notify) = (handed.clone(), notify.clone());
            std::thread::Builder::new()
                .name("handover".into())
                .spawn(move || {
                    answer_successors(&server, &sockets, &admin_handed, notify.as_ref(), &handed)
                })
                .context("starting the handover thread")?;
        }
        Err(e) => warn!(
            socket = %store_dir.join(handover::SOCKET).display(),
            error = %e,
            "cannot listen for a successor; restarts will refuse connections"
        ),
    }

    let stopped = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            let watch = async {
                while !running.stopping() && !handed.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                _ = term.recv() => {
                    info!("SIGTERM, stopping (instances keep running)");
                    return anyhow::Ok(false);
                }
                _ = int.recv() => {
                    info!("SIGINT, stopping (instances keep running)");
                    return anyhow::Ok(false);
                }
                _ = hup.recv() => start_successor(&exe, &store_dir, notify.as_ref()),
                () = watch => return anyhow::Ok(handed.load(Ordering::SeqCst)),
            }
        }
    })?;
    if let Some(agent) = agent {
        agent.stop();
    }
    if stopped {
        info!("handed over; finishing what is in flight, then stopping");
        running.hand_over();
    } else {
        if let Some(n) = &notify {
            let _ = systemd::notify(n, "STOPPING=1", &[]);
        }
        running.stop();
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    info!("stopped");
    Ok(())
}

/// Connect to the running serve and receive its listening sockets into
/// `sockets`. `None` when no serve runs (this one just starts); an error
/// when one holds the store but does not answer (a drover from before
/// handovers: stop it first).
fn take_over(
    store: &mut Store,
    dir: &Path,
    sockets: &mut Vec<std::net::TcpListener>,
    admin_socket: &mut Option<std::net::TcpListener>,
) -> anyhow::Result<Option<handover::Predecessor>> {
    let Some(mut p) = handover::connect(dir)
        .with_context(|| format!("connecting to {}", dir.join(handover::SOCKET).display()))?
    else {
        if let Some(pid) = supervisor::serve_pid(store)? {
            anyhow::bail!(
                "the serve running for {} (pid {pid}) does not answer at {}: it cannot hand \
                 over (a drover from before handovers?); stop it, then start serve",
                dir.display(),
                dir.join(handover::SOCKET).display()
            );
        }
        info!("no serve runs for this store; starting");
        return Ok(None);
    };
    let got = p
        .receive()
        .context("receiving the running serve's sockets")?;
    info!(
        sockets = got.len(),
        "taking over {} listening socket(s) from the running serve",
        got.len()
    );
    for (name, fd) in got {
        let l = std::net::TcpListener::from(fd);
        if name == admin::HANDOVER_NAME {
            *admin_socket = Some(l);
        } else {
            sockets.push(l);
        }
    }
    Ok(Some(p))
}

/// The handover thread: give each successor that asks the listening
/// sockets; once one says `go`, tell systemd it is the main process now,
/// and flag `handed` (serve then stops).
fn answer_successors(
    server: &handover::Server,
    sockets: &drover_proxy::Sockets,
    admin_socket: &admin::Handed,
    notify: Option<&OsString>,
    handed: &AtomicBool,
) {
    loop {
        let result = server.accept().and_then(|mut succ| {
            let list = sockets.list();
            let admin = admin_socket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|l| l.try_clone().ok());
            let mut named: Vec<(String, std::os::fd::BorrowedFd<'_>)> = list
                .iter()
                .map(|(svc, port, l)| (handover::fd_name(svc, *port), l.as_fd()))
                .collect();
            let proxies = named.len();
            if let Some(l) = &admin {
                named.push((admin::HANDOVER_NAME.to_string(), l.as_fd()));
            }
            succ.send(&named)?;
            let pid = succ.pid;
            succ.wait_go()?;
            Ok((pid, proxies, admin.is_some()))
        });
        match result {
            Ok((pid, n, with_admin)) => {
                let admin = if with_admin {
                    " and the admin listener"
                } else {
                    ""
                };
                info!(
                    sockets = n,
                    admin = with_admin,
                    pid,
                    "handed {n} listening socket(s){admin} to pid {pid}"
                );
                if let Some(n) = notify {
                    let _ = systemd::notify(n, &format!("MAINPID={pid}"), &[]);
                }
                handed.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => warn!(error = %e, "a takeover failed; carrying on"),
        }
    }
}

/// SIGHUP: start `exe` (the binary now on disk there) as a successor with
/// this serve's arguments and `--takeover`.
fn start_successor(exe: &Path, store: &Path, notify: Option<&OsString>) {
    let mut args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--takeover")
        .collect();
    if !args
        .iter()
        .any(|a| a == "--store" || a.to_string_lossy().starts_with("--store="))
    {
        args.splice(0..0, [OsString::from("--store"), store.as_os_str().into()]);
    }
    args.push("--takeover".into());
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&args);
    if let Some(n) = notify {
        cmd.env("NOTIFY_SOCKET", n);
    }
    match cmd.spawn() {
        Ok(mut child) => {
            info!(
                exe = %exe.display(),
                pid = child.id(),
                "SIGHUP, handing over to {} (pid {})",
                exe.display(),
                child.id()
            );
            std::thread::spawn(move || {
                if let Ok(status) = child.wait()
                    && !status.success()
                {
                    error!(%status, "the successor exited ({status})");
                }
            });
        }
        Err(e) => error!(
            exe = %exe.display(),
            error = %e,
            "SIGHUP, but cannot start {}; carrying on",
            exe.display()
        ),
    }
}

/// drover-proxy's proxies, as the supervisor's traffic thread drives them:
/// the same calls, drover-core's types mapped to the proxy's. Under
/// systemd, every listening socket also goes to the fd store.
struct Proxies {
    inner: drover_proxy::Proxies,
    notify: Option<OsString>,
    /// The names in systemd's fd store.
    stored: BTreeSet<String>,
}

impl Proxies {
    /// Give systemd's fd store the sockets it lacks; take back closed ones.
    fn store_fds(&mut self) {
        let Some(n) = &self.notify else { return };
        let now = self.inner.sockets().list();
        let names: BTreeSet<String> = now
            .iter()
            .map(|(svc, port, _)| handover::fd_name(svc, *port))
            .collect();
        for (svc, port, l) in &now {
            let name = handover::fd_name(svc, *port);
            if !self.stored.contains(&name) {
                let msg = format!("FDSTORE=1\nFDNAME={name}");
                if let Err(e) = systemd::notify(n, &msg, &[l.as_raw_fd()]) {
                    warn!(socket = %name, error = %e, "cannot store {name} with systemd");
                }
            }
        }
        for gone in self.stored.difference(&names) {
            let _ = systemd::notify(n, &format!("FDSTOREREMOVE=1\nFDNAME={gone}"), &[]);
        }
        self.stored = names;
    }
}

impl supervisor::Proxies for Proxies {
    fn listen(&mut self, wanted: &BTreeMap<String, Listen>) {
        let wanted = wanted
            .iter()
            .map(|(name, w)| {
                let mode = match w.mode {
                    ProxyMode::Http => Mode::Http,
                    ProxyMode::Tcp => Mode::Tcp,
                };
                let ports = w.ports.clone();
                (name.clone(), drover_proxy::Listen { ports, mode })
            })
            .collect();
        self.inner.listen(&wanted);
        self.store_fds();
    }

    fn route(&mut self, routes: BTreeMap<String, Vec<Backend>>) {
        let routes = routes
            .into_iter()
            .map(|(name, backends)| {
                let backends = backends
                    .into_iter()
                    .map(|b| drover_proxy::Backend {
                        id: b.id,
                        addr: b.addr,
                        // Local first: this host's instances, then others'.
                        tier: u8::from(!b.local),
                    })
                    .collect();
                (name, backends)
            })
            .collect();
        self.inner.route(routes);
    }

    fn listening(&self) -> Vec<String> {
        self.inner.listening()
    }

    fn in_flight(&self, service: &str, id: &str) -> usize {
        self.inner.in_flight(service, id)
    }

    fn stop_accepting(&mut self) {
        self.inner.stop_accepting();
    }

    fn busy(&self) -> bool {
        self.inner.busy()
    }
}

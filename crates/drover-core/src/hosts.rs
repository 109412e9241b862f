//! A host in a fleet: what `drover serve --join` does besides serving.
//!
//! [`join`] registers the store as a host (its host key pinned at first
//! join) and, before the proxies accept or any reconciler runs, checks
//! whether it was fenced while it was away: marked down, or its epoch moved
//! past the one recorded in `<store>/host.epoch`
//! ([`crate::state::hosts::EPOCH_FILE`]). If so it stops its stale
//! instances (counted lost, or started under an older epoch), records
//! `host.fenced {stopped}`, and only then sets itself up. [`Agent`] then
//! beats every [`HEARTBEAT`] (a fenced beat runs the same fencing again) and
//! every [`CHECK`] marks down the hosts whose heartbeat lapsed
//! ([`crate::state::Db::mark_lapsed_hosts_down`]: the first serve to look
//! does it, the others find nothing). Each service's reconciler then places
//! a down host's instances again on other hosts (`deploy::hosting`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use tracing::{error, info, warn};

use crate::error::{Error, IoContext, Result};
use crate::instance;
use crate::state::HostJoin;
use crate::state::hosts::{local_host, write_local_host};
use crate::store::Store;

/// How often a joined host beats (more often if `--host-timeout` is
/// shorter than three beats).
pub const HEARTBEAT: Duration = Duration::from_secs(3);

/// How often a joined serve looks for hosts whose heartbeat lapsed.
pub const CHECK: Duration = Duration::from_secs(1);

/// The default of `--host-timeout`: a heartbeat older than this is a host
/// down.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a fenced host gives each stale instance to stop before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What a host says about itself when it joins.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Where other hosts reach its instances.
    pub address: Option<String>,
    /// A heartbeat older than this is a host down.
    pub timeout: Duration,
}

/// This machine's host name: the default `--host`.
pub fn default_name() -> Result<String> {
    let path = Path::new("/proc/sys/kernel/hostname");
    let name = std::fs::read_to_string(path)
        .ctx("read the host name from", path)?
        .trim()
        .to_string();
    crate::grammar::name(&name).map_err(|e| {
        Error::Usage(format!(
            "this machine's host name cannot name a host ({e}); give one with --host NAME"
        ))
    })?;
    Ok(name)
}

/// A `--label k=v`, in the grammar a fleet's `constraints` and
/// `spread_by` name labels with (so every label a host has can be asked for).
pub fn label(s: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not a label (expected KEY=VALUE, like zone=a)"))?;
    crate::grammar::host_label(k)?;
    crate::grammar::host_label_value(v)?;
    Ok((k.to_string(), v.to_string()))
}

/// What this machine has to offer: CPUs and memory (from /proc).
pub fn capacity() -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb / 1024);
    json!({"cpus": cpus, "memory_mb": memory_mb})
}

/// The host as joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub name: String,
    pub epoch: i64,
    /// It came back fenced and stopped these instances first.
    pub fenced: Option<Vec<String>>,
}

/// Join the fleet as `opts.name` (see the module docs): register, stop
/// what a fence left behind, then be up.
pub fn join(store: &mut Store, opts: &JoinOptions) -> Result<Joined> {
    crate::grammar::name(&opts.name).map_err(|e| Error::Usage(format!("--host: {e}")))?;
    let key = store.db().signer()?.public();
    let labels = serde_json::to_string(&opts.labels).expect("a map of strings");
    let capacity = capacity().to_string();
    let row = store.db_mut().join_host(&HostJoin {
        name: &opts.name,
        labels: &labels,
        capacity: &capacity,
        address: opts.address.as_deref(),
        key: &key,
        version: env!("CARGO_PKG_VERSION"),
    })?;
    let recorded = local_host(store.root());
    let moved = recorded
        .as_ref()
        .is_some_and(|(name, epoch)| *name == opts.name && row.epoch > *epoch);
    // Instances counted lost or from an older epoch are stale however this
    // store came to forget its epoch (a restored backup): stop them too.
    let stale = store.db().read().stale_instances(&opts.name, row.epoch)?;
    let fenced = match row.state == "down" || moved || !stale.is_empty() {
        true => Some(stop_stale(store, &opts.name, row.epoch, stale)?),
        false => None,
    };
    store
        .db_mut()
        .host_up(&opts.name, row.epoch, fenced.as_deref())?;
    write_local_host(store.root(), &opts.name, row.epoch)?;
    Ok(Joined {
        name: opts.name.clone(),
        epoch: row.epoch,
        fenced,
    })
}

/// Stop `host`'s instances a fence made stale at `epoch`; their ids.
fn stop_stale(
    store: &mut Store,
    host: &str,
    epoch: i64,
    stale: Vec<String>,
) -> Result<Vec<String>> {
    warn!(
        host,
        epoch,
        stale = stale.len(),
        "this host was fenced (marked down while away): stopping its stale instances first"
    );
    if !stale.is_empty() {
        instance::stop_many(store, &stale, STOP_GRACE)?;
    }
    Ok(stale)
}

/// The joined host's threads: heartbeat and fleet check. Stopped by
/// [`Agent::stop`] (or dropping it).
pub struct Agent {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Start beating as `joined` and checking the fleet for hosts whose
    /// heartbeat is older than `timeout`.
    pub fn start(store: PathBuf, joined: Joined, opts: &JoinOptions) -> Result<Agent> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| Error::Io {
                    op: "start a thread of",
                    path: PathBuf::from(name),
                    source: e,
                })
        };
        let (s, dir, opts2) = (stop.clone(), store.clone(), opts.clone());
        threads.push(spawn(
            "heartbeat",
            Box::new(move || heartbeat(&dir, joined, &opts2, &s)),
        )?);
        let (s, dir, name) = (stop.clone(), store, opts.name.clone());
        let timeout = i64::try_from(opts.timeout.as_millis()).unwrap_or(i64::MAX);
        threads.push(spawn(
            "fleet-check",
            Box::new(move || check(&dir, &name, timeout, &s)),
        )?);
        Ok(Agent { stop, threads })
    }

    /// Stop the threads and wait for them.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Sleep `d` in small steps, returning early (true) once `stop` is set.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
    stop.load(Ordering::SeqCst)
}

fn heartbeat(dir: &Path, mut joined: Joined, opts: &JoinOptions, stop: &AtomicBool) {
    let mut store = None;
    let mut failing = false;
    // Several beats per timeout, however short it is set.
    let every = HEARTBEAT.min(opts.timeout / 3);
    while !pause(every, stop) {
        let beat = (|| -> Result<()> {
            if store.is_none() {
                store = Some(Store::open_unleased(dir)?);
            }
            let s = store.as_mut().expect("just opened");
            if s.db().host_heartbeat(&joined.name, joined.epoch)? {
                return Ok(());
            }
            // Another serve judged this host lapsed meanwhile: what it
            // runs is counted lost. Stop that, then be up at the new epoch.
            error!(
                host = %joined.name,
                epoch = joined.epoch,
                "this host was marked down by another host's check (its heartbeat lapsed); \
                 fencing itself"
            );
            joined = join(s, opts)?;
            info!(host = %joined.name, epoch = joined.epoch, stopped = ?joined.fenced, "up again after the fence");
            Ok(())
        })();
        match beat {
            Ok(()) if failing => {
                info!(host = %joined.name, "heartbeat lands again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    warn!(host = %joined.name, error = %e, "heartbeat failed; retrying");
                }
                failing = true;
                store = None;
            }
        }
    }
}

fn check(dir: &Path, me: &str, timeout_ms: i64, stop: &AtomicBool) {
    let mut store = None;
    // After this serve lost the database, every host's heartbeat lapsed as
    // much as its own did (an outage of the database, not of the hosts):
    // judge none before each has had a full timeout, and a beat, to land
    // again. Otherwise the first host back marks all the others down and
    // they fence themselves, stopping every instance they run.
    let grace = Duration::from_millis(timeout_ms.max(0) as u64) + HEARTBEAT;
    let mut lost_db = false;
    let mut hold_until: Option<Instant> = None;
    while !pause(CHECK, stop) {
        let pass = (|| -> Result<()> {
            if store.is_none() {
                store = Some(Store::open_unleased(dir)?);
            }
            let s: &mut Store = store.as_mut().expect("just opened");
            if lost_db {
                lost_db = false;
                hold_until = Some(Instant::now() + grace);
                info!(
                    grace = ?grace,
                    "the state database answers again; judging no host's heartbeat for the grace"
                );
            }
            if hold_until.is_some_and(|t| Instant::now() < t) {
                return Ok(());
            }
            hold_until = None;
            for down in s.db_mut().mark_lapsed_hosts_down(timeout_ms, me)? {
                warn!(
                    host = %down.host,
                    epoch = down.epoch,
                    lost = ?down.lost,
                    "host down: its heartbeat lapsed; its instances are counted lost \
                     (each service's reconciler places them again on other hosts)"
                );
            }
            Ok(())
        })();
        if let Err(e) = pass {
            warn!(error = %e, "fleet check failed; retrying");
            store = None;
            lost_db = true;
        }
    }
}

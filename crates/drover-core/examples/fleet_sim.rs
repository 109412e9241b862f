//! The fleet scale benchmark's simulator (`bench/fleet.sh` runs it): N
//! simulated hosts of one fleet in one process, on one PostgreSQL database,
//! doing the per-host database work a joined `drover serve` does, plus a
//! leader doing a fleet-wide rollout.
//!
//! Each simulated host is a real `hosts` row (joined with its own host key
//! through [`Db::join_host`]) and does, every pass (1 s, the fleet check's
//! period):
//!
//! - its heartbeat ([`Db::host_heartbeat`], every 3rd pass: every 3 s);
//! - the fleet check ([`Db::mark_lapsed_hosts_down`], timeout 15 s);
//! - its agent pass, as `deploy::hosting::Hosting::load` reads it: the
//!   hosts, the instances per host, and each service's placements (keeping
//!   its own);
//! - the traffic thread's route read ([`traffic::routes`]) and proxy beat
//!   ([`traffic::heartbeat`] for the services it runs).
//!
//! Change notification: each worker has a listener thread (its own state
//! connection) LISTENing on `drover_placements`; the leader NOTIFYs after
//! recording a rollout's placements, and a listener woken by it runs the
//! agent pass of each of its worker's hosts at once.
//!
//! `--check read-first` (not what serve does today) reads the hosts first
//! and takes the write lock for the fleet check only when a heartbeat
//! lapsed: the figure for the first fix.
//!
//! Not simulated: instances (no runtime driver runs; no instance rows, so
//! the route read finds none), health gates, the per-service lease that a
//! real rollout takes step by step. Hosts share `--workers` threads, each
//! with three connections (passes; listener: state and LISTEN), so that 1,000
//! hosts fit in the cluster's `max_connections`; a real host holds its own
//! (serve, heartbeat, fleet check: at least three).
//!
//! The leader: S services × R replicas, placed with
//! [`placement::place`] over every host and recorded ([`Tx::place`]), one
//! change per service as `deploy::converge` does, then one NOTIFY. Measured:
//! the decision (place) and recording times, and for each host the time
//! from the NOTIFY until its agent pass read its new placements.
//!
//! Prints `key=value` lines (see `bench/fleet.sh`).
//!
//! ```sh
//! cargo run --release -p drover-core --example fleet_sim -- \
//!     --url 'postgresql:///fleet?user=drover&host=/tmp/sock&port=5432' \
//!     --hosts 100 --services 10 --replicas 20 --workers 16 --steady 10 --pgdata /tmp/pg/data
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_core::deploy::placement::{self, Host, HostState, Spec};
use drover_core::deploy::traffic;
use drover_core::error::Result;
use drover_core::keys::SigningKey;
use drover_core::state::{Db, HostJoin, Location};
use postgres::fallible_iterator::FallibleIterator;

const PASS: Duration = Duration::from_secs(1);
const TIMEOUT_MS: i64 = 15_000;
const CHANNEL: &str = "drover_placements";

struct Args {
    url: String,
    hosts: usize,
    services: usize,
    replicas: u32,
    workers: usize,
    steady: u64,
    read_first: bool,
    pgdata: PathBuf,
    work: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        hosts: 10,
        services: 10,
        replicas: 3,
        workers: 8,
        steady: 10,
        read_first: false,
        pgdata: PathBuf::new(),
        work: std::env::temp_dir().join(format!("fleet-sim-{}", std::process::id())),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| die(&format!("{k} needs a value")));
        let num = |v: &str| -> u64 {
            v.parse()
                .unwrap_or_else(|_| die(&format!("{k}: not a number: {v}")))
        };
        match k.as_str() {
            "--url" => a.url = v,
            "--hosts" => a.hosts = num(&v) as usize,
            "--services" => a.services = num(&v) as usize,
            "--replicas" => a.replicas = num(&v) as u32,
            "--workers" => a.workers = num(&v) as usize,
            "--steady" => a.steady = num(&v),
            "--pgdata" => a.pgdata = v.into(),
            "--check" => match v.as_str() {
                "write" => a.read_first = false,
                "read-first" => a.read_first = true,
                _ => die("--check: write (as serve does) or read-first"),
            },
            "--work" => a.work = v.into(),
            _ => die(&format!("unknown argument {k}")),
        }
    }
    if a.url.is_empty() {
        die("--url postgresql://… is required");
    }
    a.workers = a.workers.clamp(1, a.hosts.max(1));
    a
}

fn die(msg: &str) -> ! {
    eprintln!("fleet_sim: {msg}");
    std::process::exit(2)
}

/// Counters every worker adds to.
#[derive(Default)]
struct Stats {
    passes: AtomicU64,
    late_ms: AtomicU64,
    errors: AtomicU64,
    max_pass_us: AtomicU64,
}

/// What the leader publishes and the hosts look for.
struct Rollout {
    /// The release the leader placed; 0: none yet.
    release: AtomicU64,
    notified: Mutex<Option<Instant>>,
    /// Per host: when its agent pass first read the new release's
    /// placements (ms after the NOTIFY).
    seen: Mutex<BTreeMap<usize, f64>>,
}

fn name(i: usize) -> String {
    format!("h{i:04}")
}

fn service(s: usize) -> String {
    format!("svc{s:02}")
}

fn open(url: &str, local: &Path) -> Result<Db> {
    Db::open_at(&Location::Postgres {
        url: url.to_string(),
        local: local.to_path_buf(),
    })
}

/// PostgreSQL's CPU time so far (ms): the postmaster's, its waited-for
/// children's, and its live children's (the backends), from /proc.
fn pg_cpu_ms(pgdata: &Path) -> Option<f64> {
    let pid: u32 = std::fs::read_to_string(pgdata.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    let tick = 100.0; // USER_HZ on Linux
    let stat = |p: u32| -> Option<(u32, f64, f64)> {
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        // Fields from 3 (state): ppid is 4, utime 14, stime 15, cutime 16, cstime 17.
        let ppid = f.get(1)?.parse().ok()?;
        let own: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        let kids: f64 = f.get(13)?.parse::<f64>().ok()? + f.get(14)?.parse::<f64>().ok()?;
        Some((ppid, own, kids))
    };
    let (_, own, kids) = stat(pid)?;
    let mut total = own + kids;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((ppid, own, _)) = stat(p)
            && ppid == pid
        {
            total += own;
        }
    }
    Some(total * 1000.0 / tick)
}

/// Database-wide counters: (commits, statements from pg_stat_statements or
/// -1, connections).
fn counters(admin: &mut postgres::Client) -> (i64, i64, i64) {
    let commits: i64 = admin
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .map(|r| r.get(0))
        .unwrap_or(-1);
    let statements: i64 = admin
        .query_one(
            "SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()",
            &[],
        )
        .map(|r| r.get(0))
        .unwrap_or(-1);
    let conns: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
            &[],
        )
        .map(|r| r.get(0))
        .unwrap_or(-1);
    (commits, statements, conns)
}

/// One host's agent pass: what `Hosting::load` reads, for every service.
/// Returns the newest release among its own placements.
fn agent_pass(db: &Db, me: &str, services: usize) -> Result<i64> {
    let r = db.read();
    let _hosts = r.hosts()?;
    let _per_host = r.instances_per_host()?;
    let mut newest = 0;
    for s in 0..services {
        for p in r.placements(&service(s))? {
            if p.host == me {
                newest = newest.max(p.release);
            }
        }
    }
    Ok(newest)
}

#[allow(clippy::too_many_arguments)]
fn worker(
    url: String,
    local: PathBuf,
    mine: Vec<(usize, i64)>,
    services: usize,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    rollout: Arc<Rollout>,
    ready: Arc<std::sync::Barrier>,
    read_first: bool,
) {
    let mut db = open(&url, &local).expect("worker: open the state");
    // The change listener: its own thread and connections, as a host's
    // agent would not wait for its own heartbeat or proxy writes.
    let listener = {
        let (url, local) = (url.clone(), local.with_file_name("listen.db"));
        let (mine, stop, stats, rollout) =
            (mine.clone(), stop.clone(), stats.clone(), rollout.clone());
        let ready = ready.clone();
        std::thread::spawn(move || listen(url, local, mine, services, stop, stats, rollout, ready))
    };
    ready.wait();
    let n = mine.len() as u32;
    // Spread this worker's hosts' passes over the period.
    let start = Instant::now();
    let mut due: Vec<Instant> = (0..n).map(|k| start + PASS * k / n.max(1)).collect();
    let mut beats = vec![0u64; mine.len()];
    while !stop.load(Ordering::SeqCst) {
        let next = *due.iter().min().expect("hosts");
        let wait = next.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait.min(Duration::from_millis(100)));
            continue;
        }
        let now = Instant::now();
        for (k, (idx, epoch)) in mine.iter().enumerate() {
            if due[k] > now || stop.load(Ordering::SeqCst) {
                continue;
            }
            let late = now.duration_since(due[k]);
            stats
                .late_ms
                .fetch_add(late.as_millis() as u64, Ordering::Relaxed);
            due[k] += PASS;
            if due[k] < now {
                // Fallen more than a pass behind: skip, as a busy serve would.
                due[k] = now + PASS;
            }
            let t = Instant::now();
            let me = name(*idx);
            let pass = (|| -> Result<()> {
                if beats[k].is_multiple_of(3) {
                    db.host_heartbeat(&me, *epoch)?;
                }
                beats[k] += 1;
                if !read_first || lapsed(&db, &me)? {
                    db.mark_lapsed_hosts_down(TIMEOUT_MS, &me)?;
                }
                agent_pass(&db, &me, services)?;
                let _routes = traffic::routes(&db)?;
                // The proxy beats for the services it runs: two of them.
                let svcs = [service(idx % services), service((idx + 1) % services)];
                traffic::heartbeat(&mut db, &svcs, &me)?;
                Ok(())
            })();
            if pass.is_err() {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            let us = t.elapsed().as_micros() as u64;
            stats.max_pass_us.fetch_max(us, Ordering::Relaxed);
            stats.passes.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = listener.join();
}

/// A worker's change listener: on each NOTIFY, the agent pass of each of
/// the worker's hosts that has not yet seen the rollout's release.
#[allow(clippy::too_many_arguments)]
fn listen(
    url: String,
    local: PathBuf,
    mine: Vec<(usize, i64)>,
    services: usize,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    rollout: Arc<Rollout>,
    ready: Arc<std::sync::Barrier>,
) {
    let db = open(&url, &local).expect("listener: open the state");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("listener: connect");
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .expect("LISTEN");
    ready.wait();
    let mut seen = vec![false; mine.len()];
    while !stop.load(Ordering::SeqCst) {
        let mut n = client.notifications();
        let mut it = n.timeout_iter(Duration::from_millis(200));
        if !matches!(it.next(), Ok(Some(_))) {
            continue;
        }
        let want = rollout.release.load(Ordering::SeqCst) as i64;
        for (k, (idx, _)) in mine.iter().enumerate() {
            if seen[k] {
                continue;
            }
            match agent_pass(&db, &name(*idx), services) {
                Ok(r) if want > 0 && r >= want => {
                    saw(&rollout, *idx);
                    seen[k] = true;
                }
                Ok(_) => {}
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Whether any other host's heartbeat lapsed: the read a fleet check could
/// make before taking the write lock (`--check read-first`).
fn lapsed(db: &Db, me: &str) -> Result<bool> {
    let r = db.read();
    let now = r.now_ms()?;
    Ok(r.hosts()?.iter().any(|h| {
        h.name != me
            && matches!(h.state.as_str(), "up" | "draining")
            && h.heartbeat.is_none_or(|b| b < now - TIMEOUT_MS)
    }))
}

fn saw(rollout: &Rollout, idx: usize) {
    if let Some(t0) = *rollout.notified.lock().unwrap() {
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        rollout.seen.lock().unwrap().entry(idx).or_insert(ms);
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.work).expect("work dir");
    let leader_local = a.work.join("leader").join("drover.db");
    let mut db = open(&a.url, &leader_local).unwrap_or_else(|e| die(&format!("open: {e}")));
    let mut admin = postgres::Client::connect(&a.url, postgres::NoTls).expect("admin connection");
    let _ = admin.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");

    // Join the hosts.
    let t = Instant::now();
    let mut joined = Vec::with_capacity(a.hosts);
    for i in 0..a.hosts {
        let key = SigningKey::generate().expect("key").public();
        let labels = format!(r#"{{"zone":"z{}"}}"#, i % 3);
        let address = format!("198.18.{}.{}", 1 + i / 250, 1 + i % 250);
        let row = db
            .join_host(&HostJoin {
                name: &name(i),
                labels: &labels,
                capacity: r#"{"cpus":2,"memory_mb":4096}"#,
                address: Some(&address),
                key: &key,
                version: "fleet-sim",
            })
            .unwrap_or_else(|e| die(&format!("join {}: {e}", name(i))));
        db.host_up(&name(i), row.epoch, None)
            .unwrap_or_else(|e| die(&format!("up {}: {e}", name(i))));
        joined.push((i, row.epoch));
    }
    println!("join_s={:.2}", t.elapsed().as_secs_f64());

    // Joining 1,000 hosts takes longer than the heartbeat timeout: every
    // host beats once now, so none starts out lapsed.
    admin
        .batch_execute(
            "UPDATE hosts SET heartbeat = (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
        )
        .expect("fresh heartbeats");

    // The workers.
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let rollout = Arc::new(Rollout {
        release: AtomicU64::new(0),
        notified: Mutex::new(None),
        seen: Mutex::new(BTreeMap::new()),
    });
    let ready = Arc::new(std::sync::Barrier::new(2 * a.workers + 1));
    let mut threads = Vec::new();
    for w in 0..a.workers {
        let mine: Vec<(usize, i64)> = joined
            .iter()
            .copied()
            .filter(|(i, _)| i % a.workers == w)
            .collect();
        let (url, local) = (
            a.url.clone(),
            a.work.join(format!("w{w}")).join("drover.db"),
        );
        let (s, st, r, b) = (stop.clone(), stats.clone(), rollout.clone(), ready.clone());
        threads.push(std::thread::spawn(move || {
            worker(url, local, mine, a.services, s, st, r, b, a.read_first)
        }));
    }
    ready.wait();

    // Steady state: no rollout, every host passing.
    std::thread::sleep(Duration::from_secs(2));
    let (c0, q0, _) = counters(&mut admin);
    let (p0, l0) = (
        stats.passes.load(Ordering::SeqCst),
        stats.late_ms.load(Ordering::SeqCst),
    );
    let cpu0 = pg_cpu_ms(&a.pgdata);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(a.steady));
    let (c1, q1, conns) = counters(&mut admin);
    let cpu1 = pg_cpu_ms(&a.pgdata);
    let secs = t0.elapsed().as_secs_f64();
    let passes = stats.passes.load(Ordering::SeqCst) - p0;
    let late = stats.late_ms.load(Ordering::SeqCst) - l0;
    // The admin connection's own counter reads are in the deltas: 3 statements
    // and (autocommit) 3 commits per read; negligible next to the passes.
    let per_pass = |d: i64| {
        if passes == 0 || d < 0 {
            f64::NAN
        } else {
            d as f64 / passes as f64
        }
    };
    println!("steady_s={secs:.1}");
    println!("host_passes={passes}");
    println!(
        "passes_per_host_s={:.2}",
        passes as f64 / secs / a.hosts as f64
    );
    println!(
        "mean_late_ms={:.0}",
        if passes == 0 {
            0.0
        } else {
            late as f64 / passes as f64
        }
    );
    println!(
        "max_pass_ms={:.1}",
        stats.max_pass_us.load(Ordering::SeqCst) as f64 / 1000.0
    );
    println!(
        "statements_per_host_pass={:.1}",
        if q0 < 0 { f64::NAN } else { per_pass(q1 - q0) }
    );
    println!("commits_per_host_pass={:.2}", per_pass(c1 - c0));
    println!("commits_per_s={:.0}", (c1 - c0) as f64 / secs);
    match (cpu0, cpu1) {
        (Some(a0), Some(a1)) => println!("pg_cpu_pct={:.0}", (a1 - a0) / (secs * 1000.0) * 100.0),
        _ => println!("pg_cpu_pct=nan"),
    }
    println!("connections={conns}");

    // The rollout: every service's R replicas placed over every host.
    let mut hosts: Vec<Host> = db
        .read()
        .hosts()
        .expect("hosts")
        .into_iter()
        .map(|h| Host {
            labels: serde_json::from_str(&h.labels).unwrap_or_default(),
            state: HostState::parse(&h.state).unwrap_or(HostState::Down),
            capacity: None,
            instances: 0,
            name: h.name,
        })
        .collect();
    let release = 1i64;
    let (_, q0, _) = counters(&mut admin);
    let t = Instant::now();
    let mut decisions = Vec::new();
    for s in 0..a.services {
        let spec = Spec {
            service: service(s),
            replicas: a.replicas,
            constraints: Default::default(),
            spread_by: Some("zone".into()),
            max_per_host: None,
        };
        let d = placement::place(&spec, &hosts, &BTreeMap::new());
        if !d.unplaced.is_empty() {
            die(&format!(
                "{}: {} slots unplaced",
                spec.service,
                d.unplaced.len()
            ));
        }
        // What this service placed counts for the next ones, as running
        // instances would (`Hosting::load` counts instances per host).
        for p in &d.placed {
            if let Some(h) = hosts.iter_mut().find(|h| h.name == p.host) {
                h.instances += 1;
            }
        }
        decisions.push((spec.service, d));
    }
    let place_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    for (svc, d) in &decisions {
        db.write(|tx| {
            for p in &d.placed {
                tx.place(svc, p.slot, release, &p.host, 1, p.reason.as_str())?;
            }
            Ok(())
        })
        .unwrap_or_else(|e| die(&format!("record {svc}: {e}")));
    }
    let record_ms = t.elapsed().as_secs_f64() * 1000.0;
    let (_, q1, _) = counters(&mut admin);
    let mut targets: Vec<usize> = decisions
        .iter()
        .flat_map(|(_, d)| d.placed.iter())
        .filter_map(|p| p.host.strip_prefix('h').and_then(|n| n.parse().ok()))
        .collect();
    targets.sort_unstable();
    targets.dedup();
    rollout.release.store(release as u64, Ordering::SeqCst);
    *rollout.notified.lock().unwrap() = Some(Instant::now());
    admin
        .batch_execute(&format!("NOTIFY {CHANNEL}, 'rollout'"))
        .expect("NOTIFY");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if targets
            .iter()
            .all(|i| rollout.seen.lock().unwrap().contains_key(i))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = rollout.seen.lock().unwrap().clone();
    let mut ms: Vec<f64> = targets
        .iter()
        .filter_map(|i| seen.get(i))
        .copied()
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "placements={}",
        decisions.iter().map(|(_, d)| d.placed.len()).sum::<usize>()
    );
    println!("hosts_placed={}", targets.len());
    println!("place_ms={place_ms:.1}");
    println!("record_ms={record_ms:.1}");
    println!("decision_ms={:.1}", place_ms + record_ms);
    println!("record_statements={}", if q0 < 0 { -1 } else { q1 - q0 });
    println!("hosts_seen={}", ms.len());
    println!("propagation_p50_ms={:.0}", pct(&ms, 0.5));
    println!("propagation_p99_ms={:.0}", pct(&ms, 0.99));
    println!("propagation_max_ms={:.0}", pct(&ms, 1.0));

    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    let down = db
        .read()
        .hosts()
        .map(|h| h.iter().filter(|h| h.state != "up").count())
        .unwrap_or(0);
    println!("hosts_marked_down={down}");
    println!("errors={}", stats.errors.load(Ordering::SeqCst));
    let _ = std::fs::remove_dir_all(&a.work);
}

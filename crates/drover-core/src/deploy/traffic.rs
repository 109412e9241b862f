//! Traffic hand-over between deploys and the proxies of `drover serve`.
//!
//! The database is the meeting point, so a deploy in any process (an
//! `apply` from a shell, or `serve`'s own reconciler) and the proxy agree
//! without talking to each other:
//!
//! ```text
//! started ──health check passes──▶ ready_at set      the proxy routes to it
//!         ──deploy wants it gone──▶ drain_at set      no new requests
//!         ──proxy: none in flight─▶ drained_at set    the deploy stops it
//! ```
//!
//! A deploy drains only while a proxy of the service is alive (its
//! heartbeat is recent), and waits never longer than the service's drain
//! timeout; with no proxy nobody routes to the instance, so it stops at
//! once.
//!
//! **Across hosts.** On a store that joined a fleet, every host's proxy
//! routes a service to its ready instances on any host ([`routes`]: an
//! instance of this host at 127.0.0.1, local; another host's at that host's
//! `address`, remote; none that is lost or whose host is down), and the
//! proxy prefers local ones. Each host's proxy beats per service and
//! acknowledges each drain itself (`proxy_beats`, `drain_acks`): an instance
//! is drained once every proxy that may still route it — fresh, on a host
//! that is not down — acknowledged, so it stops only after no host sends
//! it new requests. A down or silent host holds nothing up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::lock::Lease;
use crate::clock;
use crate::error::Result;
use crate::runtime;
use crate::state::{Db, Tx};

/// A proxy whose heartbeat is older than this is taken for gone.
pub const PROXY_FRESH: Duration = Duration::from_secs(3);

/// How long an instance may take to drain, unless the fleet file says.
pub const DEFAULT_DRAIN_MS: u64 = 10_000;

/// One instance a proxy may send a service's traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub service: String,
    pub instance: String,
    pub port: u16,
    /// Where to reach it from this host.
    pub addr: SocketAddr,
    /// Whether it runs on this host (preferred by the proxy).
    pub local: bool,
}

/// The host this store joined the fleet as, if it did.
fn fleet_host(db: &Db) -> Option<String> {
    crate::state::hosts::local_host(crate::state::state_dir(db.path())).map(|(h, _)| h)
}

/// How fresh a proxy's heartbeat must be for deploys to wait for it, in ms.
fn fresh_ms() -> i64 {
    PROXY_FRESH.as_millis() as i64
}

/// Where this host reaches an instance on `host` (`None`: a store that
/// never joined) at `port`: 127.0.0.1 for its own (`me`), the host's
/// `address` for another host's (an IP address, or a name resolved here);
/// `None` if that host gave no address, or it does not resolve.
fn locate(
    me: Option<&str>,
    host: Option<&str>,
    address: Option<&str>,
    port: u16,
) -> Option<(SocketAddr, bool)> {
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    match host {
        None => Some((local, true)),
        Some(h) if Some(h) == me => Some((local, true)),
        Some(_) => Some((SocketAddr::new(resolve(address?)?, port), false)),
    }
}

/// An IP address as is; a name through the system's resolver, kept for
/// 30 s (the traffic thread asks 20 times a second).
fn resolve(address: &str) -> Option<IpAddr> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Some(ip);
    }
    type Cache = Mutex<HashMap<String, (Instant, Option<IpAddr>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, ip)) = cache.get(address)
        && at.elapsed() < Duration::from_secs(30)
    {
        return *ip;
    }
    use std::net::ToSocketAddrs;
    let ip = (address, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip());
    if ip.is_none() {
        tracing::warn!(%address, "cannot resolve host address {address:?}: its instances get no traffic from this host");
    }
    cache.insert(address.to_string(), (Instant::now(), ip));
    ip
}

/// Where instance `id` is reached from this host — its health checks, its
/// traffic: 127.0.0.1 and its port for an instance of this host (or of a
/// store that never joined a fleet), its host's `address` for another
/// host's. `None` when it has no port, is unknown, or its host gave no
/// (resolvable) address.
pub fn instance_addr(reader: crate::state::Reader<'_>, id: &str) -> Result<Option<SocketAddr>> {
    let me =
        crate::state::hosts::local_host(crate::state::state_dir(reader.path())).map(|(h, _)| h);
    let Some(at) = reader.instance_location(id)? else {
        return Ok(None);
    };
    let Some(port) = at.port else {
        return Ok(None);
    };
    Ok(locate(
        me.as_deref(),
        at.host.as_deref(),
        at.address.as_deref(),
        port,
    )
    .map(|(a, _)| a))
}

/// The instances passed their health checks: they may take traffic. Inside
/// the caller's transaction (a deploy writes it with its next step's).
pub fn mark_ready(tx: &Tx<'_>, ids: &[String]) -> Result<()> {
    for id in ids {
        tx.mark_ready(id)?;
    }
    Ok(())
}

/// Record why the instance must be replaced. It keeps its traffic until its
/// replacement is ready: the service's strategy replaces it like an old
/// release's instance (surge first), and drains it before it stops. The
/// first condemnation of an instance is ledgered (`instance.condemn`).
pub fn condemn(db: &mut Db, id: &str, why: &str) -> Result<()> {
    db.write(|tx| {
        let first = tx.read().instance(id)?.filter(|i| i.condemned.is_none());
        tx.condemn(id, why, false)?;
        let Some(inst) = first else { return Ok(()) };
        tx.record(crate::ledger::NewEntry::new(
            "instance.condemn",
            [id.to_string(), inst.image.to_string()],
            serde_json::json!({"service": inst.service, "release": inst.release, "reason": why}),
        ))
        .map(drop)
    })
}

/// The instance failed its health check while serving: out of traffic at
/// once, and to be replaced. Records an `instance.unhealthy` ledger entry.
pub fn fail(db: &mut Db, id: &str, service: &str, why: &str) -> Result<()> {
    db.write(|tx| {
        tx.condemn(id, &format!("unhealthy: {why}"), true)?;
        tx.record(crate::ledger::NewEntry::new(
            "instance.unhealthy",
            [id.to_string()],
            serde_json::json!({"service": service, "reason": why}),
        ))
        .map(drop)
    })
}

/// Every routable instance: running, ready, not draining, not lost, on a
/// host that is not down, and reachable from this host (see
/// [`instance_addr`]).
pub fn routes(db: &Db) -> Result<Vec<Route>> {
    routes_as(db, fleet_host(db).as_deref())
}

/// [`routes`], as host `me` sees them.
fn routes_as(db: &Db, me: Option<&str>) -> Result<Vec<Route>> {
    Ok(db
        .read()
        .routable()?
        .into_iter()
        .filter_map(|r| {
            let (addr, local) = locate(me, r.host.as_deref(), r.address.as_deref(), r.port)?;
            Some(Route {
                service: r.service,
                instance: r.id,
                port: r.port,
                addr,
                local,
            })
        })
        .collect())
}

/// Instances being drained that this host's proxy (on a store that never
/// joined: any proxy) has not reported drained yet. (service, instance)
/// pairs.
pub fn draining(db: &Db) -> Result<Vec<(String, String)>> {
    draining_as(db, fleet_host(db).as_deref())
}

fn draining_as(db: &Db, me: Option<&str>) -> Result<Vec<(String, String)>> {
    match me {
        Some(host) => db.read().draining_on(host),
        None => db.read().draining(),
    }
}

/// This host's proxy reports that nothing is in flight to `id` any more.
pub fn ack_drained(db: &mut Db, id: &str) -> Result<()> {
    let me = fleet_host(db);
    ack_drained_as(db, id, me.as_deref())
}

fn ack_drained_as(db: &mut Db, id: &str, me: Option<&str>) -> Result<()> {
    match me {
        Some(host) => db.write(|tx| tx.fleet_ack_drained(id, host, fresh_ms())),
        None => db.write(|tx| tx.ack_drained(id)),
    }
}

/// A proxy says it is alive and routing `services` (on a fleet: this
/// host's proxy).
pub fn heartbeat(db: &mut Db, services: &[String], holder: &str) -> Result<()> {
    let me = fleet_host(db);
    heartbeat_as(db, services, holder, me.as_deref())
}

fn heartbeat_as(db: &mut Db, services: &[String], holder: &str, me: Option<&str>) -> Result<()> {
    db.write(|tx| {
        for s in services {
            tx.proxy_heartbeat(s, holder)?;
            if let Some(host) = me {
                tx.fleet_proxy_beat(host, s, holder)?;
            }
        }
        Ok(())
    })
}

/// A proxy that stops routing says so, so no deploy waits for it.
pub fn unregister(db: &mut Db, holder: &str) -> Result<()> {
    let me = fleet_host(db);
    unregister_as(db, holder, me.as_deref())
}

fn unregister_as(db: &mut Db, holder: &str, me: Option<&str>) -> Result<()> {
    db.write(|tx| {
        tx.remove_proxies(holder)?;
        match me {
            Some(host) => tx.remove_fleet_proxy(host, holder),
            None => Ok(()),
        }
    })
}

/// Whether a proxy routes `service`: on a fleet, any host's that is not
/// down.
fn proxy_alive(db: &Db, service: &str) -> Result<bool> {
    if fleet_host(db).is_some() {
        return db.read().fleet_proxy_alive(service, fresh_ms());
    }
    let since = clock::now_ms() - PROXY_FRESH.as_millis() as i64;
    db.read().proxy_alive(service, since)
}

/// How many of `ids` some live proxy has not reported drained.
fn undrained(db: &Db, ids: &[String]) -> Result<u64> {
    if fleet_host(db).is_some() {
        return db.read().fleet_undrained(ids, fresh_ms());
    }
    db.read().undrained(ids)
}

/// Stop new traffic to `ids` and wait (at most `timeout`) until the
/// service's proxy — on a fleet, every live host's — has seen their last
/// requests finish, renewing `lease` meanwhile. Returns how long it waited.
pub fn drain(
    db: &mut Db,
    lease: &mut Lease,
    service: &str,
    ids: &[String],
    timeout: Duration,
) -> Result<Duration> {
    // Nobody routes to them: nothing to drain (and no write to wait for).
    if !proxy_alive(db, service)? {
        return Ok(Duration::ZERO);
    }
    let now = clock::now_ms();
    db.write(|tx| {
        for id in ids {
            tx.start_drain(id, now)?;
        }
        Ok(())
    })?;
    let t = Instant::now();
    runtime::wait_until(timeout, || {
        lease.renew(db)?;
        let pending = undrained(db, ids)?;
        Ok(pending == 0 || !proxy_alive(db, service)?)
    })?;
    Ok(t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::lock;
    use crate::state::DbContext;
    use crate::state::pgtest::{self, backends};
    use crate::state::sql::params;

    fn db_with(ids: &[(&str, &str)]) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = pgtest::open(&dir.path().join("state.db")).unwrap();
        db.write(|tx| {
            for (n, (id, state)) in ids.iter().enumerate() {
                tx.sql().execute(
                    "INSERT INTO instances (id, image, image_ref, driver, state, port, created, \
                     stop_signal, launch, service) VALUES (?1, ?2, 'x', 'fake', ?3, ?4, ?5, 15, \
                     '{}', 'web')",
                    params![
                        id,
                        format!("sha256:{}", "a".repeat(64)),
                        state,
                        8000 + n as i64,
                        format!("2026-01-01T00:00:0{n}Z")
                    ],
                )
                .db_ctx(tx.path())?;
            }
            Ok(())
        })
        .unwrap();
        (dir, db)
    }

    backends! {
    fn routes_follow_ready_and_drain() {
        let (_d, mut db) = db_with(&[("a", "running"), ("b", "running"), ("c", "created")]);
        let mut lease = lock::acquire(&mut db, "service web", false).unwrap();
        assert!(routes(&db).unwrap().is_empty(), "nothing is ready yet");
        let all = ["a".to_string(), "b".into(), "c".into()];
        db.write(|tx| mark_ready(tx, &all)).unwrap();
        let ids = |db: &Db| {
            routes(db)
                .unwrap()
                .into_iter()
                .map(|r| r.instance)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&db), ["a", "b"], "only running instances take traffic");
        // No proxy: nothing to drain, nothing waits.
        let waited = drain(
            &mut db,
            &mut lease,
            "web",
            &["a".into()],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(waited, Duration::ZERO);
        assert_eq!(ids(&db), ["a", "b"]);
        heartbeat(&mut db, &["web".into()], "me").unwrap();
        drain(
            &mut db,
            &mut lease,
            "web",
            &["a".into()],
            Duration::from_millis(50),
        )
        .unwrap();
        assert_eq!(ids(&db), ["b"]);
        assert_eq!(
            draining(&db).unwrap(),
            [("web".to_string(), "a".to_string())]
        );
        condemn(&mut db, "b", "drift").unwrap();
        assert_eq!(ids(&db), ["b"], "condemned, it serves until it is replaced");
        condemn(&mut db, "b", "drift again").unwrap();
        let condemned: Vec<_> = db
            .read()
            .ledger(&crate::ledger::Filter {
                action: Some("instance.condemn".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(condemned.len(), 1, "ledgered once: {condemned:?}");
        assert_eq!(condemned[0].details["reason"], "drift");
    }
    }

    backends! {
    fn drain_waits_for_a_live_proxy_until_it_acks_or_times_out() {
        let (dir, mut db) = db_with(&[("a", "running"), ("b", "running")]);
        let mut lease = lock::acquire(&mut db, "service web", false).unwrap();
        heartbeat(&mut db, &["web".into()], "me").unwrap();
        let t = Instant::now();
        drain(
            &mut db,
            &mut lease,
            "web",
            &["a".into()],
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "no ack: waits it out"
        );

        let path = dir.path().join("state.db");
        let acker = std::thread::spawn(move || {
            let mut db = pgtest::open(&path).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            ack_drained(&mut db, "b").unwrap();
        });
        let waited = drain(
            &mut db,
            &mut lease,
            "web",
            &["b".into()],
            Duration::from_secs(10),
        )
        .unwrap();
        acker.join().unwrap();
        assert!(
            waited < Duration::from_secs(5),
            "the ack ends the wait: {waited:?}"
        );

        unregister(&mut db, "me").unwrap();
        assert!(!proxy_alive(&db, "web").unwrap());
    }
    }

    /// A store that joined the fleet as h1, sharing its database with h2,
    /// h3 (down) and h4 (no address); `instances` are (id, host, lost).
    fn fleet_with(instances: &[(&str, Option<&str>, bool)]) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        crate::state::hosts::write_local_host(dir.path(), "h1", 1).unwrap();
        let mut db = pgtest::open(&dir.path().join("state.db")).unwrap();
        db.write(|tx| {
            for (name, address, state) in [
                ("h1", Some("198.18.0.11"), "up"),
                ("h2", Some("198.18.0.12"), "up"),
                ("h3", Some("198.18.0.13"), "down"),
                ("h4", None, "up"),
            ] {
                tx.sql()
                    .execute(
                        "INSERT INTO hosts (name, address, state, heartbeat, joined, updated) \
                         VALUES (?1, ?2, ?3, 0, 'now', 'now')",
                        params![name, address, state],
                    )
                    .db_ctx(tx.path())?;
            }
            for (n, (id, host, lost)) in instances.iter().enumerate() {
                tx.sql()
                    .execute(
                        "INSERT INTO instances (id, image, image_ref, driver, state, port, \
                         created, stop_signal, launch, service, host, lost, ready_at) \
                         VALUES (?1, ?2, 'x', 'fake', 'running', ?3, ?4, 15, '{}', 'web', ?5, \
                         ?6, 1)",
                        params![
                            id,
                            format!("sha256:{}", "a".repeat(64)),
                            8000 + n as i64,
                            format!("2026-01-01T00:00:0{n}Z"),
                            host,
                            lost.then_some("host down")
                        ],
                    )
                    .db_ctx(tx.path())?;
            }
            Ok(())
        })
        .unwrap();
        (dir, db)
    }

    fn seen(routes: &[Route]) -> Vec<(String, String, bool)> {
        routes
            .iter()
            .map(|r| (r.instance.clone(), r.addr.to_string(), r.local))
            .collect()
    }

    backends! {
    fn every_host_routes_to_every_hosts_ready_instances_its_own_first() {
        let (_d, db) = fleet_with(&[
            ("a", Some("h1"), false),
            ("b", Some("h2"), false),
            ("lost", Some("h2"), true),
            ("on-down", Some("h3"), false),
            ("no-addr", Some("h4"), false),
        ]);
        let s = |id: &str, addr: &str, local| (id.to_string(), addr.to_string(), local);
        assert_eq!(
            seen(&routes(&db).unwrap()),
            [s("a", "127.0.0.1:8000", true), s("b", "198.18.0.12:8001", false)],
            "this store is h1: its own at loopback, h2's at h2's address; lost \
             instances, a down host's, and a host without an address are left out"
        );
        assert_eq!(
            seen(&routes_as(&db, Some("h2")).unwrap()),
            [s("a", "198.18.0.11:8000", false), s("b", "127.0.0.1:8001", true)],
        );
        assert_eq!(
            instance_addr(db.read(), "b").unwrap(),
            Some("198.18.0.12:8001".parse().unwrap())
        );
        assert_eq!(
            instance_addr(db.read(), "a").unwrap(),
            Some("127.0.0.1:8000".parse().unwrap())
        );
        assert_eq!(instance_addr(db.read(), "no-addr").unwrap(), None);
        assert_eq!(instance_addr(db.read(), "nope").unwrap(), None);
    }
    }

    backends! {
    fn a_store_that_never_joined_routes_its_instances_at_loopback() {
        let (_d, mut db) = db_with(&[("a", "running")]);
        db.write(|tx| mark_ready(tx, &["a".into()])).unwrap();
        assert_eq!(
            seen(&routes(&db).unwrap()),
            [("a".to_string(), "127.0.0.1:8000".to_string(), true)]
        );
    }
    }

    backends! {
    fn a_fleet_drain_waits_for_every_live_hosts_proxy() {
        let (dir, mut db) = fleet_with(&[
            ("a", Some("h2"), false),
            ("b", Some("h2"), false),
            ("c", Some("h1"), false),
        ]);
        let web = ["web".to_string()];
        heartbeat_as(&mut db, &web, "p1", Some("h1")).unwrap();
        heartbeat_as(&mut db, &web, "p2", Some("h2")).unwrap();
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(proxy_alive(&db, "web").unwrap());
        db.write(|tx| tx.start_drain("a", 1)).unwrap();
        let pair = |id: &str| vec![("web".to_string(), id.to_string())];
        assert_eq!(draining_as(&db, Some("h1")).unwrap(), pair("a"));
        assert_eq!(draining_as(&db, Some("h2")).unwrap(), pair("a"));

        ack_drained_as(&mut db, "a", Some("h1")).unwrap();
        assert_eq!(undrained(&db, &ids(&["a"])).unwrap(), 1, "h2's proxy has not acked");
        assert!(draining_as(&db, Some("h1")).unwrap().is_empty());
        assert_eq!(draining_as(&db, Some("h2")).unwrap(), pair("a"));
        ack_drained_as(&mut db, "a", Some("h2")).unwrap();
        assert_eq!(undrained(&db, &ids(&["a"])).unwrap(), 0);
        assert!(draining_as(&db, Some("h2")).unwrap().is_empty());

        // A host that is down holds nothing up; nor does a silent proxy.
        db.write(|tx| tx.start_drain("b", 1)).unwrap();
        ack_drained_as(&mut db, "b", Some("h1")).unwrap();
        assert_eq!(undrained(&db, &ids(&["b"])).unwrap(), 1);
        db.write(|tx| {
            tx.sql()
                .execute("UPDATE proxy_beats SET heartbeat = 0 WHERE host = 'h2'", ())
                .db_ctx(tx.path())
                .map(drop)
        })
        .unwrap();
        assert_eq!(undrained(&db, &ids(&["b"])).unwrap(), 0, "h2's proxy is silent");
        heartbeat_as(&mut db, &web, "p2", Some("h2")).unwrap();
        assert_eq!(undrained(&db, &ids(&["b"])).unwrap(), 1, "h2's proxy is back");
        db.write(|tx| {
            tx.sql()
                .execute("UPDATE hosts SET state = 'down' WHERE name = 'h2'", ())
                .db_ctx(tx.path())
                .map(drop)
        })
        .unwrap();
        assert_eq!(undrained(&db, &ids(&["b"])).unwrap(), 0, "h2 is down");
        db.write(|tx| {
            tx.sql()
                .execute("UPDATE hosts SET state = 'up' WHERE name = 'h2'", ())
                .db_ctx(tx.path())
                .map(drop)
        })
        .unwrap();

        // The deploy's wait: h1's ack alone does not end it; h2's does.
        let mut lease = lock::acquire(&mut db, "service web", false).unwrap();
        heartbeat_as(&mut db, &web, "p1", Some("h1")).unwrap();
        heartbeat_as(&mut db, &web, "p2", Some("h2")).unwrap();
        let t = Instant::now();
        let path = dir.path().join("state.db");
        let acker = std::thread::spawn(move || {
            let mut db = pgtest::open(&path).unwrap();
            // Wait for the drain to begin, then ack from h1 only.
            while draining_as(&db, Some("h1")).unwrap().is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
            ack_drained_as(&mut db, "c", Some("h1")).unwrap();
        });
        drain(&mut db, &mut lease, "web", &ids(&["c"]), Duration::from_millis(500)).unwrap();
        acker.join().unwrap();
        assert!(t.elapsed() >= Duration::from_millis(500), "h1's ack alone: waits it out");
        assert_eq!(undrained(&db, &ids(&["c"])).unwrap(), 1);

        db.write(|tx| {
            tx.sql()
                .execute("UPDATE instances SET drain_at = NULL WHERE id = 'b'", ())
                .db_ctx(tx.path())
                .map(drop)
        })
        .unwrap();
        heartbeat_as(&mut db, &web, "p1", Some("h1")).unwrap();
        heartbeat_as(&mut db, &web, "p2", Some("h2")).unwrap();
        let path = dir.path().join("state.db");
        let acker = std::thread::spawn(move || {
            let mut db = pgtest::open(&path).unwrap();
            while draining_as(&db, Some("h2")).unwrap().is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
            for h in ["h1", "h2"] {
                ack_drained_as(&mut db, "b", Some(h)).unwrap();
            }
        });
        let waited = drain(&mut db, &mut lease, "web", &ids(&["b"]), Duration::from_secs(20)).unwrap();
        acker.join().unwrap();
        assert!(waited < Duration::from_secs(10), "both acks end the wait: {waited:?}");
        assert!(db.read().instance("b").unwrap().unwrap().drain_at.is_some());

        unregister(&mut db, "p1").unwrap();
        assert!(proxy_alive(&db, "web").unwrap(), "h2's proxy still routes web");
        unregister_as(&mut db, "p2", Some("h2")).unwrap();
        assert!(!proxy_alive(&db, "web").unwrap());
    }
    }
}

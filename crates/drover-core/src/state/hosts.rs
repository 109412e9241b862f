//! Hosts of a fleet (`drover serve --join`) and the fleet's trusted signing
//! keys (`drover policy trust`).
//!
//! A host's row names it, pins its host key (the key its ledger entries are
//! signed with) at first join, and carries its heartbeat by the *server*
//! clock ([`Reader::now_ms`]: PostgreSQL's on PostgreSQL, so hosts' clock
//! skew moves nothing) and its fencing epoch. A host whose heartbeat lapses
//! is marked down by whichever joined serve looks first
//! ([`Db::mark_lapsed_hosts_down`], one write transaction: the others find
//! nothing); its epoch moves on and its live instances are counted lost.
//! When it comes back, its heartbeat no longer matches
//! ([`Db::host_heartbeat`] says it is fenced), and its serve stops its stale
//! instances before doing anything else (`crate::hosts`).
//!
//! States: `up`, `draining` (marked by `drover drain`: each service's
//! reconciler moves its instances off, `deploy::hosting`; `drover hosts`
//! shows it drained once none is left), `down` (heartbeat lapsed), and
//! `drained`, `left`, which nothing sets yet.

use serde::Serialize;
use serde_json::json;

use super::sql::{Dialect, OptionalExtension, Row, params};
use super::{Db, DbContext, Reader, Tx};
use crate::clock;
use crate::error::{Error, Result};
use crate::keys::PublicKey;
use crate::ledger::NewEntry;

/// One host, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostRow {
    pub name: String,
    /// JSON object of its labels.
    pub labels: String,
    /// JSON object: cpus, memory_mb.
    pub capacity: String,
    pub address: Option<String>,
    /// The keyid of its host key, pinned at first join.
    pub keyid: Option<String>,
    /// Its host key's public half (PEM).
    pub public_key: Option<String>,
    /// `up`, `draining`, `drained`, `down` or `left`.
    pub state: String,
    /// Fencing epoch: one more each time the host is marked down.
    pub epoch: i64,
    /// Its last heartbeat, unix ms by the server clock.
    pub heartbeat: Option<i64>,
    pub joined: String,
    pub updated: String,
    /// The drover version it runs.
    pub version: Option<String>,
    /// Why it is in its state (down: whose check saw what).
    pub reason: Option<String>,
}

/// What a host says about itself when it joins.
#[derive(Debug, Clone)]
pub struct HostJoin<'a> {
    pub name: &'a str,
    /// JSON object.
    pub labels: &'a str,
    /// JSON object.
    pub capacity: &'a str,
    pub address: Option<&'a str>,
    pub key: &'a PublicKey,
    pub version: &'a str,
}

/// A host marked down by [`Db::mark_lapsed_hosts_down`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostDown {
    pub host: String,
    /// Its new epoch.
    pub epoch: i64,
    /// Its instances now counted lost.
    pub lost: Vec<String>,
}

/// A signing key every host of the fleet trusts for images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustedKey {
    pub keyid: String,
    /// PEM.
    pub public_key: String,
    pub name: Option<String>,
    pub added: String,
    /// Who trusted it.
    pub actor: String,
    /// When it was untrusted; such a key trusts nothing.
    pub removed: Option<String>,
}

/// The file in a store that says which host of the fleet it is and at
/// which epoch it last joined (`{"host": "h1", "epoch": 3}`), written at
/// each join: instances it creates are stamped with both, and a row whose
/// epoch moved past it means the host was fenced meanwhile.
pub const EPOCH_FILE: &str = "host.epoch";

/// The host this store joined as, and its epoch then, from [`EPOCH_FILE`]
/// in `state_dir`; `None` for a store that never joined.
pub fn local_host(state_dir: &std::path::Path) -> Option<(String, i64)> {
    let text = std::fs::read_to_string(state_dir.join(EPOCH_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((v["host"].as_str()?.to_string(), v["epoch"].as_i64()?))
}

/// Record in `state_dir` that this store is host `name` at `epoch`.
pub fn write_local_host(state_dir: &std::path::Path, name: &str, epoch: i64) -> Result<()> {
    let text = json!({"host": name, "epoch": epoch}).to_string() + "\n";
    crate::durable::write_atomic(state_dir, &state_dir.join(EPOCH_FILE), text.as_bytes())
}

const COLUMNS: &str = "name, labels, capacity, address, keyid, public_key, state, epoch, \
     heartbeat, joined, updated, version, reason";

fn row(r: &Row) -> super::sql::Result<HostRow> {
    Ok(HostRow {
        name: r.get(0)?,
        labels: r.get(1)?,
        capacity: r.get(2)?,
        address: r.get(3)?,
        keyid: r.get(4)?,
        public_key: r.get(5)?,
        state: r.get(6)?,
        epoch: r.get(7)?,
        heartbeat: r.get(8)?,
        joined: r.get(9)?,
        updated: r.get(10)?,
        version: r.get(11)?,
        reason: r.get(12)?,
    })
}

/// The server clock as unix ms, in SQL: PostgreSQL's own for a fleet, the
/// local one on SQLite (which has no server).
pub(super) fn now_sql(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
        Dialect::Sqlite => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
    }
}

impl Reader<'_> {
    /// The server's clock, unix ms: what heartbeats are stamped with and
    /// lapses judged by.
    pub fn now_ms(&self) -> Result<i64> {
        let sql = format!("SELECT {}", now_sql(self.sql().dialect()));
        self.sql()
            .query_row(&sql, (), |r| r.get(0))
            .db_ctx(self.path())
    }

    /// Every host, by name.
    pub fn hosts(&self) -> Result<Vec<HostRow>> {
        let mut stmt = self
            .sql()
            .prepare(&format!("SELECT {COLUMNS} FROM hosts ORDER BY name"))
            .db_ctx(self.path())?;
        let rows = stmt.query_map((), row).db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// Host `name`, if it ever joined.
    pub fn host(&self, name: &str) -> Result<Option<HostRow>> {
        self.sql()
            .query_row(
                &format!("SELECT {COLUMNS} FROM hosts WHERE name = ?1"),
                [name],
                row,
            )
            .optional()
            .db_ctx(self.path())
    }

    /// How many live instances, not lost, each host runs.
    pub fn instances_per_host(&self) -> Result<Vec<(String, i64)>> {
        let mut stmt = self
            .sql()
            .prepare(
                "SELECT host, count(*) FROM instances WHERE host IS NOT NULL AND lost IS NULL \
                 AND state IN ('created', 'running', 'stopping') GROUP BY host ORDER BY host",
            )
            .db_ctx(self.path())?;
        let rows = stmt
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// The live instances of `host` it must stop when it comes back fenced
    /// at `epoch`: counted lost, or started under an older epoch.
    pub fn stale_instances(&self, host: &str, epoch: i64) -> Result<Vec<String>> {
        let mut stmt = self
            .sql()
            .prepare(
                "SELECT id FROM instances WHERE host = ?1 \
                 AND state IN ('created', 'running', 'stopping') \
                 AND (lost IS NOT NULL OR host_epoch < ?2) ORDER BY created, id",
            )
            .db_ctx(self.path())?;
        let rows = stmt
            .query_map(params![host, epoch], |r| r.get(0))
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// The host instance `id` lives on (`None`: a store that never joined).
    pub fn instance_host(&self, id: &str) -> Result<Option<String>> {
        self.sql()
            .query_row("SELECT host FROM instances WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .db_ctx(self.path())
            .map(Option::flatten)
    }

    /// Why instance `id` is counted lost, if it is.
    pub fn instance_lost(&self, id: &str) -> Result<Option<String>> {
        self.sql()
            .query_row("SELECT lost FROM instances WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .db_ctx(self.path())
            .map(Option::flatten)
    }

    /// The fleet's trusted signing keys; untrusted ones too with `all`.
    pub fn trusted_keys(&self, all: bool) -> Result<Vec<TrustedKey>> {
        let sql = format!(
            "SELECT keyid, public_key, name, added, actor, removed FROM trusted_keys {} \
             ORDER BY added, keyid",
            if all { "" } else { "WHERE removed IS NULL" }
        );
        let mut stmt = self.sql().prepare(&sql).db_ctx(self.path())?;
        let rows = stmt
            .query_map((), |r| {
                Ok(TrustedKey {
                    keyid: r.get(0)?,
                    public_key: r.get(1)?,
                    name: r.get(2)?,
                    added: r.get(3)?,
                    actor: r.get(4)?,
                    removed: r.get(5)?,
                })
            })
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// The public keys of the fleet's trusted signing keys, as keys.
    pub fn trusted_public_keys(&self) -> Result<Vec<PublicKey>> {
        self.trusted_keys(false)?
            .iter()
            .map(|k| PublicKey::from_pem(&k.public_key, self.path()))
            .collect()
    }

    /// The host keys of every host that joined: each signs its own ledger
    /// entries, so `audit verify` trusts them all.
    pub fn host_public_keys(&self) -> Result<Vec<PublicKey>> {
        self.hosts()?
            .iter()
            .filter_map(|h| h.public_key.as_deref())
            .map(|pem| PublicKey::from_pem(pem, self.path()))
            .collect()
    }
}

impl Tx<'_> {
    fn insert_host(&self, j: &HostJoin<'_>, now: i64) -> Result<()> {
        let t = clock::now_rfc3339();
        self.sql()
            .execute(
                "INSERT INTO hosts (name, labels, capacity, address, keyid, public_key, state, \
                 epoch, heartbeat, joined, updated, version) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'up', 1, ?7, ?8, ?8, ?9)",
                params![
                    j.name,
                    j.labels,
                    j.capacity,
                    j.address,
                    j.key.keyid(),
                    j.key.to_pem(),
                    now,
                    t,
                    j.version
                ],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    fn update_host_identity(&self, j: &HostJoin<'_>) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE hosts SET labels = ?2, capacity = ?3, address = ?4, version = ?5, \
                 updated = ?6 WHERE name = ?1",
                params![
                    j.name,
                    j.labels,
                    j.capacity,
                    j.address,
                    j.version,
                    clock::now_rfc3339()
                ],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    fn set_host_state(&self, name: &str, state: &str, reason: Option<&str>) -> Result<bool> {
        self.sql()
            .execute(
                "UPDATE hosts SET state = ?2, reason = ?3, updated = ?4 WHERE name = ?1",
                params![name, state, reason, clock::now_rfc3339()],
            )
            .db_ctx(self.path())
            .map(|n| n > 0)
    }
}

impl Db {
    /// Register host `j.name` (or update what it says about itself): the
    /// first join pins its host key; a later join under the same name with
    /// another key is refused, naming both. Its state and epoch are left as
    /// they are: a host that was marked down stays down until
    /// [`Db::host_up`], after its serve stopped its stale instances.
    /// Records `host.join`.
    pub fn join_host(&mut self, j: &HostJoin<'_>) -> Result<HostRow> {
        let keyid = j.key.keyid();
        self.write(|tx| {
            let existing = tx.read().host(j.name)?;
            let first = existing.is_none();
            match &existing {
                Some(h) if h.keyid.as_deref() != Some(keyid.as_str()) => {
                    return Err(Error::Usage(format!(
                        "host {:?} joined the fleet with host key {}, not {keyid} (this store's \
                         keys/host.pub): another machine uses that name, or this one's key \
                         changed; join under another --host name",
                        j.name,
                        h.keyid.as_deref().unwrap_or("(none)")
                    )));
                }
                Some(_) => tx.update_host_identity(j)?,
                None => {
                    let other: Option<String> = tx
                        .sql()
                        .query_row("SELECT name FROM hosts WHERE keyid = ?1", [&keyid], |r| {
                            r.get(0)
                        })
                        .optional()
                        .db_ctx(tx.path())?;
                    if let Some(other) = other {
                        return Err(Error::Usage(format!(
                            "host key {keyid} (this store's keys/host.pub) already joined the fleet \
                             as host {other:?}; a store is one host: join it as --host {other}"
                        )));
                    }
                    let now = tx.read().now_ms()?;
                    tx.insert_host(j, now)?;
                }
            }
            let row = tx.read().host(j.name)?.expect("just written");
            let labels: serde_json::Value =
                serde_json::from_str(j.labels).unwrap_or_else(|_| json!({}));
            tx.record(NewEntry::new(
                "host.join",
                [j.name],
                json!({
                    "host": j.name,
                    "keyid": keyid,
                    "labels": labels,
                    "address": j.address,
                    "epoch": row.epoch,
                    "state": row.state,
                    "first": first,
                    "version": j.version,
                }),
            ))?;
            Ok(row)
        })
    }

    /// Host `name` is up at `epoch` (after its serve stopped what a fence
    /// left behind): state `up` (a draining host stays draining), a fresh
    /// heartbeat. With `stopped`, it came back fenced: records
    /// `host.fenced {host, epoch, stopped}` first, in the same change.
    pub fn host_up(&mut self, name: &str, epoch: i64, stopped: Option<&[String]>) -> Result<()> {
        self.write(|tx| {
            if let Some(stopped) = stopped {
                tx.record(NewEntry::new(
                    "host.fenced",
                    std::iter::once(name.to_string()).chain(stopped.iter().cloned()),
                    json!({"host": name, "epoch": epoch, "stopped": stopped}),
                ))?;
            }
            let now = tx.read().now_ms()?;
            tx.sql()
                .execute(
                    "UPDATE hosts SET state = CASE WHEN state = 'draining' THEN state ELSE 'up' END, \
                     reason = CASE WHEN state = 'draining' THEN reason ELSE NULL END, \
                     heartbeat = ?2, updated = ?3 WHERE name = ?1 AND epoch = ?4",
                    params![name, now, clock::now_rfc3339(), epoch],
                )
                .db_ctx(tx.path())
                .map(drop)
        })
    }

    /// Host `name`'s heartbeat at `epoch`, by the server clock: one
    /// statement, outside the write lock, so heartbeats never queue behind
    /// rollouts. `false` when the host is fenced: marked down, or its epoch
    /// moved on (another serve judged it lapsed).
    pub fn host_heartbeat(&self, name: &str, epoch: i64) -> Result<bool> {
        let sql = format!(
            "UPDATE hosts SET heartbeat = {} WHERE name = ?1 AND epoch = ?2 \
             AND state IN ('up', 'draining', 'drained')",
            now_sql(self.conn.dialect())
        );
        self.conn
            .execute(&sql, params![name, epoch])
            .db_ctx(&self.path)
            .map(|n| n > 0)
    }

    /// Mark down every host (up or draining) whose heartbeat is older than
    /// `timeout_ms` by the server clock, in one change: state `down`, epoch
    /// one more, their live instances counted lost ("host h2 down (epoch
    /// 3)"), and `host.down {host, epoch, lost}` for each. Whichever serve
    /// gets here first does it; the others find nothing. The checker, host
    /// `by`, does not judge itself: it is alive enough to look.
    pub fn mark_lapsed_hosts_down(&mut self, timeout_ms: i64, by: &str) -> Result<Vec<HostDown>> {
        self.write(|tx| {
            let now = tx.read().now_ms()?;
            let lapsed: Vec<(String, i64, Option<i64>)> = {
                let mut stmt = tx
                    .sql()
                    .prepare(
                        "SELECT name, epoch, heartbeat FROM hosts \
                         WHERE state IN ('up', 'draining') AND name != ?2 \
                         AND (heartbeat IS NULL OR heartbeat < ?1) ORDER BY name",
                    )
                    .db_ctx(tx.path())?;
                let rows = stmt
                    .query_map(params![now - timeout_ms, by], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .db_ctx(tx.path())?;
                rows.collect::<super::sql::Result<_>>().db_ctx(tx.path())?
            };
            let mut down = Vec::new();
            for (host, epoch, beat) in lapsed {
                let epoch = epoch + 1;
                let silent = beat.map_or("never".to_string(), |b| {
                    format!("{:.1} s", (now - b) as f64 / 1000.0)
                });
                let reason = format!(
                    "no heartbeat for {silent} (timeout {:.1} s), seen by {by}",
                    timeout_ms as f64 / 1000.0
                );
                tx.sql()
                    .execute(
                        "UPDATE hosts SET state = 'down', epoch = ?2, reason = ?3, updated = ?4 \
                         WHERE name = ?1",
                        params![host, epoch, reason, clock::now_rfc3339()],
                    )
                    .db_ctx(tx.path())?;
                let lost: Vec<String> = {
                    let mut stmt = tx
                        .sql()
                        .prepare(
                            "SELECT id FROM instances WHERE host = ?1 AND lost IS NULL \
                             AND state IN ('created', 'running', 'stopping') ORDER BY created, id",
                        )
                        .db_ctx(tx.path())?;
                    let rows = stmt.query_map([&host], |r| r.get(0)).db_ctx(tx.path())?;
                    rows.collect::<super::sql::Result<_>>().db_ctx(tx.path())?
                };
                let why = format!("host {host} down (epoch {epoch})");
                tx.sql()
                    .execute(
                        "UPDATE instances SET lost = ?2, ready_at = NULL WHERE host = ?1 \
                         AND lost IS NULL AND state IN ('created', 'running', 'stopping')",
                        params![host, why],
                    )
                    .db_ctx(tx.path())?;
                tx.record(NewEntry::new(
                    "host.down",
                    std::iter::once(host.clone()).chain(lost.iter().cloned()),
                    json!({"host": host, "epoch": epoch, "lost": lost, "reason": reason}),
                ))?;
                down.push(HostDown { host, epoch, lost });
            }
            Ok(down)
        })
    }

    /// Mark host `name` draining (`drain`) or up again: placement then
    /// moves its instances off (`deploy::hosting`). Records `host.drain` or
    /// `host.undrain`; `false` if it already was.
    pub fn set_host_draining(&mut self, name: &str, drain: bool) -> Result<bool> {
        self.write(|tx| {
            let Some(h) = tx.read().host(name)? else {
                return Err(Error::NotFound {
                    what: format!("host {name:?}"),
                    hint: Some("`drover hosts` lists the hosts that joined".into()),
                });
            };
            let (from, to, action) = match drain {
                true => ("up", "draining", "host.drain"),
                false => ("draining", "up", "host.undrain"),
            };
            if h.state == to {
                return Ok(false);
            }
            if h.state != from {
                return Err(Error::Usage(format!(
                    "host {name:?} is {}, not {from}: only an {from} host can be {}",
                    h.state,
                    if drain { "drained" } else { "undrained" }
                )));
            }
            tx.set_host_state(name, to, drain.then_some("drain requested"))?;
            tx.record(NewEntry::new(
                action,
                [name],
                json!({"host": name, "epoch": h.epoch}),
            ))?;
            Ok(true)
        })
    }

    /// Trust `key` for image signatures on every host (`name` says whose it
    /// is). Records `key.trust`. Trusting it again after untrusting it
    /// trusts it anew; trusting a trusted key changes nothing (`false`).
    pub fn trust_key(&mut self, key: &PublicKey, name: Option<&str>) -> Result<bool> {
        let keyid = key.keyid();
        self.write(|tx| {
            let was: Option<Option<String>> = tx
                .sql()
                .query_row(
                    "SELECT removed FROM trusted_keys WHERE keyid = ?1",
                    [&keyid],
                    |r| r.get(0),
                )
                .optional()
                .db_ctx(tx.path())?;
            if matches!(was, Some(None)) {
                return Ok(false);
            }
            let actor = crate::ledger::actor();
            tx.sql()
                .execute(
                    "INSERT INTO trusted_keys (keyid, public_key, name, added, actor) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (keyid) DO UPDATE SET \
                     public_key = excluded.public_key, name = excluded.name, \
                     added = excluded.added, actor = excluded.actor, removed = NULL",
                    params![keyid, key.to_pem(), name, clock::now_rfc3339(), actor],
                )
                .db_ctx(tx.path())?;
            tx.record(NewEntry::new(
                "key.trust",
                [keyid.as_str()],
                json!({"keyid": keyid, "name": name, "public_key": key.to_pem()}),
            ))?;
            Ok(true)
        })
    }

    /// Stop trusting the key `keyid` (a unique prefix of at least 8 hex
    /// digits will do). Records `key.untrust`; returns the full keyid.
    pub fn untrust_key(&mut self, keyid: &str) -> Result<String> {
        if keyid.len() < 8 {
            return Err(Error::Usage(format!(
                "key id {keyid:?} is too short: give at least 8 hex digits (`drover policy show` lists them)"
            )));
        }
        self.write(|tx| {
            let matching: Vec<String> = tx
                .read()
                .trusted_keys(false)?
                .into_iter()
                .map(|k| k.keyid)
                .filter(|k| k.starts_with(keyid))
                .collect();
            let full = match matching.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(Error::NotFound {
                        what: format!("trusted key {keyid}"),
                        hint: Some("`drover policy show` lists the fleet's trusted keys".into()),
                    });
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "key id {keyid} names {} trusted keys: give more of it",
                        matching.len()
                    )));
                }
            };
            tx.sql()
                .execute(
                    "UPDATE trusted_keys SET removed = ?2 WHERE keyid = ?1",
                    params![full, clock::now_rfc3339()],
                )
                .db_ctx(tx.path())?;
            tx.record(NewEntry::new(
                "key.untrust",
                [full.as_str()],
                json!({"keyid": full}),
            ))?;
            Ok(full)
        })
    }
}

#[cfg(test)]
mod tests;

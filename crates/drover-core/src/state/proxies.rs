//! Live proxies of `drover serve`: one heartbeat row per service, so a
//! deploy that drains an instance knows whether anyone will acknowledge it;
//! on a fleet, one per host and service (`proxy_beats`), with each host's
//! drain acknowledgements (`drain_acks`).

use super::sql::params;

use super::{DbContext, Reader, Tx};
use crate::clock;
use crate::error::Result;

impl Reader<'_> {
    /// Whether a proxy for `service` beat since `since_ms` (unix ms).
    pub fn proxy_alive(&self, service: &str, since_ms: i64) -> Result<bool> {
        self.sql()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM proxies WHERE service = ?1 AND heartbeat >= ?2)",
                params![service, since_ms],
                |r| r.get(0),
            )
            .db_ctx(self.path())
    }
}

impl Tx<'_> {
    /// `holder` proxies `service`, as of now.
    pub(crate) fn proxy_heartbeat(&self, service: &str, holder: &str) -> Result<()> {
        self.sql()
            .execute(
                "INSERT INTO proxies (service, holder, heartbeat) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (service) DO UPDATE SET holder = ?2, heartbeat = ?3",
                params![service, holder, clock::now_ms()],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// `holder` proxies nothing any more.
    pub(crate) fn remove_proxies(&self, holder: &str) -> Result<()> {
        self.sql()
            .execute("DELETE FROM proxies WHERE holder = ?1", [holder])
            .db_ctx(self.path())
            .map(drop)
    }
}

/// On a fleet, each host's proxy beats per service (`proxy_beats`, stamped
/// by the server clock) and acknowledges each drain itself (`drain_acks`):
/// an instance counts drained once every proxy that may still route it —
/// one that beat within the freshness window, on a host not down — acked.
impl Reader<'_> {
    /// Whether a proxy for `service` on a host that is not down beat within
    /// the last `fresh_ms` (server clock).
    pub fn fleet_proxy_alive(&self, service: &str, fresh_ms: i64) -> Result<bool> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM proxy_beats p JOIN hosts h ON h.name = p.host \
             WHERE p.service = ?1 AND h.state != 'down' AND p.heartbeat >= {} - ?2)",
            super::hosts::now_sql(self.sql().dialect())
        );
        self.sql()
            .query_row(&sql, params![service, fresh_ms], |r| r.get(0))
            .db_ctx(self.path())
    }

    /// How many of `ids` still run (or are starting) with a live proxy
    /// (fresh within `fresh_ms`, its host not down) that has not
    /// acknowledged their drain.
    pub fn fleet_undrained(&self, ids: &[String], fresh_ms: i64) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let n = ids.len();
        let sql = format!(
            "SELECT count(*) FROM instances i WHERE i.drained_at IS NULL \
             AND i.state IN ('created', 'running') AND i.id IN ({}) \
             AND EXISTS (SELECT 1 FROM proxy_beats p JOIN hosts h ON h.name = p.host \
                 WHERE p.service = i.service AND h.state != 'down' \
                 AND p.heartbeat >= {} - ?{} \
                 AND NOT EXISTS (SELECT 1 FROM drain_acks a \
                     WHERE a.instance = i.id AND a.host = p.host))",
            (1..=n)
                .map(|k| format!("?{k}"))
                .collect::<Vec<_>>()
                .join(", "),
            super::hosts::now_sql(self.sql().dialect()),
            n + 1
        );
        let mut args: Vec<super::sql::Value> = super::sql::params_from_iter(ids);
        args.push(super::sql::Value::Int(fresh_ms));
        self.sql()
            .query_row(&sql, args, |r| r.get(0))
            .db_ctx(self.path())
    }

    /// `(service, instance)` of every instance being drained that `host`'s
    /// proxy has not acknowledged yet.
    pub fn draining_on(&self, host: &str) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .sql()
            .prepare_cached(
                "SELECT i.service, i.id FROM instances i WHERE i.drain_at IS NOT NULL \
                 AND i.drained_at IS NULL AND i.state != 'deleted' AND i.service IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM drain_acks a WHERE a.instance = i.id AND a.host = ?1) \
                 ORDER BY i.service, i.id",
            )
            .db_ctx(self.path())?;
        let rows = stmt
            .query_map([host], |r| Ok((r.get(0)?, r.get(1)?)))
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }
}

impl Tx<'_> {
    /// `holder`, `host`'s proxy, routes `service`, as of now (server clock).
    pub(crate) fn fleet_proxy_beat(&self, host: &str, service: &str, holder: &str) -> Result<()> {
        let sql = format!(
            "INSERT INTO proxy_beats (host, service, holder, heartbeat) VALUES (?1, ?2, ?3, {now}) \
             ON CONFLICT (host, service) DO UPDATE SET holder = ?3, heartbeat = {now}",
            now = super::hosts::now_sql(self.sql().dialect())
        );
        self.sql()
            .execute(&sql, params![host, service, holder])
            .db_ctx(self.path())
            .map(drop)
    }

    /// `holder`, `host`'s proxy, routes nothing any more.
    pub(crate) fn remove_fleet_proxy(&self, host: &str, holder: &str) -> Result<()> {
        self.sql()
            .execute(
                "DELETE FROM proxy_beats WHERE host = ?1 AND holder = ?2",
                params![host, holder],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// `host`'s proxy saw its last request to instance `id` finish. Once
    /// every live proxy (see [`Reader::fleet_undrained`]) has, the instance
    /// is marked drained (`drained_at`) too.
    pub(crate) fn fleet_ack_drained(&self, id: &str, host: &str, fresh_ms: i64) -> Result<()> {
        self.sql()
            .execute(
                "INSERT INTO drain_acks (instance, host, at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (instance, host) DO NOTHING",
                params![id, host, clock::now_ms()],
            )
            .db_ctx(self.path())?;
        if self.read().fleet_undrained(&[id.to_string()], fresh_ms)? == 0 {
            self.ack_drained(id)?;
        }
        Ok(())
    }
}

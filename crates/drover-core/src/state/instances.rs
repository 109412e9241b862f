//! Instances as recorded: one row each, every state change it made
//! (`instance_transitions`), and the columns traffic hand-over and drift
//! move (ready, draining, drained, condemned). The state machine and what
//! the columns mean belong to `instance` and `deploy::traffic`; rows here are
//! plain values they decode.

use super::sql::{OptionalExtension, Row, params, params_from_iter};

use super::{DbContext, Reader, Tx};
use crate::clock;
use crate::digest::Digest;
use crate::error::Result;

/// One instance row, as stored. `state`, `driver` and `launch` (JSON) are
/// decoded by `instance`.
#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub id: String,
    pub name: Option<String>,
    pub image: Digest,
    pub image_ref: String,
    pub release: Option<i64>,
    pub driver: String,
    pub state: String,
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    pub monitor_pid: Option<u32>,
    pub monitor_start: Option<u64>,
    pub port: Option<u16>,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    pub stop_signal: i32,
    pub launch: String,
    pub service: Option<String>,
    pub ready_at: Option<i64>,
    pub drain_at: Option<i64>,
    pub condemned: Option<String>,
    pub config_digest: Option<Digest>,
    /// Its replica slot (a service's instance; `NULL` before slots existed).
    pub slot: Option<u32>,
    /// The volumes it mounts and how (JSON, decoded by `instance`); `NULL`
    /// for instances recorded before this was.
    pub volumes: Option<String>,
    /// The machine and boot its monitor and process were started on
    /// (`instance::host`); `NULL` for rows from before this was recorded.
    pub machine_id: Option<String>,
    pub boot_id: Option<String>,
    /// The fleet host it runs on (`NULL`: a store that never joined).
    pub host: Option<String>,
    /// Why it is counted lost (its host was marked down), if it is.
    pub lost: Option<String>,
}

/// A new instance, in state `created`.
pub struct NewInstance<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
    pub image: &'a Digest,
    pub image_ref: &'a str,
    pub release: Option<i64>,
    pub driver: &'a str,
    pub state: &'a str,
    pub port: Option<u16>,
    pub stop_signal: i32,
    pub launch: &'a str,
    pub service: Option<&'a str>,
    pub config_digest: &'a Digest,
    pub slot: Option<u32>,
    pub volumes: &'a str,
}

/// An instance that takes traffic ([`Reader::routable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutableRow {
    pub service: String,
    pub id: String,
    pub port: u16,
    /// Its host; `None` on a store that never joined a fleet.
    pub host: Option<String>,
    /// Its host's address (`serve --join --address`), if it gave one.
    pub address: Option<String>,
}

/// Where an instance runs ([`Reader::instance_location`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLocation {
    /// Its host; `None` on a store that never joined a fleet.
    pub host: Option<String>,
    /// Its host's address, if it gave one.
    pub address: Option<String>,
    pub port: Option<u16>,
}

/// A live instance that mounts volumes: who it is, and its `volumes` JSON.
#[derive(Debug, Clone)]
pub struct VolumeHolder {
    pub id: String,
    pub name: Option<String>,
    pub service: Option<String>,
    pub release: Option<i64>,
    pub volumes: String,
}

const COLUMNS: &str = "id, name, image, image_ref, release, driver, state, pid, pid_start, \
     monitor_pid, monitor_start, port, created, started, finished, exit_code, exit_signal, \
     stop_signal, launch, service, ready_at, drain_at, condemned, config_digest, slot, volumes, \
     machine_id, boot_id, host, lost";

fn row(r: &Row) -> super::sql::Result<InstanceRow> {
    Ok(InstanceRow {
        id: r.get(0)?,
        name: r.get(1)?,
        image: r.get(2)?,
        image_ref: r.get(3)?,
        release: r.get(4)?,
        driver: r.get(5)?,
        state: r.get(6)?,
        pid: r.get(7)?,
        pid_start: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        monitor_pid: r.get(9)?,
        monitor_start: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        port: r.get(11)?,
        created: r.get(12)?,
        started: r.get(13)?,
        finished: r.get(14)?,
        exit_code: r.get(15)?,
        exit_signal: r.get(16)?,
        stop_signal: r.get(17)?,
        launch: r.get(18)?,
        service: r.get(19)?,
        ready_at: r.get(20)?,
        drain_at: r.get(21)?,
        condemned: r.get(22)?,
        config_digest: r.get(23)?,
        slot: r.get(24)?,
        volumes: r.get(25)?,
        machine_id: r.get(26)?,
        boot_id: r.get(27)?,
        host: r.get(28)?,
        lost: r.get(29)?,
    })
}

impl Reader<'_> {
    /// Instance `id`, if it was ever recorded (deleted ones included).
    pub fn instance(&self, id: &str) -> Result<Option<InstanceRow>> {
        self.sql()
            .query_row(
                &format!("SELECT {COLUMNS} FROM instances WHERE id = ?1"),
                [id],
                row,
            )
            .optional()
            .db_ctx(self.path())
    }

    /// Every instance, oldest first; deleted ones only with `all`.
    pub fn instances(&self, all: bool) -> Result<Vec<InstanceRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM instances {} ORDER BY created, id",
            if all { "" } else { "WHERE state != 'deleted'" }
        );
        let mut stmt = self.sql().prepare(&sql).db_ctx(self.path())?;
        let rows = stmt.query_map((), row).db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// Whether a live instance is called `name`.
    pub fn instance_name_taken(&self, name: &str) -> Result<bool> {
        self.sql()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM instances WHERE name = ?1 AND state != 'deleted')",
                [name],
                |r| r.get(0),
            )
            .db_ctx(self.path())
    }

    /// Every live instance (created, running or stopping) that mounts a
    /// volume, oldest first.
    pub fn volume_holders(&self) -> Result<Vec<VolumeHolder>> {
        let mut stmt = self
            .sql()
            .prepare_cached(
                "SELECT id, name, service, release, volumes FROM instances \
                 WHERE state IN ('created', 'running', 'stopping') \
                 AND volumes IS NOT NULL AND volumes != '[]' ORDER BY created, id",
            )
            .db_ctx(self.path())?;
        let rows = stmt
            .query_map((), |r| {
                Ok(VolumeHolder {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    service: r.get(2)?,
                    release: r.get(3)?,
                    volumes: r.get(4)?,
                })
            })
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// Every instance that takes traffic: running, ready, not draining,
    /// not counted lost, and not on a host that is down; by service, then
    /// oldest first, with its host and that host's address.
    pub fn routable(&self) -> Result<Vec<RoutableRow>> {
        let mut stmt = self
            .sql()
            .prepare_cached(
                "SELECT i.service, i.id, i.port, i.host, h.address FROM instances i \
                 LEFT JOIN hosts h ON h.name = i.host \
                 WHERE i.state = 'running' AND i.service IS NOT NULL AND i.port IS NOT NULL \
                 AND i.ready_at IS NOT NULL AND i.drain_at IS NULL AND i.lost IS NULL \
                 AND (h.state IS NULL OR h.state != 'down') \
                 ORDER BY i.service, i.created, i.id",
            )
            .db_ctx(self.path())?;
        let rows = stmt
            .query_map((), |r| {
                Ok(RoutableRow {
                    service: r.get(0)?,
                    id: r.get(1)?,
                    port: r.get(2)?,
                    host: r.get(3)?,
                    address: r.get(4)?,
                })
            })
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// Where instance `id` runs: its host (`None`: the single host of a
    /// store that never joined a fleet), that host's address, and its port.
    pub fn instance_location(&self, id: &str) -> Result<Option<InstanceLocation>> {
        self.sql()
            .query_row(
                "SELECT i.host, h.address, i.port FROM instances i \
                 LEFT JOIN hosts h ON h.name = i.host WHERE i.id = ?1",
                [id],
                |r| {
                    Ok(InstanceLocation {
                        host: r.get(0)?,
                        address: r.get(1)?,
                        port: r.get(2)?,
                    })
                },
            )
            .optional()
            .db_ctx(self.path())
    }

    /// `(service, instance)` of every instance being drained whose drain no
    /// proxy has acknowledged yet.
    pub fn draining(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .sql()
            .prepare_cached(
                "SELECT service, id FROM instances WHERE drain_at IS NOT NULL AND drained_at IS NULL \
                 AND state != 'deleted' AND service IS NOT NULL",
            )
            .db_ctx(self.path())?;
        let rows = stmt
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// How many of `ids` still run (or are starting) undrained.
    pub fn undrained(&self, ids: &[String]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.sql()
            .query_row(
                &format!(
                    "SELECT count(*) FROM instances WHERE drained_at IS NULL \
                     AND state IN ('created', 'running') AND id IN ({})",
                    ids.iter().map(|_| "?").collect::<Vec<_>>().join(", ")
                ),
                params_from_iter(ids),
                |r| r.get(0),
            )
            .db_ctx(self.path())
    }

    /// Whether instance `id`'s end was already handled by a heal (a
    /// `service.heal` entry names it) or was a stop someone asked for.
    pub fn heal_recorded_or_stopped(&self, id: &str) -> Result<bool> {
        self.sql()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM ledger WHERE action = 'service.heal' \
                 AND subjects LIKE ?1) OR EXISTS (SELECT 1 FROM instance_transitions \
                 WHERE instance = ?2 AND to_state = 'stopping')",
                params![format!("%\"{id}\"%"), id],
                |r| r.get(0),
            )
            .db_ctx(self.path())
    }
}

impl Tx<'_> {
    /// Record a new instance (see [`NewInstance`]).
    /// On a store that joined a fleet, it is stamped with the host and
    /// its epoch ([`super::hosts::local_host`]).
    pub(crate) fn insert_instance(&self, i: &NewInstance<'_>) -> Result<()> {
        let joined = super::hosts::local_host(super::state_dir(self.path()));
        self.sql()
            .execute(
                "INSERT INTO instances (id, name, image, image_ref, release, driver, state, port, \
                 created, stop_signal, launch, service, config_digest, slot, volumes, host, \
                 host_epoch) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
                params![
                    i.id,
                    i.name,
                    i.image.to_string(),
                    i.image_ref,
                    i.release,
                    i.driver,
                    i.state,
                    i.port,
                    clock::now_rfc3339(),
                    i.stop_signal,
                    i.launch,
                    i.service,
                    i.config_digest.to_string(),
                    i.slot,
                    i.volumes,
                    joined.as_ref().map(|(h, _)| h.as_str()),
                    joined.as_ref().map(|(_, e)| *e)
                ],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Forget an instance that never ran (no ledger entry mentions it).
    pub(crate) fn delete_instance(&self, id: &str) -> Result<()> {
        self.sql()
            .execute("DELETE FROM instances WHERE id = ?1", [id])
            .db_ctx(self.path())
            .map(drop)
    }

    /// Move instance `id` from state `from` to `to` at `time`, and keep the
    /// transition.
    pub(crate) fn set_instance_state(
        &self,
        id: &str,
        from: &str,
        to: &str,
        time: &str,
    ) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE instances SET state = ?2 WHERE id = ?1",
                params![id, to],
            )
            .db_ctx(self.path())?;
        self.sql()
            .execute(
                "INSERT INTO instance_transitions (instance, time, from_state, to_state) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, time, from, to],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// The instance's process, and when it started.
    pub(crate) fn set_instance_process(
        &self,
        id: &str,
        pid: u32,
        start: Option<u64>,
        started: &str,
    ) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE instances SET pid = ?2, pid_start = ?3, started = ?4 WHERE id = ?1",
                params![id, pid, start.map(|s| s as i64), started],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// The machine and boot the instance's processes run on (set with
    /// each of them).
    pub(crate) fn set_instance_host(
        &self,
        id: &str,
        machine_id: Option<&str>,
        boot_id: Option<&str>,
    ) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE instances SET machine_id = ?2, boot_id = ?3 WHERE id = ?1",
                params![id, machine_id, boot_id],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// The instance's monitor process.
    pub(crate) fn set_instance_monitor(
        &self,
        id: &str,
        pid: u32,
        start: Option<u64>,
    ) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE instances SET monitor_pid = ?2, monitor_start = ?3 WHERE id = ?1",
                params![id, pid, start.map(|s| s as i64)],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// A monitor takes charge of a created instance nobody monitors yet;
    /// false if it is not (any more) such an instance.
    pub(crate) fn claim_instance(&self, id: &str, pid: u32, start: Option<u64>) -> Result<bool> {
        self.sql()
            .execute(
                "UPDATE instances SET monitor_pid = ?2, monitor_start = ?3 \
                 WHERE id = ?1 AND state = 'created' AND monitor_pid IS NULL",
                params![id, pid, start.map(|s| s as i64)],
            )
            .db_ctx(self.path())
            .map(|n| n == 1)
    }

    /// How the instance's process ended, and when.
    pub(crate) fn set_instance_exit(
        &self,
        id: &str,
        finished: &str,
        code: Option<i32>,
        signal: Option<i32>,
    ) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE instances SET finished = ?2, exit_code = ?3, exit_signal = ?4 WHERE id = ?1",
                params![id, finished, code, signal],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// It passed its health check: it takes traffic from now on.
    pub(crate) fn mark_ready(&self, id: &str) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE instances SET ready_at = ?2 WHERE id = ?1 AND ready_at IS NULL",
                params![id, clock::now_ms()],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// It must be replaced, for `why`; with `out_of_traffic`, at once.
    pub(crate) fn condemn(&self, id: &str, why: &str, out_of_traffic: bool) -> Result<()> {
        let sql = if out_of_traffic {
            "UPDATE instances SET condemned = ?2, ready_at = NULL WHERE id = ?1"
        } else {
            "UPDATE instances SET condemned = ?2 WHERE id = ?1"
        };
        self.sql()
            .execute(sql, params![id, why])
            .db_ctx(self.path())
            .map(drop)
    }

    /// No new traffic to it from `at` (unix ms) on.
    pub(crate) fn start_drain(&self, id: &str, at: i64) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE instances SET drain_at = ?2 WHERE id = ?1 AND drain_at IS NULL",
                params![id, at],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// A proxy saw its last request to it finish.
    pub(crate) fn ack_drained(&self, id: &str) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE instances SET drained_at = ?2 WHERE id = ?1 AND drained_at IS NULL",
                params![id, clock::now_ms()],
            )
            .db_ctx(self.path())
            .map(drop)
    }
}

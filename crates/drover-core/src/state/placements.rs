//! Desired placements of a fleet's services: which host runs slot `slot`
//! of release `release` of a service, why, and under which lease token it
//! was decided. The holder of the service's lease decides them
//! (`deploy::converge`); each host's serve realizes the ones on it. A
//! retired placement is no longer wanted: its host stops what realizes it.

use serde::Serialize;

use super::sql::{Row, params};
use super::{DbContext, Reader, Tx};
use crate::clock;
use crate::error::Result;

/// One placement, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacementRow {
    pub service: String,
    pub slot: u32,
    pub release: i64,
    pub host: String,
    /// The service lease token that decided it.
    pub token: i64,
    /// `spread`, `kept`, `replace:host-down`, `drain`, `constraint`.
    pub reason: String,
    pub decided: String,
    pub retired: Option<String>,
}

const COLUMNS: &str = "service, slot, release, host, token, reason, decided, retired";

fn row(r: &Row) -> super::sql::Result<PlacementRow> {
    Ok(PlacementRow {
        service: r.get(0)?,
        slot: r.get(1)?,
        release: r.get(2)?,
        host: r.get(3)?,
        token: r.get(4)?,
        reason: r.get(5)?,
        decided: r.get(6)?,
        retired: r.get(7)?,
    })
}

impl Reader<'_> {
    /// The placements of `service` still wanted, by release and slot.
    pub fn placements(&self, service: &str) -> Result<Vec<PlacementRow>> {
        let mut stmt = self
            .sql()
            .prepare(&format!(
                "SELECT {COLUMNS} FROM placements WHERE service = ?1 AND retired IS NULL \
                 ORDER BY release, slot"
            ))
            .db_ctx(self.path())?;
        let rows = stmt.query_map([service], row).db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }
}

impl Tx<'_> {
    /// Place slot `slot` of `service`'s release `release` on `host`
    /// (`reason`), decided under lease token `token`; a placement of the
    /// slot elsewhere is replaced (and wanted again if it was retired).
    pub fn place(
        &self,
        service: &str,
        slot: u32,
        release: i64,
        host: &str,
        token: i64,
        reason: &str,
    ) -> Result<()> {
        self.sql()
            .execute(
                "INSERT INTO placements (service, slot, release, host, token, reason, decided) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (service, slot, release) DO UPDATE SET host = excluded.host, \
                 token = excluded.token, reason = excluded.reason, decided = excluded.decided, \
                 retired = NULL",
                params![
                    service,
                    slot,
                    release,
                    host,
                    token,
                    reason,
                    clock::now_rfc3339()
                ],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Retire the placement of slot `slot` of `service`'s release
    /// `release`: no longer wanted.
    pub fn retire_placement(&self, service: &str, slot: u32, release: i64) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE placements SET retired = ?4 WHERE service = ?1 AND slot = ?2 \
                 AND release = ?3 AND retired IS NULL",
                params![service, slot, release, clock::now_rfc3339()],
            )
            .db_ctx(self.path())
            .map(drop)
    }
}

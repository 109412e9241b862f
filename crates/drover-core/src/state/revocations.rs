//! Revoked images: never deployed, run or built FROM again (the rules are
//! `trust::policy`'s; this is where they are kept).

use super::sql::{OptionalExtension, params};
use serde::Serialize;

use super::{DbContext, Reader, Tx};
use crate::digest::Digest;
use crate::error::Result;

/// One revoked image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revocation {
    pub digest: Digest,
    pub reason: String,
    /// When it was revoked (RFC 3339).
    pub time: String,
    pub actor: String,
}

impl Reader<'_> {
    /// The revocation of `digest`, if it is revoked.
    pub fn revocation(&self, digest: &Digest) -> Result<Option<Revocation>> {
        self.sql()
            .query_row(
                "SELECT digest, reason, time, actor FROM revocations WHERE digest = ?1",
                [digest.to_string()],
                row,
            )
            .optional()
            .db_ctx(self.path())
    }

    /// Every revocation, oldest first.
    pub fn revocations(&self) -> Result<Vec<Revocation>> {
        let mut stmt = self
            .sql()
            .prepare("SELECT digest, reason, time, actor FROM revocations ORDER BY time, digest")
            .db_ctx(self.path())?;
        let rows = stmt.query_map((), row).db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// How many images are revoked.
    pub fn revocation_count(&self) -> Result<u64> {
        self.sql()
            .query_row("SELECT count(*) FROM revocations", (), |r| r.get(0))
            .db_ctx(self.path())
    }
}

impl Tx<'_> {
    /// Record a revocation (the caller records the ledger entry).
    pub(crate) fn add_revocation(&self, r: &Revocation) -> Result<()> {
        self.sql()
            .execute(
                "INSERT INTO revocations (digest, reason, time, actor) VALUES (?1, ?2, ?3, ?4)",
                params![r.digest.to_string(), r.reason, r.time, r.actor],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Lift the revocation of `digest`.
    pub(crate) fn remove_revocation(&self, digest: &Digest) -> Result<()> {
        self.sql()
            .execute(
                "DELETE FROM revocations WHERE digest = ?1",
                [digest.to_string()],
            )
            .db_ctx(self.path())
            .map(drop)
    }
}

fn row(r: &super::sql::Row) -> super::sql::Result<Revocation> {
    Ok(Revocation {
        digest: r.get(0)?,
        reason: r.get(1)?,
        time: r.get(2)?,
        actor: r.get(3)?,
    })
}

//! Host id ranges held for user namespaces (`id_ranges`): which owner (a
//! service, or one ad-hoc instance) maps its container ids to which range.
//! The policy (where ranges start, how big they are) is `instance::userns`'s;
//! this only hands out the lowest free index, once per owner.

use super::sql::{OptionalExtension, params};

use super::{DbContext, Reader, Tx};
use crate::error::{Error, Result};

impl Reader<'_> {
    /// The range index `owner` holds, if any.
    pub fn id_range(&self, owner: &str) -> Result<Option<u32>> {
        self.sql()
            .query_row("SELECT idx FROM id_ranges WHERE owner = ?1", [owner], |r| {
                r.get::<_, u32>(0)
            })
            .optional()
            .db_ctx(self.path())
    }

    /// Every held range: (index, owner), by index.
    pub fn id_ranges(&self) -> Result<Vec<(u32, String)>> {
        let mut stmt = self
            .sql()
            .prepare("SELECT idx, owner FROM id_ranges ORDER BY idx")
            .db_ctx(self.path())?;
        let rows = stmt
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<Vec<_>>>()
            .db_ctx(self.path())
    }
}

impl Tx<'_> {
    /// The range index `owner` holds, taking the lowest free one below
    /// `limit` first if it holds none.
    pub(crate) fn hold_id_range(&self, owner: &str, limit: u32, time: &str) -> Result<u32> {
        if let Some(idx) = self.read().id_range(owner)? {
            return Ok(idx);
        }
        // The lowest index not taken: 0 if free, else one past a taken
        // index whose successor is free.
        let idx: u32 = self
            .sql()
            .query_row(
                "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM id_ranges WHERE idx = 0) THEN 0
                        ELSE (SELECT min(a.idx) + 1 FROM id_ranges a
                              WHERE NOT EXISTS (SELECT 1 FROM id_ranges b WHERE b.idx = a.idx + 1))
                        END",
                (),
                |r| r.get(0),
            )
            .db_ctx(self.path())?;
        if idx >= limit {
            return Err(Error::Busy {
                what: "user-namespace id ranges".into(),
                reason: format!(
                    "all {limit} are held; remove unused services or instances (`drover rm`)"
                ),
            });
        }
        self.sql()
            .execute(
                "INSERT INTO id_ranges (idx, owner, created) VALUES (?1, ?2, ?3)",
                params![idx, owner, time],
            )
            .db_ctx(self.path())?;
        Ok(idx)
    }

    /// Give up `owner`'s range, if it holds one.
    pub(crate) fn release_id_range(&self, owner: &str) -> Result<()> {
        self.sql()
            .execute("DELETE FROM id_ranges WHERE owner = ?1", [owner])
            .db_ctx(self.path())
            .map(|_| ())
    }
}

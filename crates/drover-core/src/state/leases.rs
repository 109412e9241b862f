//! Named leases with fencing tokens (`locks`): the rows behind
//! `deploy::lock`. Rows stay when a lease ends, so a token only grows.

use super::sql::{OptionalExtension, params};

use super::{DbContext, Tx};
use crate::error::Result;

/// A lease row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub holder: String,
    pub token: i64,
    /// Unix milliseconds.
    pub expires: i64,
}

impl Tx<'_> {
    /// The lease `name`, as stored, if it was ever taken.
    pub(crate) fn lease(&self, name: &str) -> Result<Option<LeaseRow>> {
        self.sql()
            .query_row(
                "SELECT holder, token, expires FROM locks WHERE name = ?1",
                [name],
                |r| {
                    Ok(LeaseRow {
                        holder: r.get(0)?,
                        token: r.get(1)?,
                        expires: r.get(2)?,
                    })
                },
            )
            .optional()
            .db_ctx(self.path())
    }

    /// Store lease `name` as `row` (taken over or taken for the first time).
    pub(crate) fn put_lease(&self, name: &str, row: &LeaseRow) -> Result<()> {
        self.sql()
            .execute(
                "INSERT INTO locks (name, holder, token, expires) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET holder = ?2, token = ?3, expires = ?4",
                params![name, row.holder, row.token, row.expires],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Move the expiry of lease `name` if `token` still holds it; false if
    /// it does not.
    pub(crate) fn set_lease_expiry(&self, name: &str, token: i64, expires: i64) -> Result<bool> {
        self.sql()
            .execute(
                "UPDATE locks SET expires = ?3 WHERE name = ?1 AND token = ?2",
                params![name, token, expires],
            )
            .db_ctx(self.path())
            .map(|n| n == 1)
    }
}

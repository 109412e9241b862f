//! API tokens' rows: name, role, the SHA-256 of the secret (never the
//! secret), when made and by whom, when they expire and when revoked. The
//! rules (secrets, roles, authentication) are `crate::tokens`'.

use super::sql::{OptionalExtension, params};

use super::{DbContext, Reader, Tx};
use crate::error::Result;

/// One token as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub name: String,
    pub role: String,
    /// Lowercase hex SHA-256 of the secret.
    pub hash: String,
    /// RFC 3339 UTC.
    pub created: String,
    pub creator: String,
    pub expires: Option<String>,
    pub revoked: Option<String>,
}

const COLUMNS: &str = "name, role, hash, created, creator, expires, revoked";

impl Reader<'_> {
    /// Every token, by name.
    pub fn tokens(&self) -> Result<Vec<TokenRow>> {
        let mut stmt = self
            .sql()
            .prepare(&format!("SELECT {COLUMNS} FROM tokens ORDER BY name"))
            .db_ctx(self.path())?;
        let rows = stmt.query_map((), row).db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// The token named `name`, revoked or not.
    pub fn token(&self, name: &str) -> Result<Option<TokenRow>> {
        self.sql()
            .query_row(
                &format!("SELECT {COLUMNS} FROM tokens WHERE name = ?1"),
                [name],
                row,
            )
            .optional()
            .db_ctx(self.path())
    }
}

impl Tx<'_> {
    /// Store a new token (the caller checked the name is free and records
    /// the ledger entry).
    pub(crate) fn insert_token(&self, t: &TokenRow) -> Result<()> {
        self.sql()
            .execute(
                &format!("INSERT INTO tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    t.name, t.role, t.hash, t.created, t.creator, t.expires, t.revoked
                ],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Mark `name` revoked at `time`, if it is not already.
    pub(crate) fn revoke_token(&self, name: &str, time: &str) -> Result<bool> {
        self.sql()
            .execute(
                "UPDATE tokens SET revoked = ?2 WHERE name = ?1 AND revoked IS NULL",
                params![name, time],
            )
            .db_ctx(self.path())
            .map(|n| n > 0)
    }
}

fn row(r: &super::sql::Row) -> super::sql::Result<TokenRow> {
    Ok(TokenRow {
        name: r.get(0)?,
        role: r.get(1)?,
        hash: r.get(2)?,
        created: r.get(3)?,
        creator: r.get(4)?,
        expires: r.get(5)?,
        revoked: r.get(6)?,
    })
}

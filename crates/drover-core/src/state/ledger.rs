//! The ledger's rows: appending (chained and signed by [`crate::ledger`]),
//! listing with filters, and the rows verification and export walk.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde_json::Value;

use super::{DbContext, Reader, Tx};
use crate::error::{Error, Result};
use crate::keys::{PublicKey, SigningKey};
use crate::ledger::{self, Entry, Filter, NewEntry, Source, VerifyReport, export};

const COLUMNS: &str =
    "seq, time, actor, action, subjects, details, prev_hash, hash, keyid, signature";

/// Append `e` as the entry after the head; see [`Tx::record`].
pub(super) fn append(
    tx: &Tx<'_>,
    e: NewEntry,
    actor: String,
    time: String,
    key: impl FnOnce() -> Result<Arc<SigningKey>>,
) -> Result<Entry> {
    let (sql, db_path) = (tx.sql(), tx.path());
    let head = read_head(sql, db_path)?;
    let last: Option<i64> = sql
        .query_row("SELECT max(seq) FROM ledger", [], |r| r.get(0))
        .db_ctx(db_path)?;
    let entry = ledger::next(head, last, e, actor, time, key)?;
    sql.execute(
        "INSERT INTO ledger (seq, time, actor, action, subjects, details, prev_hash, hash, keyid, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            entry.seq,
            entry.time,
            entry.actor,
            entry.action,
            Value::from(entry.subjects.clone()).to_string(),
            entry.details.to_string(),
            entry.prev_hash,
            entry.hash,
            entry.keyid,
            entry.signature,
        ],
    )
    .db_ctx(db_path)?;
    sql.execute(
        "INSERT INTO ledger_head (id, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        params![entry.seq, entry.hash],
    )
    .db_ctx(db_path)?;
    Ok(entry)
}

impl Reader<'_> {
    /// The ledger entries matching `f`, in ascending `seq` order; as stored,
    /// not verified (see [`Reader::verify_ledger`]). A row too damaged to
    /// decode is an [`Error::LedgerTampered`].
    pub fn ledger(&self, f: &Filter) -> Result<Vec<Entry>> {
        list(self.sql(), self.path(), f)
    }

    /// Walk the whole ledger in one read snapshot and report the first entry
    /// not as written (see [`ledger::verify`]).
    pub fn verify_ledger(&self, trusted: &[PublicKey]) -> Result<VerifyReport> {
        self.snapshot(|r| ledger::verify(r, trusted))
    }

    /// Export the ledger from `since` (see [`export::write`]), in one read
    /// snapshot, after verifying it against `trusted`.
    pub fn export_ledger(
        &self,
        key: &SigningKey,
        trusted: &[PublicKey],
        since: Option<u64>,
        out: &mut dyn Write,
        out_name: &Path,
    ) -> Result<export::Summary> {
        self.snapshot(|r| export::write(r, key, trusted, since, out, out_name))
    }

    /// Run `f` in one read snapshot: its own, or the caller's transaction.
    fn snapshot<T>(&self, f: impl FnOnce(&Snapshot<'_>) -> Result<T>) -> Result<T> {
        let _snapshot = if self.sql().is_autocommit() {
            Some(self.sql().unchecked_transaction().db_ctx(self.path())?)
        } else {
            None
        };
        f(&Snapshot(*self))
    }
}

/// The ledger's rows as one read snapshot sees them: the only [`Source`]
/// there is, made only by [`Reader::snapshot`], so the head and the rows a
/// verification compares can never come from two moments (an append
/// committed in between would look like tampering).
struct Snapshot<'a>(Reader<'a>);

impl Source for Snapshot<'_> {
    fn head(&self) -> Result<Option<(i64, String)>> {
        read_head(self.0.sql(), self.0.path())
    }

    fn signing_required_from(&self) -> Result<Option<u64>> {
        let v: Option<String> = self
            .0
            .sql()
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'ledger_signed_from'",
                [],
                |r| r.get(0),
            )
            .optional()
            .db_ctx(self.0.path())?;
        Ok(v.and_then(|v| v.parse().ok()))
    }

    fn hash_of(&self, seq: u64) -> Result<String> {
        self.0
            .sql()
            .query_row("SELECT hash FROM ledger WHERE seq = ?1", [seq], |r| {
                r.get(0)
            })
            .db_ctx(self.0.path())
    }

    fn each(
        &self,
        from_seq: u64,
        f: &mut dyn FnMut(i64, std::result::Result<Entry, String>) -> Result<()>,
    ) -> Result<()> {
        // From the start means every row, those numbered below 1 too: they
        // are damage for verify to report, not rows to skip.
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let mut stmt = self
            .0
            .sql()
            .prepare(&format!(
                "SELECT {COLUMNS} FROM ledger WHERE ?1 <= 1 OR seq >= ?1 ORDER BY seq"
            ))
            .db_ctx(self.0.path())?;
        let mut rows = stmt.query([from]).db_ctx(self.0.path())?;
        while let Some(row) = rows.next().db_ctx(self.0.path())? {
            let seq: i64 = row.get(0).db_ctx(self.0.path())?;
            f(seq, entry_from_row(row))?;
        }
        Ok(())
    }
}

/// The entries matching `f`, in ascending `seq` order.
///
/// Entries are returned as stored, not verified: use [`Reader::verify_ledger`]. A
/// row too damaged to decode is an [`Error::LedgerTampered`].
fn list(conn: &Connection, db_path: &Path, f: &Filter) -> Result<Vec<Entry>> {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    // Plain comparisons rather than LIKE/GLOB: those treat `_`, `%`, `?` and
    // `[` in names as wildcards, and LIKE ignores ASCII case.
    let mut exact_or_prefix = |column: &str, pattern: &str| match pattern.strip_suffix('*') {
        Some(prefix) => {
            clauses.push(format!("substr({column}, 1, length(?)) = ?"));
            args.push(SqlValue::Text(prefix.to_string()));
            args.push(SqlValue::Text(prefix.to_string()));
        }
        None => {
            clauses.push(format!("{column} = ?"));
            args.push(SqlValue::Text(pattern.to_string()));
        }
    };
    if let Some(action) = &f.action {
        exact_or_prefix("action", action);
    }
    if let Some(actor) = &f.actor {
        exact_or_prefix("actor", actor);
    }
    if let Some(subject) = &f.subject {
        clauses.push(
            "EXISTS (SELECT 1 FROM json_each(ledger.subjects) AS s WHERE instr(s.value, ?) > 0)"
                .into(),
        );
        args.push(SqlValue::Text(subject.clone()));
    }
    if let Some(since) = f.since_seq {
        clauses.push("seq >= ?".into());
        args.push(SqlValue::Integer(i64::try_from(since).unwrap_or(i64::MAX)));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let sql = match f.limit {
        None => format!("SELECT {COLUMNS} FROM ledger{filter} ORDER BY seq"),
        Some(n) => {
            args.push(SqlValue::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
            format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM ledger{filter} ORDER BY seq DESC LIMIT ?) ORDER BY seq"
            )
        }
    };

    let mut stmt = conn.prepare(&sql).db_ctx(db_path)?;
    let mut rows = stmt.query(params_from_iter(args)).db_ctx(db_path)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().db_ctx(db_path)? {
        let seq: i64 = row.get(0).db_ctx(db_path)?;
        let entry = entry_from_row(row).map_err(|reason| Error::LedgerTampered {
            seq: u64::try_from(seq).unwrap_or(0),
            reason,
        })?;
        out.push(entry);
    }
    Ok(out)
}

fn read_head(conn: &Connection, db_path: &Path) -> Result<Option<(i64, String)>> {
    conn.query_row("SELECT seq, hash FROM ledger_head WHERE id = 1", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
    .db_ctx(db_path)
}

/// Decode a row selected with [`COLUMNS`]. Rows are not trusted (that is the
/// point of the ledger), so a value of the wrong type or unparsable JSON is a
/// reason to report, not a database error.
fn entry_from_row(row: &Row<'_>) -> std::result::Result<Entry, String> {
    let text = |i: usize, name: &str| {
        row.get::<_, String>(i)
            .map_err(|_| format!("its {name} column is not text"))
    };
    let seq = row
        .get::<_, u64>(0)
        .map_err(|_| "its seq is not a positive number".to_string())?;
    let subjects = text(4, "subjects")?;
    let subjects: Vec<String> = serde_json::from_str(&subjects)
        .map_err(|e| format!("its subjects column is not a JSON array of strings ({e})"))?;
    let details = text(5, "details")?;
    let details: Value = serde_json::from_str(&details)
        .map_err(|e| format!("its details column is not JSON ({e})"))?;
    Ok(Entry {
        seq,
        time: text(1, "time")?,
        actor: text(2, "actor")?,
        action: text(3, "action")?,
        subjects,
        details,
        prev_hash: text(6, "prev_hash")?,
        hash: text(7, "hash")?,
        keyid: row
            .get::<_, Option<String>>(8)
            .map_err(|_| "its keyid column is not text".to_string())?,
        signature: row
            .get::<_, Option<String>>(9)
            .map_err(|_| "its signature column is not text".to_string())?,
    })
}

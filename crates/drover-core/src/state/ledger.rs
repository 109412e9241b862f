//! The ledger's rows: appending (chained and signed by [`crate::ledger`]),
//! listing with filters, and the rows verification and export walk.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::sql::{Conn, Dialect, OptionalExtension, Row, Value as SqlValue, params};
use serde_json::Value;

use super::{DbContext, Reader, Tx};
use crate::error::{Error, Result};
use crate::keys::{PublicKey, SigningKey};
use crate::ledger::{self, Entry, Filter, NewEntry, SignedHead, Source, VerifyReport, export};

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
        .query_row("SELECT max(seq) FROM ledger", (), |r| r.get(0))
        .db_ctx(db_path)?;
    if let Some(gap) = signed_gap(sql, db_path, head.as_ref())? {
        match tx.mode {
            // Stopping, removing, recording an exit: never locked out by
            // a gap (that would be the full disk's lock-out again). The
            // entry lands, the gap is said loudly, and the head file is
            // not re-signed over it (see `Tx::commit`).
            super::Mode::Freeing => {
                eprintln!(
                    "warning: the ledger has a gap; this stop/remove is recorded anyway: {}",
                    gap.describe(db_path)
                );
            }
            super::Mode::AcceptGap => {}
            super::Mode::Normal => return Err(gap.refusal(db_path)),
        }
        tx.gap.replace(Some(gap));
    }
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

impl super::Db {
    /// Acknowledge the gap between the ledger and its signed head (see
    /// [`Gap`]): record a `ledger.accept_truncation` entry naming the
    /// missing range, the signed head it replaces and `reason`, and sign the
    /// new head over it, so appending works again. The gap stays in the
    /// ledger's history, never silently. Refused (invalid) when there is no
    /// gap or no reason.
    pub fn accept_ledger_gap(&mut self, reason: &str) -> Result<Entry> {
        if reason.trim().is_empty() {
            return Err(Error::Usage(
                "accepting a ledger gap needs a reason (--reason \"restored the 02:00 backup\")"
                    .into(),
            ));
        }
        let db_path = self.path().to_path_buf();
        self.write_as(super::Mode::AcceptGap, |tx| {
            let head = read_head(tx.sql(), &db_path)?;
            let Some(gap) = signed_gap(tx.sql(), &db_path, head.as_ref())? else {
                return Err(Error::Usage(format!(
                    "the ledger in {} agrees with its signed head ({}): there is no gap to accept",
                    db_path.display(),
                    signed_head_path(&db_path).display()
                )));
            };
            let (missing_from, missing_to) = if gap.signed_seq > gap.chain_end {
                (gap.chain_end + 1, gap.signed_seq)
            } else {
                (gap.signed_seq, gap.signed_seq)
            };
            tx.record(NewEntry {
                action: "ledger.accept_truncation".into(),
                subjects: vec![gap.signed_hash.clone()],
                details: serde_json::json!({
                    "chain_end": gap.chain_end,
                    "missing_from": missing_from,
                    "missing_to": missing_to,
                    "signed_head_seq": gap.signed_seq,
                    "signed_head_hash": gap.signed_hash,
                    "signed_head_time": gap.signed_time,
                    "reason": reason,
                }),
            })
        })
    }
}

impl Reader<'_> {
    /// The ledger entries matching `f`, in ascending `seq` order; as stored,
    /// not verified (see [`Reader::verify_ledger`]). A row too damaged to
    /// decode is an [`Error::LedgerTampered`].
    pub fn ledger(&self, f: &Filter) -> Result<Vec<Entry>> {
        list(self.sql(), self.path(), f)
    }

    /// How many entries the ledger holds of each action (for
    /// `drover_ledger_entries_total`), by action.
    pub fn ledger_counts(&self) -> Result<Vec<(String, u64)>> {
        let mut st = self
            .sql()
            .prepare("SELECT action, count(*) FROM ledger GROUP BY action ORDER BY action")
            .db_ctx(self.path())?;
        let rows = st
            .query_map((), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<Vec<_>>>()
            .db_ctx(self.path())
    }

    /// Walk the whole ledger in one read snapshot and report the first entry
    /// not as written (see [`ledger::verify`]).
    pub fn verify_ledger(&self, trusted: &[PublicKey]) -> Result<VerifyReport> {
        self.snapshot(|r| ledger::verify(r, trusted))
    }

    /// The signed head kept beside this database, if there is one: cheap (a
    /// small file, no signature check), for a quick comparison with
    /// [`Reader::ledger_head`].
    pub fn signed_ledger_head(&self) -> Option<std::result::Result<SignedHead, String>> {
        read_signed_head(self.path())
    }

    /// The entries that made release `number` of `service`
    /// (`release.create`, `release.rollback`), as stored, not verified.
    /// Reads the whole ledger (the release is in the details): callers cache.
    pub fn release_entries(&self, service: &str, number: i64) -> Result<Vec<Entry>> {
        let mut stmt = self
            .sql()
            .prepare(&format!(
                "SELECT {COLUMNS} FROM ledger WHERE action IN ('release.create', 'release.rollback') \
                 AND {} ORDER BY seq",
                match self.sql().dialect() {
                    Dialect::Sqlite => {
                        "json_valid(details) AND json_extract(details, '$.service') = ?1 \
                         AND json_extract(details, '$.release') = ?2"
                    }
                    // drover_jsonb: NULL for text that is not JSON (a
                    // tampered row), where a cast would fail the query.
                    Dialect::Postgres => {
                        "drover_jsonb(details) ->> 'service' = ?1 \
                         AND drover_jsonb(details) -> 'release' = to_jsonb(?2::bigint)"
                    }
                }
            ))
            .db_ctx(self.path())?;
        let mut rows = stmt.query(params![service, number]).db_ctx(self.path())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().db_ctx(self.path())? {
            let seq: i64 = row.get(0).db_ctx(self.path())?;
            out.push(entry_from_row(row).map_err(|reason| Error::LedgerTampered {
                seq: u64::try_from(seq).unwrap_or(0),
                reason,
            })?);
        }
        Ok(out)
    }

    /// Where signing began in this database (see [`Source::signing_required_from`]).
    pub fn ledger_signed_from(&self) -> Result<Option<u64>> {
        Snapshot(*self, None).signing_required_from()
    }

    /// The head record: the last entry's seq and hash.
    pub fn ledger_head(&self) -> Result<Option<(i64, String)>> {
        read_head(self.sql(), self.path())
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
    /// The signed head file is read first: it is written after each commit,
    /// so read before the snapshot it can lag the rows but never lead them.
    /// Inside a caller's snapshot that order cannot be had (others may have
    /// committed, and signed, since it began), so the file is not consulted.
    fn snapshot<T>(&self, f: impl FnOnce(&Snapshot<'_>) -> Result<T>) -> Result<T> {
        let (_snapshot, signed) = if self.sql().is_autocommit() {
            let signed = read_signed_head(self.path());
            let tx = self.sql().snapshot().db_ctx(self.path())?;
            (Some(tx), signed)
        } else {
            (None, None)
        };
        f(&Snapshot(*self, signed))
    }
}

/// The ledger's rows as one read snapshot sees them: the only [`Source`]
/// there is, made only by [`Reader::snapshot`], so the head and the rows a
/// verification compares can never come from two moments (an append
/// committed in between would look like tampering).
struct Snapshot<'a>(Reader<'a>, Option<std::result::Result<SignedHead, String>>);

impl Source for Snapshot<'_> {
    fn signed_head(&self) -> Option<std::result::Result<SignedHead, String>> {
        self.1.clone()
    }

    fn head(&self) -> Result<Option<(i64, String)>> {
        read_head(self.0.sql(), self.0.path())
    }

    fn signing_required_from(&self) -> Result<Option<u64>> {
        let v: Option<String> = self
            .0
            .sql()
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'ledger_signed_from'",
                (),
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
        if self.0.sql().dialect() == Dialect::Postgres {
            return self.each_paged(from, f);
        }
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

/// How many ledger rows [`Snapshot::each_paged`] holds at once.
const PAGE: i64 = if cfg!(test) { 7 } else { 5000 };

impl Snapshot<'_> {
    /// [`Source::each`] a page at a time, by seq: PostgreSQL's client reads
    /// a query's rows whole, and the ledger only grows. Its seq is a BIGINT
    /// key there, so every row has one and the pages neither skip nor repeat.
    fn each_paged(
        &self,
        from: i64,
        f: &mut dyn FnMut(i64, std::result::Result<Entry, String>) -> Result<()>,
    ) -> Result<()> {
        let path = self.0.path();
        let mut after = i64::MIN;
        loop {
            let page = self
                .0
                .sql()
                .prepare(&format!(
                    "SELECT {COLUMNS} FROM ledger WHERE (?1 <= 1 OR seq >= ?1) AND seq > ?2 \
                     ORDER BY seq LIMIT ?3"
                ))
                .db_ctx(path)?
                .query_map(params![from, after, PAGE], |r| Ok(r.clone()))
                .db_ctx(path)?
                .collect::<super::sql::Result<Vec<Row>>>()
                .db_ctx(path)?;
            for row in &page {
                after = row.get(0).db_ctx(path)?;
                f(after, entry_from_row(row))?;
            }
            if page.len() < PAGE as usize {
                return Ok(());
            }
        }
    }
}

/// The entries matching `f`, in ascending `seq` order.
///
/// Entries are returned as stored, not verified: use [`Reader::verify_ledger`]. A
/// row too damaged to decode is an [`Error::LedgerTampered`].
fn list(conn: &Conn, db_path: &Path, f: &Filter) -> Result<Vec<Entry>> {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    // Plain comparisons rather than LIKE/GLOB: those treat `_`, `%`, `?` and
    // `[` in names as wildcards, and LIKE ignores ASCII case.
    let mut exact_or_prefix = |column: &str, pattern: &str| match pattern.strip_suffix('*') {
        Some(prefix) => {
            clauses.push(format!("substr({column}, 1, length(CAST(? AS TEXT))) = ?"));
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
            match conn.dialect() {
                Dialect::Sqlite => {
                    "EXISTS (SELECT 1 FROM json_each(ledger.subjects) AS s WHERE instr(s.value, ?) > 0)"
                }
                // The CASE: PostgreSQL does not short-circuit, and a
                // tampered row's subjects may be no array (or no JSON).
                Dialect::Postgres => {
                    "EXISTS (SELECT 1 FROM jsonb_array_elements_text(CASE WHEN \
                     jsonb_typeof(drover_jsonb(subjects)) = 'array' THEN drover_jsonb(subjects) \
                     ELSE '[]'::jsonb END) AS s(v) WHERE strpos(s.v, ?) > 0)"
                }
            }
            .into(),
        );
        args.push(SqlValue::Text(subject.clone()));
    }
    if let Some(since) = f.since_seq {
        clauses.push("seq >= ?".into());
        args.push(SqlValue::Int(i64::try_from(since).unwrap_or(i64::MAX)));
    }
    if let Some(t) = &f.since_time {
        clauses.push("time >= ?".into());
        args.push(SqlValue::Text(t.clone()));
    }
    if let Some(t) = &f.until_time {
        clauses.push("time < ?".into());
        args.push(SqlValue::Text(t.clone()));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let sql = match f.limit {
        None => format!("SELECT {COLUMNS} FROM ledger{filter} ORDER BY seq"),
        Some(n) => {
            args.push(SqlValue::Int(i64::try_from(n).unwrap_or(i64::MAX)));
            format!(
                "SELECT * FROM (SELECT {COLUMNS} FROM ledger{filter} ORDER BY seq DESC LIMIT ?) AS newest ORDER BY seq"
            )
        }
    };

    let mut stmt = conn.prepare(&sql).db_ctx(db_path)?;
    let mut rows = stmt.query(args).db_ctx(db_path)?;
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

/// The signed head file of the database at `db_path`: `None` if there is
/// none, the reason if it cannot be read or parsed.
fn read_signed_head(db_path: &Path) -> Option<std::result::Result<SignedHead, String>> {
    let path = signed_head_path(db_path);
    match std::fs::read(&path) {
        Ok(bytes) => Some(SignedHead::parse(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(format!("reading {}: {e}", path.display()))),
    }
}

/// Where the signed head of the database at `db_path` is kept.
pub(super) fn signed_head_path(db_path: &Path) -> std::path::PathBuf {
    super::state_dir(db_path).join(ledger::head::FILE)
}

/// Where the database's chain and the signed head beside it disagree: the
/// host key signed a later head than the chain reaches (its tail was
/// deleted and the head row rewritten, or an older backup restored), or a
/// different hash for the signed seq (rewritten). Only the seq and hash are
/// compared, so finding it loads no key; `audit verify` checks the
/// signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The chain's last entry (per the head row).
    pub chain_end: u64,
    /// The signed head's seq, hash and time.
    pub signed_seq: u64,
    pub signed_hash: String,
    pub signed_time: String,
}

impl Gap {
    /// The missing (or rewritten) range, as words.
    fn range(&self) -> String {
        if self.signed_seq > self.chain_end {
            if self.signed_seq == self.chain_end + 1 {
                format!("entry {} is missing", self.signed_seq)
            } else {
                format!(
                    "entries {} to {} are missing",
                    self.chain_end + 1,
                    self.signed_seq
                )
            }
        } else {
            format!(
                "entry {} is not the one it signed (it is gone or was rewritten; entries recorded since, such as stops and removals, sit in its place)",
                self.signed_seq
            )
        }
    }

    fn describe(&self, db_path: &Path) -> String {
        format!(
            "the host key signed entry {} ({}) as the ledger head at {} ({}), but the database's ledger ends at {}: {}; run `drover audit verify`",
            self.signed_seq,
            self.signed_hash,
            self.signed_time,
            signed_head_path(db_path).display(),
            self.chain_end,
            self.range()
        )
    }

    fn refusal(&self, db_path: &Path) -> Error {
        Error::LedgerTampered {
            seq: self.chain_end.min(self.signed_seq) + 1,
            reason: format!(
                "refusing to append: {}. Stopping and removing instances still work. If the loss is known (a database backup was restored), acknowledge it with `drover audit accept-truncation --reason \"…\"`, which records the gap in the ledger and re-signs the head; otherwise the database was tampered with: restore it, or compare with an export kept off this host (`drover audit export`)",
                self.describe(db_path)
            ),
        }
    }
}

/// The [`Gap`] between the chain whose head row is `head` and the signed
/// head file, if there is one.
fn signed_gap(conn: &Conn, db_path: &Path, head: Option<&(i64, String)>) -> Result<Option<Gap>> {
    let Some(Ok(signed)) = read_signed_head(db_path) else {
        return Ok(None);
    };
    let at = head.map_or(0, |(s, _)| u64::try_from(*s).unwrap_or(0));
    let gap = Gap {
        chain_end: at,
        signed_seq: signed.seq,
        signed_hash: signed.hash.clone(),
        signed_time: signed.time.clone(),
    };
    if signed.seq > at {
        return Ok(Some(gap));
    }
    let stored: Option<String> = conn
        .query_row(
            "SELECT hash FROM ledger WHERE seq = ?1",
            [signed.seq],
            |r| r.get(0),
        )
        .optional()
        .db_ctx(db_path)?;
    Ok((stored.as_deref() != Some(signed.hash.as_str())).then_some(gap))
}

/// Sign `seq`/`hash` as the ledger head and keep it beside the database at
/// `db_path`, unless the file already holds that seq or a later one (another
/// process committed after us): the file only ever moves forward, except
/// when `force` (an acknowledged gap, `audit accept-truncation`). Written
/// atomically under a lock, after the commit, so it never leads the chain.
/// Where signing began is carried over from the file it replaces;
/// `db_signed_from` (the database's record) is taken only when no earlier
/// file carried it.
pub(super) fn write_signed_head(
    db_path: &Path,
    seq: u64,
    hash: &str,
    key: &SigningKey,
    db_signed_from: Option<u64>,
    force: bool,
) -> Result<()> {
    use crate::error::IoContext;
    let dir = super::state_dir(db_path);
    let path = signed_head_path(db_path);
    let lock_path = dir.join("ledger.head.lock");
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .ctx("open ledger head lock", &lock_path)?;
    lock.lock().ctx("lock ledger head", &lock_path)?;
    let current = read_signed_head(db_path).and_then(|r| r.ok());
    if let Some(c) = &current
        && c.seq >= seq
        && !force
    {
        return Ok(());
    }
    let trusted = [key.public()];
    let signed_from = current
        .filter(|c| c.check(&trusted).is_ok())
        .and_then(|c| c.signed_from)
        .or(db_signed_from)
        .unwrap_or(1);
    let signed = SignedHead::sign(
        seq,
        hash,
        &crate::clock::now_rfc3339(),
        Some(signed_from),
        key,
    );
    crate::durable::write_atomic(dir, &path, &signed.to_bytes())
}

fn read_head(conn: &Conn, db_path: &Path) -> Result<Option<(i64, String)>> {
    conn.query_row("SELECT seq, hash FROM ledger_head WHERE id = 1", (), |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
    .db_ctx(db_path)
}

/// Decode a row selected with [`COLUMNS`]. Rows are not trusted (that is the
/// point of the ledger), so a value of the wrong type or unparsable JSON is a
/// reason to report, not a database error.
fn entry_from_row(row: &Row) -> std::result::Result<Entry, String> {
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

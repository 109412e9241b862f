//! The audit ledger: an append-only, hash-chained log of every mutation drover
//! makes, stored in the state database ([`crate::state`]).
//!
//! Each mutation calls [`append`] inside the same transaction as the change
//! itself, so a change and its entry commit (or vanish) together. [`list`]
//! reads entries back; [`verify`] walks the chain and names the first entry
//! that is not as it was written.
//!
//! # Hash chain
//!
//! An entry's `hash` is `"sha256:"` followed by the lowercase hex SHA-256 of
//! the UTF-8 bytes of the entry's canonical JSON with the `hash` field left
//! out:
//!
//! ```text
//! {"action":…,"actor":…,"details":…,"prev_hash":…,"seq":…,"subjects":[…],"time":…}
//! ```
//!
//! Canonical JSON means:
//!
//! - no whitespace outside strings;
//! - object keys sorted by their UTF-8 bytes (equivalently, by Unicode code
//!   point) at every depth, the top level included, which gives the key
//!   order shown above;
//! - strings escaped minimally: `"` and `\` as `\"` and `\\`; U+0008, U+0009,
//!   U+000A, U+000C, U+000D as `\b`, `\t`, `\n`, `\f`, `\r`; every other
//!   character below U+0020 as `\u00xx` with lowercase hex; everything else
//!   (`/`, U+007F, all non-ASCII) as itself;
//! - integers in plain decimal. `seq` is one. `details` should hold no
//!   fractional numbers: they are written in serde_json's shortest
//!   round-trip form, which other encoders may spell differently (`1e21`
//!   against `1e+21`).
//!
//! That is exactly Python's
//! `json.dumps(entry_without_hash, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`,
//! so an outside verifier needs nothing drover-specific. The first entry's
//! `prev_hash` is [`GENESIS_HASH`]; every later entry's is the `hash` of the
//! entry before it. Entries are numbered from 1 without gaps.
//!
//! The `ledger_head` row holds the last entry's `seq` and `hash`, updated in
//! the same transaction as each append, so deleting entries from the end is
//! detectable too. What the chain cannot catch is someone who rewrites the
//! whole tail *and* the head consistently; for that, record
//! [`VerifyReport::head`] somewhere the database's writers cannot change.
//!
//! # Signatures
//!
//! [`append`] signs every new entry with the host key
//! ([`crate::keys::host_key`] of the directory holding the database): the
//! Ed25519 signature of the UTF-8 bytes of the entry's `hash` string (all 71
//! of them, `sha256:` included), stored as `signature` (standard base64,
//! padded) beside `keyid` (the signing key's id, see [`crate::keys`]).
//! Neither is part of the hashed bytes, so the chain is exactly as above;
//! signing the hash signs everything the hash covers, `seq` and `prev_hash`
//! included.
//!
//! The chain shows that entries were not changed *after one another*; the
//! signatures show who wrote them, so rewriting a tail and its head
//! consistently now needs the host's private key too. Entries appended
//! before signing existed have neither column; [`verify`] accepts them only
//! as a prefix, before the first signed entry, and counts them.
//!
//! [`export`] writes the ledger as self-describing JSON Lines that anyone
//! holding the public key can check without drover; `docs/ledger-format.md`
//! specifies that format and the full verification algorithm.

pub mod export;

use std::fmt;
use std::path::Path;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params, params_from_iter};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::clock;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::keys::{self, PublicKey};
use crate::state::DbContext;

/// The `prev_hash` of entry 1.
pub const GENESIS_HASH: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the ledger, from 1, without gaps.
    pub seq: u64,
    /// When it was appended, RFC 3339 UTC (see [`clock`]). Informational:
    /// clocks can step back, `seq` is the order.
    pub time: String,
    /// Who did it (see [`actor`]).
    pub actor: String,
    /// What happened, dotted (`tag.set`, `gc.run`).
    pub action: String,
    /// What it happened to: digests, tag names, instance ids.
    pub subjects: Vec<String>,
    /// Action-specific facts, as canonical JSON (object keys sorted).
    pub details: Value,
    /// The previous entry's `hash`, or [`GENESIS_HASH`] for entry 1.
    pub prev_hash: String,
    /// See the module docs for exactly what this covers.
    pub hash: String,
    /// The id of the key that signed `hash`; `None` for entries written
    /// before the ledger was signed. Not covered by `hash`.
    #[serde(default)]
    pub keyid: Option<String>,
    /// Ed25519 signature of the UTF-8 bytes of `hash`, standard base64;
    /// `None` with `keyid`. Not covered by `hash`.
    #[serde(default)]
    pub signature: Option<String>,
}

impl Entry {
    /// The bytes `hash` is the SHA-256 of: the canonical JSON of every field
    /// but `hash` (see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let object: Map<String, Value> = [
            ("action", Value::from(self.action.as_str())),
            ("actor", Value::from(self.actor.as_str())),
            ("details", self.details.clone()),
            ("prev_hash", Value::from(self.prev_hash.as_str())),
            ("seq", Value::from(self.seq)),
            ("subjects", Value::from(self.subjects.clone())),
            ("time", Value::from(self.time.as_str())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        canonical(Value::Object(object)).to_string().into_bytes()
    }

    /// What `hash` should be for this entry's content.
    pub fn compute_hash(&self) -> String {
        Digest::of(&self.canonical_bytes()).to_string()
    }

    /// Set `keyid` and `signature`: `key`'s signature of [`Entry::hash`],
    /// which must already be computed.
    pub fn sign(&mut self, key: &keys::SigningKey) {
        self.keyid = Some(key.keyid());
        self.signature = Some(B64.encode(key.sign(self.hash.as_bytes())));
    }

    /// Check this entry's signature, if it has one, against `trusted`.
    /// `Ok(None)` for an unsigned entry (both columns empty), `Ok(Some(keyid))`
    /// for a good signature, `Err(reason)` otherwise. Only the signature is
    /// checked here, not whether `hash` matches the content.
    pub fn check_signature(
        &self,
        trusted: &[PublicKey],
    ) -> std::result::Result<Option<&str>, String> {
        let (keyid, signature) = match (&self.keyid, &self.signature) {
            (None, None) => return Ok(None),
            (Some(k), Some(s)) => (k, s),
            (Some(_), None) => return Err("has a key id but no signature".into()),
            (None, Some(_)) => return Err("has a signature but no key id".into()),
        };
        // The key id is not signed: look the key up by it, then require the
        // signature to verify under exactly that key, so a changed key id is
        // caught as well.
        let key = trusted.iter().find(|k| k.keyid() == *keyid).ok_or_else(|| {
            format!(
                "signed by key {keyid}, which is not a trusted key (trust it with --key PUB if it is yours, e.g. the host key before a rotation)"
            )
        })?;
        let raw = B64
            .decode(signature)
            .map_err(|_| "its signature is not base64".to_string())?;
        if raw.len() != 64 || !key.verify(self.hash.as_bytes(), &raw) {
            return Err(format!(
                "signature does not match its hash under key {keyid} (the signature was altered, or the entry re-hashed after signing)"
            ));
        }
        Ok(Some(keyid))
    }
}

/// An entry to append; [`append`] fills in the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub action: String,
    pub subjects: Vec<String>,
    pub details: Value,
}

impl NewEntry {
    pub fn new<S: Into<String>>(
        action: impl Into<String>,
        subjects: impl IntoIterator<Item = S>,
        details: Value,
    ) -> Self {
        NewEntry {
            action: action.into(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            details,
        }
    }
}

/// Append `e` inside the caller's transaction, stamped with the current time
/// and [`actor`]. Nothing is visible until the caller commits, and a rollback
/// removes the entry together with the change it describes.
///
/// The new entry follows the recorded head, not the last row: if the tail
/// was deleted, the gap stays in the chain for [`verify`] to report instead
/// of being papered over. Refuses (with [`Error::LedgerTampered`]) when the
/// head record is missing or behind the last entry, since either way there
/// is no trustworthy place to continue from.
pub fn append(tx: &Transaction<'_>, db_path: &Path, e: NewEntry) -> Result<Entry> {
    append_as(tx, db_path, e, actor(), clock::now_rfc3339())
}

fn append_as(
    tx: &Transaction<'_>,
    db_path: &Path,
    e: NewEntry,
    actor: String,
    time: String,
) -> Result<Entry> {
    let head = read_head(tx, db_path)?;
    let last: Option<i64> = tx
        .query_row("SELECT max(seq) FROM ledger", [], |r| r.get(0))
        .db_ctx(db_path)?;
    let (prev_seq, prev_hash) = match (head, last) {
        (None, None) => (0, GENESIS_HASH.to_string()),
        (None, Some(last)) => {
            return Err(Error::LedgerTampered {
                seq: u64::try_from(last).unwrap_or(0),
                reason: "refusing to append: the ledger head record is missing; run `drover audit verify`".into(),
            });
        }
        (Some((head_seq, _)), Some(last)) if last > head_seq => {
            return Err(Error::LedgerTampered {
                seq: u64::try_from(head_seq).map_or(0, |s| s + 1),
                reason: format!(
                    "refusing to append: the ledger head records entry {head_seq} but entries run to {last}; run `drover audit verify`"
                ),
            });
        }
        (Some((seq, hash)), _) => {
            let seq = u64::try_from(seq).map_err(|_| Error::LedgerTampered {
                seq: 0,
                reason: format!("the ledger head records entry {seq}, which cannot exist"),
            })?;
            (seq, hash)
        }
    };

    let key = keys::host_key(state_dir(db_path))?;
    let mut entry = Entry {
        seq: prev_seq + 1,
        time,
        actor,
        action: e.action,
        subjects: e.subjects,
        // Stored canonical, so what `append` returns equals what `list` reads.
        details: canonical(e.details),
        prev_hash,
        hash: String::new(),
        keyid: None,
        signature: None,
    };
    entry.hash = entry.compute_hash();
    entry.sign(&key);

    tx.execute(
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
    tx.execute(
        "INSERT INTO ledger_head (id, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        params![entry.seq, entry.hash],
    )
    .db_ctx(db_path)?;
    Ok(entry)
}

/// The directory whose host key signs the ledger in `db_path`: the one
/// holding the database, i.e. the store root.
pub fn state_dir(db_path: &Path) -> &Path {
    match db_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Which entries [`list`] returns. All conditions must hold; `None` matches
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The action, exactly; or, ending in `*`, every action starting with
    /// what precedes it (`tag.*`).
    pub action: Option<String>,
    /// Entries with at least one subject containing this (case-sensitive).
    pub subject: Option<String>,
    /// The actor, exactly (`alice@build-01`); or, ending in `*`, a prefix
    /// (`alice*` also finds `alice(via root)@build-01`).
    pub actor: Option<String>,
    /// Entries with `seq >= since_seq`.
    pub since_seq: Option<u64>,
    /// Only the newest `limit` matching entries (still in ascending order).
    pub limit: Option<usize>,
}

const COLUMNS: &str =
    "seq, time, actor, action, subjects, details, prev_hash, hash, keyid, signature";

/// The entries matching `f`, in ascending `seq` order.
///
/// Entries are returned as stored, not verified: use [`verify`] for that. A
/// row too damaged to decode is an [`Error::LedgerTampered`].
pub fn list(conn: &Connection, db_path: &Path, f: &Filter) -> Result<Vec<Entry>> {
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

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// How many entries the ledger holds.
    pub entries: u64,
    /// The recorded head (last seq and its hash), if any. Keep a copy
    /// elsewhere to detect a consistent rewrite of the whole tail later.
    pub head: Option<(u64, String)>,
    /// Entries whose signature by a trusted key checked out (up to the
    /// first problem).
    pub signed: u64,
    /// Entries without a signature because they were written before the
    /// ledger was signed: the prefix before [`VerifyReport::first_signed`].
    pub unsigned: u64,
    /// The first signed entry. Entries from here on must all be signed.
    pub first_signed: Option<u64>,
    /// Where signing began in this database (recorded when it was migrated
    /// to signing, entry 1 for a new one): every entry from here on must be
    /// signed, so stripping signatures is caught too — unless whoever did it
    /// also edited this record; keep a copy of the head or an export elsewhere.
    pub signing_required_from: Option<u64>,
    /// The first thing wrong, if anything is.
    pub problem: Option<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }

    /// The report if the ledger is intact, else its problem as an error.
    pub fn into_result(self) -> Result<VerifyReport> {
        match self.problem {
            Some(p) => Err(p.into()),
            None => Ok(self),
        }
    }
}

/// The first entry that is not as written, and how we know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub seq: u64,
    /// Reads after "entry N: ".
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {}: {}", self.seq, self.reason)
    }
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Self {
        Error::LedgerTampered {
            seq: p.seq,
            reason: p.reason,
        }
    }
}

/// Walk the whole chain and report the first entry that is not as written:
/// changed content, a missing entry, an inserted or moved one, a deleted
/// tail, an edited head; or not signed as it must be: a signature that does
/// not verify, one by a key not in `trusted`, or an unsigned entry after a
/// signed one (entries from before signing are accepted as a prefix only).
///
/// Streams rows, so memory stays flat however long the ledger is. Runs in
/// one read snapshot (its own, or the caller's transaction), so appends
/// committed meanwhile by other processes cannot look like damage.
pub fn verify(conn: &Connection, db_path: &Path, trusted: &[PublicKey]) -> Result<VerifyReport> {
    let _snapshot = if conn.is_autocommit() {
        Some(conn.unchecked_transaction().db_ctx(db_path)?)
    } else {
        None
    };

    let head = read_head(conn, db_path)?;
    let mut stmt = conn
        .prepare(&format!("SELECT {COLUMNS} FROM ledger ORDER BY seq"))
        .db_ctx(db_path)?;
    let mut rows = stmt.query([]).db_ctx(db_path)?;

    let mut entries = 0u64;
    let mut problem = None;
    let required_from = signing_required_from(conn, db_path)?;
    let mut signing = Signing {
        // A missing record means it was removed: require signatures throughout.
        required_from: Some(required_from.unwrap_or(1)),
        ..Signing::default()
    };
    // The last entry checked and found good: (seq, hash).
    let mut last: Option<(u64, String)> = None;
    while let Some(row) = rows.next().db_ctx(db_path)? {
        entries += 1;
        if problem.is_some() {
            continue; // still counting
        }
        let seq: i64 = row.get(0).db_ctx(db_path)?;
        match check_entry(seq, row, last.as_ref())
            .and_then(|entry| signing.check(&entry, trusted).map(|()| entry))
        {
            Ok(good) => last = Some((good.seq, good.hash)),
            Err(p) => problem = Some(p),
        }
    }

    let head = match head {
        None => None,
        Some((seq, hash)) => match u64::try_from(seq) {
            Ok(seq) => Some((seq, hash)),
            Err(_) => {
                problem.get_or_insert(Problem {
                    seq: 0,
                    reason: format!("the ledger head records entry {seq}, which cannot exist"),
                });
                None
            }
        },
    };
    if problem.is_none() {
        problem = check_head(head.as_ref(), last.as_ref());
    }
    Ok(VerifyReport {
        entries,
        head,
        signed: signing.signed,
        unsigned: signing.unsigned,
        first_signed: signing.first_signed,
        signing_required_from: required_from,
        problem,
    })
}

/// The seq from which every entry must be signed, as migration 5 recorded it.
fn signing_required_from(conn: &Connection, db_path: &Path) -> Result<Option<u64>> {
    let v: Option<String> = conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'ledger_signed_from'",
            [],
            |r| r.get(0),
        )
        .optional()
        .db_ctx(db_path)?;
    Ok(v.and_then(|v| v.parse().ok()))
}

/// The signature rule of [`verify`], applied entry by entry in `seq` order.
#[derive(Default)]
struct Signing {
    signed: u64,
    unsigned: u64,
    first_signed: Option<u64>,
    required_from: Option<u64>,
}

impl Signing {
    fn check(&mut self, e: &Entry, trusted: &[PublicKey]) -> std::result::Result<(), Problem> {
        match e.check_signature(trusted) {
            Ok(Some(_)) => {
                self.signed += 1;
                self.first_signed.get_or_insert(e.seq);
                Ok(())
            }
            Ok(None) if self.required_from.is_some_and(|f| e.seq >= f) => Err(Problem {
                seq: e.seq,
                reason: format!(
                    "unsigned, but every entry from {} on is signed (signing began there; its signature was stripped, or it was added without the host key)",
                    self.required_from.unwrap_or_default()
                ),
            }),
            Ok(None) => match self.first_signed {
                None => {
                    self.unsigned += 1;
                    Ok(())
                }
                Some(first) => Err(Problem {
                    seq: e.seq,
                    reason: format!(
                        "unsigned, but entry {first} before it is signed (its signature was stripped, or it was added without the host key)"
                    ),
                }),
            },
            Err(reason) => Err(Problem { seq: e.seq, reason }),
        }
    }
}

/// Check one row against its predecessor; on success, return it decoded.
fn check_entry(
    seq: i64,
    row: &Row<'_>,
    prev: Option<&(u64, String)>,
) -> std::result::Result<Entry, Problem> {
    let expected = prev.map_or(1, |(s, _)| s + 1);
    let seq = match u64::try_from(seq) {
        Ok(s) if s >= 1 => s,
        _ => {
            return Err(Problem {
                seq: 0,
                reason: format!("there is a row numbered {seq}; entries are numbered from 1"),
            });
        }
    };
    if seq > expected {
        let reason = match prev {
            None => format!("missing (the ledger starts at entry {seq})"),
            Some((p, _)) => format!("missing (the chain jumps from {p} to {seq})"),
        };
        return Err(Problem {
            seq: expected,
            reason,
        });
    }

    let entry = entry_from_row(row).map_err(|reason| Problem { seq, reason })?;
    let expected_prev = prev.map_or(GENESIS_HASH, |(_, h)| h.as_str());
    let content_ok = entry.compute_hash() == entry.hash;
    let chain_ok = entry.prev_hash == expected_prev;
    let predecessor = match prev {
        Some((p, _)) => format!("entry {p}'s hash"),
        None => "the genesis hash".to_string(),
    };
    let reason = match (content_ok, chain_ok) {
        (true, true) => return Ok(entry),
        (false, true) => "hash does not match its content (changed after it was written)".into(),
        (true, false) => {
            format!(
                "prev_hash does not match {predecessor} (the entry before it was replaced, or entries were inserted or reordered)"
            )
        }
        (false, false) => format!(
            "hash does not match its content and prev_hash does not match {predecessor} (entries inserted, reordered or renumbered, or this one edited)"
        ),
    };
    Err(Problem { seq, reason })
}

/// Check the head record against the last entry of an otherwise intact chain.
fn check_head(head: Option<&(u64, String)>, last: Option<&(u64, String)>) -> Option<Problem> {
    match (head, last) {
        (None, None) => None,
        (None, Some((seq, _))) => Some(Problem {
            seq: *seq,
            reason: "the ledger head record is missing (deleted)".into(),
        }),
        (Some((head_seq, _)), None) if *head_seq > 0 => Some(Problem {
            seq: 1,
            reason: format!(
                "missing (the ledger head records {head_seq} entries but none remain: all were deleted)"
            ),
        }),
        (Some(_), None) => None,
        (Some((head_seq, head_hash)), Some((seq, hash))) => {
            if head_seq > seq {
                Some(Problem {
                    seq: seq + 1,
                    reason: format!(
                        "missing (the ledger head records {head_seq} entries but the chain ends at {seq}: the tail was deleted)"
                    ),
                })
            } else if head_seq < seq {
                Some(Problem {
                    seq: head_seq + 1,
                    reason: format!(
                        "comes after the recorded ledger head ({head_seq}): added without updating the head, or the head was edited"
                    ),
                })
            } else if head_hash != hash {
                Some(Problem {
                    seq: *seq,
                    reason: "the ledger head records a different hash for this entry (the head was edited)".into(),
                })
            } else {
                None
            }
        }
    }
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

/// `v` with every object's keys sorted (serde_json keeps insertion order in
/// this workspace, and the hash must not depend on it).
/// `v` as compact JSON with object keys sorted at every level: the form
/// drover hashes (ledger entries, release configs).
pub fn canonical_json(v: &Value) -> String {
    canonical(v.clone()).to_string()
}

fn canonical(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut fields: Vec<(String, Value)> = map.into_iter().collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(fields.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// Who is acting, for [`Entry::actor`]:
///
/// 1. `$DROVER_ACTOR`, verbatim, if set and non-empty: for automation, and
///    for a service acting on behalf of a caller it has authenticated.
/// 2. Otherwise the login name of the real uid (or `uid:N` if it has none),
///    as `alice(via root)` when run through sudo (`$SUDO_USER`), followed by
///    `@hostname`.
///
/// This attributes, it does not authenticate: anyone who can write to the
/// database can also set these variables.
pub fn actor() -> String {
    let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    let uid = sys::uid();
    compose_actor(
        var("DROVER_ACTOR"),
        var("SUDO_USER"),
        sys::user_name(uid),
        uid,
        sys::hostname(),
    )
}

fn compose_actor(
    explicit: Option<String>,
    sudo_user: Option<String>,
    user: Option<String>,
    uid: u32,
    host: Option<String>,
) -> String {
    if let Some(actor) = explicit {
        return actor;
    }
    let me = user.unwrap_or_else(|| format!("uid:{uid}"));
    let who = match sudo_user {
        Some(original) if original != me => format!("{original}(via {me})"),
        _ => me,
    };
    match host {
        Some(host) => format!("{who}@{host}"),
        None => who,
    }
}

/// The libc calls behind [`actor`]; std has no safe wrapper for them.
#[allow(unsafe_code)]
mod sys {
    use std::ffi::{CStr, c_char};

    pub(super) fn uid() -> u32 {
        // SAFETY: getuid has no preconditions and cannot fail.
        unsafe { libc::getuid() }
    }

    /// The passwd entry's name for `uid`, through NSS (so LDAP/sssd users
    /// resolve too), or None if there is none.
    pub(super) fn user_name(uid: u32) -> Option<String> {
        let mut buf: Vec<c_char> = vec![0; 1024];
        loop {
            // SAFETY: passwd is plain data (integers and pointers) for which
            // all-zero is a valid value; getpwuid_r overwrites it.
            let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            // SAFETY: every pointer is valid for the duration of the call and
            // buf.len() is its true length. On success pwd's strings point
            // into buf, which outlives their use below.
            let rc = unsafe {
                libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result)
            };
            if rc == libc::ERANGE && buf.len() < (1 << 20) {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
                return None;
            }
            // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated
            // string inside buf.
            let name = unsafe { CStr::from_ptr(pwd.pw_name) };
            let name = name.to_string_lossy().into_owned();
            return (!name.is_empty()).then_some(name);
        }
    }

    pub(super) fn hostname() -> Option<String> {
        let mut buf = [0u8; 256];
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return None;
        }
        // POSIX leaves termination unspecified on truncation; take what fits.
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..len]).into_owned();
        (!name.is_empty()).then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use crate::state::Db;
    use serde_json::json;

    const N: u64 = 30;

    fn fresh() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("drover.db")).unwrap();
        (dir, db)
    }

    /// A ledger of `N` entries with a little variety in every field.
    fn populated() -> (tempfile::TempDir, Db, Vec<Entry>) {
        let (dir, mut db) = fresh();
        let mut written = Vec::new();
        for i in 1..=N {
            let e = db
                .write(|tx, p| {
                    append(
                        tx,
                        p,
                        NewEntry::new(
                            if i % 3 == 0 { "gc.run" } else { "tag.set" },
                            [
                                format!("app:v{i}"),
                                Digest::of(&i.to_le_bytes()).to_string(),
                            ],
                            json!({ "i": i, "note": "x" }),
                        ),
                    )
                })
                .unwrap();
            written.push(e);
        }
        (dir, db, written)
    }

    /// [`populated`], as if every entry had been written before ledger
    /// signing existed: what the hash chain catches on its own.
    fn populated_before_signing() -> (tempfile::TempDir, Db, Vec<Entry>) {
        let (dir, db, mut written) = populated();
        tamper(
            &db,
            &format!(
                "UPDATE ledger SET keyid = NULL, signature = NULL;
                 UPDATE store_meta SET value = '{}' WHERE key = 'ledger_signed_from';",
                N + 1
            ),
        );
        for e in &mut written {
            e.keyid = None;
            e.signature = None;
        }
        (dir, db, written)
    }

    /// Run SQL as someone with write access to the file would: the
    /// append-only triggers are no obstacle to them.
    fn tamper(db: &Db, sql: &str) {
        db.conn()
            .execute_batch(&format!(
                "DROP TRIGGER IF EXISTS ledger_no_update;
                 DROP TRIGGER IF EXISTS ledger_no_delete;
                 {sql}"
            ))
            .unwrap();
    }

    /// The host key of the store `db` is in, the one `append` signs with.
    fn trusted(db: &Db) -> Vec<PublicKey> {
        vec![keys::host_key(state_dir(db.path())).unwrap().public()]
    }

    fn problem(db: &Db) -> Problem {
        let report = verify(db.conn(), db.path(), &trusted(db)).unwrap();
        report.problem.expect("verify found nothing wrong")
    }

    #[test]
    fn an_untouched_ledger_verifies() {
        let (_dir, db, written) = populated();
        let report = verify(db.conn(), db.path(), &trusted(&db)).unwrap();
        assert_eq!(report.problem, None);
        assert!(report.is_ok());
        assert_eq!(report.entries, N);
        let last = written.last().unwrap();
        assert_eq!(report.head, Some((N, last.hash.clone())));
        assert_eq!((report.signed, report.unsigned), (N, 0));
        assert_eq!(report.first_signed, Some(1));
        report.into_result().unwrap();
    }

    #[test]
    fn entries_are_signed_by_the_host_key_over_their_hash() {
        let (dir, db, written) = populated();
        let host = keys::host_key(dir.path()).unwrap().public();
        let stored = list(db.conn(), db.path(), &Filter::default()).unwrap();
        assert_eq!(stored, written, "keyid and signature read back as written");
        for e in &written {
            assert_eq!(e.keyid.as_deref(), Some(host.keyid().as_str()));
            let sig = B64.decode(e.signature.as_deref().unwrap()).unwrap();
            assert!(host.verify(e.hash.as_bytes(), &sig), "entry {}", e.seq);
            assert_eq!(e.check_signature(&[host]), Ok(Some(host.keyid().as_str())));
        }
        // The signature is not part of what is hashed.
        let mut unsigned = written[0].clone();
        unsigned.keyid = None;
        unsigned.signature = None;
        assert_eq!(unsigned.compute_hash(), written[0].hash);
    }

    #[test]
    fn a_tampered_signature_is_caught_at_its_entry() {
        let (_dir, db, _) = populated();
        // Entry 8's signature is valid, just not for entry 7.
        tamper(
            &db,
            "UPDATE ledger SET signature = (SELECT signature FROM ledger WHERE seq = 8) WHERE seq = 7",
        );
        let p = problem(&db);
        assert_eq!(p.seq, 7, "{p}");
        assert!(
            p.reason.starts_with("signature does not match its hash"),
            "{p}"
        );

        let (_dir, db, _) = populated();
        tamper(
            &db,
            "UPDATE ledger SET signature = 'not base64!' WHERE seq = 9",
        );
        let p = problem(&db);
        assert_eq!(
            (p.seq, p.reason.as_str()),
            (9, "its signature is not base64")
        );
    }

    #[test]
    fn a_rehashed_entry_is_caught_by_its_signature() {
        let (_dir, db, written) = populated();
        // Content changed and the hash recomputed, so the chain holds at 15
        // itself; only the signature (and 16's link) can tell.
        let mut forged = written[14].clone();
        forged.subjects = vec!["app:backdoor".into()];
        forged.hash = forged.compute_hash();
        tamper(
            &db,
            &format!(
                r#"UPDATE ledger SET subjects = '["app:backdoor"]', hash = '{}' WHERE seq = 15"#,
                forged.hash
            ),
        );
        let p = problem(&db);
        assert_eq!(p.seq, 15, "{p}");
        assert!(p.reason.contains("re-hashed after signing"), "{p}");
    }

    #[test]
    fn a_stripped_signature_after_signed_entries_is_caught() {
        for (what, sql) in [
            (
                "both",
                "UPDATE ledger SET keyid = NULL, signature = NULL WHERE seq = 12",
            ),
            (
                "the signature",
                "UPDATE ledger SET signature = NULL WHERE seq = 12",
            ),
            (
                "the key id",
                "UPDATE ledger SET keyid = NULL WHERE seq = 12",
            ),
        ] {
            let (_dir, db, _) = populated();
            tamper(&db, sql);
            let p = problem(&db);
            assert_eq!(p.seq, 12, "{what}: {p}");
            if what == "both" {
                assert_eq!(
                    p.reason,
                    "unsigned, but every entry from 1 on is signed (signing began there; its signature was stripped, or it was added without the host key)"
                );
            }
        }
        // The last entry too: nothing after it to break a chain link.
        let (_dir, db, _) = populated();
        tamper(
            &db,
            &format!("UPDATE ledger SET keyid = NULL, signature = NULL WHERE seq = {N}"),
        );
        assert_eq!(problem(&db).seq, N);
    }

    #[test]
    fn a_key_that_is_not_trusted_is_caught_and_extra_keys_are_trusted() {
        let (_dir, db, _) = populated();
        let other = SigningKey::generate().unwrap().public();
        let report = verify(db.conn(), db.path(), &[other]).unwrap();
        let p = report.problem.unwrap();
        assert_eq!(p.seq, 1, "{p}");
        assert!(p.reason.contains("which is not a trusted key"), "{p}");
        assert!(p.reason.contains(&trusted(&db)[0].keyid()), "{p}");

        // After a rotation, both the old and the new key are passed.
        let report = verify(db.conn(), db.path(), &[other, trusted(&db)[0]]).unwrap();
        assert!(report.is_ok(), "{:?}", report.problem);
    }

    #[test]
    fn a_tail_rewritten_with_another_key_is_caught() {
        let (_dir, db, written) = populated();
        // Someone with write access but not the host key rewrites entry 20
        // and signs it (and could re-chain everything after it) themselves.
        let mallory = SigningKey::generate().unwrap();
        let mut forged = written[19].clone();
        forged.actor = "mallory@elsewhere".into();
        forged.hash = forged.compute_hash();
        forged.sign(&mallory);
        tamper(
            &db,
            &format!(
                "UPDATE ledger SET actor = '{}', hash = '{}', keyid = '{}', signature = '{}' WHERE seq = 20",
                forged.actor,
                forged.hash,
                forged.keyid.unwrap(),
                forged.signature.unwrap()
            ),
        );
        let p = problem(&db);
        assert_eq!(p.seq, 20, "{p}");
        assert!(p.reason.contains("not a trusted key"), "{p}");

        // Claiming the host's key id does not help: the signature must
        // verify under the key the id names.
        tamper(
            &db,
            &format!(
                "UPDATE ledger SET keyid = '{}' WHERE seq = 20",
                trusted(&db)[0].keyid()
            ),
        );
        let p = problem(&db);
        assert_eq!(p.seq, 20, "{p}");
        assert!(p.reason.starts_with("signature does not match"), "{p}");
    }

    #[test]
    fn an_unsigned_prefix_from_before_signing_is_accepted_and_counted() {
        let (_dir, mut db, _) = populated();
        tamper(
            &db,
            "UPDATE ledger SET keyid = NULL, signature = NULL WHERE seq <= 5;
             UPDATE store_meta SET value = '6' WHERE key = 'ledger_signed_from';",
        );
        let report = verify(db.conn(), db.path(), &trusted(&db)).unwrap();
        assert_eq!(report.problem, None);
        assert_eq!(
            (report.unsigned, report.signed, report.first_signed),
            (5, N - 5, Some(6))
        );

        // A ledger entirely from before signing verifies too, and the next
        // append starts the signed part.
        let (_dir, mut legacy, _) = populated_before_signing();
        let report = verify(legacy.conn(), legacy.path(), &trusted(&legacy)).unwrap();
        assert_eq!(
            (report.unsigned, report.signed, report.first_signed),
            (N, 0, None)
        );
        assert!(report.is_ok());
        legacy
            .write(|tx, p| append(tx, p, NewEntry::new("tag.set", ["x"], json!({}))))
            .unwrap();
        let report = verify(legacy.conn(), legacy.path(), &trusted(&legacy)).unwrap();
        assert_eq!(
            (report.unsigned, report.signed, report.first_signed),
            (N, 1, Some(N + 1))
        );
        assert!(report.is_ok());

        // Appending to the first store keeps it valid as well.
        db.write(|tx, p| append(tx, p, NewEntry::new("tag.set", ["y"], json!({}))))
            .unwrap();
        assert!(verify(db.conn(), db.path(), &trusted(&db)).unwrap().is_ok());
    }

    /// Regression (review): with write access to the database but not the
    /// key, stripping every signature made the whole ledger look older than
    /// signing, and a rewritten history then verified.
    #[test]
    fn stripping_every_signature_is_caught() {
        let (_dir, db, _) = populated();
        tamper(&db, "UPDATE ledger SET keyid = NULL, signature = NULL");
        let p = problem(&db);
        assert_eq!(p.seq, 1, "{p}");
        assert!(p.reason.contains("every entry from 1 on is signed"), "{p}");
    }

    #[test]
    fn an_empty_ledger_verifies() {
        let (_dir, db) = fresh();
        let report = verify(db.conn(), db.path(), &trusted(&db)).unwrap();
        assert_eq!(
            report,
            VerifyReport {
                entries: 0,
                head: None,
                signed: 0,
                unsigned: 0,
                first_signed: None,
                signing_required_from: Some(1),
                problem: None
            }
        );
    }

    #[test]
    fn entries_chain_from_genesis_and_read_back_as_written() {
        let (_dir, db, written) = populated();
        assert_eq!(written[0].seq, 1);
        assert_eq!(written[0].prev_hash, GENESIS_HASH);
        assert_eq!(GENESIS_HASH.len(), "sha256:".len() + 64);
        for pair in written.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        for e in &written {
            assert_eq!(e.hash, e.compute_hash());
            assert!(e.hash.parse::<Digest>().is_ok(), "{}", e.hash);
            assert!(clock::parse_rfc3339_secs(&e.time).is_some(), "{}", e.time);
            assert_eq!(e.actor, actor());
        }
        let read = list(db.conn(), db.path(), &Filter::default()).unwrap();
        assert_eq!(read, written);
    }

    /// An outside verifier must be able to recompute the hash from the
    /// documented encoding alone. This pins the encoding: if it changes,
    /// every existing ledger stops verifying.
    #[test]
    fn the_hash_is_sha256_of_the_documented_canonical_json() {
        let e = Entry {
            seq: 42,
            time: "2026-11-22T02:11:23.456Z".into(),
            actor: "alice(via root)@build-01".into(),
            action: "tag.set".into(),
            subjects: vec!["app:1.0".into(), "sha256:ab".into()],
            // Insertion order deliberately unsorted, at two depths.
            details: json!({
                "zeta": [3, {"b": null, "a": true}],
                "alpha": "tab\there \"quoted\" \\ /é\u{1}",
                "Mid": -7
            }),
            prev_hash: GENESIS_HASH.into(),
            hash: "ignored".into(),
            // Not hashed: the expected bytes below have neither.
            keyid: Some("k".into()),
            signature: Some("s".into()),
        };
        let expected = concat!(
            r#"{"action":"tag.set","actor":"alice(via root)@build-01","#,
            r#""details":{"Mid":-7,"alpha":"tab\there \"quoted\" \\ /é\u0001","zeta":[3,{"a":true,"b":null}]},"#,
            r#""prev_hash":"sha256:0000000000000000000000000000000000000000000000000000000000000000","#,
            r#""seq":42,"subjects":["app:1.0","sha256:ab"],"time":"2026-11-22T02:11:23.456Z"}"#,
        );
        assert_eq!(String::from_utf8(e.canonical_bytes()).unwrap(), expected);
        // Both cross-checked against Python: json.dumps(entry_without_hash,
        // sort_keys=True, separators=(",", ":"), ensure_ascii=False), then
        // hashlib.sha256 of its UTF-8.
        assert_eq!(
            e.compute_hash(),
            "sha256:3bcfa02986abca8f3bfee6d27f555c9225df66d4ad0ee54fbfc2c7457bca0449"
        );
    }

    /// The signature vector of docs/ledger-format.md: the entry above
    /// (hash `sha256:3bcf…0449`) signed by the key whose Ed25519 seed is the
    /// bytes 0, 1, …, 31, computed with Python's `cryptography`.
    #[test]
    fn the_signature_is_ed25519_of_the_hash_string() {
        let public: [u8; 32] =
            hex::decode("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
                .unwrap()
                .try_into()
                .unwrap();
        let public = PublicKey::from_raw(public);
        assert_eq!(
            public.keyid(),
            "63d00ee3cf4f5c61ad94efa696c68f13b608fe56ecea13fb144a6fd18e9235b9"
        );
        let mut e = Entry {
            seq: 42,
            time: String::new(),
            actor: String::new(),
            action: String::new(),
            subjects: vec![],
            details: Value::Null,
            prev_hash: String::new(),
            // Only the hash string is signed.
            hash: "sha256:3bcfa02986abca8f3bfee6d27f555c9225df66d4ad0ee54fbfc2c7457bca0449".into(),
            keyid: Some(public.keyid()),
            signature: Some(
                "eNnU8s/Uj16WnX86dkDDKwQG2tSsb7xqgIaMlvzVAu4NxjexTvKbqLJn+PPUWYmuCU6g3jLCNWv1xOB4+KMAAA=="
                    .into(),
            ),
        };
        assert_eq!(
            e.check_signature(&[public]),
            Ok(Some(public.keyid().as_str()))
        );
        e.hash.replace_range(7..8, "4");
        assert!(e.check_signature(&[public]).is_err());
    }

    #[test]
    fn details_are_stored_canonically() {
        let (_dir, mut db) = fresh();
        let e = db
            .write(|tx, p| {
                append(
                    tx,
                    p,
                    NewEntry::new("x", ["s"], json!({"b": 1, "a": {"d": 2, "c": 3}})),
                )
            })
            .unwrap();
        assert_eq!(e.details.to_string(), r#"{"a":{"c":3,"d":2},"b":1}"#);
        let stored: String = db
            .conn()
            .query_row("SELECT details FROM ledger", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, r#"{"a":{"c":3,"d":2},"b":1}"#);
    }

    #[test]
    fn a_rolled_back_transaction_leaves_no_entry() {
        let (_dir, mut db, written) = populated();
        let err = db
            .write(|tx, p| {
                append(tx, p, NewEntry::new("tag.set", ["app:oops"], json!({})))?;
                Err::<(), _>(Error::Usage("the mutation failed".into()))
            })
            .unwrap_err();
        assert!(matches!(err, Error::Usage(_)));
        let report = verify(db.conn(), db.path(), &trusted(&db)).unwrap();
        assert_eq!(report.entries, N);
        assert_eq!(report.head, Some((N, written.last().unwrap().hash.clone())));
        assert!(report.is_ok());
    }

    #[test]
    fn changing_any_field_is_caught_at_that_entry() {
        for (column, value) in [
            ("time", "'2000-01-01T00:00:00.000Z'"),
            ("actor", "'mallory@elsewhere'"),
            ("action", "'tag.delete'"),
            ("subjects", r#"'["app:v7"]'"#),
            ("details", r#"'{"i":7,"note":"y"}'"#),
            ("hash", "'sha256:0123'"),
        ] {
            let (_dir, db, _) = populated();
            tamper(
                &db,
                &format!("UPDATE ledger SET {column} = {value} WHERE seq = 7"),
            );
            let p = problem(&db);
            assert_eq!(p.seq, 7, "{column}: {p}");
            assert_eq!(
                p.to_string(),
                "entry 7: hash does not match its content (changed after it was written)",
                "{column}"
            );
        }
    }

    #[test]
    fn changing_prev_hash_is_caught_at_that_entry() {
        let (_dir, db, written) = populated();
        tamper(
            &db,
            &format!(
                "UPDATE ledger SET prev_hash = '{}' WHERE seq = 7",
                written[0].hash
            ),
        );
        let p = problem(&db);
        assert_eq!(p.seq, 7, "{p}");
        assert!(
            p.reason.contains("prev_hash does not match entry 6's hash"),
            "{p}"
        );
    }

    #[test]
    fn reformatting_details_without_changing_them_is_not_tampering() {
        let (_dir, db, _) = populated();
        tamper(
            &db,
            r#"UPDATE ledger SET details = '{ "note": "x", "i": 7 }' WHERE seq = 7"#,
        );
        assert!(verify(db.conn(), db.path(), &trusted(&db)).unwrap().is_ok());
    }

    #[test]
    fn undecodable_rows_are_reported_not_errors() {
        for (column, value) in [
            ("subjects", "'not json'"),
            ("subjects", r#"'[1, 2]'"#),
            ("details", "'{'"),
            ("time", "x'ff'"),
        ] {
            let (_dir, db, _) = populated();
            tamper(
                &db,
                &format!("UPDATE ledger SET {column} = {value} WHERE seq = 11"),
            );
            let p = problem(&db);
            assert_eq!(p.seq, 11, "{column}={value}: {p}");
            assert!(p.reason.contains(column), "{p}");
            let err = list(db.conn(), db.path(), &Filter::default()).unwrap_err();
            assert!(
                matches!(err, Error::LedgerTampered { seq: 11, .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_deleted_entry_is_caught_where_it_was() {
        let (_dir, db, _) = populated();
        tamper(&db, "DELETE FROM ledger WHERE seq = 12");
        let p = problem(&db);
        assert_eq!(
            p.to_string(),
            "entry 12: missing (the chain jumps from 11 to 13)"
        );

        let (_dir, db, _) = populated();
        tamper(&db, "DELETE FROM ledger WHERE seq IN (12, 13, 14)");
        let p = problem(&db);
        assert_eq!(
            p.to_string(),
            "entry 12: missing (the chain jumps from 11 to 15)"
        );
    }

    #[test]
    fn deleting_the_first_entries_is_caught_at_entry_1() {
        let (_dir, db, _) = populated();
        tamper(&db, "DELETE FROM ledger WHERE seq <= 2");
        let p = problem(&db);
        assert_eq!(p.seq, 1, "{p}");
        assert!(p.reason.contains("starts at entry 3"), "{p}");
    }

    #[test]
    fn deleting_and_renumbering_is_caught_by_the_chain() {
        // A cleverer deletion: close the gap so the numbering looks intact.
        let (_dir, db, _) = populated();
        tamper(
            &db,
            "DELETE FROM ledger WHERE seq = 12;
             UPDATE ledger SET seq = -seq WHERE seq > 12;
             UPDATE ledger SET seq = -seq - 1 WHERE seq < 0;
             UPDATE ledger_head SET seq = seq - 1;",
        );
        let p = problem(&db);
        assert_eq!(p.seq, 12, "{p}");
    }

    #[test]
    fn an_inserted_entry_is_caught_where_the_chain_breaks() {
        // What the chain alone catches: on a signed ledger the unsigned
        // forgery is caught at itself first (see the signature tests).
        let (_dir, db, written) = populated_before_signing();
        // The strongest insertion: the forged entry has a correct hash and
        // chains to its predecessor; later entries are renumbered and the
        // head moved so the numbering stays contiguous.
        let mut forged = written[13].clone();
        forged.seq = 15;
        forged.action = "tag.set".into();
        forged.subjects = vec!["app:backdoor".into()];
        forged.details = json!({});
        forged.prev_hash = written[13].hash.clone(); // entry 14
        forged.hash = forged.compute_hash();
        tamper(
            &db,
            &format!(
                "UPDATE ledger SET seq = -seq WHERE seq >= 15;
                 UPDATE ledger SET seq = 1 - seq WHERE seq < 0;
                 INSERT INTO ledger VALUES (15, '{}', '{}', '{}', '[\"app:backdoor\"]', '{{}}', '{}', '{}', NULL, NULL);
                 UPDATE ledger_head SET seq = seq + 1;",
                forged.time, forged.actor, forged.action, forged.prev_hash, forged.hash
            ),
        );
        let report = verify(db.conn(), db.path(), &trusted(&db)).unwrap();
        assert_eq!(report.entries, N + 1);
        // Renumbering changed entry 16's seq, which its hash covers, so both
        // checks fail there.
        let p = report.problem.unwrap();
        assert_eq!(p.seq, 16, "{p}");
        assert!(
            p.reason
                .contains("prev_hash does not match entry 15's hash"),
            "{p}"
        );
        assert!(p.reason.contains("inserted"), "{p}");
    }

    #[test]
    fn a_replaced_entry_is_caught_by_its_successor() {
        // The chain alone; signed, the forgery fails its own signature.
        let (_dir, db, written) = populated_before_signing();
        // A forged entry 15 that is internally consistent and chains to 14.
        let mut forged = written[14].clone();
        forged.subjects = vec!["app:backdoor".into()];
        forged.hash = forged.compute_hash();
        tamper(
            &db,
            &format!(
                r#"UPDATE ledger SET subjects = '["app:backdoor"]', hash = '{}' WHERE seq = 15"#,
                forged.hash
            ),
        );
        let p = problem(&db);
        assert_eq!(
            p.to_string(),
            "entry 16: prev_hash does not match entry 15's hash \
             (the entry before it was replaced, or entries were inserted or reordered)"
        );
    }

    #[test]
    fn a_naive_insertion_is_caught_at_the_inserted_entry() {
        let (_dir, db, _) = populated();
        tamper(
            &db,
            "UPDATE ledger SET seq = -seq WHERE seq >= 15;
             UPDATE ledger SET seq = 1 - seq WHERE seq < 0;
             INSERT INTO ledger VALUES (15, 't', 'a', 'x', '[]', '{}', 'sha256:00', 'sha256:11', NULL, NULL);",
        );
        assert_eq!(problem(&db).seq, 15);
    }

    #[test]
    fn an_entry_appended_behind_the_heads_back_is_caught() {
        let (_dir, db, written) = populated_before_signing();
        let mut forged = written[(N - 1) as usize].clone();
        forged.seq = N + 1;
        forged.prev_hash = forged.hash.clone();
        forged.hash = forged.compute_hash();
        tamper(
            &db,
            &format!(
                "INSERT INTO ledger SELECT {}, time, actor, action, subjects, details, '{}', '{}', NULL, NULL FROM ledger WHERE seq = {N}",
                forged.seq, forged.prev_hash, forged.hash
            ),
        );
        let p = problem(&db);
        assert_eq!(p.seq, N + 1, "{p}");
        // Caught twice over: beyond the head, and unsigned where signing
        // had begun; the signature rule is checked first.
        assert!(
            p.reason.contains("after the recorded ledger head")
                || p.reason.contains("every entry from"),
            "{p}"
        );
    }

    #[test]
    fn swapped_entries_are_caught_at_the_first() {
        let (_dir, db, _) = populated();
        tamper(
            &db,
            "CREATE TEMP TABLE swap AS SELECT * FROM ledger WHERE seq IN (9, 20);
             UPDATE ledger
                SET (time, actor, action, subjects, details, prev_hash, hash) =
                    (SELECT time, actor, action, subjects, details, prev_hash, hash
                       FROM swap WHERE swap.seq = 29 - ledger.seq)
              WHERE seq IN (9, 20);",
        );
        let p = problem(&db);
        assert_eq!(p.seq, 9, "{p}");
        assert!(p.reason.contains("reordered"), "{p}");
    }

    #[test]
    fn swapped_seq_numbers_are_caught_at_the_first() {
        let (_dir, db, _) = populated();
        tamper(
            &db,
            "UPDATE ledger SET seq = -1 WHERE seq = 9;
             UPDATE ledger SET seq = 9 WHERE seq = 10;
             UPDATE ledger SET seq = 10 WHERE seq = -1;",
        );
        assert_eq!(problem(&db).seq, 9);
    }

    #[test]
    fn a_deleted_tail_is_caught_at_the_first_missing_entry() {
        let (_dir, db, _) = populated();
        tamper(&db, "DELETE FROM ledger WHERE seq > 26");
        let p = problem(&db);
        assert_eq!(p.seq, 27, "{p}");
        assert!(p.reason.contains("the tail was deleted"), "{p}");
        assert!(p.reason.contains(&format!("records {N} entries")), "{p}");
    }

    #[test]
    fn deleting_every_entry_is_caught() {
        let (_dir, db, _) = populated();
        tamper(&db, "DELETE FROM ledger");
        let p = problem(&db);
        assert_eq!(p.seq, 1, "{p}");
    }

    #[test]
    fn an_edited_head_is_caught() {
        let (_dir, db, written) = populated();
        tamper(
            &db,
            &format!("UPDATE ledger_head SET hash = '{}'", written[3].hash),
        );
        let p = problem(&db);
        assert_eq!(p.seq, N, "{p}");
        assert!(p.reason.contains("head was edited"), "{p}");

        let (_dir, db, written) = populated();
        tamper(
            &db,
            &format!(
                "UPDATE ledger_head SET seq = 25, hash = '{}'",
                written[24].hash
            ),
        );
        assert_eq!(problem(&db).seq, 26);

        let (_dir, db, _) = populated();
        tamper(&db, "DELETE FROM ledger_head");
        let p = problem(&db);
        assert_eq!(p.seq, N, "{p}");
        assert!(p.reason.contains("head record is missing"), "{p}");
    }

    #[test]
    fn the_first_problem_is_reported_when_there_are_several() {
        let (_dir, db, _) = populated();
        tamper(
            &db,
            "UPDATE ledger SET action = 'x' WHERE seq = 20;
             UPDATE ledger SET action = 'x' WHERE seq = 5;
             DELETE FROM ledger WHERE seq > 28;",
        );
        let report = verify(db.conn(), db.path(), &trusted(&db)).unwrap();
        assert_eq!(report.entries, 28, "counting continues past the problem");
        assert_eq!(report.problem.unwrap().seq, 5);
    }

    #[test]
    fn tampering_becomes_a_corrupt_error() {
        let (_dir, db, _) = populated();
        tamper(&db, "UPDATE ledger SET actor = 'x' WHERE seq = 3");
        let err = verify(db.conn(), db.path(), &trusted(&db))
            .unwrap()
            .into_result()
            .unwrap_err();
        assert!(
            matches!(err, Error::LedgerTampered { seq: 3, .. }),
            "{err:?}"
        );
        assert_eq!(err.kind(), crate::error::ErrorKind::Corrupt);
    }

    /// Regression guard: appending after the tail was deleted must not
    /// quietly reconnect the chain and erase the evidence.
    #[test]
    fn appending_after_a_deleted_tail_keeps_the_gap_visible() {
        let (_dir, mut db, _) = populated();
        tamper(&db, "DELETE FROM ledger WHERE seq > 26");
        let e = db
            .write(|tx, p| append(tx, p, NewEntry::new("tag.set", ["app:next"], json!({}))))
            .unwrap();
        assert_eq!(e.seq, N + 1);
        let p = problem(&db);
        assert_eq!(
            p.to_string(),
            format!("entry 27: missing (the chain jumps from 26 to {})", N + 1)
        );
    }

    #[test]
    fn append_refuses_without_a_trustworthy_head() {
        let (_dir, mut db, _) = populated();
        tamper(&db, "DELETE FROM ledger_head");
        let err = db
            .write(|tx, p| append(tx, p, NewEntry::new("tag.set", ["x"], json!({}))))
            .unwrap_err();
        assert!(matches!(err, Error::LedgerTampered { .. }), "{err:?}");

        let (_dir, mut db, _) = populated();
        tamper(&db, "UPDATE ledger_head SET seq = 20");
        let err = db
            .write(|tx, p| append(tx, p, NewEntry::new("tag.set", ["x"], json!({}))))
            .unwrap_err();
        assert!(
            matches!(err, Error::LedgerTampered { seq: 21, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn concurrent_appenders_produce_one_contiguous_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover.db");
        drop(Db::open(&path).unwrap()); // create + migrate once, up front
        let per_thread = 40u64;
        let workers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut db = Db::open(&path).unwrap();
                    (0..per_thread)
                        .map(|i| {
                            db.write(|tx, p| {
                                append(
                                    tx,
                                    p,
                                    NewEntry::new(
                                        format!("test.{name}"),
                                        [i.to_string()],
                                        json!({}),
                                    ),
                                )
                            })
                            .unwrap()
                            .seq
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut seqs: Vec<u64> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=2 * per_thread).collect::<Vec<_>>());

        let db = Db::open(&path).unwrap();
        let report = verify(db.conn(), db.path(), &trusted(&db)).unwrap();
        assert_eq!(report.problem, None);
        assert_eq!(report.entries, 2 * per_thread);
    }

    #[test]
    fn verify_sees_one_snapshot_while_others_append() {
        let (dir, db, _) = populated();
        // Hold a read snapshot open, append from another handle, and check
        // verify inside the snapshot neither sees half of it nor complains.
        let snapshot = db.conn().unchecked_transaction().unwrap();
        let before = verify(&snapshot, db.path(), &trusted(&db)).unwrap();
        let mut other = Db::open(&dir.path().join("drover.db")).unwrap();
        other
            .write(|tx, p| append(tx, p, NewEntry::new("tag.set", ["x"], json!({}))))
            .unwrap();
        let during = verify(&snapshot, db.path(), &trusted(&db)).unwrap();
        assert_eq!(during, before);
        drop(snapshot);
        let after = verify(db.conn(), db.path(), &trusted(&db)).unwrap();
        assert_eq!(after.entries, N + 1);
        assert!(after.is_ok());
    }

    /// Appends with a chosen actor and time, for filter tests.
    fn seed(db: &mut Db, rows: &[(&str, &str, &[&str])]) {
        db.write(|tx, p| {
            for (actor, action, subjects) in rows {
                append_as(
                    tx,
                    p,
                    NewEntry::new(*action, subjects.iter().copied(), json!({})),
                    actor.to_string(),
                    clock::now_rfc3339(),
                )?;
            }
            Ok(())
        })
        .unwrap();
    }

    fn seqs(db: &Db, f: Filter) -> Vec<u64> {
        list(db.conn(), db.path(), &f)
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect()
    }

    #[test]
    fn list_filters_combine() {
        let (_dir, mut db) = fresh();
        seed(
            &mut db,
            &[
                ("alice@h1", "tag.set", &["app:1", "sha256:aaaa"]), // 1
                ("bob@h2", "tag.delete", &["app:1"]),               // 2
                ("alice(via root)@h1", "gc.run", &[]),              // 3
                ("alice@h1", "tag", &["web_1"]),                    // 4
                ("carol@h3", "tagset", &["sha256:bbbb", "app%2"]),  // 5
                ("bob@h2", "tag.set", &["sha256:aaaabbbb"]),        // 6
            ],
        );
        let f = |action: Option<&str>, subject: Option<&str>, actor: Option<&str>| Filter {
            action: action.map(Into::into),
            subject: subject.map(Into::into),
            actor: actor.map(Into::into),
            ..Filter::default()
        };
        assert_eq!(seqs(&db, Filter::default()), [1, 2, 3, 4, 5, 6]);
        assert_eq!(seqs(&db, f(Some("tag.set"), None, None)), [1, 6]);
        assert_eq!(seqs(&db, f(Some("tag.*"), None, None)), [1, 2, 6]);
        assert_eq!(seqs(&db, f(Some("tag*"), None, None)), [1, 2, 4, 5, 6]);
        assert_eq!(seqs(&db, f(Some("*"), None, None)), [1, 2, 3, 4, 5, 6]);
        assert_eq!(seqs(&db, f(Some("tag"), None, None)), [4]);
        assert_eq!(seqs(&db, f(Some("TAG.SET"), None, None)), Vec::<u64>::new());
        assert_eq!(seqs(&db, f(None, Some("aaaa"), None)), [1, 6]);
        assert_eq!(seqs(&db, f(None, Some("app:1"), None)), [1, 2]);
        // Wildcard characters in names are literal.
        assert_eq!(seqs(&db, f(None, Some("web_"), None)), [4]);
        assert_eq!(seqs(&db, f(None, Some("p%"), None)), [5]);
        assert_eq!(seqs(&db, f(None, Some("\",\""), None)), Vec::<u64>::new());
        assert_eq!(seqs(&db, f(None, None, Some("alice@h1"))), [1, 4]);
        assert_eq!(seqs(&db, f(None, None, Some("alice*"))), [1, 3, 4]);
        assert_eq!(seqs(&db, f(Some("tag.*"), Some("app"), Some("bob*"))), [2]);

        let since = Filter {
            since_seq: Some(4),
            ..Filter::default()
        };
        assert_eq!(seqs(&db, since), [4, 5, 6]);
    }

    #[test]
    fn list_limit_keeps_the_newest_in_ascending_order() {
        let (_dir, db, _) = populated();
        let newest = |limit, action: Option<&str>| Filter {
            limit: Some(limit),
            action: action.map(Into::into),
            ..Filter::default()
        };
        assert_eq!(seqs(&db, newest(3, None)), [28, 29, 30]);
        assert_eq!(seqs(&db, newest(3, Some("gc.run"))), [24, 27, 30]);
        assert_eq!(seqs(&db, newest(0, None)), Vec::<u64>::new());
        assert_eq!(seqs(&db, newest(1000, None)).len(), N as usize);
        assert_eq!(
            seqs(
                &db,
                Filter {
                    since_seq: Some(5),
                    limit: Some(2),
                    action: Some("gc.run".into()),
                    ..Filter::default()
                }
            ),
            [27, 30]
        );
    }

    #[test]
    fn entries_serialize_with_their_field_names() {
        let (_dir, _db, written) = populated();
        let json = serde_json::to_value(&written[0]).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "seq",
                "time",
                "actor",
                "action",
                "subjects",
                "details",
                "prev_hash",
                "hash",
                "keyid",
                "signature"
            ]
        );
        let back: Entry = serde_json::from_value(json).unwrap();
        assert_eq!(back, written[0]);
    }

    #[test]
    fn actor_prefers_the_override_then_sudo_then_the_uid() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            compose_actor(s("ci-42"), s("alice"), s("root"), 0, s("h")),
            "ci-42"
        );
        assert_eq!(
            compose_actor(None, s("alice"), s("root"), 0, s("h")),
            "alice(via root)@h"
        );
        assert_eq!(compose_actor(None, None, s("bob"), 1000, s("h")), "bob@h");
        assert_eq!(compose_actor(None, None, None, 1234, s("h")), "uid:1234@h");
        assert_eq!(compose_actor(None, None, s("bob"), 1000, None), "bob");
        // `sudo -u alice` run by alice is just alice.
        assert_eq!(
            compose_actor(None, s("alice"), s("alice"), 1000, s("h")),
            "alice@h"
        );
    }

    #[test]
    fn the_current_user_resolves() {
        // Whatever the environment, the result is non-empty and names a host
        // unless DROVER_ACTOR overrides it.
        let a = actor();
        assert!(!a.is_empty());
        if std::env::var_os("DROVER_ACTOR").is_none() {
            assert!(a.contains('@'), "{a}");
        }
        if sys::uid() == 0 {
            assert_eq!(sys::user_name(0).as_deref(), Some("root"));
        }
    }
}

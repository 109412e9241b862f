//! Ledger exports: the ledger (or its tail) as JSON Lines that anyone holding
//! the signer's public key can verify offline, without drover or the store;
//! [`write`] makes one, [`verify`] checks one.
//!
//! Line 1 is a [`Header`], signed by the exporting host's key; every further
//! line is one [`Entry`] with all its fields, in `seq` order. The header pins
//! what the file must contain (first and last entry, the hash the first one
//! chains to, the last hash, where signing began), so lines removed from
//! either end, or signatures stripped, are caught as surely as a changed
//! entry. `docs/ledger-format.md` is the specification; keep it in step.
//!
//! The header carries the public key, so the file describes itself, but a
//! verifier trusts only keys it is given out of band: a forger can put any
//! key in a header.

use std::io::{BufRead, Write};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Entry, GENESIS_HASH, Source, canonical_json};
use crate::clock;
use crate::error::{Error, IoContext, Result};
use crate::keys::{PublicKey, SigningKey};

/// The header's `format`.
pub const FORMAT: &str = "drover-ledger-export";
/// The header's `version`: the one this module writes and reads.
pub const VERSION: u64 = 1;

/// The names of an entry line's fields, all required, no others allowed.
pub const ENTRY_FIELDS: [&str; 10] = [
    "seq",
    "time",
    "actor",
    "action",
    "subjects",
    "details",
    "prev_hash",
    "hash",
    "keyid",
    "signature",
];
/// The names of the header's fields, all required, no others allowed.
pub const HEADER_FIELDS: [&str; 11] = [
    "format",
    "version",
    "exported_at",
    "keyid",
    "public_key",
    "first_seq",
    "prev_hash",
    "last_seq",
    "last_hash",
    "signed_from",
    "signature",
];

/// Line 1 of an export. `signature` is the Ed25519 signature, by the key
/// `keyid`, of the canonical JSON (see [`super`]) of this object without its
/// `signature` field, standard base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u64,
    /// When the export was made, RFC 3339 UTC. Informational.
    pub exported_at: String,
    /// The id of the key that signed this header.
    pub keyid: String,
    /// That key as PEM, so the file describes itself. Informational: never
    /// verify with it, only with a key you were given out of band.
    pub public_key: String,
    /// The `seq` of the first entry line (1 for a whole ledger).
    pub first_seq: u64,
    /// What the first entry's `prev_hash` must be: the hash of entry
    /// `first_seq - 1`, or the genesis hash when `first_seq` is 1.
    pub prev_hash: String,
    /// The `seq` of the last entry line; `first_seq - 1` when there are none.
    pub last_seq: u64,
    /// The last entry's hash (`prev_hash` when there are none).
    pub last_hash: String,
    /// The ledger's first signed entry, if any: entries before it must be
    /// unsigned (written before ledger signing), entries from it on signed.
    pub signed_from: Option<u64>,
    pub signature: String,
}

impl Header {
    /// The bytes `signature` covers.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).expect("a header serializes");
        signed_bytes_of(&mut v)
    }
}

/// Canonical JSON of a header object without its `signature` field.
fn signed_bytes_of(v: &mut Value) -> Vec<u8> {
    if let Some(o) = v.as_object_mut() {
        o.remove("signature");
    }
    canonical_json(v).into_bytes()
}

/// What [`write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub first_seq: u64,
    pub last_seq: u64,
    /// Entry lines written.
    pub entries: u64,
    /// Of those, how many predate ledger signing.
    pub unsigned: u64,
    /// The key that signed the header.
    pub keyid: String,
}

/// Export the ledger from entry `since` (default 1) to its head, signing
/// the header with `key`.
///
/// Refuses (with [`Error::LedgerTampered`]) when the ledger does not verify
/// against `trusted` first: the header's signature vouches for the chain.
/// Everything is read in one snapshot, so appends made meanwhile are simply
/// not in the file.
pub fn write(
    source: &dyn Source,
    key: &SigningKey,
    trusted: &[PublicKey],
    since: Option<u64>,
    out: &mut dyn Write,
    out_name: &Path,
) -> Result<Summary> {
    let report = super::verify(source, trusted)?.into_result()?;
    let (head_seq, head_hash) = report.head.clone().unwrap_or((0, GENESIS_HASH.to_string()));
    let first_seq = since.unwrap_or(1).max(1);
    if first_seq > head_seq + 1 {
        return Err(Error::Usage(format!(
            "--since {first_seq} is past the end of the ledger (its last entry is {head_seq})"
        )));
    }
    let prev_hash = if first_seq == 1 {
        GENESIS_HASH.to_string()
    } else {
        source.hash_of(first_seq - 1)?
    };

    let mut header = Header {
        format: FORMAT.into(),
        version: VERSION,
        exported_at: clock::now_rfc3339(),
        keyid: key.keyid(),
        public_key: key.public().to_pem(),
        first_seq,
        prev_hash,
        last_seq: head_seq,
        last_hash: head_hash,
        signed_from: report.first_signed,
        signature: String::new(),
    };
    header.signature = B64.encode(key.sign(&header.signed_bytes()));
    let mut put = |line: String| out.write_all(line.as_bytes()).ctx("write export", out_name);
    put(json_line(&header))?;

    let (mut entries, mut unsigned) = (0, 0);
    source.each(first_seq, &mut |_, decoded| {
        // Verified above in this snapshot, so every row decodes.
        let entry = decoded.map_err(|reason| Error::LedgerTampered {
            seq: first_seq + entries,
            reason,
        })?;
        entries += 1;
        unsigned += u64::from(entry.signature.is_none());
        put(json_line(&entry))
    })?;
    out.flush().ctx("write export", out_name)?;
    Ok(Summary {
        first_seq,
        last_seq: head_seq,
        entries,
        unsigned,
        keyid: header.keyid,
    })
}

/// `v` as one line of compact JSON.
fn json_line(v: &impl Serialize) -> String {
    let mut s = serde_json::to_string(v).expect("export lines serialize");
    s.push('\n');
    s
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportReport {
    /// The header, once its signature checked out.
    pub header: Option<Header>,
    /// Entry lines found good.
    pub entries: u64,
    /// Of those, signed by a trusted key.
    pub signed: u64,
    /// Of those, unsigned because they predate ledger signing.
    pub unsigned: u64,
    /// The first bad line, if any.
    pub problem: Option<LineProblem>,
}

impl ExportReport {
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// The first line of an export that is not as written, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineProblem {
    /// 1-based; the header is line 1. One past the last line when lines
    /// are missing from the end.
    pub line: u64,
    /// The entry concerned, when known.
    pub seq: Option<u64>,
    pub reason: String,
}

impl std::fmt::Display for LineProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "line {} (entry {seq}): {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// Check an export read from `input` (named `name` in I/O errors) against
/// the `trusted` keys: the header's signature, then every entry line's
/// field set, sequence, hash, chain link and signature, then that the file
/// ends where the header says. Stops at the first bad line.
///
/// This is the algorithm of `docs/ledger-format.md`, step for step;
/// `scripts/verify-ledger-export.py` is an independent implementation.
pub fn verify(mut input: impl BufRead, trusted: &[PublicKey], name: &Path) -> Result<ExportReport> {
    let mut report = ExportReport {
        header: None,
        entries: 0,
        signed: 0,
        unsigned: 0,
        problem: None,
    };
    let mut line_no = 0u64;
    let mut buf = Vec::new();
    // The next line, without its newline: None at the end of the input,
    // Err for a line that is not UTF-8.
    let mut next_line = |line_no: &mut u64| -> Result<Option<std::result::Result<String, ()>>> {
        buf.clear();
        if input.read_until(b'\n', &mut buf).ctx("read export", name)? == 0 {
            return Ok(None);
        }
        *line_no += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        Ok(Some(String::from_utf8(buf.clone()).map_err(|_| ())))
    };
    let fail = |line: u64, seq: Option<u64>, reason: String| LineProblem { line, seq, reason };

    let header = match next_line(&mut line_no)? {
        None => {
            report.problem = Some(fail(1, None, "the file is empty: no header line".into()));
            return Ok(report);
        }
        Some(Err(())) => Err("not UTF-8".to_string()),
        Some(Ok(text)) => check_header(&text, trusted),
    };
    let header = match header {
        Ok(h) => h,
        Err(reason) => {
            report.problem = Some(fail(1, None, reason));
            return Ok(report);
        }
    };
    report.header = Some(header.clone());

    let mut expected = header.first_seq;
    let mut prev = header.prev_hash.clone();
    while let Some(line) = next_line(&mut line_no)? {
        let checked = line
            .map_err(|()| (None, "not UTF-8".to_string()))
            .and_then(|text| check_entry_line(&text, &header, expected, &prev, trusted));
        match checked {
            Ok((hash, signed)) => {
                report.entries += 1;
                if signed {
                    report.signed += 1;
                } else {
                    report.unsigned += 1;
                }
                prev = hash;
                expected += 1;
            }
            Err((seq, reason)) => {
                report.problem = Some(fail(line_no, seq, reason));
                return Ok(report);
            }
        }
    }

    let last = expected - 1;
    if last < header.last_seq {
        report.problem = Some(fail(
            line_no + 1,
            Some(expected),
            format!(
                "missing: the header says the export runs to entry {}, but the file ends after {} (lines were removed from the end)",
                header.last_seq,
                if last < header.first_seq {
                    "the header".to_string()
                } else {
                    format!("entry {last}")
                }
            ),
        ));
    } else if prev != header.last_hash {
        report.problem = Some(fail(
            line_no,
            (last >= header.first_seq).then_some(last),
            "the header records a different hash for the last entry".into(),
        ));
    }
    Ok(report)
}

/// The object on a line, with exactly the fields `names`.
fn object_with(text: &str, names: &[&str]) -> std::result::Result<Value, String> {
    if text.is_empty() {
        return Err("empty line".into());
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let Some(o) = v.as_object() else {
        return Err("not a JSON object".into());
    };
    if let Some(extra) = o.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(format!("unexpected field {extra:?}"));
    }
    if let Some(missing) = names.iter().find(|n| !o.contains_key(**n)) {
        return Err(format!("missing field {missing:?}"));
    }
    Ok(v)
}

fn check_header(text: &str, trusted: &[PublicKey]) -> std::result::Result<Header, String> {
    let mut v =
        object_with(text, &HEADER_FIELDS).map_err(|e| format!("not an export header: {e}"))?;
    if v["format"] != FORMAT {
        return Err(format!(
            "not a drover ledger export (format {} where {FORMAT:?} was expected)",
            v["format"]
        ));
    }
    if v["version"] != VERSION {
        return Err(format!(
            "export version {} is not supported (this verifier reads version {VERSION})",
            v["version"]
        ));
    }
    let header: Header =
        serde_json::from_value(v.clone()).map_err(|e| format!("bad header field: {e}"))?;
    let key = trusted
        .iter()
        .find(|k| k.keyid() == header.keyid)
        .ok_or_else(|| {
            format!(
                "the header is signed by key {}, which is not a trusted key (pass the signer's public key with --key; the key inside the file proves nothing by itself)",
                header.keyid
            )
        })?;
    let sig = B64
        .decode(&header.signature)
        .map_err(|_| "the header's signature is not base64".to_string())?;
    if !key.verify(&signed_bytes_of(&mut v), &sig) {
        return Err(format!(
            "the header's signature does not match it under key {} (the header was altered)",
            header.keyid
        ));
    }
    if header.first_seq == 0 {
        return Err("the header's first_seq is 0; entries are numbered from 1".into());
    }
    if header.first_seq == 1 && header.prev_hash != GENESIS_HASH {
        return Err("the header's prev_hash for entry 1 is not the genesis hash".into());
    }
    if header.last_seq + 1 < header.first_seq {
        return Err(format!(
            "the header's last_seq {} is before its first_seq {}",
            header.last_seq, header.first_seq
        ));
    }
    Ok(header)
}

/// Check one entry line; on success its hash and whether it was signed.
fn check_entry_line(
    text: &str,
    header: &Header,
    expected: u64,
    prev: &str,
    trusted: &[PublicKey],
) -> std::result::Result<(String, bool), (Option<u64>, String)> {
    let v = object_with(text, &ENTRY_FIELDS).map_err(|e| (None, e))?;
    let seq = v["seq"].as_u64();
    let entry: Entry =
        serde_json::from_value(v).map_err(|e| (seq, format!("bad entry field: {e}")))?;
    let seq = entry.seq;
    let at = |reason: String| (Some(seq), reason);
    if expected > header.last_seq {
        return Err(at(format!(
            "the header says the export ends at entry {}: lines were added",
            header.last_seq
        )));
    }
    if seq != expected {
        return Err(at(format!(
            "entry {expected} was expected here (a line was removed, added or moved)"
        )));
    }
    if entry.compute_hash() != entry.hash {
        return Err(at(
            "hash does not match its content (changed after it was written)".into(),
        ));
    }
    if entry.prev_hash != prev {
        let predecessor = if seq == header.first_seq {
            "the header's prev_hash".to_string()
        } else {
            format!("entry {}'s hash", seq - 1)
        };
        return Err(at(format!(
            "prev_hash does not match {predecessor} (lines were removed, added or reordered)"
        )));
    }
    let must_be_signed = header.signed_from.is_some_and(|from| seq >= from);
    match (must_be_signed, entry.check_signature(trusted)) {
        (_, Err(reason)) => Err(at(reason)),
        (true, Ok(Some(_))) => Ok((entry.hash, true)),
        (false, Ok(None)) => Ok((entry.hash, false)),
        (true, Ok(None)) => Err(at(format!(
            "unsigned, but the header says entries are signed from entry {} on (its signature was stripped)",
            header.signed_from.unwrap_or_default()
        ))),
        (false, Ok(Some(_))) => Err(at(match header.signed_from {
            Some(from) => format!("signed, but the header says signing began at entry {from}"),
            None => "signed, but the header says no entry is".into(),
        })),
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, host_key};
    use crate::ledger::NewEntry;
    use crate::state::Db;
    use crate::state::state_dir;
    use serde_json::json;
    use std::sync::Arc;

    fn ledger(n: u64) -> (tempfile::TempDir, Db, Arc<SigningKey>) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("drover.db")).unwrap();
        for i in 1..=n {
            db.write(|tx| {
                tx.record(NewEntry::new(
                    "tag.set",
                    [format!("app:{i}")],
                    json!({"i": i}),
                ))
            })
            .unwrap();
        }
        let key = Arc::new(host_key(state_dir(db.path())).unwrap());
        (dir, db, key)
    }

    fn export(db: &Db, key: &SigningKey, since: Option<u64>) -> Result<String> {
        let mut out = Vec::new();
        db.read()
            .export_ledger(key, &[key.public()], since, &mut out, Path::new("test"))?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn check(text: &str, key: &SigningKey) -> ExportReport {
        verify(text.as_bytes(), &[key.public()], Path::new("test")).unwrap()
    }

    #[test]
    fn whole_and_tail_exports_verify() {
        let (_dir, db, key) = ledger(6);
        let all = export(&db, &key, None).unwrap();
        let r = check(&all, &key);
        assert_eq!(r.problem, None);
        assert_eq!((r.entries, r.signed, r.unsigned), (6, 6, 0));
        let h = r.header.unwrap();
        assert_eq!((h.first_seq, h.last_seq, h.signed_from), (1, 6, Some(1)));
        assert_eq!(h.prev_hash, GENESIS_HASH);

        let tail = export(&db, &key, Some(4)).unwrap();
        let r = check(&tail, &key);
        assert_eq!(r.problem, None);
        assert_eq!(r.entries, 3);
        // The tail's anchor is entry 3's hash, vouched for by the header.
        let third: Entry = serde_json::from_str(all.lines().nth(3).unwrap()).unwrap();
        assert_eq!(r.header.unwrap().prev_hash, third.hash);

        // Just past the end: an empty export anchored at the head.
        let r = check(&export(&db, &key, Some(7)).unwrap(), &key);
        assert_eq!((r.problem, r.entries), (None, 0));
        let err = export(&db, &key, Some(8)).unwrap_err();
        assert!(
            err.to_string().contains("past the end of the ledger"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_ledger_exports_and_verifies() {
        let (_dir, db, key) = ledger(0);
        let text = export(&db, &key, None).unwrap();
        assert_eq!(text.lines().count(), 1);
        let r = check(&text, &key);
        assert_eq!(r.problem, None);
        let h = r.header.unwrap();
        assert_eq!((h.first_seq, h.last_seq, h.signed_from), (1, 0, None));
    }

    #[test]
    fn a_tampered_ledger_is_not_exported() {
        let (_dir, db, key) = ledger(3);
        db.conn()
            .execute_batch(
                "DROP TRIGGER ledger_no_update; UPDATE ledger SET actor = 'x' WHERE seq = 2",
            )
            .unwrap();
        let err = export(&db, &key, None).unwrap_err();
        assert!(
            matches!(err, Error::LedgerTampered { seq: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_lines_are_named() {
        let (_dir, db, key) = ledger(3);
        let text = export(&db, &key, None).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let problem = |body: String| check(&body, &key).problem.expect("a problem").to_string();

        assert_eq!(
            problem(String::new()),
            "line 1: the file is empty: no header line"
        );
        let p = problem(format!("{}\n\n{}\n", lines[0], lines[1..].join("\n")));
        assert_eq!(p, "line 2: empty line");
        let p = problem(format!("{}\n[]\n", lines[0]));
        assert_eq!(p, "line 2: not a JSON object");
        let extra = lines[2].replacen('{', r#"{"extra":1,"#, 1);
        let p = problem([lines[0], lines[1], &extra, lines[3]].join("\n"));
        assert_eq!(p, r#"line 3: unexpected field "extra""#);
        let mut bytes = [lines[0], lines[1]].join("\n").into_bytes();
        bytes.extend_from_slice(b"\n\xff\n");
        let r = verify(&bytes[..], &[key.public()], Path::new("t")).unwrap();
        assert_eq!(r.problem.unwrap().to_string(), "line 3: not UTF-8");
        // An extra entry beyond what the header promises.
        let p = problem(format!("{text}{}\n", lines[3]));
        assert!(
            p.starts_with("line 5 (entry 3): the header says the export ends at entry 3"),
            "{p}"
        );
        // Another format.
        let p = problem(lines[0].replace("drover-ledger-export", "other"));
        assert!(p.starts_with("line 1: not a drover ledger export"), "{p}");
    }

    /// Re-sign `text`'s header after `edit`, as the key holder could.
    fn reheader(text: &str, key: &SigningKey, edit: impl FnOnce(&mut Header)) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut h: Header = serde_json::from_str(&lines[0]).unwrap();
        edit(&mut h);
        h.signature = B64.encode(key.sign(&h.signed_bytes()));
        lines[0] = serde_json::to_string(&h).unwrap();
        lines.join("\n") + "\n"
    }

    #[test]
    fn signed_from_splits_unsigned_from_signed_entries() {
        let (_dir, db, key) = ledger(4);
        let text = export(&db, &key, None).unwrap();
        // A header claiming signing began later than it did.
        let later = reheader(&text, &key, |h| h.signed_from = Some(3));
        let p = check(&later, &key).problem.unwrap();
        assert_eq!(
            p.to_string(),
            "line 2 (entry 1): signed, but the header says signing began at entry 3"
        );
        let none = reheader(&text, &key, |h| h.signed_from = None);
        let p = check(&none, &key).problem.unwrap();
        assert_eq!(
            p.to_string(),
            "line 2 (entry 1): signed, but the header says no entry is"
        );
        // And a header claiming a different last hash.
        let other = reheader(&text, &key, |h| h.last_hash = GENESIS_HASH.into());
        let p = check(&other, &key).problem.unwrap();
        assert_eq!(
            p.to_string(),
            "line 5 (entry 4): the header records a different hash for the last entry"
        );
    }

    #[test]
    fn only_the_keys_given_are_trusted() {
        let (_dir, db, key) = ledger(2);
        let text = export(&db, &key, None).unwrap();
        let stranger = keys::SigningKey::generate().unwrap().public();
        let r = verify(text.as_bytes(), &[stranger], Path::new("t")).unwrap();
        let p = r.problem.unwrap();
        assert_eq!(p.line, 1);
        assert!(p.reason.contains("not a trusted key"), "{p}");
        // With both, as after a rotation, it verifies.
        let r = verify(text.as_bytes(), &[stranger, key.public()], Path::new("t")).unwrap();
        assert!(r.is_ok(), "{:?}", r.problem);
    }
}

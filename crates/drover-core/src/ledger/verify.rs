//! Judging a stored ledger: the hash chain, the head record and the
//! signatures, entry by entry, naming the first that is not as written.

use std::fmt;

use serde::Serialize;

use super::{Entry, GENESIS_HASH, SignedHead, Source};
use crate::error::{Error, Result};
use crate::keys::PublicKey;

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
    /// The signed head kept beside the database (seq, time), if there is
    /// one: the chain must reach it with the same hash.
    pub signed_head: Option<(u64, String)>,
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
/// Streams rows, so memory stays flat however long the ledger is. Give it a
/// source that reads one snapshot (`Reader::verify_ledger` does), so appends
/// committed meanwhile by other processes cannot look like damage.
pub fn verify(source: &dyn Source, trusted: &[PublicKey]) -> Result<VerifyReport> {
    let anchor = source.signed_head();
    let anchor_seq = match &anchor {
        Some(Ok(a)) => Some(a.seq),
        _ => None,
    };
    // The stored hash of the entry the signed head names, met on the walk.
    let mut at_anchor: Option<String> = None;
    let head = source.head()?;
    let mut entries = 0u64;
    let required_from = source.signing_required_from()?;
    // The signed head's record of where signing began is the trusted one:
    // the database's can be raised by whoever strips signatures below it.
    let signed_from = match &anchor {
        Some(Ok(a)) if a.check(trusted).is_ok() => a.signed_from,
        _ => None,
    };
    let mut problem = None;
    if let (Some(signed), Some(db)) = (signed_from, required_from)
        && signed != db
    {
        problem = Some(Problem {
            seq: signed.min(db),
            reason: format!(
                "the database records that signing began at entry {db}, but the signed ledger head ({}) says entry {signed} (the database's record was edited)",
                super::head::FILE
            ),
        });
    }
    let mut signing = Signing {
        // A missing record means it was removed: require signatures throughout.
        required_from: Some(signed_from.or(required_from).unwrap_or(1)),
        ..Signing::default()
    };
    // The last entry checked and found good: (seq, hash).
    let mut last: Option<(u64, String)> = None;
    source.each(1, &mut |seq, decoded| {
        entries += 1;
        if problem.is_some() {
            return Ok(()); // still counting
        }
        match check_entry(seq, decoded, last.as_ref())
            .and_then(|entry| signing.check(&entry, trusted).map(|()| entry))
        {
            Ok(good) => {
                if Some(good.seq) == anchor_seq {
                    at_anchor = Some(good.hash.clone());
                }
                last = Some((good.seq, good.hash))
            }
            Err(p) => problem = Some(p),
        }
        Ok(())
    })?;

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
    if problem.is_none() {
        problem = check_anchor(
            anchor.as_ref(),
            at_anchor.as_deref(),
            last.as_ref(),
            trusted,
        );
    }
    Ok(VerifyReport {
        entries,
        head,
        signed: signing.signed,
        unsigned: signing.unsigned,
        first_signed: signing.first_signed,
        signing_required_from: required_from,
        signed_head: match anchor {
            Some(Ok(a)) => Some((a.seq, a.time)),
            _ => None,
        },
        problem,
    })
}

/// Check an otherwise intact chain against the signed head kept beside the
/// database: it may lag the chain (a crash between the commit and the file
/// write) but never lead it, and the entry it names must be the one it
/// signed. `at_anchor` is the chain's hash at the signed seq, if it has one.
fn check_anchor(
    anchor: Option<&std::result::Result<SignedHead, String>>,
    at_anchor: Option<&str>,
    last: Option<&(u64, String)>,
    trusted: &[PublicKey],
) -> Option<Problem> {
    let file = super::head::FILE;
    let a = match anchor? {
        Ok(a) => a,
        Err(why) => {
            return Some(Problem {
                seq: last.map_or(0, |(s, _)| *s),
                reason: format!(
                    "the signed ledger head ({file} beside the database) cannot be read: {why}"
                ),
            });
        }
    };
    if let Err(why) = a.check(trusted) {
        return Some(Problem {
            seq: a.seq,
            reason: format!("the signed ledger head ({file}) is not valid: {why}"),
        });
    }
    let end = last.map_or(0, |(s, _)| *s);
    if a.seq > end {
        let range = if a.seq == end + 1 {
            format!("entry {}", a.seq)
        } else {
            format!("entries {} to {}", end + 1, a.seq)
        };
        return Some(Problem {
            seq: end + 1,
            reason: format!(
                "missing: {range} (the ledger ends at {end}, but the host key signed entry {} as the head at {} in {file}: the tail was deleted and the head record rewritten)",
                a.seq, a.time
            ),
        });
    }
    if at_anchor != Some(a.hash.as_str()) {
        return Some(Problem {
            seq: a.seq,
            reason: format!(
                "its hash is not the one the host key signed for it at {} in {file} (this entry and those after it were rewritten)",
                a.time
            ),
        });
    }
    None
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

/// Check one stored row against its predecessor; on success, return it.
fn check_entry(
    seq: i64,
    decoded: std::result::Result<Entry, String>,
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

    let entry = decoded.map_err(|reason| Problem { seq, reason })?;
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

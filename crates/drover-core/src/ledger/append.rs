//! How the next entry follows the chain: numbered after the recorded head,
//! linked to its hash, hashed and signed. Pure; the state backend stores the
//! result and the new head in the change's transaction.

use super::entry::canonical;
use super::{Entry, GENESIS_HASH, NewEntry};
use crate::error::{Error, Result};
use std::sync::Arc;

use crate::keys::SigningKey;

/// The entry that follows a ledger whose head record is `head` and whose
/// highest stored seq is `last`, stamped with `actor` and `time` and signed
/// with the key `key` gives. The key is asked for only once the ledger is
/// known to be appendable: a refused append loads (or creates) no key.
///
/// The new entry follows the recorded head, not the last row: if the tail
/// was deleted, the gap stays in the chain for [`super::verify`] to report
/// instead of being papered over. Refuses (with [`Error::LedgerTampered`])
/// when the head record is missing or behind the last entry, since either
/// way there is no trustworthy place to continue from.
pub fn next(
    head: Option<(i64, String)>,
    last: Option<i64>,
    e: NewEntry,
    actor: String,
    time: String,
    key: impl FnOnce() -> Result<Arc<SigningKey>>,
) -> Result<Entry> {
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
    entry.sign(&*key()?);

    Ok(entry)
}

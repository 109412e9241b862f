//! The audit ledger: an append-only, hash-chained log of every mutation drover
//! makes, stored in the state database ([`crate::state`]).
//!
//! Each mutation appends its entry with [`crate::state::Tx::record`] inside
//! the same transaction as the change itself, so a change and its entry
//! commit (or vanish) together. `Reader::ledger` reads entries back; [`verify`]
//! walks the chain and names the first entry that is not as it was written.
//!
//! This module owns the ledger's *rules*, independent of where it is stored:
//! the entry and its canonical form (`entry.rs`: [`Entry`]), how the next entry follows
//! the head ([`next`]), and how a stored chain is judged ([`verify`]). The
//! state backend stores rows and hands them over through [`Source`]; so any
//! backend's ledger hashes, signs, verifies and exports the same way.
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
//! detectable too. Someone who can write the database can rewrite that row
//! as well; so after each commit the head is also signed with the host key
//! and kept in a file beside the database ([`head`]), which only ever moves
//! forward. A chain that ends before that signed head, or disagrees with
//! it, was truncated or rewritten.
//!
//! # Signatures
//!
//! Every new entry is signed with the state's signer (the host key,
//! [`crate::keys::host_key`] of the directory holding the database): the
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

mod append;
mod entry;
pub mod export;
pub mod head;
mod verify;

#[cfg(test)]
mod tests;

pub use append::next;
pub use entry::{Entry, NewEntry, acting_for, actor, canonical_json};
pub use head::SignedHead;
pub use verify::{Problem, VerifyReport, verify};

use crate::error::Result;

/// The `prev_hash` of entry 1.
pub const GENESIS_HASH: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Which entries a ledger listing returns. All conditions must hold; `None` matches
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
    /// Entries written at or after this time (RFC 3339 UTC as entries store
    /// it, `YYYY-MM-DDTHH:MM:SS.mmmZ`, which sorts as the times it names).
    pub since_time: Option<String>,
    /// Entries written before this time (same form).
    pub until_time: Option<String>,
    /// Only the newest `limit` matching entries (still in ascending order).
    pub limit: Option<usize>,
}

/// What the ledger needs from the state backend that stores it. Rows are
/// not trusted (that is the point of the ledger): a row the backend cannot
/// decode is handed over as the reason, for [`verify`] to report.
pub trait Source {
    /// The head record: seq and hash of the last entry, written in the same
    /// transaction as each append.
    fn head(&self) -> Result<Option<(i64, String)>>;
    /// The seq from which every entry must be signed, as recorded when the
    /// database began signing; `None` if the record is gone.
    fn signing_required_from(&self) -> Result<Option<u64>>;
    /// The signed head kept beside the database ([`head`]), read *before*
    /// the rows (so it can only lag them, never lead): `None` if there is
    /// none, the reason if it cannot be read.
    fn signed_head(&self) -> Option<std::result::Result<SignedHead, String>> {
        None
    }
    /// The stored `hash` of entry `seq`.
    fn hash_of(&self, seq: u64) -> Result<String>;
    /// Every row from `from_seq` on, in seq order: its seq as stored, and the
    /// entry decoded or why it could not be.
    fn each(
        &self,
        from_seq: u64,
        f: &mut dyn FnMut(i64, std::result::Result<Entry, String>) -> Result<()>,
    ) -> Result<()>;
}

//! The signed ledger head: the last committed entry's seq and hash, signed
//! by the host key and kept in a file beside the database
//! ([`FILE`]), so someone who can write the database but not the host key
//! or the store directory cannot truncate the ledger unnoticed (see below
//! for what someone who can also replace this file can do).
//!
//! The `ledger_head` row lives in the database, so an attacker who deletes
//! the ledger's tail can rewrite it to match. The file cannot be forged
//! without the host key, and it is only ever moved forward: it is written
//! (atomically, under a lock) after each commit that appended entries, and
//! never replaced by an older seq. A crash between the database commit and
//! the file write leaves the file *behind* the database, which is fine;
//! the file *ahead* of the chain (or naming a different hash for its seq)
//! is tampering: [`super::verify`] reports the missing range, and appending
//! is refused — except stopping, removing and recording exits, which go on
//! with a warning — until the gap is acknowledged (`audit
//! accept-truncation`, a ledgered entry that re-signs the head).
//!
//! The head also carries where signing began in this database
//! (`signed_from`): every entry from there on must be signed. The database
//! keeps that number too (`store_meta`), but a database writer could raise
//! it and strip signatures below it; the signed copy is the one trusted.
//! It never changes once written: each new head carries the previous
//! file's value, and only the first file takes it from the database.
//!
//! The signed message is the UTF-8 text
//! `drover-ledger-head-v2\n<seq>\n<hash>\n<time>\n<signed_from>`
//! (`drover-ledger-head-v1\n<seq>\n<hash>\n<time>` for a file written
//! before `signed_from` was carried), Ed25519 over those bytes, stored
//! base64 beside the key's id.
//!
//! What the file does not give: freshness. An older valid file copied back
//! over it, with the chain truncated to match, is consistent and passes
//! `audit verify`; only a copy kept off the host (`drover audit export`,
//! signed) shows such a rollback. See `docs/ledger-format.md`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SigningKey};

/// The file's name in the state directory (beside the database).
pub const FILE: &str = "ledger.head";

/// One signed head, as kept in [`FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    /// The last entry committed when this was written.
    pub seq: u64,
    /// That entry's hash.
    pub hash: String,
    /// When this was written (RFC 3339).
    pub time: String,
    /// Where signing began: every entry from here on must be signed.
    /// Absent in files written before it was carried (v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_from: Option<u64>,
    pub keyid: String,
    /// Standard base64 of the Ed25519 signature over [`SignedHead::message`].
    pub signature: String,
}

impl SignedHead {
    /// Sign `seq`, `hash` and `signed_from` at `time` with `key`.
    pub fn sign(
        seq: u64,
        hash: &str,
        time: &str,
        signed_from: Option<u64>,
        key: &SigningKey,
    ) -> SignedHead {
        SignedHead {
            seq,
            hash: hash.to_string(),
            time: time.to_string(),
            signed_from,
            keyid: key.keyid(),
            signature: B64.encode(key.sign(&message(seq, hash, time, signed_from))),
        }
    }

    /// Whether a key in `trusted` signed this; the reason if not.
    pub fn check(&self, trusted: &[PublicKey]) -> Result<(), String> {
        let key = trusted
            .iter()
            .find(|k| k.keyid() == self.keyid)
            .ok_or_else(|| {
                format!(
                    "it is signed by key {}, which is not a trusted key",
                    self.keyid
                )
            })?;
        let raw = B64
            .decode(&self.signature)
            .map_err(|_| "its signature is not base64".to_string())?;
        if raw.len() != 64
            || !key.verify(
                &message(self.seq, &self.hash, &self.time, self.signed_from),
                &raw,
            )
        {
            return Err(format!(
                "its signature does not verify under key {} (the file was edited)",
                self.keyid
            ));
        }
        Ok(())
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("a SignedHead always serializes");
        v.push(b'\n');
        v
    }

    /// Parse the file's bytes; the reason if they are not a signed head.
    pub fn parse(bytes: &[u8]) -> Result<SignedHead, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("it is not a signed ledger head ({e})"))
    }
}

fn message(seq: u64, hash: &str, time: &str, signed_from: Option<u64>) -> Vec<u8> {
    match signed_from {
        None => format!("drover-ledger-head-v1\n{seq}\n{hash}\n{time}").into_bytes(),
        Some(f) => format!("drover-ledger-head-v2\n{seq}\n{hash}\n{time}\n{f}").into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_head_round_trips_and_any_edit_breaks_it() {
        let key = SigningKey::generate().unwrap();
        let trusted = [key.public()];
        let h = SignedHead::sign(7, "sha256:ab", "2026-01-01T00:00:00Z", Some(1), &key);
        let back = SignedHead::parse(&h.to_bytes()).unwrap();
        assert_eq!(back, h);
        back.check(&trusted).unwrap();

        let mut rolled_back = h.clone();
        rolled_back.seq = 5;
        assert!(rolled_back.check(&trusted).is_err());
        let mut rehashed = h.clone();
        rehashed.hash = "sha256:cd".into();
        assert!(rehashed.check(&trusted).is_err());
        // Where signing began is signed too: raising or dropping it breaks it.
        let mut raised = h.clone();
        raised.signed_from = Some(5);
        assert!(raised.check(&trusted).is_err());
        let mut dropped = h.clone();
        dropped.signed_from = None;
        assert!(dropped.check(&trusted).is_err());
        let other = SigningKey::generate().unwrap();
        assert!(h.check(&[other.public()]).is_err());
        assert!(SignedHead::parse(b"{}").is_err());
    }
}

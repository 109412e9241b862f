//! The signed ledger head: the last committed entry's seq and hash, signed
//! by the host key and kept in a file beside the database
//! ([`FILE`]), so someone who can write the database but not the host key
//! cannot roll the ledger back unnoticed.
//!
//! The `ledger_head` row lives in the database, so an attacker who deletes
//! the ledger's tail can rewrite it to match. The file cannot be forged
//! without the host key, and it is only ever moved forward: it is written
//! (atomically, under a lock) after each commit that appended entries, and
//! never replaced by an older seq. A crash between the database commit and
//! the file write leaves the file *behind* the database, which is fine;
//! the file *ahead* of the chain (or naming a different hash for its seq)
//! is tampering: [`super::verify`] reports the missing range, and appending
//! is refused until someone looks.
//!
//! The signed message is the UTF-8 text
//! `drover-ledger-head-v1\n<seq>\n<hash>\n<time>`, Ed25519 over those
//! bytes, stored base64 beside the key's id.

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
    pub keyid: String,
    /// Standard base64 of the Ed25519 signature over [`SignedHead::message`].
    pub signature: String,
}

impl SignedHead {
    /// Sign `seq` and `hash` at `time` with `key`.
    pub fn sign(seq: u64, hash: &str, time: &str, key: &SigningKey) -> SignedHead {
        SignedHead {
            seq,
            hash: hash.to_string(),
            time: time.to_string(),
            keyid: key.keyid(),
            signature: B64.encode(key.sign(&message(seq, hash, time))),
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
        if raw.len() != 64 || !key.verify(&message(self.seq, &self.hash, &self.time), &raw) {
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

fn message(seq: u64, hash: &str, time: &str) -> Vec<u8> {
    format!("drover-ledger-head-v1\n{seq}\n{hash}\n{time}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_head_round_trips_and_any_edit_breaks_it() {
        let key = SigningKey::generate().unwrap();
        let trusted = [key.public()];
        let h = SignedHead::sign(7, "sha256:ab", "2026-01-01T00:00:00Z", &key);
        let back = SignedHead::parse(&h.to_bytes()).unwrap();
        assert_eq!(back, h);
        back.check(&trusted).unwrap();

        let mut rolled_back = h.clone();
        rolled_back.seq = 5;
        assert!(rolled_back.check(&trusted).is_err());
        let mut rehashed = h.clone();
        rehashed.hash = "sha256:cd".into();
        assert!(rehashed.check(&trusted).is_err());
        let other = SigningKey::generate().unwrap();
        assert!(h.check(&[other.public()]).is_err());
        assert!(SignedHead::parse(b"{}").is_err());
    }
}

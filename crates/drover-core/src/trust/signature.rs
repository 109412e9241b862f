//! Image signatures: a signed in-toto statement saying "this key approves
//! this image manifest", attached to the image. `drover sign` and `drover
//! build --sign` write one; policy and `drover verify` check them.

use serde_json::json;

use super::attest::{self, Attestation, Statement};
use crate::clock;
use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::keys::dsse::Failure;
use crate::keys::{PublicKey, SigningKey};
use crate::ledger::NewEntry;
use crate::store::{Descriptor, Store};

/// Artifact type of a signature.
pub const ARTIFACT_TYPE: &str = "application/vnd.drover.signature.v1+json";
/// Predicate type of the signed statement.
pub const PREDICATE_TYPE: &str = "https://drover.dev/signature/v1";

#[derive(Debug, Clone, serde::Serialize)]
pub struct Signed {
    pub image: Digest,
    pub signature: Digest,
    pub keyid: String,
    /// False when the image already carried a valid signature by this key.
    pub new: bool,
}

/// Sign the image `reference` names with `key` and attach the signature,
/// recording `image.sign` in the ledger. Signing twice with one key keeps
/// the first signature, also when two processes sign at once: the look for
/// an existing signature and the attaching of a new one happen under the
/// store's signing lock (`sign.lock`), so the second signer finds the
/// first's signature. (A signature cannot dedup by content: it carries its
/// own time.)
pub fn sign(store: &mut Store, reference: &str, key: &SigningKey) -> Result<Signed> {
    let image = store.resolve(reference)?;
    let keyid = key.keyid();
    let lock_path = store.layout().root().join("sign.lock");
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .ctx("open signing lock", &lock_path)?;
    lock.lock().ctx("lock signing", &lock_path)?;
    if let Some(a) = check(store, &image.digest, &[key.public()])?.valid.first() {
        return Ok(Signed {
            image: image.digest,
            signature: a.0,
            keyid,
            new: false,
        });
    }
    let statement = Statement::about(
        &image.digest,
        reference,
        PREDICATE_TYPE,
        json!({ "signedAt": clock::now_rfc3339(), "keyid": keyid }),
    );
    let desc: Descriptor = attest::put(store, &image, ARTIFACT_TYPE, &statement, key)?;
    store.mutate(|m| {
        m.add_referrer(&desc, &image.digest, ARTIFACT_TYPE)?;
        m.record(NewEntry::new(
            "image.sign",
            vec![image.digest.to_string(), desc.digest.to_string()],
            json!({ "keyid": keyid, "reference": reference }),
        ))
    })?;
    Ok(Signed {
        image: image.digest,
        signature: desc.digest,
        keyid,
        new: true,
    })
}

/// What an image's signatures say about a set of keys.
#[derive(Debug, Default)]
pub struct Check {
    /// Signatures (artifact digest, key) that verify by one of the keys.
    pub valid: Vec<(Digest, PublicKey)>,
    /// Signatures that name one of the keys but fail, or do not parse.
    pub invalid: Vec<(Digest, Failure)>,
    /// Signatures by keys not asked about.
    pub other: usize,
}

impl Check {
    /// Signed by one of the keys. Signatures that fail to verify do not
    /// take that away: anyone who can attach an artifact (to the store, or
    /// to the image in a registry) could otherwise block an approved image
    /// with garbage; they cannot make an unapproved one pass. They are
    /// reported ([`Check::invalid`]) for someone to look into.
    pub fn is_trusted(&self) -> bool {
        !self.valid.is_empty()
    }

    /// Why the image is not trusted, in words; `None` when it is.
    pub fn problem(&self) -> Option<String> {
        if self.is_trusted() {
            return None;
        }
        if let Some((d, f)) = self.invalid.first() {
            return Some(format!("signature {} is not valid: {f}", d.short()));
        }
        Some(if self.other > 0 {
            format!("it has {} signature(s), none by a trusted key", self.other)
        } else {
            "it is not signed".into()
        })
    }
}

/// Check the signatures attached to `image` against `keys`.
pub fn check(store: &Store, image: &Digest, keys: &[PublicKey]) -> Result<Check> {
    let mut out = Check::default();
    for a in attest::list(store, image, ARTIFACT_TYPE)? {
        classify(&mut out, &a, image, keys);
    }
    Ok(out)
}

fn classify(out: &mut Check, a: &Attestation, image: &Digest, keys: &[PublicKey]) {
    match a.verify(image, PREDICATE_TYPE, keys) {
        Ok((key, _)) => out.valid.push((a.artifact, key)),
        Err(Failure::NoSignatureByKey) => out.other += 1,
        Err(f) => out.invalid.push((a.artifact, f)),
    }
}

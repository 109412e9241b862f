//! in-toto v1 statements about images, signed in DSSE envelopes and attached
//! to the image as artifacts. Signatures and provenance are both this, with
//! different predicates, so one verifier serves both and outside tools
//! (in-toto, securesystemslib) read them as they are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::keys::dsse::{self, Envelope, Failure};
use crate::keys::{PublicKey, SigningKey};
use crate::store::{Descriptor, Store, artifact};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// Artifact type of a build's provenance (written by `build`, checked by policy and `trace`).
pub const PROVENANCE_ARTIFACT_TYPE: &str = "application/vnd.drover.provenance.v1+json";
/// The SLSA v1 provenance predicate. Fields other parts rely on:
/// `buildDefinition.resolvedDependencies[]` holds the base image as
/// `{"name": "base-image", "uri": "oci:<reference as written>", "digest": {"sha256": <manifest hex>}}`
/// (absent for `scratch`), and `runDetails.builder.id` is [`BUILDER_ID`].
pub const SLSA_PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The SLSA builder id of drover's builds.
pub const BUILDER_ID: &str = "https://drover.dev/builder/v1";
/// Artifact type of an image's SPDX 2.3 SBOM (JSON, unsigned; the signature covers the image).
pub const SBOM_ARTIFACT_TYPE: &str = "application/spdx+json";
/// The DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

impl Statement {
    /// A statement whose one subject is the image manifest `image`.
    pub fn about(image: &Digest, name: &str, predicate_type: &str, predicate: Value) -> Self {
        Statement {
            type_: STATEMENT_TYPE.into(),
            subject: vec![Subject {
                name: name.into(),
                digest: BTreeMap::from([("sha256".to_string(), image.hex())]),
            }],
            predicate_type: predicate_type.into(),
            predicate,
        }
    }

    /// True when one of the subjects is `image`.
    pub fn names(&self, image: &Digest) -> bool {
        self.subject
            .iter()
            .any(|s| s.digest.get("sha256").is_some_and(|h| *h == image.hex()))
    }
}

/// Sign `statement` with `key` and store it as an artifact of
/// `artifact_type` attached to `image`. The caller records the referrer.
pub fn put(
    store: &Store,
    image: &Descriptor,
    artifact_type: &str,
    statement: &Statement,
    key: &SigningKey,
) -> Result<Descriptor> {
    let payload = serde_json::to_vec(statement)
        .map_err(|e| Error::corrupt("in-toto statement", e.to_string()))?;
    let env = Envelope::sign(PAYLOAD_TYPE, &payload, key);
    artifact::put(
        store,
        image,
        artifact_type,
        dsse::MEDIA_TYPE,
        &env.to_bytes(),
    )
}

/// One attached, signed statement, not yet verified.
#[derive(Debug, Clone)]
pub struct Attestation {
    /// The artifact manifest's digest.
    pub artifact: Digest,
    pub envelope: Result<Envelope, Failure>,
}

impl Attestation {
    /// Verify the envelope against `keys` and check that its statement is
    /// about `image` and has `predicate_type`.
    pub fn verify(
        &self,
        image: &Digest,
        predicate_type: &str,
        keys: &[PublicKey],
    ) -> std::result::Result<(PublicKey, Statement), Failure> {
        let env = self.envelope.as_ref().map_err(Clone::clone)?;
        if env.payload_type != PAYLOAD_TYPE {
            return Err(Failure::Malformed(format!(
                "payload type is {:?}, not {PAYLOAD_TYPE}",
                env.payload_type
            )));
        }
        let (key, payload) = env.verify(keys)?;
        let st: Statement = serde_json::from_slice(&payload)
            .map_err(|e| Failure::Malformed(format!("statement: {e}")))?;
        if st.type_ != STATEMENT_TYPE || st.predicate_type != predicate_type {
            return Err(Failure::Malformed(format!(
                "expected a {predicate_type} statement, found {} / {}",
                st.type_, st.predicate_type
            )));
        }
        if !st.names(image) {
            return Err(Failure::Malformed(format!(
                "the statement is about another image, not {image}"
            )));
        }
        Ok((key, st))
    }

    /// The statement without checking any signature (for display only).
    pub fn statement_unverified(&self) -> Option<Statement> {
        let env = self.envelope.as_ref().ok()?;
        serde_json::from_slice(&env.payload_bytes().ok()?).ok()
    }
}

/// Every attestation of `artifact_type` attached to `image`. Missing or
/// corrupt blobs are errors; an envelope that does not parse is kept, with
/// its failure, for the verifier to report.
pub fn list(store: &Store, image: &Digest, artifact_type: &str) -> Result<Vec<Attestation>> {
    Ok(artifact::all(store, image, artifact_type)?
        .into_iter()
        .map(|(r, bytes)| Attestation {
            artifact: r.digest,
            envelope: Envelope::parse(&bytes),
        })
        .collect())
}

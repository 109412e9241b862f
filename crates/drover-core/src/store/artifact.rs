//! Artifacts attached to images (OCI 1.1): a manifest whose `subject` is the
//! image, an empty config, and one layer holding the content. The baseline,
//! SBOM, provenance and signatures are all stored this way, so they travel
//! with the image through `push` and `pull` and `gc` keeps them with it.
//!
//! [`put`] writes the blobs; the caller records the referrer (with its
//! ledger entry) through [`crate::store::Mutation::add_referrer`].

use std::collections::BTreeMap;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::store::{Descriptor, Manifest, Referrer, Store, oci};

/// Store `content` as an artifact of `artifact_type` whose subject is
/// `image`; returns the artifact manifest's descriptor (with its
/// `artifactType` set). Writing the same content twice gives the same digest.
pub fn put(
    store: &Store,
    image: &Descriptor,
    artifact_type: &str,
    content_media_type: &str,
    content: &[u8],
) -> Result<Descriptor> {
    let content = Descriptor::new(
        content_media_type,
        store.put_blob(content)?,
        content.len() as u64,
    );
    let empty = Descriptor::new(
        oci::MEDIA_EMPTY,
        store.put_blob(oci::EMPTY_JSON)?,
        oci::EMPTY_JSON.len() as u64,
    );
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.into()),
        artifact_type: Some(artifact_type.into()),
        config: empty,
        layers: vec![content],
        subject: Some(Descriptor::new(&image.media_type, image.digest, image.size)),
        annotations: BTreeMap::new(),
    };
    let mut d = store.put_json(oci::MEDIA_MANIFEST, &manifest)?;
    d.artifact_type = Some(artifact_type.into());
    Ok(d)
}

/// The content of the artifact `digest` (its first layer), verified, after
/// checking that its subject is `subject`.
pub fn content(store: &Store, digest: &Digest, subject: &Digest) -> Result<Vec<u8>> {
    let art = store.manifest(digest)?;
    if art.subject.as_ref().map(|s| &s.digest) != Some(subject) {
        return Err(Error::corrupt(
            format!("artifact {digest}"),
            format!("its subject is not {subject}"),
        ));
    }
    let layer = art
        .layers
        .first()
        .ok_or_else(|| Error::corrupt(format!("artifact {digest}"), "it has no content"))?;
    store.read_blob(&layer.digest)
}

/// Every artifact of `artifact_type` attached to `subject`, with its content.
pub fn all(
    store: &Store,
    subject: &Digest,
    artifact_type: &str,
) -> Result<Vec<(Referrer, Vec<u8>)>> {
    store
        .referrers(subject, Some(artifact_type))?
        .into_iter()
        .map(|r| content(store, &r.digest, subject).map(|c| (r, c)))
        .collect()
}

/// The first artifact of `artifact_type` attached to `subject`, parsed as
/// JSON; `what` names it in errors ("baseline", "SBOM").
pub fn first_json<T: serde::de::DeserializeOwned>(
    store: &Store,
    subject: &Digest,
    artifact_type: &str,
    what: &str,
) -> Result<Option<T>> {
    let Some((r, bytes)) = all(store, subject, artifact_type)?.into_iter().next() else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::corrupt(format!("{what} {}", r.digest), e.to_string()))
}

//! SLSA v1 provenance: how an image was built, signed by the store's host
//! key and attached to the image (artifact type
//! [`PROVENANCE_ARTIFACT_TYPE`]), for policy, `drover trace` and outside
//! in-toto / SLSA verifiers.
//!
//! The statement (in-toto v1, predicate `https://slsa.dev/provenance/v1`)
//! has the image manifest as its subject, named by the tag. Its
//! `buildDefinition` holds what decides the image: the definition file and
//! the build parameters (`externalParameters`), the thread count and cache
//! use that do not (`internalParameters`), and `resolvedDependencies`: the
//! definition file, the base image (the contract of [`crate::trust::attest`]),
//! one entry per copy layer and one per inline file. A copy layer's digest is
//! the sha256 of its file records as the baseline lists them (path, type,
//! mode, owner, size, content sha256, link target, as JSON): it changes when
//! any input file's content, name, mode or owner changes, and not with the
//! timestamp or compression (its `diffId` annotation is the layer tar's).
//! A run layer's digest is its cache key (parent layers, command,
//! environment, mounted trees' digests), annotated with the command, the
//! mounts and whether it had the network; `externalParameters.hermetic`
//! is false when any run layer had it.
//!
//! A rebuild that yields an image that already has provenance signed by
//! this store's key *replaces* it: the older one says nothing about the
//! image the newer one does not (same inputs, same bytes), and CI loops
//! would otherwise pile up a referrer per run. Every build event stays in
//! the ledger (`image.build` names its provenance). Provenance from other
//! keys (a pulled image) is kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::def::{Base, Compression, ImageDef, LayerDef};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::keys::PublicKey;
use crate::keys::dsse::Failure;
use crate::store::Store;
use crate::store::baseline::FileRecord;
use crate::trust::attest::{
    self, Attestation, BUILDER_ID, PROVENANCE_ARTIFACT_TYPE, SLSA_PREDICATE_TYPE, Statement,
};

/// The SLSA `buildType` of drover builds.
pub const BUILD_TYPE: &str = "https://drover.dev/build/v1";
/// The `name` of the base image dependency (see [`crate::trust::attest`]).
pub const BASE_IMAGE: &str = "base-image";
/// The `name` of the definition file dependency.
pub const DEFINITION: &str = "definition";

/// A SLSA resource descriptor (only the fields drover writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    pub digest: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, Value>,
}

impl Dependency {
    pub fn new(name: impl Into<String>, uri: Option<String>, sha256: &Digest) -> Self {
        Dependency {
            name: name.into(),
            uri,
            digest: BTreeMap::from([("sha256".to_string(), sha256.hex())]),
            annotations: BTreeMap::new(),
        }
    }

    /// The sha256 digest, when it has one.
    pub fn sha256(&self) -> Option<Digest> {
        self.digest
            .get("sha256")
            .and_then(|h| format!("sha256:{h}").parse().ok())
    }
}

/// The SLSA v1 provenance predicate (the subset drover writes and reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Predicate {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: Value,
    #[serde(default)]
    pub internal_parameters: Value,
    #[serde(default)]
    pub resolved_dependencies: Vec<Dependency>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: Builder,
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byproducts: Vec<Dependency>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Builder {
    pub id: String,
    #[serde(default)]
    pub version: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub invocation_id: String,
    /// RFC 3339.
    pub started_on: String,
    pub finished_on: String,
}

impl Predicate {
    /// The statement about `image`, named `tag`.
    pub fn statement(&self, image: &Digest, tag: &str) -> Result<Statement> {
        let value = serde_json::to_value(self)
            .map_err(|e| crate::error::Error::corrupt("provenance", e.to_string()))?;
        Ok(Statement::about(image, tag, SLSA_PREDICATE_TYPE, value))
    }
}

/// What a build knows when it writes its provenance.
pub(crate) struct BuildFacts<'a> {
    pub def: &'a ImageDef,
    /// sha256 of the definition file's bytes (`None` if it could not be read again).
    pub definition: Option<Digest>,
    pub tag: &'a str,
    pub compression: Compression,
    pub level: u32,
    pub epoch: u64,
    pub threads: usize,
    pub no_cache: bool,
    /// One per built layer ([`layer_input`]), in order.
    pub inputs: Vec<Dependency>,
    pub started_on: String,
    pub baseline: Digest,
    pub sbom: Digest,
}

/// The provenance predicate of a build that finishes now.
pub(crate) fn predicate(f: BuildFacts<'_>) -> Predicate {
    let def = f.def;
    let definition = f
        .definition
        .map(|d| Dependency::new(DEFINITION, Some(format!("file:{}", def.file.display())), &d));
    let mut external = json!({
        "definition": {
            "path": def.file.display().to_string(),
            "digest": f.definition.map(|d| json!({ "sha256": d.hex() })),
        },
        "tag": f.tag,
        "compression": f.compression.to_string(),
        "compression_level": f.level,
        "source_date_epoch": f.epoch,
    });
    // A run step with the network may have read anything: such a build is
    // not hermetic. (Said only by definitions with run steps, maintainer
    // scripts among them: those never have the network.)
    let runs: Vec<bool> = def
        .layers
        .iter()
        .filter_map(|l| match l {
            LayerDef::Run(r) => Some(r.network),
            LayerDef::Packages(p) if p.scripts => Some(false),
            _ => None,
        })
        .collect();
    if !runs.is_empty() {
        external["hermetic"] = json!(!runs.contains(&true));
    }
    Predicate {
        build_definition: BuildDefinition {
            build_type: BUILD_TYPE.into(),
            external_parameters: external,
            internal_parameters: json!({
                "threads": f.threads,
                "no_cache": f.no_cache,
            }),
            resolved_dependencies: definition
                .into_iter()
                .chain(base_dependency(def))
                .chain(f.inputs)
                .collect(),
        },
        run_details: RunDetails {
            builder: Builder {
                id: BUILDER_ID.into(),
                version: BTreeMap::from([(
                    "drover".to_string(),
                    env!("CARGO_PKG_VERSION").to_string(),
                )]),
            },
            metadata: Metadata {
                invocation_id: invocation_id(),
                started_on: f.started_on,
                finished_on: crate::clock::now_rfc3339(),
            },
            byproducts: vec![
                Dependency::new("baseline", None, &f.baseline),
                Dependency::new("sbom", None, &f.sbom),
            ],
        },
    }
}

/// The dependency of one built layer: a copy layer's input tree (the
/// sha256 of its file records as JSON, see the module doc) or an inline
/// file's content. `name` is the layer's source as the build prints it.
pub(crate) fn layer_input(
    layer: &LayerDef,
    name: &str,
    files: &[FileRecord],
    diff_id: &Digest,
) -> Result<Dependency> {
    Ok(match layer {
        LayerDef::Copy(_) | LayerDef::Packages(_) => {
            let records = serde_json::to_vec(files)
                .map_err(|e| Error::corrupt("layer file records", e.to_string()))?;
            let uri = match layer {
                LayerDef::Copy(c) => Some(format!("file:{}", c.src)),
                _ => None,
            };
            let mut d = Dependency::new(name, uri, &Digest::of(&records));
            d.annotations.insert("diffId".into(), json!(diff_id));
            d
        }
        LayerDef::File(f) => Dependency::new(name, None, &Digest::of(f.content.as_bytes())),
        // Run layers name their own inputs (`run::build`).
        LayerDef::Run(_) => {
            return Err(Error::corrupt(
                name,
                "a run layer's provenance comes from its run",
            ));
        }
    })
}

/// The base image as the provenance names it (the contract in
/// [`crate::trust::attest`]); `None` for scratch.
fn base_dependency(def: &ImageDef) -> Option<Dependency> {
    let (uri, digest) = match &def.base {
        Base::Scratch => return None,
        Base::Store(d) => (format!("oci:{d}"), d),
        Base::Layout { dir, digest } => {
            let dir = dir.strip_prefix(&def.context).unwrap_or(dir);
            (format!("oci:{}@{digest}", dir.display()), digest)
        }
    };
    Some(Dependency::new(BASE_IMAGE, Some(uri), digest))
}

/// A fresh invocation id: 128 random bits, as a UUID URN.
pub fn invocation_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    // The system RNG failing is not worth failing a build over; the time
    // makes the id unique enough then.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        b[..8].copy_from_slice(&crate::clock::now_ms().to_be_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// A verified provenance of an image, in the terms policy and `trace` use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Provenance {
    /// The provenance artifact's manifest digest.
    pub artifact: Digest,
    /// The key id that signed it.
    pub keyid: String,
    pub builder_id: String,
    pub build_type: String,
    /// sha256 of the definition file's bytes.
    pub definition: Option<Digest>,
    /// The base image's manifest digest (`None` for `scratch`).
    pub base_image: Option<Digest>,
    /// Every resolved dependency, the definition and base included.
    pub dependencies: Vec<Dependency>,
    pub invocation_id: String,
    pub started_on: String,
    pub finished_on: String,
}

impl Provenance {
    fn from_predicate(artifact: Digest, keyid: String, p: Predicate) -> Self {
        let find = |name: &str| {
            p.build_definition
                .resolved_dependencies
                .iter()
                .find(|d| d.name == name)
                .and_then(Dependency::sha256)
        };
        Provenance {
            artifact,
            keyid,
            definition: find(DEFINITION),
            base_image: find(BASE_IMAGE),
            builder_id: p.run_details.builder.id,
            build_type: p.build_definition.build_type,
            dependencies: p.build_definition.resolved_dependencies,
            invocation_id: p.run_details.metadata.invocation_id,
            started_on: p.run_details.metadata.started_on,
            finished_on: p.run_details.metadata.finished_on,
        }
    }
}

/// One attached statement, verified against `keys` and read as SLSA v1
/// provenance of `image`; or why it is not.
pub fn check(a: &Attestation, image: &Digest, keys: &[PublicKey]) -> Result<Provenance, Failure> {
    let (key, st) = a.verify(image, SLSA_PREDICATE_TYPE, keys)?;
    let p: Predicate = serde_json::from_value(st.predicate)
        .map_err(|e| Failure::Malformed(format!("not SLSA v1 provenance: {e}")))?;
    Ok(Provenance::from_predicate(a.artifact, key.keyid(), p))
}

/// Newest (`finishedOn`) first. RFC 3339 UTC times with the same precision
/// sort as strings.
pub fn newest_first(all: &mut [Provenance]) {
    all.sort_by(|a, b| b.finished_on.cmp(&a.finished_on));
}

/// Every provenance of `image` that verifies with one of `keys`, newest
/// (`finishedOn`) first. Ones that do not verify or do not parse as SLSA v1
/// are left out; [`check`] says why of each.
pub fn verified(store: &Store, image: &Digest, keys: &[PublicKey]) -> Result<Vec<Provenance>> {
    let mut out: Vec<Provenance> = attest::list(store, image, PROVENANCE_ARTIFACT_TYPE)?
        .iter()
        .filter_map(|a| check(a, image, keys).ok())
        .collect();
    newest_first(&mut out);
    Ok(out)
}

/// The newest provenance of `image` that verifies with one of `keys`.
pub fn read(store: &Store, image: &Digest, keys: &[PublicKey]) -> Result<Option<Provenance>> {
    Ok(verified(store, image, keys)?.into_iter().next())
}

#[cfg(test)]
mod tests;

//! `verify`: re-hash every blob, find what is missing, check each stored
//! image's layers against its config's diff_ids, and name what references
//! each problem so the user knows which images are affected.
//!
//! The diff_id check decompresses every layer of every tagged, released or
//! running image once (a layer shared by many images once): on top of the
//! re-hash of every blob, about one decompression pass over the layers
//! (gzip inflates at a few hundred MB/s per core; the layers go in parallel).

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use super::{Descriptor, Store, gc};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone, Serialize)]
pub struct BlobProblem {
    pub digest: String,
    pub path: PathBuf,
    /// `corrupt`, `missing`, `unreadable`, `stray` or `diff_id` (a layer
    /// whose uncompressed bytes are not what its image's config says).
    pub problem: String,
    pub detail: String,
    /// Tags and manifests that reference this blob.
    pub referenced_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub blobs_checked: usize,
    pub bytes_checked: u64,
    pub problems: Vec<BlobProblem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub(crate) fn run(store: &Store) -> Result<VerifyReport> {
    let mut unreadable = Vec::new();
    let (reachable, parents) = gc::walk(store, |d, e| {
        unreadable.push((*d, e));
        Ok(())
    })?;
    let names: Vec<String> = fs::read_dir(&store.layout.blobs)
        .ctx("list blobs", &store.layout.blobs)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let blobs = &store.layout.blobs;
    let checked: Vec<(String, Result<u64>)> = names
        .into_par_iter()
        .map(|name| {
            let res = match format!("sha256:{name}").parse::<Digest>() {
                Ok(d) => super::blob::check_file(&blobs.join(d.hex()), &d),
                Err(_) => Err(Error::corrupt(
                    format!("blob file {name}"),
                    "file name is not a sha256 digest",
                )),
            };
            (name, res)
        })
        .collect();
    let referenced_by = |d: &Digest| -> Vec<String> {
        parents
            .get(d)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    let mut bytes_checked = 0;
    let mut present = std::collections::BTreeSet::new();
    let blobs_checked = checked.len();
    for (name, res) in checked {
        let path = store.layout.blobs.join(&name);
        let digest = format!("sha256:{name}").parse::<Digest>().ok();
        if let Some(d) = digest {
            present.insert(d);
        }
        match res {
            Ok(n) => bytes_checked += n,
            Err(e) => problems.push(BlobProblem {
                digest: format!("sha256:{name}"),
                path,
                problem: if matches!(e, Error::CorruptBlob { .. }) {
                    "corrupt"
                } else {
                    "unreadable"
                }
                .into(),
                detail: e.to_string(),
                referenced_by: digest.map(|d| referenced_by(&d)).unwrap_or_default(),
            }),
        }
    }
    for d in &reachable {
        if !present.contains(d) {
            problems.push(BlobProblem {
                digest: d.to_string(),
                path: store.blob_path(d),
                problem: "missing".into(),
                detail: "referenced but not in the store".into(),
                referenced_by: referenced_by(d),
            });
        }
    }
    for (d, e) in unreadable {
        // Already reported above when the blob itself is corrupt or missing.
        if problems.iter().any(|p| p.digest == d.to_string()) {
            continue;
        }
        problems.push(BlobProblem {
            digest: d.to_string(),
            path: store.blob_path(&d),
            problem: "unreadable".into(),
            detail: e.to_string(),
            referenced_by: referenced_by(&d),
        });
    }
    let damaged: BTreeSet<String> = problems.iter().map(|p| p.digest.clone()).collect();
    problems.extend(diff_ids(store, &damaged, &referenced_by)?);
    problems.sort_by(|a, b| a.digest.cmp(&b.digest));
    Ok(VerifyReport {
        blobs_checked,
        bytes_checked,
        problems,
    })
}

/// A tag whose row in the `tags` table is not what the ledger's tag, untag,
/// build and pull entries make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagProblem {
    pub tag: String,
    /// What the `tags` table says (`None`: no row).
    pub table: Option<Digest>,
    /// What the ledger says (`None`: no entry made it, or the last one removed it).
    pub ledger: Option<Digest>,
    /// The entry that last set or removed it, if any did.
    pub seq: Option<u64>,
}

impl std::fmt::Display for TagProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self
            .table
            .map_or("has no row in the tags table".to_string(), |d| {
                format!("points at {d} in the tags table")
            });
        let ledger = match (&self.ledger, self.seq) {
            (Some(d), Some(seq)) => format!("the ledger (entry {seq}) says {d}"),
            (None, Some(seq)) => format!("the ledger removed it (entry {seq})"),
            _ => "no ledger entry ever set it".to_string(),
        };
        write!(
            f,
            "tag {} {table}, but {ledger} (the database was edited; re-tag it with `drover tag` after checking which image is right)",
            self.tag
        )
    }
}

/// Re-derive every tag from the ledger and compare with the `tags` table:
/// someone who can write the database can move a tag there, but not sign
/// the ledger entry that would explain it. Run `drover audit verify` too:
/// this trusts the ledger's entries as they read, and that checks them.
pub(crate) fn tags(store: &Store) -> Result<Vec<TagProblem>> {
    let read = store.db.read();
    let entries = read.ledger(&crate::ledger::Filter {
        action: Some("image.*".into()),
        ..Default::default()
    })?;
    let derived = tags_from_ledger(&entries);
    let table: std::collections::BTreeMap<String, Digest> = read
        .tags()?
        .into_iter()
        .map(|t| (t.name, t.digest))
        .collect();
    let names: std::collections::BTreeSet<&String> = derived.keys().chain(table.keys()).collect();
    let mut problems = Vec::new();
    for name in names {
        let (ledger, seq) = match derived.get(name) {
            Some((d, seq)) => (*d, Some(*seq)),
            None => (None, None),
        };
        let table = table.get(name).copied();
        if table != ledger {
            problems.push(TagProblem {
                tag: name.clone(),
                table,
                ledger,
                seq,
            });
        }
    }
    Ok(problems)
}

/// Replay the entries that set and remove tags (`image.build`, `image.tag`,
/// `image.pull` with a tag; `image.untag`), in order: each tag's digest
/// (`None` once removed) and the entry that last touched it.
fn tags_from_ledger(
    entries: &[crate::ledger::Entry],
) -> std::collections::BTreeMap<String, (Option<Digest>, u64)> {
    let mut tags = std::collections::BTreeMap::new();
    for e in entries {
        let image = || e.subjects.first().and_then(|s| s.parse::<Digest>().ok());
        match e.action.as_str() {
            "image.build" | "image.tag" | "image.pull" => {
                if let Some(name) = e.details["tag"].as_str() {
                    tags.insert(name.to_string(), (image(), e.seq));
                }
            }
            "image.untag" => {
                for name in e.details["tags"].as_array().into_iter().flatten() {
                    if let Some(name) = name.as_str() {
                        tags.insert(name.to_string(), (None, e.seq));
                    }
                }
            }
            _ => {}
        }
    }
    tags
}

/// Check every layer of the store's images (tagged, released or running)
/// against its config's diff_id, each (layer, diff_id) pair once; blobs in
/// `damaged` are already reported and skipped.
fn diff_ids(
    store: &Store,
    damaged: &BTreeSet<String>,
    referenced_by: &(dyn Fn(&Digest) -> Vec<String> + Sync),
) -> Result<Vec<BlobProblem>> {
    let mut images: BTreeSet<Digest> = store
        .tags()?
        .into_iter()
        .filter(|t| super::oci::is_manifest(&t.media_type))
        .map(|t| t.digest)
        .collect();
    let reader = store.db().read();
    images.extend(reader.release_images()?.into_iter().map(|(d, _)| d));
    images.extend(reader.live_instance_images()?.into_iter().map(|(d, _)| d));
    let ok = |d: &Digest| store.has_blob(d) && !damaged.contains(&d.to_string());
    // (layer, diff_id) → the images that say so.
    let mut pairs: std::collections::BTreeMap<(Digest, Digest), (Descriptor, Vec<Digest>)> =
        Default::default();
    for image in images.iter().filter(|d| ok(d)) {
        // Unreadable manifests and configs are the blob checks' to report.
        let Ok(manifest) = store.manifest(image) else {
            continue;
        };
        if manifest.artifact_type.is_some() || !ok(&manifest.config.digest) {
            continue;
        }
        let Ok(config) = store.image_config(&manifest) else {
            continue;
        };
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            pairs
                .entry((manifest.config.digest, manifest.config.digest))
                .or_insert_with(|| (manifest.config.clone(), Vec::new()))
                .1
                .push(*image);
            continue;
        }
        for (layer, diff_id) in manifest.layers.iter().zip(diff_ids) {
            if ok(&layer.digest) {
                pairs
                    .entry((layer.digest, *diff_id))
                    .or_insert_with(|| (layer.clone(), Vec::new()))
                    .1
                    .push(*image);
            }
        }
    }
    let layout = store.layout();
    let cap = store.limits().layer_bytes;
    let found: Vec<BlobProblem> = pairs
        .into_par_iter()
        .filter_map(|((digest, diff_id), (layer, images))| {
            let what = || format!("layer {digest}");
            let detail = if digest == diff_id {
                // The config's own entry: its diff_ids do not match the layers.
                "the config lists a different number of diff_ids than its manifest has layers"
                    .to_string()
            } else {
                super::validate::check_diff_id(layout, cap, &layer, &diff_id, what)
                    .err()?
                    .to_string()
            };
            // The images that make this claim, not every image using the layer.
            let used_by = images
                .iter()
                .flat_map(|i| {
                    let names = referenced_by(i);
                    if names.is_empty() {
                        vec![format!("manifest {}", i.short())]
                    } else {
                        names
                    }
                })
                .collect();
            Some(BlobProblem {
                digest: digest.to_string(),
                path: layout.blob_path(&digest),
                problem: "diff_id".into(),
                detail,
                referenced_by: used_by,
            })
        })
        .collect();
    Ok(found)
}

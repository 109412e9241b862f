//! Reachability and garbage collection.
//!
//! Roots are the tags, the images of instances not yet removed, and the
//! images of every release (so any release can be rolled back to); from a
//! manifest
//! its config and layers are reachable, from an index its manifests, and an
//! artifact is reachable when its subject is. Everything else goes, and so
//! do tainted roots (`unpack::taint`) of images no instance is left on.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde::Serialize;

use super::{Store, oci, unpack};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::ledger::NewEntry;

/// What references a blob, for messages like "layer of image app:1.0".
pub type Parents = BTreeMap<Digest, BTreeSet<String>>;

/// Walk the graph from every tag and referrer.
/// Returns the reachable set and, for each blob, who references it.
/// `on_unreadable` decides what happens when a manifest cannot be read:
/// gc must stop (it cannot see what that manifest protects), verify goes on.
pub(crate) fn walk(
    store: &Store,
    mut on_unreadable: impl FnMut(&Digest, Error) -> Result<()>,
) -> Result<(BTreeSet<Digest>, Parents)> {
    let mut reachable = BTreeSet::new();
    let mut parents: Parents = BTreeMap::new();
    let mut queue: Vec<(Digest, String, String)> = Vec::new();
    // How to name a manifest to people: by its tags, or by what it is attached to.
    let tags = store.tags()?;
    let mut tag_names: BTreeMap<Digest, Vec<&str>> = BTreeMap::new();
    for t in &tags {
        tag_names.entry(t.digest).or_default().push(&t.name);
        queue.push((t.digest, t.media_type.clone(), format!("tag {}", t.name)));
    }
    let mut names: BTreeMap<Digest, String> = tag_names
        .iter()
        .map(|(d, n)| {
            (
                *d,
                format!("image {} (manifest {})", n.join(", "), d.short()),
            )
        })
        .collect();
    let describe = |names: &BTreeMap<Digest, String>, d: &Digest| {
        names
            .get(d)
            .cloned()
            .unwrap_or_else(|| format!("manifest {}", d.short()))
    };
    for (digest, id) in store.db().read().live_instance_images()? {
        queue.push((digest, oci::MEDIA_MANIFEST.into(), format!("instance {id}")));
    }
    for (digest, release) in store.db().read().release_images()? {
        queue.push((
            digest,
            oci::MEDIA_MANIFEST.into(),
            format!("release {release}"),
        ));
    }
    let referrers = store.all_referrers()?;
    loop {
        while let Some((digest, media_type, parent)) = queue.pop() {
            parents.entry(digest).or_default().insert(parent);
            if !reachable.insert(digest) {
                continue;
            }
            let is_index =
                media_type == oci::MEDIA_INDEX || media_type.ends_with("manifest.list.v2+json");
            if !(oci::is_manifest(&media_type) || is_index) {
                continue;
            }
            let bytes = match store.read_blob(&digest) {
                Ok(b) => b,
                Err(e) => {
                    on_unreadable(&digest, e)?;
                    continue;
                }
            };
            let doc: serde_json::Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    on_unreadable(
                        &digest,
                        Error::corrupt(format!("manifest {digest}"), e.to_string()),
                    )?;
                    continue;
                }
            };
            let here = describe(&names, &digest);
            let list = |key: &str| {
                doc.get(key)
                    .and_then(|l| l.as_array())
                    .into_iter()
                    .flatten()
            };
            let children = doc
                .get("config")
                .map(|c| (c, "config"))
                .into_iter()
                .chain(list("layers").map(|c| (c, "layer")))
                .chain(list("manifests").map(|c| (c, "entry")));
            for (child, role) in children {
                let Ok(d) = serde_json::from_value::<oci::Descriptor>(child.clone()) else {
                    on_unreadable(
                        &digest,
                        Error::corrupt(format!("manifest {digest}"), "malformed descriptor"),
                    )?;
                    continue;
                };
                queue.push((d.digest, d.media_type, format!("{role} of {here}")));
            }
        }
        // Artifacts ride along with their subject; repeat until no new subject appears.
        let mut added = false;
        for r in &referrers {
            if reachable.contains(&r.subject) && !reachable.contains(&r.digest) {
                let name = format!("{} of {}", r.artifact_type, describe(&names, &r.subject));
                names.insert(r.digest, name.clone());
                queue.push((r.digest, r.media_type.clone(), name));
                added = true;
            }
        }
        if !added {
            break;
        }
    }
    Ok((reachable, parents))
}

#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub removed_blobs: usize,
    pub removed_bytes: u64,
    pub removed_referrers: Vec<Digest>,
    pub kept_blobs: usize,
    pub removed_temp_files: usize,
    /// Unpacked roots of images nothing reaches any more, and tainted
    /// roots (see `unpack::taint`) of images no instance uses.
    pub removed_roots: usize,
}

impl Store {
    /// Remove every blob no tag, instance or referrer reaches, and the
    /// unpacked roots of images no longer reached. Needs the store opened
    /// with `Store::open_exclusive`, so no build is writing meanwhile.
    pub fn gc(&mut self) -> Result<GcReport> {
        if !self.exclusive {
            return Err(Error::Busy {
                what: "store".into(),
                reason: "gc needs the store opened exclusively (Store::open_exclusive)".into(),
            });
        }
        let (reachable, _) = walk(self, |_, e| Err(e))?;
        let stale_referrers: Vec<Digest> = self
            .all_referrers()?
            .into_iter()
            .filter(|r| !reachable.contains(&r.subject))
            .map(|r| r.digest)
            .collect();
        let mut removed_blobs = 0;
        let mut removed_bytes = 0;
        let mut kept_blobs = 0;
        let mut doomed = Vec::new();
        for entry in fs::read_dir(&self.layout.blobs).ctx("list blobs", &self.layout.blobs)? {
            let entry = entry.ctx("list blobs", &self.layout.blobs)?;
            let name = entry.file_name();
            let keep = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
                .is_some_and(|d| reachable.contains(&d));
            if keep {
                kept_blobs += 1;
            } else {
                doomed.push(entry.path());
            }
        }
        // Record first: if we are killed while deleting, the ledger already
        // says what was being removed, and a rerun finishes the job.
        let removed_refs = stale_referrers.clone();
        self.mutate(|m| {
            for r in &removed_refs {
                m.remove_referrer(r)?;
            }
            m.record(NewEntry::new(
                "store.gc",
                Vec::<String>::new(),
                serde_json::json!({ "blobs": doomed.len(), "referrers": removed_refs.len() }),
            ))
        })?;
        for path in doomed {
            removed_bytes += fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).ctx("remove blob", &path)?;
            removed_blobs += 1;
        }
        let mut removed_temp_files = 0;
        for entry in fs::read_dir(&self.layout.tmp)
            .ctx("list temp files", &self.layout.tmp)?
            .flatten()
        {
            if fs::remove_file(entry.path()).is_ok() {
                removed_temp_files += 1;
            }
        }
        let mut removed_roots = 0;
        for image in unpack::list(&self.layout)? {
            if !reachable.contains(&image) {
                unpack::remove(&self.layout, &image)?;
                removed_roots += 1;
            }
        }
        // A tainted root (moved aside by drift detection) is only ever used
        // by instances that started on it, so it goes once its image has
        // no instance left, whether or not the image is still reachable.
        let live: BTreeSet<Digest> = self
            .db()
            .read()
            .live_instance_images()?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        for image in unpack::tainted_images(&self.layout)? {
            if !live.contains(&image) {
                removed_roots += unpack::remove_tainted(&self.layout, &image, None)?.len();
            }
        }
        Ok(GcReport {
            removed_roots,
            removed_blobs,
            removed_bytes,
            removed_referrers: stale_referrers,
            kept_blobs,
            removed_temp_files,
        })
    }
}

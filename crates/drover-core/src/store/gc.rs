//! Reachability and garbage collection.
//!
//! **Blobs.** Roots are the tags, the images of instances not yet removed,
//! and the images of every release (so any release can be rolled back to);
//! from a manifest its config and layers are reachable, from an index its
//! manifests, and an artifact is reachable when its subject is. Everything
//! else goes.
//!
//! **Unpacked roots** cost far more than the blobs they come from, and are
//! only a cache of them: a root is kept while
//!
//! - an instance not yet removed runs on its image, or
//! - it is the image of a service's current (desired) release, of a
//!   release still rolling out (pending), or of one of the service's
//!   `keep_roots` newest healthy releases before the current one (the
//!   rollback targets; `drover gc --keep-roots N`, default 2).
//!
//! Every other root goes, tainted roots (`unpack::taint`) of images no
//! instance is left on too. An older release can still be rolled back to:
//! its blobs stay as long as the release exists, and the start unpacks its
//! root again. Files shared between roots (`unpack::pool`) go when no root
//! links them any more.
//!
//! **Concurrency** (see the store's header): [`Store::gc`] runs in the
//! exclusive window and only marks, sweeps blobs and *moves* doomed roots
//! into `rootfs/.trash/`; [`Store::gc_finish`] ends the window and then
//! deletes the trash and the unshared pool files, which nothing reaches.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

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

/// What `gc` keeps beyond what is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Per service, how many healthy releases before the current one keep
    /// their unpacked root (the others are unpacked again on rollback).
    pub keep_roots: usize,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { keep_roots: 2 }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub removed_blobs: usize,
    pub removed_bytes: u64,
    pub removed_referrers: Vec<Digest>,
    pub kept_blobs: usize,
    pub removed_temp_files: usize,
    /// Unpacked roots no instance or recent release needs (see the module
    /// header), and tainted roots (see `unpack::taint`) of images no
    /// instance uses.
    pub removed_roots: usize,
    /// Unpacked roots kept, each for a live instance or a recent release.
    pub kept_roots: usize,
    /// Files of the shared pool (`unpack::pool`) no root links any more.
    pub removed_shared_files: usize,
    pub removed_shared_bytes: u64,
}

impl Store {
    /// The exclusive window of gc: remove every blob no tag, instance,
    /// release or referrer reaches, and move aside the unpacked roots no
    /// live instance or recent release needs (see the module header).
    /// Needs the store opened with `Store::open_exclusive*`; call
    /// [`Store::gc_finish`] next, which ends the window and deletes what
    /// was moved aside.
    pub fn gc(&mut self, opts: &GcOptions) -> Result<GcReport> {
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
        let mut report = GcReport::default();
        let mut doomed = Vec::new();
        for entry in fs::read_dir(&self.layout.blobs).ctx("list blobs", &self.layout.blobs)? {
            let entry = entry.ctx("list blobs", &self.layout.blobs)?;
            let name = entry.file_name();
            let keep = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
                .is_some_and(|d| reachable.contains(&d));
            if keep {
                report.kept_blobs += 1;
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
            report.removed_bytes += fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).ctx("remove blob", &path)?;
            report.removed_blobs += 1;
        }
        report.removed_referrers = stale_referrers;
        for entry in fs::read_dir(&self.layout.tmp)
            .ctx("list temp files", &self.layout.tmp)?
            .flatten()
        {
            if fs::remove_file(entry.path()).is_ok() {
                report.removed_temp_files += 1;
            }
        }
        let needed = needed_roots(self, opts)?;
        let mut trash = None;
        for image in unpack::list(&self.layout)? {
            if needed.contains_key(&image) {
                report.kept_roots += 1;
                continue;
            }
            let to = match &trash {
                Some(t) => t,
                None => trash.insert(new_trash(&self.layout)?),
            };
            unpack::discard(&self.layout, &image, to)?;
            report.removed_roots += 1;
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
            if live.contains(&image) {
                continue;
            }
            for (path, _) in unpack::tainted(&self.layout, &image)? {
                let to = match &trash {
                    Some(t) => t,
                    None => trash.insert(new_trash(&self.layout)?),
                };
                let mut record = path.clone().into_os_string();
                record.push(".json");
                for p in [path, PathBuf::from(record)] {
                    move_into(&p, to)?;
                }
                report.removed_roots += 1;
            }
        }
        Ok(report)
    }

    /// End gc's exclusive window, then delete the roots [`Store::gc`] moved
    /// aside (and any a gc that died left behind) and the pool files no
    /// root links any more.
    pub fn gc_finish(&mut self, report: &mut GcReport) -> Result<()> {
        self.end_exclusive();
        empty_trash(&self.layout)?;
        let (files, bytes) = unpack::pool::sweep(&self.layout)?;
        report.removed_shared_files += files;
        report.removed_shared_bytes += bytes;
        Ok(())
    }
}

/// The images whose unpacked root gc keeps, each with why (see the module
/// header).
pub(crate) fn needed_roots(store: &Store, opts: &GcOptions) -> Result<BTreeMap<Digest, String>> {
    let mut keep = BTreeMap::new();
    let db = store.db().read();
    for (digest, id) in db.live_instance_images()? {
        keep.entry(digest).or_insert(format!("instance {id}"));
    }
    for svc in db.services::<serde_json::Value>()? {
        let mut releases = db.releases::<serde_json::Value>(&svc.name)?;
        releases.sort_by_key(|r| std::cmp::Reverse(r.number));
        let mut previous = 0;
        for r in &releases {
            let why = if Some(r.number) == svc.desired {
                "current release"
            } else if r.outcome == crate::state::Outcome::Pending {
                "release rolling out"
            } else if r.outcome == crate::state::Outcome::Healthy
                && r.unstable.is_none()
                && svc.desired.is_some_and(|d| r.number < d)
                && previous < opts.keep_roots
            {
                previous += 1;
                "recent release"
            } else {
                continue;
            };
            keep.entry(r.image)
                .or_insert(format!("{why} {}#{}", svc.name, r.number));
        }
    }
    Ok(keep)
}

fn trash_root(layout: &super::Layout) -> PathBuf {
    unpack::rootfs_dir(layout).join(".trash")
}

/// `rootfs/.trash/<pid>-<nanos>`: where this gc moves what it deletes once
/// its window is over.
fn new_trash(layout: &super::Layout) -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = trash_root(layout).join(format!("{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).ctx("create directory", &dir)?;
    Ok(dir)
}

/// Move `path` (if it exists) into directory `to`, keeping its name.
pub(crate) fn move_into(path: &Path, to: &Path) -> Result<()> {
    let Some(name) = path.file_name() else {
        return Ok(());
    };
    match fs::rename(path, to.join(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).ctx("move aside", path),
        _ => Ok(()),
    }
}

/// Delete this process's trash and that of gcs no longer running.
fn empty_trash(layout: &super::Layout) -> Result<()> {
    let root = trash_root(layout);
    let me = std::process::id();
    for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(p, _)| p.parse::<u32>().ok());
        let theirs_alive =
            pid.is_some_and(|p| p != me && Path::new(&format!("/proc/{p}")).exists());
        if theirs_alive {
            continue;
        }
        match fs::remove_dir_all(entry.path()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).ctx("remove unpacked roots moved aside", &entry.path());
            }
            _ => {}
        }
    }
    Ok(())
}

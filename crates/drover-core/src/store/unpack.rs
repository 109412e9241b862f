//! Unpacked image roots: the directory trees containers run on, one per
//! image, shared by every instance of it.
//!
//! ```text
//! rootfs/<hex>/                    the root of image sha256:<hex>
//! rootfs/<hex>.json                {image, added}; written last, so a root counts only with it
//! rootfs/<hex>.lock                held while unpacking, so each image is unpacked once
//! rootfs/.tmp-<hex>-<pid>-<n>.tmp  an unpack in progress, or the remains of one that died
//! rootfs/.tainted/<hex>.<nanos>    a root moved aside by `taint` (drift found in it); instances
//!                                  started before keep running on it until they are replaced
//! rootfs/.tainted/<hex>.<nanos>.json  its record
//! rootfs/.drifted/<hex>            drift was found in the root but it was left in place (a
//!                                  report-only scan): the next start moves it aside first
//! rootfs/.files/<xx>/<key>         the shared file pool: one inode per identical file (`pool`)
//! rootfs/.trash/<pid>-<nanos>/     roots `gc` moved aside in its exclusive window, deleted after
//! ```
//!
//! **What versions share.** Each image has its own full root, a directory
//! tree every reader (the runtime's id-mapped read-only mount, drift scans,
//! `debug`, a build's `run` step) walks as is. Its regular files are hard
//! links into a content-addressed pool (`pool`): identical files — same
//! content, mode, owner, modification time and extended attributes, all
//! that a hard link shares — of any two roots are one inode, so 30
//! versions that differ by one layer cost about one root plus their
//! differences. Directories, symlinks and the few special files stay per
//! root (they are small); so do files hard-linked within an image (they
//! must keep their own shared inode, which drift checks). Per-layer unpack
//! under a read-only overlay was not taken: a stack of id-mapped mounts per
//! instance, drift scans and baselines over a merged view, and no sharing
//! between builds whose layers differ only in digest; see `pool`'s header
//! for how a tampered shared file is kept out of new roots.
//!
//! Layers are hostile until proven otherwise. Every path is walked one
//! component at a time from a directory descriptor with `O_NOFOLLOW`, so no
//! entry is ever written through a symlink or outside the root; hard links
//! must point at a regular file already in the tree; device nodes need the
//! image's consent. Each file is hashed on its way to disk and the result is
//! compared with the image's baseline before the root is renamed into place.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmodat, fstatat, makedev, mkdirat, mknodat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};
use serde::{Deserialize, Serialize};

use super::baseline::{self, Change, FileKind, FileRecord, Merger};
use super::{Layout, Store};
use crate::digest::{Digest, Hasher};
use crate::durable::{sync_dir, tmp_path, write_atomic};
use crate::error::{Error, IoContext, Result};
use crate::sys;

/// Image config label naming the device nodes (absolute paths,
/// comma-separated) the image may contain.
pub const DEVICES_LABEL: &str = "vnd.drover.devices";

/// Directories the runtime mounts over; every root gets them.
const MOUNTPOINTS: [&str; 5] = ["proc", "dev", "sys", "tmp", "run"];

/// `<store root>/rootfs/<hex of manifest digest>`
pub fn rootfs_path(layout: &Layout, image: &Digest) -> PathBuf {
    rootfs_dir(layout).join(image.hex())
}

pub(crate) fn rootfs_dir(layout: &Layout) -> PathBuf {
    layout.root().join("rootfs")
}

fn side_file(layout: &Layout, image: &Digest, ext: &str) -> PathBuf {
    rootfs_dir(layout).join(format!("{}.{ext}", image.hex()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub path: PathBuf,
    pub image: Digest,
    /// True when this call unpacked it.
    pub unpacked: bool,
    /// Mountpoint directories drover added (absolute paths like "/proc"), so
    /// drift checks can ignore them.
    pub added: Vec<String>,
    /// FIFOs and device nodes the layers made, which baselines do not
    /// record, so drift checks know what to expect.
    pub specials: Vec<Special>,
}

/// A FIFO or device node in a root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Special {
    /// Absolute path inside the image.
    pub path: String,
    pub kind: SpecialKind,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number of a device node; 0:0 for a FIFO.
    pub major: u64,
    pub minor: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecialKind {
    Fifo,
    Char,
    Block,
}

/// `rootfs/<hex>.json`: its presence is what makes a root complete.
#[derive(Serialize, Deserialize)]
struct Record {
    image: Digest,
    added: Vec<String>,
    /// Absent in records written before drover tracked them.
    #[serde(default)]
    specials: Vec<Special>,
}

/// Return the verified unpacked root of `image` (a manifest digest in the
/// store), unpacking it first if needed.
pub fn materialize(store: &Store, image: &Digest) -> Result<Rootfs> {
    let layout = store.layout();
    if let Some(done) = complete(layout, image) {
        return Ok(done);
    }
    // 0700: roots hold setuid binaries that users of the host must not reach.
    let dir = rootfs_dir(layout);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .ctx("create directory", &dir)?;
    let _lock = lock(layout, image)?;
    // Another process may have finished it while we waited.
    if let Some(done) = complete(layout, image) {
        return Ok(done);
    }
    clear(layout, image)?;
    let tmp = tmp_path(&dir, &format!(".tmp-{}", image.hex()));
    let (added, specials) = match unpack(store, image, &tmp) {
        Ok(done) => done,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let path = rootfs_path(layout, image);
    fs::rename(&tmp, &path).ctx("rename root into place", &path)?;
    sync_dir(&dir)?;
    let record = Record {
        image: *image,
        added,
        specials,
    };
    let bytes =
        serde_json::to_vec(&record).map_err(|e| Error::corrupt("rootfs record", e.to_string()))?;
    write_atomic(layout.tmp_dir(), &side_file(layout, image, "json"), &bytes)?;
    Ok(Rootfs {
        path,
        image: *image,
        unpacked: true,
        added: record.added,
        specials: record.specials,
    })
}

/// Images with anything under `rootfs/`: a complete root, or what a failed
/// or interrupted unpack left behind (so gc can remove that too).
pub fn list(layout: &Layout) -> Result<Vec<Digest>> {
    let dir = rootfs_dir(layout);
    let entries = match fs::read_dir(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r.ctx("list directory", &dir)?,
    };
    let mut out = BTreeSet::new();
    for entry in entries {
        let name = entry.ctx("list directory", &dir)?.file_name();
        let name = name.to_string_lossy();
        let hex = name.strip_prefix(".tmp-").unwrap_or(&name);
        if let Some(d) = hex
            .get(..64)
            .and_then(|h| format!("sha256:{h}").parse().ok())
        {
            out.insert(d);
        }
    }
    Ok(out.into_iter().collect())
}

/// Remove the root of `image` and anything an unpack of it left behind.
pub fn remove(layout: &Layout, image: &Digest) -> Result<()> {
    if !rootfs_dir(layout).exists() {
        return Ok(());
    }
    let _lock = lock(layout, image)?;
    clear(layout, image)?;
    remove_if_present(&side_file(layout, image, "lock"))
}

/// Move the root of `image`, and anything an unpack of it left behind,
/// into directory `to` (on the same filesystem), where `gc` deletes it once
/// its exclusive window is over; its record and lock go at once.
pub fn discard(layout: &Layout, image: &Digest, to: &Path) -> Result<()> {
    let dir = rootfs_dir(layout);
    if !dir.exists() {
        return Ok(());
    }
    let _lock = lock(layout, image)?;
    // The record first: without it nothing else counts as complete.
    let record = side_file(layout, image, "json");
    if record.exists() {
        remove_if_present(&record)?;
        sync_dir(&dir)?;
    }
    let hex = image.hex();
    let tmp_prefix = format!(".tmp-{hex}-");
    for entry in fs::read_dir(&dir).ctx("list directory", &dir)? {
        let name = entry.ctx("list directory", &dir)?.file_name();
        let text = name.to_string_lossy();
        if *text == hex || text.starts_with(&tmp_prefix) {
            let from = dir.join(&name);
            fs::rename(&from, to.join(&name)).ctx("move unpacked root aside", &from)?;
        }
    }
    // A fresh unpack is a verified one: the drift mark has done its work.
    take_drift_mark(layout, image)?;
    remove_if_present(&side_file(layout, image, "lock"))
}

/// Move the root of `image` aside, into `rootfs/.tainted/<hex>.<unix nanos>`
/// (its record beside it, with `.json` appended), because drift was found in
/// it: the next `materialize` unpacks a fresh, verified copy, while instances
/// already running on the old one keep it (the kernel resolved their root
/// when they started; a rename does not move them). Returns where it went,
/// or None if there was no root. Delete the copy with `remove_tainted` once
/// no instance started before the move is left.
pub fn taint(layout: &Layout, image: &Digest) -> Result<Option<PathBuf>> {
    let dir = rootfs_dir(layout);
    if !dir.exists() {
        return Ok(None);
    }
    let _lock = lock(layout, image)?;
    let root = rootfs_path(layout, image);
    let record = side_file(layout, image, "json");
    if !root.is_dir() {
        // A record without its root means nothing; materialize would clear it.
        remove_if_present(&record)?;
        return Ok(None);
    }
    let tainted = tainted_dir(layout);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&tainted)
        .ctx("create directory", &tainted)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let to = tainted.join(format!("{}.{nanos}", image.hex()));
    // The root first: once it is gone the record no longer counts (see
    // `complete`), so a crash between the two renames costs only a fresh
    // unpack. The other order could let `materialize` clear a root that
    // instances still run on.
    fs::rename(&root, &to).ctx("move tainted root aside", &root)?;
    let mut to_record = to.clone().into_os_string();
    to_record.push(".json");
    match fs::rename(&record, &to_record) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(e).ctx("move record of tainted root", &record);
        }
        _ => {}
    }
    sync_dir(&tainted)?;
    sync_dir(&dir)?;
    Ok(Some(to))
}

/// Mark the root of `image` as drifted (`rootfs/.drifted/<hex>`): drift
/// was found in its files but it was not moved aside (a scan that only
/// reports). The next start takes the mark ([`take_drift_mark`]) and moves
/// the root aside first, so it never runs on a root drift found tampered.
/// The mark is a file, not a row: whoever can edit the database cannot
/// remove it.
pub fn mark_drifted(layout: &Layout, image: &Digest) -> Result<()> {
    let mark = drift_mark(layout, image);
    let dir = mark.parent().expect("a mark is in a directory");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .ctx("create directory", dir)?;
    write_atomic(layout.tmp_dir(), &mark, b"")
}

fn drift_mark(layout: &Layout, image: &Digest) -> PathBuf {
    rootfs_dir(layout).join(".drifted").join(image.hex())
}

/// Whether the root of `image` is marked drifted ([`mark_drifted`]).
pub fn marked_drifted(layout: &Layout, image: &Digest) -> bool {
    drift_mark(layout, image).exists()
}

/// Remove the drift mark of `image`'s root; whether there was one. The
/// caller moves the root aside ([`taint`]) first.
pub fn take_drift_mark(layout: &Layout, image: &Digest) -> Result<bool> {
    let mark = drift_mark(layout, image);
    match fs::remove_file(&mark) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).ctx("remove drift mark", &mark),
    }
}

/// The tainted copies of `image`'s root (see `taint`), oldest first, with
/// when each was moved aside.
pub fn tainted(layout: &Layout, image: &Digest) -> Result<Vec<(PathBuf, SystemTime)>> {
    Ok(all_tainted(layout)?
        .into_iter()
        .filter(|(d, _, _)| d == image)
        .map(|(_, path, at)| (path, at))
        .collect())
}

/// Images with tainted copies of their root.
pub fn tainted_images(layout: &Layout) -> Result<Vec<Digest>> {
    let set: BTreeSet<Digest> = all_tainted(layout)?.into_iter().map(|(d, ..)| d).collect();
    Ok(set.into_iter().collect())
}

/// Delete the tainted copies of `image`'s root moved aside before
/// `before` (all of them with None) and their records; returns the copies
/// deleted. Only safe for copies no instance runs on: one moved aside
/// before the oldest live instance of the image started is unused.
pub fn remove_tainted(
    layout: &Layout,
    image: &Digest,
    before: Option<SystemTime>,
) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for (path, at) in tainted(layout, image)? {
        if before.is_some_and(|b| at >= b) {
            continue;
        }
        let mut record = path.clone().into_os_string();
        record.push(".json");
        remove_if_present(Path::new(&record))?;
        match fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).ctx("remove tainted root", &path);
            }
            _ => {}
        }
        removed.push(path);
    }
    Ok(removed)
}

fn tainted_dir(layout: &Layout) -> PathBuf {
    rootfs_dir(layout).join(".tainted")
}

/// Every tainted copy: (image, path, when it was moved aside), oldest first.
fn all_tainted(layout: &Layout) -> Result<Vec<(Digest, PathBuf, SystemTime)>> {
    let dir = tainted_dir(layout);
    let entries = match fs::read_dir(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r.ctx("list directory", &dir)?,
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry.ctx("list directory", &dir)?.file_name();
        let Some((hex, nanos)) = name.to_str().and_then(|n| n.split_once('.')) else {
            continue;
        };
        // Records ("<hex>.<nanos>.json") go with their root.
        let (Ok(image), Ok(nanos)) = (format!("sha256:{hex}").parse(), nanos.parse::<u64>()) else {
            continue;
        };
        out.push((
            image,
            dir.join(&name),
            UNIX_EPOCH + Duration::from_nanos(nanos),
        ));
    }
    out.sort_by_key(|(_, _, at)| *at);
    Ok(out)
}

/// The unpacked root of `image`, if there is a complete one; never unpacks.
pub fn existing(layout: &Layout, image: &Digest) -> Option<Rootfs> {
    complete(layout, image)
}

/// The root of `image` if its record says it is complete.
fn complete(layout: &Layout, image: &Digest) -> Option<Rootfs> {
    let bytes = fs::read(side_file(layout, image, "json")).ok()?;
    let record: Record = serde_json::from_slice(&bytes).ok()?;
    let path = rootfs_path(layout, image);
    (record.image == *image && path.is_dir()).then_some(Rootfs {
        path,
        image: *image,
        unpacked: false,
        added: record.added,
        specials: record.specials,
    })
}

/// Hold the unpack lock of `image`. `remove` deletes lock files while
/// holding them, so a lock taken on a file since unlinked is taken again.
fn lock(layout: &Layout, image: &Digest) -> Result<File> {
    let path = side_file(layout, image, "lock");
    loop {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx("open lock", &path)?;
        file.lock().ctx("lock", &path)?;
        let held = file.metadata().ctx("stat lock", &path)?.ino();
        if fs::metadata(&path).is_ok_and(|m| m.ino() == held) {
            return Ok(file);
        }
    }
}

/// Remove everything of `image` under `rootfs/` but its lock, which the
/// caller holds.
fn clear(layout: &Layout, image: &Digest) -> Result<()> {
    let dir = rootfs_dir(layout);
    // The record first: without it nothing else counts as complete.
    let record = side_file(layout, image, "json");
    if record.exists() {
        remove_if_present(&record)?;
        sync_dir(&dir)?;
    }
    let hex = image.hex();
    let tmp_prefix = format!(".tmp-{hex}-");
    for entry in fs::read_dir(&dir).ctx("list directory", &dir)? {
        let entry = entry.ctx("list directory", &dir)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if *name == hex || name.starts_with(&tmp_prefix) {
            fs::remove_dir_all(entry.path()).ctx("remove unpacked root", &entry.path())?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).ctx("remove", path),
        _ => Ok(()),
    }
}

/// Unpack every layer of `image` into a new directory `root`, check the
/// result against the baseline, add the mountpoints and sync it all to
/// disk. Returns the mountpoints added and the special files made.
fn unpack(store: &Store, image: &Digest, root: &Path) -> Result<(Vec<String>, Vec<Special>)> {
    let manifest = store.manifest(image)?;
    let config = store.image_config(&manifest)?;
    let devices = config
        .config
        .labels
        .get(DEVICES_LABEL)
        .map(|l| l.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default();
    fs::DirBuilder::new()
        .mode(0o755)
        .create(root)
        .ctx("create directory", root)?;
    let fd = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(root)
        .ctx("open directory", root)?;
    let mut u = Unpacker {
        root: fd.into(),
        root_path: root.to_path_buf(),
        layer: *image,
        entry: String::new(),
        devices,
        merger: Merger::default(),
        specials: Default::default(),
        buf: vec![0; 256 << 10],
    };
    // The umask must not decide the mode of "/".
    u.chmod(u.root.as_fd(), ".", "/", 0o755)?;
    for layer in &manifest.layers {
        u.layer = layer.digest;
        baseline::read_layer(store, layer, |r, budget| u.apply(r, budget)).map_err(
            |e| match e {
                Error::LimitExceeded {
                    what,
                    limit,
                    detail,
                    var,
                } => Error::LimitExceeded {
                    what: format!("{what} of image {image}"),
                    limit,
                    detail,
                    var,
                },
                e => e,
            },
        )?;
    }
    let got = std::mem::take(&mut u.merger).finish();
    // Without a stored baseline the layers, whose digests were just checked,
    // are the only authority; computing one would read them all again.
    if let Some(want) = baseline::stored(store, image)?
        && let Some(diff) = first_difference(&got.files, &want.files)
    {
        return Err(Error::corrupt(
            format!("image {image}"),
            format!("its layers do not match its baseline at {diff}"),
        ));
    }
    let mut added = Vec::new();
    for name in MOUNTPOINTS {
        match kind_at(u.root.as_fd(), name).ctx("inspect", &root.join(name))? {
            Some(SFlag::S_IFDIR) => {}
            None => {
                let mode = if name == "tmp" { 0o1777 } else { 0o755 };
                u.mkdir(u.root.as_fd(), name, &format!("/{name}"), mode)?;
                added.push(format!("/{name}"));
            }
            Some(kind) => {
                return Err(Error::corrupt(
                    format!("image {image}"),
                    format!(
                        "/{name} is a {}; an image cannot redirect a runtime mount",
                        kind_name(kind)
                    ),
                ));
            }
        }
    }
    // Identical files of other roots become one inode (see `pool`); only
    // now, when every file was written and hashed by this unpack.
    pool::share(store.layout(), u.root.as_fd(), root, &got.files)?;
    // One syncfs instead of an fsync per file: the rename that follows must
    // not become durable before the files it publishes.
    nix::unistd::syncfs(u.root.as_raw_fd())
        .map_err(io::Error::from)
        .ctx("sync", root)?;
    Ok((added, u.specials.into_values().collect()))
}

/// Writes layers into a root, refusing anything that would reach outside it.
struct Unpacker {
    root: OwnedFd,
    root_path: PathBuf,
    /// The layer and entry being written, for messages.
    layer: Digest,
    entry: String,
    /// Device nodes the image declares (`DEVICES_LABEL`).
    devices: BTreeSet<String>,
    /// What the layers say the tree is, as the baseline would record it.
    merger: Merger,
    /// The FIFOs and device nodes in the tree, which the baseline leaves out.
    specials: BTreeMap<String, Special>,
    buf: Vec<u8>,
}

impl Unpacker {
    fn apply(&mut self, r: &mut dyn Read, budget: &baseline::Budget) -> Result<()> {
        let mut ar = tar::Archive::new(r);
        for entry in ar.entries().map_err(|e| self.bad(e))? {
            let mut entry = entry.map_err(|e| self.bad(e))?;
            budget.entry()?;
            self.entry = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            self.apply_entry(&mut entry)?;
        }
        Ok(())
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        if entry.header().entry_type().is_pax_global_extensions() {
            return Ok(());
        }
        let path = normal(&entry.path_bytes()).map_err(|why| self.refuse(why))?;
        if path == "/" {
            return Ok(());
        }
        match baseline::change_of(entry)? {
            Change::Opaque(dir) => {
                self.empty_dir(&dir)?;
                self.merger.remove_tree(&dir, true);
                self.forget_specials(&dir, true);
            }
            Change::Whiteout(hidden) => {
                if matches!(hidden.rsplit('/').next(), Some("" | "." | "..")) {
                    return Err(self.refuse("whiteout names no file"));
                }
                if let Some((dir, name)) = self.parent(&hidden, false)? {
                    self.remove_at(dir.as_fd(), name, &hidden)?;
                }
                self.merger.remove_tree(&hidden, false);
                self.forget_specials(&hidden, true);
            }
            Change::Put(rec) => {
                let rec = self.put(entry, rec)?;
                self.forget_specials(&rec.path, rec.kind != FileKind::Dir);
                self.merger.put(rec);
            }
            Change::Unrecorded => self.special(entry, &path)?,
        }
        Ok(())
    }

    /// Write a file, directory, symlink or hard link; returns its record
    /// completed with the content hash of a regular file.
    fn put<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        mut rec: FileRecord,
    ) -> Result<FileRecord> {
        let target = match rec.kind {
            FileKind::Hardlink => Some(self.link_target(entry)?),
            _ => None,
        };
        let xattrs = self.xattrs(entry)?;
        // Recorded as the baseline records them (a hard link has its target's).
        if rec.kind != FileKind::Hardlink {
            rec.xattrs =
                baseline::xattr_map(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        }
        let (dir, name) = self.parent_or_create(&rec.path)?;
        let dir = dir.as_fd();
        let disk = self.disk(&rec.path);
        // The baseline could not record the target faithfully (the build refuses these too).
        if rec.kind == FileKind::Symlink
            && std::str::from_utf8(&entry.link_name_bytes().unwrap_or_default()).is_err()
        {
            return Err(self.refuse("symlink target is not UTF-8"));
        }
        // Linux refuses to make one (ENOENT); found by the fuzz target.
        if rec.kind == FileKind::Symlink && rec.link.as_deref().is_none_or(str::is_empty) {
            return Err(self.refuse("symlink with an empty target"));
        }
        let kept = self.make_room(dir, name, &rec.path, rec.kind == FileKind::Dir)?;
        match rec.kind {
            FileKind::File => {
                let (size, sha256) = self.write_file(entry, dir, name, &rec.path)?;
                rec.size = size;
                rec.sha256 = Some(sha256);
            }
            FileKind::Dir if !kept => mkdirat(Some(dir.as_raw_fd()), name, Mode::S_IRWXU)
                .map_err(io::Error::from)
                .ctx("create directory", &disk)?,
            FileKind::Dir => {}
            FileKind::Symlink => {
                let link = rec.link.as_deref().unwrap_or_default();
                symlinkat(link, Some(dir.as_raw_fd()), name)
                    .map_err(io::Error::from)
                    .ctx("create symlink", &disk)?;
            }
            FileKind::Hardlink => {
                // The link shares its target's inode, owner and mode included.
                let (tdir, tname) = target.expect("hard links have a target");
                linkat(
                    Some(tdir.as_raw_fd()),
                    tname.as_str(),
                    Some(dir.as_raw_fd()),
                    name,
                    AtFlags::empty(),
                )
                .map_err(io::Error::from)
                .ctx("create hard link", &disk)?;
                return Ok(rec);
            }
        }
        let meta = Meta {
            uid: rec.uid,
            gid: rec.gid,
            mode: rec.mode,
            xattrs,
        };
        self.set_meta(dir, name, &rec.path, rec.kind == FileKind::Symlink, &meta)?;
        Ok(rec)
    }

    /// FIFOs, and device nodes the image declares; nothing else.
    fn special<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &str) -> Result<()> {
        let xattrs = self.xattrs(entry)?;
        let h = entry.header();
        let kind = match h.entry_type() {
            tar::EntryType::Fifo => SFlag::S_IFIFO,
            tar::EntryType::Char => SFlag::S_IFCHR,
            tar::EntryType::Block => SFlag::S_IFBLK,
            other => return Err(self.refuse(format!("entries of type {other:?} are not allowed"))),
        };
        if kind != SFlag::S_IFIFO && !self.devices.contains(path) {
            return Err(self.refuse(format!(
                "device nodes must be listed in the image label {DEVICES_LABEL}"
            )));
        }
        let bad = |e| self.bad(e);
        let num = |n: io::Result<Option<u32>>| n.map(|n| u64::from(n.unwrap_or(0))).map_err(bad);
        let dev = makedev(num(h.device_major())?, num(h.device_minor())?);
        let meta = Meta {
            uid: h.uid().map_err(bad)? as u32,
            gid: h.gid().map_err(bad)? as u32,
            mode: h.mode().map_err(bad)? & 0o7777,
            xattrs,
        };
        let (dir, name) = self.parent_or_create(path)?;
        self.make_room(dir.as_fd(), name, path, false)?;
        mknodat(Some(dir.as_raw_fd()), name, kind, Mode::S_IRUSR, dev)
            .map_err(io::Error::from)
            .ctx("create node", &self.disk(path))?;
        self.set_meta(dir.as_fd(), name, path, false, &meta)?;
        self.forget_specials(path, true);
        let kind = match kind {
            SFlag::S_IFIFO => SpecialKind::Fifo,
            SFlag::S_IFCHR => SpecialKind::Char,
            _ => SpecialKind::Block,
        };
        let (major, minor) = match kind {
            SpecialKind::Fifo => (0, 0),
            _ => (nix::sys::stat::major(dev), nix::sys::stat::minor(dev)),
        };
        let special = Special {
            path: path.to_string(),
            kind,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            major,
            minor,
        };
        self.specials.insert(special.path.clone(), special);
        Ok(())
    }

    /// Drop the special files at `path` (and under it, with `subtree`):
    /// something else replaced or removed them.
    fn forget_specials(&mut self, path: &str, subtree: bool) {
        self.specials.remove(path);
        if subtree {
            let prefix = format!("{}/", path.trim_end_matches('/'));
            self.specials.retain(|p, _| !p.starts_with(&prefix));
        }
    }

    /// Where a hard link's target is: a regular file already in the tree,
    /// reached without a symlink.
    fn link_target<R: Read>(&self, entry: &tar::Entry<'_, R>) -> Result<(OwnedFd, String)> {
        let raw = entry.link_name_bytes().unwrap_or_default();
        let target = normal(&raw).map_err(|why| self.refuse(format!("hard link target: {why}")))?;
        let missing = || self.refuse(format!("hard link target {target} does not exist"));
        let (dir, name) = self.parent(&target, false)?.ok_or_else(missing)?;
        match kind_at(dir.as_fd(), name).ctx("inspect", &self.disk(&target))? {
            Some(SFlag::S_IFREG) => Ok((dir, name.to_string())),
            None => Err(missing()),
            Some(kind) => Err(self.refuse(format!(
                "hard link target {target} is a {}, not a regular file",
                kind_name(kind)
            ))),
        }
    }

    /// Open the directory holding `path` ("/a/b/c": /a/b) and return it
    /// with the last name; see `open_dir`.
    fn parent<'p>(&self, path: &'p str, create: bool) -> Result<Option<(OwnedFd, &'p str)>> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        Ok(self.open_dir(dir, path, create)?.map(|fd| (fd, name)))
    }

    /// Open directory `dir` of the root, on the way to `path`. Missing
    /// directories are created (0755) when `create`, else the answer is
    /// None. Walking one component at a time with O_NOFOLLOW is what keeps
    /// every entry inside the root: a symlink or a non-directory on the way
    /// is refused, wherever it points.
    fn open_dir(&self, dir: &str, path: &str, create: bool) -> Result<Option<OwnedFd>> {
        let mut fd = self
            .root
            .try_clone()
            .ctx("duplicate descriptor", &self.root_path)?;
        let mut walked = String::new();
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        for c in dir.split('/').filter(|c| !c.is_empty()) {
            walked = format!("{walked}/{c}");
            fd = match sys::openat(fd.as_fd(), c, flags, Mode::empty()) {
                Ok(next) => next,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    self.mkdir(fd.as_fd(), c, &walked, 0o755)?;
                    sys::openat(fd.as_fd(), c, flags, Mode::empty())
                        .ctx("open directory", &self.disk(&walked))?
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    let kind = kind_at(fd.as_fd(), c)
                        .ok()
                        .flatten()
                        .map_or("non-directory", kind_name);
                    return Err(self.refuse(format!(
                        "{walked} (on the way to {path}) is a {kind}; refusing to go through it"
                    )));
                }
                Err(e) => return Err(e).ctx("open directory", &self.disk(&walked)),
            };
        }
        Ok(Some(fd))
    }

    fn parent_or_create<'p>(&self, path: &'p str) -> Result<(OwnedFd, &'p str)> {
        Ok(self
            .parent(path, true)?
            .expect("missing directories are created"))
    }

    /// Clear the way for a new entry: an existing directory stays when the
    /// new entry is one too (with its contents, as the merger keeps them);
    /// anything else goes, a directory with its tree. True if one stayed.
    fn make_room(&self, dir: BorrowedFd<'_>, name: &str, path: &str, is_dir: bool) -> Result<bool> {
        if is_dir && kind_at(dir, name).ctx("inspect", &self.disk(path))? == Some(SFlag::S_IFDIR) {
            return Ok(true);
        }
        self.remove_at(dir, name, path)?;
        Ok(false)
    }

    /// Remove `name` from `dir` if it is there, a directory with its tree;
    /// never follows a symlink.
    fn remove_at(&self, dir: BorrowedFd<'_>, name: &str, path: &str) -> Result<()> {
        let disk = self.disk(path);
        match kind_at(dir, name).ctx("inspect", &disk)? {
            None => Ok(()),
            Some(SFlag::S_IFDIR) => fs::remove_dir_all(via_proc(dir, name)).ctx("remove", &disk),
            Some(_) => unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
                .map_err(io::Error::from)
                .ctx("remove", &disk),
        }
    }

    /// An opaque whiteout: remove everything in directory `path`.
    fn empty_dir(&self, path: &str) -> Result<()> {
        let Some(target) = self.open_dir(path, path, false)? else {
            return Ok(());
        };
        let disk = self.disk(path);
        for entry in fs::read_dir(via_proc(target.as_fd(), "")).ctx("list directory", &disk)? {
            let name = entry.ctx("list directory", &disk)?.file_name();
            let name = name.to_string_lossy();
            self.remove_at(target.as_fd(), &name, &format!("{path}/{name}"))?;
        }
        Ok(())
    }

    /// Stream a regular file to disk, hashing it on the way.
    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
    ) -> Result<(u64, Digest)> {
        let disk = self.disk(path);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut file = File::from(
            sys::openat(dir, name, flags, Mode::S_IRUSR | Mode::S_IWUSR)
                .ctx("create file", &disk)?,
        );
        let mut h = Hasher::new();
        loop {
            let n = entry.read(&mut self.buf).map_err(|e| self.bad(e))?;
            if n == 0 {
                break;
            }
            h.update(&self.buf[..n]);
            file.write_all(&self.buf[..n]).ctx("write", &disk)?;
        }
        let mtime = entry.header().mtime().map_err(|e| self.bad(e))?;
        file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
            .ctx("set modification time", &disk)?;
        Ok((h.len(), h.finish()))
    }

    /// Owner, then mode (chown clears setuid and setgid), then extended
    /// attributes (writing content clears security.capability).
    fn set_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        symlink: bool,
        meta: &Meta,
    ) -> Result<()> {
        let disk = self.disk(path);
        fchownat(
            Some(dir.as_raw_fd()),
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io::Error::from)
        .ctx("set owner", &disk)?;
        if !symlink {
            self.chmod(dir, name, path, meta.mode)?;
        }
        for (key, value) in &meta.xattrs {
            match sys::set_xattr(&via_proc(dir, name), key, value) {
                Ok(()) => {}
                // A value the kernel refuses (a malformed security.capability,
                // say) is the layer's fault; found by the fuzz target.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return Err(Error::corrupt(
                        format!("layer entry {path}"),
                        format!("extended attribute {key}: the kernel refuses its value"),
                    ));
                }
                // Linux allows user.* only on regular files and directories.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && key.starts_with("user.") => {
                    return Err(Error::corrupt(
                        format!("layer entry {path}"),
                        format!(
                            "extended attribute {key}: user.* attributes belong on regular files \
                             and directories only"
                        ),
                    ));
                }
                Err(e) => return Err(Error::io("set extended attribute", &disk, e)),
            }
        }
        Ok(())
    }

    /// Set `name`'s mode; only for something just made here, never a symlink.
    fn chmod(&self, dir: BorrowedFd<'_>, name: &str, path: &str, mode: u32) -> Result<()> {
        fchmodat(
            Some(dir.as_raw_fd()),
            name,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(io::Error::from)
        .ctx("set mode", &self.disk(path))
    }

    /// A directory with exactly `mode` (mkdir alone would apply the umask).
    fn mkdir(&self, dir: BorrowedFd<'_>, name: &str, path: &str, mode: u32) -> Result<()> {
        mkdirat(Some(dir.as_raw_fd()), name, Mode::S_IRWXU)
            .map_err(io::Error::from)
            .ctx("create directory", &self.disk(path))?;
        self.chmod(dir, name, path, mode)
    }

    /// The entry's PAX `SCHILY.xattr.*` records.
    fn xattrs<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(|e| self.bad(e))? {
            for ext in exts {
                let ext = ext.map_err(|e| self.bad(e))?;
                if let Some(key) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    out.push((key.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(out)
    }

    /// Where `path` of the image is on disk, for messages.
    fn disk(&self, path: &str) -> PathBuf {
        self.root_path.join(path.trim_start_matches('/'))
    }

    fn bad(&self, e: io::Error) -> Error {
        Error::corrupt(format!("layer {}", self.layer), e.to_string())
    }

    fn refuse(&self, why: impl std::fmt::Display) -> Error {
        Error::corrupt(
            format!("layer {}", self.layer),
            format!("entry {:?}: {why}", self.entry),
        )
    }
}

struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// A layer entry's name as a path in the root ("./a/b/" → "/a/b"), or why it
/// is refused. Only names the baseline records the same way pass: relative,
/// UTF-8, and no empty, `.` or `..` components.
fn normal(raw: &[u8]) -> std::result::Result<String, &'static str> {
    if raw.is_empty() {
        return Err("empty name");
    }
    if raw.contains(&0) {
        return Err("name contains NUL");
    }
    let name = std::str::from_utf8(raw).map_err(|_| "name is not UTF-8")?;
    if name.starts_with('/') {
        return Err("path escapes the root (absolute name)");
    }
    let rel = name.trim_start_matches("./").trim_end_matches('/');
    let mut path = String::new();
    for c in rel.split('/').filter(|_| !matches!(rel, "" | ".")) {
        match c {
            ".." => return Err("path escapes the root"),
            "" | "." => return Err("name has an empty or '.' component"),
            c => {
                path.push('/');
                path.push_str(c);
            }
        }
    }
    Ok(if path.is_empty() { "/".into() } else { path })
}

/// The type of `name` in `dir`, not following a symlink; None if absent.
fn kind_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<Option<SFlag>> {
    match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(
            st.st_mode & SFlag::S_IFMT.bits(),
        ))),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFLNK => "symlink",
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        _ => "special file",
    }
}

/// `name` in `dir` as a path, for the calls that have no *at form
/// (lsetxattr, remove_dir_all, read_dir). The kernel resolves
/// /proc/self/fd/N to exactly that directory, so nothing above it is looked
/// up again.
fn via_proc(dir: BorrowedFd<'_>, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// The first path where two sorted file lists differ, and how.
fn first_difference(got: &[FileRecord], want: &[FileRecord]) -> Option<String> {
    let k = (0..=got.len().max(want.len())).find(|&k| got.get(k) != want.get(k))?;
    let json = |r: &FileRecord| serde_json::to_string(r).unwrap_or_default();
    Some(match (got.get(k), want.get(k)) {
        (Some(g), Some(w)) if g.path == w.path => {
            format!(
                "{}: the layers give {} but the baseline has {}",
                g.path,
                json(g),
                json(w)
            )
        }
        (Some(g), Some(w)) if w.path < g.path => format!("{}: missing from the layers", w.path),
        (Some(g), _) => format!("{}: missing from the baseline", g.path),
        (None, w) => format!("{}: missing from the layers", w?.path),
    })
}

#[cfg(test)]
mod fuzz;
pub mod pool;
#[cfg(test)]
mod tests;

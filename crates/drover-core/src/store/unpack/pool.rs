//! The shared file pool: identical files of different roots are one inode.
//!
//! ```text
//! rootfs/.files/<xx>/<sha256>-<mode>-<uid>-<gid>-<mtime>.<nanos>[-x<xattrs>]
//! ```
//!
//! After a root is unpacked and checked against its baseline (so every
//! file in it was just written and hashed by this unpack), each regular
//! file not hard-linked within its image is looked up in the pool by
//! everything a hard link shares: content, mode, owner, modification time
//! and extended attributes (`<xattrs>`: a digest of them). Found, and
//! still intact — its metadata and **its content re-hashed** match — the
//! root's copy is replaced by a link to the pool's inode (atomically, by
//! rename). Not found, the root's copy is linked into the pool for the
//! next root. Found but not intact (tampered with since: drift finds it in
//! every root linking it), the pool entry is replaced by the fresh copy;
//! the tampered inode is never linked into a new root.
//!
//! Roots are mounted read-only (id-mapped: ownership on disk is the
//! image's, never shifted), so sharing inodes changes nothing a container
//! sees. Drift scans still walk each root and hash each file, so a change
//! to a shared inode is reported in every root that links it.
//!
//! `gc` deletes pool files whose link count is 1 (no root links them).
//! A start linking one as gc deletes it finds it gone and keeps its copy.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::linkat;

use super::{Layout, rootfs_dir, via_proc};
use crate::digest::{Digest, Hasher};
use crate::error::{IoContext, Result};
use crate::store::baseline::{FileKind, FileRecord};
use crate::sys;

/// What [`share`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shared {
    /// Files of the root now linked to a pool file that was there.
    pub linked: u64,
    /// Files linked into the pool for later roots.
    pub added: u64,
    /// Pool files found tampered with and replaced by the fresh copy.
    pub replaced: u64,
}

/// Where the pool is.
pub fn pool_dir(layout: &Layout) -> PathBuf {
    rootfs_dir(layout).join(".files")
}

/// A name a layer cannot clash with for long: checked before use.
const LINK_TMP: &str = ".drover-pool-link";

/// Share the regular files of the root open as `root` (just unpacked, the
/// tree `files` describes) with the pool; see the module header.
pub(super) fn share(
    layout: &Layout,
    root: BorrowedFd<'_>,
    root_path: &Path,
    files: &[FileRecord],
) -> Result<Shared> {
    let pool = pool_dir(layout);
    let mut out = Shared::default();
    let mut parent: Option<(String, OwnedFd)> = None;
    for rec in files {
        let (FileKind::File, Some(sha)) = (&rec.kind, rec.sha256) else {
            continue;
        };
        let (dir_path, name) = rec.path.rsplit_once('/').unwrap_or(("", &rec.path));
        if parent.as_ref().is_none_or(|(p, _)| p != dir_path) {
            parent = open_dir(root, dir_path)?.map(|fd| (dir_path.to_string(), fd));
        }
        let Some((_, dir)) = &parent else { continue };
        let dir = dir.as_fd();
        let disk = root_path.join(rec.path.trim_start_matches('/'));
        let Ok(st) = fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        // Hard links within the image must keep sharing their own inode.
        if !is_reg(&st)
            || st.st_nlink != 1
            || st.st_size as u64 != rec.size
            || (st.st_mode & 0o7777, st.st_uid, st.st_gid) != (rec.mode, rec.uid, rec.gid)
        {
            continue;
        }
        // The image has a file named like our temporary link here: the
        // files of this directory stay unshared.
        if fstatat(
            Some(dir.as_raw_fd()),
            LINK_TMP,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
        {
            continue;
        }
        let xattrs = xattrs_of(&via_proc(dir, name)).ctx("read extended attributes", &disk)?;
        let key = key(&sha, &st, &xattrs);
        let sub = pool.join(&key[..2]);
        let entry = sub.join(&key);
        match fs::symlink_metadata(&entry) {
            Ok(_) if intact(&entry, &sha, &st, &xattrs) => {
                if use_pooled(dir, name, &entry, &disk)? {
                    out.linked += 1;
                    continue;
                }
                // Gone meanwhile (a gc swept it): add ours instead.
                add(dir, name, &sub, &entry, &disk)?;
                out.added += 1;
            }
            Ok(_) => {
                // Tampered with (or a crash left it half-made): ours replaces it.
                let tmp = sub.join(format!("{key}.new-{}", std::process::id()));
                let _ = fs::remove_file(&tmp);
                link_into(dir, name, &tmp, &disk)?;
                fs::rename(&tmp, &entry).ctx("replace shared file", &entry)?;
                out.replaced += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                add(dir, name, &sub, &entry, &disk)?;
                out.added += 1;
            }
            Err(e) => return Err(e).ctx("inspect shared file", &entry),
        }
    }
    Ok(out)
}

/// Delete the pool files no root links any more; returns how many and
/// their bytes.
pub fn sweep(layout: &Layout) -> Result<(usize, u64)> {
    let pool = pool_dir(layout);
    let (mut files, mut bytes) = (0, 0);
    for sub in fs::read_dir(&pool).into_iter().flatten().flatten() {
        for entry in fs::read_dir(sub.path()).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            if m.nlink() <= 1 {
                match fs::remove_file(&path) {
                    Ok(()) => {
                        files += 1;
                        bytes += m.len();
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).ctx("remove shared file", &path),
                }
            }
        }
    }
    Ok((files, bytes))
}

fn is_reg(st: &FileStat) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
}

/// The pool name of a file: everything a hard link shares.
fn key(sha: &Digest, st: &FileStat, xattrs: &[(String, Vec<u8>)]) -> String {
    let mut key = format!(
        "{}-{:o}-{}-{}-{}.{}",
        sha.hex(),
        st.st_mode & 0o7777,
        st.st_uid,
        st.st_gid,
        st.st_mtime,
        st.st_mtime_nsec
    );
    if !xattrs.is_empty() {
        let mut h = Hasher::new();
        for (k, v) in xattrs {
            h.update(&(k.len() as u64).to_le_bytes());
            h.update(k.as_bytes());
            h.update(&(v.len() as u64).to_le_bytes());
            h.update(v);
        }
        key.push_str("-x");
        key.push_str(&h.finish().hex()[..16]);
    }
    key
}

fn xattrs_of(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    match sys::xattrs(path) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(Vec::new()),
        r => r,
    }
}

/// Whether the pool file `entry` is still exactly what its name says, its
/// content re-read and hashed.
fn intact(entry: &Path, sha: &Digest, st: &FileStat, xattrs: &[(String, Vec<u8>)]) -> bool {
    let Ok(file) = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(entry)
    else {
        return false;
    };
    let Ok(m) = file.metadata() else { return false };
    let same_meta = m.is_file()
        && m.len() == st.st_size as u64
        && m.mode() & 0o7777 == st.st_mode & 0o7777
        && (m.uid(), m.gid()) == (st.st_uid, st.st_gid)
        && (m.mtime(), m.mtime_nsec()) == (st.st_mtime, st.st_mtime_nsec);
    if !same_meta || xattrs_of(entry).ok().as_deref() != Some(xattrs) {
        return false;
    }
    let mut h = Hasher::new();
    let mut buf = vec![0; 256 << 10];
    let mut file = file;
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(_) => return false,
        }
    }
    h.finish() == *sha
}

/// Replace `name` in `dir` by a link to the pool's `entry`; false if the
/// entry is gone.
fn use_pooled(dir: BorrowedFd<'_>, name: &str, entry: &Path, disk: &Path) -> Result<bool> {
    match linkat(
        None,
        entry,
        Some(dir.as_raw_fd()),
        Path::new(LINK_TMP),
        AtFlags::empty(),
    ) {
        Ok(()) => {}
        Err(nix::errno::Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(io::Error::from(e)).ctx("link shared file", disk),
    }
    renameat(Some(dir.as_raw_fd()), LINK_TMP, Some(dir.as_raw_fd()), name)
        .map_err(io::Error::from)
        .ctx("replace with shared file", disk)?;
    Ok(true)
}

/// Link `name` in `dir` into the pool as `entry` (another unpack may have
/// just done so: then theirs stays).
fn add(dir: BorrowedFd<'_>, name: &str, sub: &Path, entry: &Path, disk: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(sub)
        .ctx("create directory", sub)?;
    match link_into(dir, name, entry, disk) {
        Err(crate::error::Error::Io { source, .. })
            if source.kind() == io::ErrorKind::AlreadyExists =>
        {
            Ok(())
        }
        r => r,
    }
}

fn link_into(dir: BorrowedFd<'_>, name: &str, to: &Path, disk: &Path) -> Result<()> {
    linkat(
        Some(dir.as_raw_fd()),
        Path::new(name),
        None,
        to,
        AtFlags::empty(),
    )
    .map_err(io::Error::from)
    .ctx("link into the shared pool", disk)
}

/// Open directory `path` ("/a/b") of the root, never through a symlink;
/// None if it is not a directory there.
fn open_dir(root: BorrowedFd<'_>, path: &str) -> Result<Option<OwnedFd>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd =
        sys::openat(root, ".", flags, Mode::empty()).ctx("open directory", Path::new("/"))?;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        fd = match sys::openat(fd.as_fd(), c, flags, Mode::empty()) {
            Ok(next) => next,
            Err(_) => return Ok(None),
        };
    }
    Ok(Some(fd))
}

//! Remembered content hashes, so a no-op rebuild does not re-read the tree.
//!
//! Why a cached hash is safe to reuse: it is used only when the file's device,
//! inode, size, mtime *and ctime* all equal what they were when the hash was
//! taken. A same-size edit that restores the old mtime (`touch -d`) still
//! moves ctime, which no unprivileged call can set back; replacing the file
//! by rename changes the inode. One gap remains — a write landing in the same
//! clock tick as the hashing, which timestamps cannot tell apart — so, like
//! git's "racily clean" rule, a hash taken less than `RACY_NS` after the
//! file's last change is not trusted and the file is hashed again next time.
//! Where none of this holds (a filesystem without stable inodes or ctime),
//! `--no-cache` hashes everything.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha1::Digest as _;

use super::sbom::{Sha1, sha1_of};
use super::scan::{Entry, Source, StatKey};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};

/// Margin between a file's last change and the hashing before the hash is trusted.
const RACY_NS: i128 = 2_000_000_000;

/// (dev, ino, size, mtime_ns, ctime_ns, hashed_at_ns, sha256) of one file.
type Remembered = (u64, u64, u64, i128, i128, i128, Digest);

#[derive(Default, Serialize, Deserialize)]
pub struct StatCache {
    /// Absolute source path → (dev, ino, size, mtime_ns, ctime_ns, hashed_at_ns, sha256).
    files: HashMap<String, Remembered>,
    #[serde(skip)]
    path: PathBuf,
    #[serde(skip)]
    dirty: bool,
}

impl StatCache {
    pub fn load(cache_dir: &Path, context: &Path) -> StatCache {
        let key = Digest::of(context.as_os_str().as_encoded_bytes()).hex();
        let path = cache_dir.join("stat").join(format!("{key}.json"));
        // A missing or unreadable cache only costs speed.
        let mut c: StatCache = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        c.path = path;
        c
    }

    pub fn lookup(&self, path: &Path, stat: &StatKey) -> Option<Digest> {
        let &(dev, ino, size, mtime, ctime, hashed_at, digest) = self.files.get(path.to_str()?)?;
        let same = (dev, ino, size, mtime, ctime)
            == (stat.dev, stat.ino, stat.size, stat.mtime_ns, stat.ctime_ns);
        (same && ctime.max(mtime) + RACY_NS < hashed_at).then_some(digest)
    }

    fn insert(&mut self, path: &Path, stat: &StatKey, hashed_at: i128, digest: Digest) {
        if let Some(p) = path.to_str() {
            self.files.insert(
                p.to_string(),
                (
                    stat.dev,
                    stat.ino,
                    stat.size,
                    stat.mtime_ns,
                    stat.ctime_ns,
                    hashed_at,
                    digest,
                ),
            );
            self.dirty = true;
        }
    }

    pub fn save(&self, tmp_dir: &Path) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).ctx("create cache directory", dir)?;
        }
        let bytes =
            serde_json::to_vec(self).map_err(|e| Error::corrupt("stat cache", e.to_string()))?;
        crate::durable::write_atomic(tmp_dir, &self.path, &bytes)
    }

    /// Fill in `sha256` for every regular file the cache can vouch for, and
    /// hash now (in parallel) the unknown files larger than `hash_above`,
    /// taking their SHA-1 (`Entry::sha1`) from the same read; the rest are
    /// hashed while the layer is written, from the same read that tars
    /// them. Returns the number of bytes hashed here.
    pub fn hash_entries(
        &mut self,
        entries: &mut [Entry],
        no_cache: bool,
        hash_above: u64,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64> {
        let mut todo = Vec::new();
        for (i, e) in entries.iter_mut().enumerate() {
            if let Some(Source::Disk { path, stat }) = &e.source {
                if stat.size == 0 {
                    e.sha256 = Some(Digest::of(b""));
                    e.sha1 = Some(sha1_of(b""));
                    continue;
                }
                match self.lookup(path, stat).filter(|_| !no_cache) {
                    Some(d) => e.sha256 = Some(d),
                    None if stat.size > hash_above => todo.push(i),
                    None => {}
                }
            }
        }
        let hashed: Vec<(usize, i128, Digest, Sha1)> = todo
            .par_iter()
            .map(|&i| {
                let Some(Source::Disk { path, stat }) = &entries[i].source else {
                    unreachable!("only files with a disk source are queued")
                };
                let hashed_at = now_ns();
                let (d, s1) = hash_file(path, stat)?;
                progress(stat.size);
                Ok((i, hashed_at, d, s1))
            })
            .collect::<Result<_>>()?;
        let mut bytes = 0;
        for (i, hashed_at, d, s1) in hashed {
            bytes += entries[i].size;
            self.remember(&entries[i], hashed_at, d);
            entries[i].sha256 = Some(d);
            entries[i].sha1 = Some(s1);
        }
        Ok(bytes)
    }

    /// Record the digest of an entry's file, hashed from a read that began
    /// at `hashed_at` (ns since the epoch) and was checked against its stat.
    pub fn remember(&mut self, entry: &Entry, hashed_at: i128, digest: Digest) {
        if let Some(Source::Disk { path, stat }) = &entry.source {
            self.insert(path, stat, hashed_at, digest);
        }
    }
}

/// Now, in ns since the epoch, as recorded with a hash.
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}
/// Hash a file (sha256 and SHA-1, one read) and make sure it did not
/// change while (or since) it was scanned.
pub fn hash_file(path: &Path, stat: &StatKey) -> Result<(Digest, Sha1)> {
    let mut f = fs::File::open(path).ctx("open", path)?;
    let mut h = Hasher::new();
    let mut s1 = sha1::Sha1::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).ctx("read", path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        s1.update(&buf[..n]);
    }
    if h.len() != stat.size {
        return Err(changed(path));
    }
    check_unchanged(&f, path, stat)?;
    Ok((h.finish(), s1.finalize().into()))
}

/// Refuse a file whose metadata moved since the scan: its bytes in the layer
/// would not match what the baseline records.
pub fn check_unchanged(f: &fs::File, path: &Path, stat: &StatKey) -> Result<()> {
    if StatKey::of(&f.metadata().ctx("stat", path)?) != *stat {
        return Err(changed(path));
    }
    Ok(())
}

fn changed(path: &Path) -> Error {
    Error::input(
        path,
        "file changed while the build was reading it; build again",
    )
}

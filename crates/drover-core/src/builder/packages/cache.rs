//! The package cache: `.deb` files and repository indexes, kept
//! content-addressed in the store so a rebuild downloads nothing and works
//! offline.
//!
//! ```text
//! <store root>/packages/sha256/<hex>   a .deb, an InRelease, a Packages.gz: named by its sha256
//! <store root>/packages/refs/<hex>     the last verified InRelease of one (repository, suite)
//! ```
//!
//! A file appears under its name only once all of its bytes are on disk and
//! hash to that name and size (temp file in the store's `tmp/`, fsync,
//! rename), so a mismatch or a process killed half-way leaves nothing
//! behind but a temp file that `gc` removes. A file's modification time is
//! its last use: `gc` removes what has not been used for longer than the
//! retention it is given ([`collect`]).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, Hasher};
use crate::durable::{sync_dir, tmp_path, write_atomic};
use crate::error::{Error, IoContext, Result};
use crate::store::Store;

/// How long `gc` keeps a cached package nobody used, unless told otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// The package cache of one store.
#[derive(Debug, Clone)]
pub struct PackageCache {
    /// `<store root>/packages`
    dir: PathBuf,
    /// `<store root>/packages/sha256`
    objects: PathBuf,
    /// `<store root>/packages/refs`
    refs: PathBuf,
    /// The store's `tmp/`, which `gc` empties.
    tmp: PathBuf,
}

impl PackageCache {
    /// The cache under `store_root`, created if missing; temp files go to
    /// `tmp` (the store's `tmp/`, on the same file system).
    pub fn open(store_root: &Path, tmp: &Path) -> Result<PackageCache> {
        let dir = store_root.join("packages");
        let cache = PackageCache {
            objects: dir.join("sha256"),
            refs: dir.join("refs"),
            dir,
            tmp: tmp.to_path_buf(),
        };
        for d in [&cache.objects, &cache.refs, &cache.tmp] {
            fs::create_dir_all(d).ctx("create package cache directory", d)?;
        }
        Ok(cache)
    }

    /// The package cache of `store`.
    pub fn of(store: &Store) -> Result<PackageCache> {
        Self::open(store.root(), store.tmp_dir())
    }

    /// `<store root>/packages`
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store's `tmp/`, where in-flight files go.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Where `digest` is (or would be) kept.
    pub fn object_path(&self, digest: &Digest) -> PathBuf {
        self.objects.join(digest.hex())
    }

    /// The cached file with this digest, if there is one. Its content is not
    /// re-hashed here (see [`PackageCache::read`] and `check`).
    pub fn path(&self, digest: &Digest) -> Option<PathBuf> {
        let p = self.object_path(digest);
        p.is_file().then_some(p)
    }

    pub fn has(&self, digest: &Digest) -> bool {
        self.object_path(digest).is_file()
    }

    /// Mark `digest` as used now (its modification time), so `gc` keeps it
    /// for another retention period. A missing file is no error.
    pub fn touch(&self, digest: &Digest) -> Result<()> {
        let p = self.object_path(digest);
        match File::open(&p) {
            Ok(f) => f.set_modified(SystemTime::now()).ctx("mark as used", &p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("open cached package", &p, e)),
        }
    }

    /// Start writing what must hash to `expected` and be exactly `size`
    /// bytes; `what` names it in errors ("package nginx-light", "InRelease
    /// of …"). Writing past `size` fails at once.
    pub fn writer(&self, expected: Digest, size: u64, what: &str) -> Result<CacheWriter> {
        let tmp = tmp_path(&self.tmp, "package");
        let file = File::create(&tmp).ctx("create temp file", &tmp)?;
        Ok(CacheWriter {
            file: BufWriter::with_capacity(1 << 20, file),
            tmp,
            dest: self.object_path(&expected),
            dir: self.objects.clone(),
            hasher: Hasher::new(),
            expected,
            size,
            what: what.to_string(),
            done: false,
        })
    }

    /// Store `bytes`, which must hash to `expected` and be `size` long.
    pub fn put_bytes(
        &self,
        bytes: &[u8],
        expected: &Digest,
        size: u64,
        what: &str,
    ) -> Result<PathBuf> {
        if let Some(p) = self.path(expected) {
            self.touch(expected)?;
            return Ok(p);
        }
        let mut w = self.writer(*expected, size, what)?;
        w.write(bytes)?;
        w.commit()
    }

    /// Store what `r` yields, which must hash to `expected` and be `size`
    /// long; reading stops one byte past `size`.
    pub fn put_reader(
        &self,
        r: impl Read,
        expected: &Digest,
        size: u64,
        what: &str,
    ) -> Result<PathBuf> {
        let mut w = self.writer(*expected, size, what)?;
        let mut r = r.take(size.saturating_add(1));
        let mut buf = vec![0; 256 << 10];
        loop {
            let n = r
                .read(&mut buf)
                .map_err(|e| Error::Failed(format!("{what}: {e}")))?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n])?;
        }
        w.commit()
    }

    /// Check the cached file `digest` again: it must still hash to its
    /// name. A damaged one (bit rot, a hand edit, a file swapped in) is
    /// removed, so that it is downloaded again rather than installed.
    pub fn verify(&self, digest: &Digest, size: u64) -> Result<Cached> {
        let p = self.object_path(digest);
        let mut f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Cached::Absent),
            Err(e) => return Err(Error::io("open cached file", &p, e)),
        };
        let mut hasher = Hasher::new();
        io::copy(&mut (&mut f).take(size.saturating_add(1)), &mut hasher)
            .ctx("read cached file", &p)?;
        let len = hasher.len();
        if len <= size && hasher.finish() == *digest {
            // Shorter than asked for, yet whole: the request is wrong, not
            // the file, which stays for whoever asks for it rightly.
            return Ok(if len == size {
                Cached::Good
            } else {
                Cached::Absent
            });
        }
        match fs::remove_file(&p) {
            Ok(()) => Ok(Cached::Damaged),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Cached::Absent),
            Err(e) => Err(Error::io("remove damaged cached file", &p, e)),
        }
    }

    /// Read a cached file whole (an index: small enough to hold), checking
    /// its digest; `None` if it is not cached. At most `max` bytes.
    pub fn read(&self, digest: &Digest, max: u64, what: &str) -> Result<Option<Vec<u8>>> {
        let p = self.object_path(digest);
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open cached file", &p, e)),
        };
        let mut bytes = Vec::new();
        f.take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .ctx("read cached file", &p)?;
        if bytes.len() as u64 > max {
            return Err(Error::corrupt(
                format!("cached {what} at {}", p.display()),
                format!("larger than {max} bytes"),
            ));
        }
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::CorruptBlob {
                digest: *digest,
                path: p,
                actual: actual.to_string(),
            });
        }
        self.touch(digest)?;
        Ok(Some(bytes))
    }

    /// The pointer `key` names (see [`PackageCache::set_ref`]), if set.
    pub fn get_ref(&self, key: &str) -> Result<Option<Ref>> {
        let p = self.ref_path(key);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read package cache pointer", &p, e)),
        };
        let r: Ref = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(
                format!("package cache pointer {}", p.display()),
                e.to_string(),
            )
        })?;
        Ok((r.key == key).then_some(r))
    }

    /// Point `key` (any string, e.g. "<repository url> <suite>") at `digest`.
    pub fn set_ref(&self, key: &str, digest: &Digest) -> Result<()> {
        let r = Ref {
            key: key.to_string(),
            digest: *digest,
        };
        let bytes = serde_json::to_vec(&r)
            .map_err(|e| Error::corrupt("package cache pointer", e.to_string()))?;
        write_atomic(&self.tmp, &self.ref_path(key), &bytes)
    }

    fn ref_path(&self, key: &str) -> PathBuf {
        self.refs.join(Digest::of(key.as_bytes()).hex())
    }

    /// How many files the cache holds, and their bytes.
    pub fn usage(&self) -> Result<(u64, u64)> {
        let mut files = 0;
        let mut bytes = 0;
        for (_, meta) in self.objects()? {
            files += 1;
            bytes += meta.len();
        }
        Ok((files, bytes))
    }

    fn objects(&self) -> Result<Vec<(PathBuf, fs::Metadata)>> {
        let mut out = Vec::new();
        let list = match fs::read_dir(&self.objects) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("list package cache", &self.objects, e)),
        };
        for entry in list {
            let entry = entry.ctx("list package cache", &self.objects)?;
            let meta = entry
                .metadata()
                .ctx("inspect cached package", &entry.path())?;
            out.push((entry.path(), meta));
        }
        Ok(out)
    }
}

/// What [`PackageCache::verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// There, whole and right.
    Good,
    /// Not there (or not what was asked for).
    Absent,
    /// There but no longer what its name says: removed now.
    Damaged,
}

/// A pointer file: `key` → `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    pub key: String,
    pub digest: Digest,
}

/// Streams bytes into a temp file while hashing them; `commit` moves the
/// file into the cache only if it has the expected size and digest.
pub struct CacheWriter {
    file: BufWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    dir: PathBuf,
    hasher: Hasher,
    expected: Digest,
    size: u64,
    what: String,
    done: bool,
}

impl CacheWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.hasher.len() + bytes.len() as u64 > self.size {
            return Err(Error::corrupt(
                &self.what,
                format!(
                    "larger than the {} bytes the signed index declares; refused, nothing stored",
                    self.size
                ),
            ));
        }
        self.hasher.update(bytes);
        self.file.write_all(bytes).ctx("write temp file", &self.tmp)
    }

    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// Check size and digest, then fsync and rename into place.
    pub fn commit(mut self) -> Result<PathBuf> {
        let got = self.hasher.len();
        if got != self.size {
            return Err(Error::corrupt(
                &self.what,
                format!(
                    "{got} bytes, but the signed index declares {}; refused, nothing stored",
                    self.size
                ),
            ));
        }
        let actual = self.hasher.clone().finish();
        if actual != self.expected {
            return Err(Error::corrupt(
                &self.what,
                format!(
                    "its sha256 is {actual}, but {} was expected (from the signed index, \
                     or from the lock written from it); refused, nothing stored",
                    self.expected
                ),
            ));
        }
        self.file.flush().ctx("write temp file", &self.tmp)?;
        self.file
            .get_ref()
            .sync_all()
            .ctx("fsync temp file", &self.tmp)?;
        fs::rename(&self.tmp, &self.dest).ctx("rename into the package cache", &self.dest)?;
        self.done = true;
        sync_dir(&self.dir)?;
        Ok(self.dest.clone())
    }
}

impl Drop for CacheWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// What [`collect`] did to the package cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PackageGcReport {
    pub removed_files: u64,
    pub removed_bytes: u64,
    pub kept_files: u64,
    pub kept_bytes: u64,
    /// Pointers to an InRelease that is no longer cached.
    pub removed_refs: u64,
}

/// Remove every cached file not used within `keep` (all of them for zero),
/// and the pointers left pointing at nothing. Needs the store opened
/// exclusively (`Store::open_exclusive`), so no build is using the cache.
pub fn collect(store: &Store, keep: Duration) -> Result<PackageGcReport> {
    if !store.is_exclusive() {
        return Err(Error::Busy {
            what: "store".into(),
            reason: "collecting the package cache needs the store opened exclusively".into(),
        });
    }
    let cache = PackageCache::of(store)?;
    collect_in(&cache, keep, SystemTime::now())
}

fn collect_in(cache: &PackageCache, keep: Duration, now: SystemTime) -> Result<PackageGcReport> {
    let mut report = PackageGcReport::default();
    for (path, meta) in cache.objects()? {
        let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let idle = now.duration_since(used).unwrap_or_default();
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| format!("sha256:{n}").parse::<Digest>().is_ok());
        if keep.is_zero() || idle > keep || !named {
            fs::remove_file(&path).ctx("remove cached package", &path)?;
            report.removed_files += 1;
            report.removed_bytes += meta.len();
        } else {
            report.kept_files += 1;
            report.kept_bytes += meta.len();
        }
    }
    if let Ok(list) = fs::read_dir(&cache.refs) {
        for entry in list.flatten() {
            let target = fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Ref>(&b).ok());
            if target.is_none_or(|r| !cache.has(&r.digest)) {
                fs::remove_file(entry.path()).ctx("remove package cache pointer", &entry.path())?;
                report.removed_refs += 1;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, PackageCache) {
        let dir = tempfile::tempdir().unwrap();
        let c = PackageCache::open(dir.path(), &dir.path().join("tmp")).unwrap();
        (dir, c)
    }

    #[test]
    fn stores_content_under_its_digest() {
        let (_d, c) = cache();
        let bytes = b"a package";
        let d = Digest::of(bytes);
        assert!(c.path(&d).is_none());
        let p = c
            .put_bytes(bytes, &d, bytes.len() as u64, "package a")
            .unwrap();
        assert_eq!(p, c.object_path(&d));
        assert_eq!(fs::read(&p).unwrap(), bytes);
        assert_eq!(c.read(&d, 100, "x").unwrap().unwrap(), bytes);
        assert_eq!(c.usage().unwrap(), (1, bytes.len() as u64));
        // Streaming gives the same.
        let p2 = c
            .put_reader(&bytes[..], &d, bytes.len() as u64, "package a")
            .unwrap();
        assert_eq!(p, p2);
    }

    #[test]
    fn refuses_a_wrong_digest_or_size_and_stores_nothing() {
        let (dir, c) = cache();
        let bytes = b"a package";
        let wrong = Digest::of(b"another");
        let e = c
            .put_bytes(bytes, &wrong, bytes.len() as u64, "package a")
            .unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("package a") && s.contains(&wrong.to_string()),
            "{s}"
        );
        let right = Digest::of(bytes);
        for size in [3, 100] {
            let e = c.put_bytes(bytes, &right, size, "package a").unwrap_err();
            assert!(e.to_string().contains("declares"), "{e}");
        }
        let e = c
            .put_reader(&[0u8; 1000][..], &right, 10, "package b")
            .unwrap_err();
        assert!(e.to_string().contains("package b"), "{e}");
        assert_eq!(c.usage().unwrap(), (0, 0));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_corrupted_file_is_found_on_read() {
        let (_d, c) = cache();
        let d = Digest::of(b"abc");
        c.put_bytes(b"abc", &d, 3, "x").unwrap();
        fs::write(c.object_path(&d), b"abd").unwrap();
        assert!(matches!(
            c.read(&d, 10, "x").unwrap_err(),
            Error::CorruptBlob { .. }
        ));
        assert!(c.read(&Digest::of(b"none"), 10, "x").unwrap().is_none());
    }

    #[test]
    fn refs_point_at_digests() {
        let (_d, c) = cache();
        let d = Digest::of(b"release");
        assert!(c.get_ref("http://x bookworm").unwrap().is_none());
        c.set_ref("http://x bookworm", &d).unwrap();
        assert_eq!(c.get_ref("http://x bookworm").unwrap().unwrap().digest, d);
        assert!(c.get_ref("http://x trixie").unwrap().is_none());
    }

    #[test]
    fn collect_removes_what_was_not_used_within_the_retention() {
        let (_d, c) = cache();
        let old = Digest::of(b"old");
        let new = Digest::of(b"new");
        c.put_bytes(b"old", &old, 3, "old").unwrap();
        c.put_bytes(b"new", &new, 3, "new").unwrap();
        c.set_ref("repo old", &old).unwrap();
        let month_ago = SystemTime::now() - Duration::from_secs(30 * 24 * 3600);
        File::open(c.object_path(&old))
            .unwrap()
            .set_modified(month_ago)
            .unwrap();
        let r = collect_in(&c, DEFAULT_RETENTION, SystemTime::now()).unwrap();
        assert_eq!(
            r,
            PackageGcReport {
                removed_files: 1,
                removed_bytes: 3,
                kept_files: 1,
                kept_bytes: 3,
                removed_refs: 1,
            }
        );
        assert!(c.has(&new) && !c.has(&old));
        // Use makes it young again; zero removes everything.
        c.touch(&new).unwrap();
        let r = collect_in(&c, Duration::ZERO, SystemTime::now()).unwrap();
        assert_eq!((r.removed_files, r.kept_files), (1, 0));
    }
}

//! Durable file writes: a file appears under its final name only once all of
//! its bytes are on disk (temp file, fsync, rename, directory fsync), so a
//! process killed at any moment leaves at worst an orphan temp file.
//! Below everything that writes files (keys, the store, the builder caches).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoContext, Result};

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A unique temp path in `dir`; unique across threads and processes.
pub fn tmp_path(dir: &Path, what: &str) -> PathBuf {
    let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{what}-{}-{n}.tmp", std::process::id()))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync directory", dir)
}

/// Write `bytes` to `dest` atomically (temp file + fsync + rename + dir fsync).
pub fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(tmp_dir, dest, bytes, 0o666)
}

/// [`write_atomic`] for a file only its owner may read (it may hold a
/// password): created 0600, never visible with a wider mode.
pub fn write_atomic_private(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(tmp_dir, dest, bytes, 0o600)
}

fn write_atomic_mode(tmp_dir: &Path, dest: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = tmp_path(tmp_dir, "file");
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .ctx("create temp file", &tmp)?;
        f.write_all(bytes).ctx("write temp file", &tmp)?;
        f.sync_all().ctx("fsync temp file", &tmp)?;
        fs::rename(&tmp, dest).ctx("rename into place", dest)?;
        sync_dir(dest.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

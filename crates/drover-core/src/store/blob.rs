//! Blob files: written atomically, verified when read.
//!
//! A blob is only ever visible under `blobs/sha256/<hex>` once all of its bytes
//! are on disk and hash to that name: writers fill a temp file under `tmp/`,
//! fsync it, then rename it into place and fsync the directory. A process
//! killed at any moment therefore leaves at worst an orphan temp file (which
//! `gc` removes), never a partial blob under a real digest.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};
use crate::durable::{sync_dir, tmp_path};
use crate::error::{Error, IoContext, Result};

/// Streams bytes into a temp file while hashing them; `commit` moves the
/// finished file to its content address.
pub struct BlobWriter {
    file: io::BufWriter<File>,
    tmp: PathBuf,
    blobs_dir: PathBuf,
    hasher: Hasher,
    /// Bytes written by `write_prehashed` and not yet covered by the hasher.
    prehashed: u64,
    committed: bool,
}

impl BlobWriter {
    pub(crate) fn create(tmp_dir: &Path, blobs_dir: &Path) -> Result<Self> {
        let tmp = tmp_path(tmp_dir, "blob");
        let file = File::create(&tmp).ctx("create temp blob", &tmp)?;
        Ok(BlobWriter {
            file: io::BufWriter::with_capacity(1 << 20, file),
            tmp,
            blobs_dir: blobs_dir.to_path_buf(),
            hasher: Hasher::new(),
            prehashed: 0,
            committed: false,
        })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        self.file.write_all(bytes).ctx("write temp blob", &self.tmp)
    }

    pub fn len(&self) -> u64 {
        self.hasher.len() + self.prehashed
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The hash state after the bytes written so far (see `Hasher::checkpoint`).
    pub fn checkpoint(&self) -> String {
        self.hasher.checkpoint()
    }

    /// Write bytes without hashing them, for a blob that starts with the
    /// same bytes as an earlier one; `adopt_checkpoint` must follow.
    pub fn write_prehashed(&mut self, bytes: &[u8]) -> Result<()> {
        self.prehashed += bytes.len() as u64;
        self.file.write_all(bytes).ctx("write temp blob", &self.tmp)
    }

    /// Continue the hash from the state an earlier blob had after the bytes
    /// given to `write_prehashed` (see `Hasher::checkpoint`).
    pub fn adopt_checkpoint(&mut self, checkpoint: &str) -> Result<()> {
        let hasher = Hasher::resume(checkpoint)
            .filter(|h| h.len() == self.prehashed && self.hasher.is_empty())
            .ok_or_else(|| {
                Error::corrupt(
                    "layer cache record",
                    "hash checkpoint does not match the bytes it describes",
                )
            })?;
        self.hasher = hasher;
        self.prehashed = 0;
        Ok(())
    }

    /// Like `commit`, but only if the bytes hash to `expected`; otherwise
    /// the temp file is discarded and nothing appears in the store.
    pub fn commit_expecting(self, expected: &Digest) -> Result<u64> {
        let actual = self.hasher.clone().finish();
        if self.prehashed != 0 || actual != *expected {
            return Err(Error::CorruptBlob {
                digest: *expected,
                path: self.tmp.clone(),
                actual: actual.to_string(),
            });
        }
        Ok(self.commit()?.1)
    }

    /// Flush, fsync and rename into place. Returns the digest and size.
    pub fn commit(mut self) -> Result<(Digest, u64)> {
        if self.prehashed != 0 {
            return Err(Error::corrupt(
                "blob",
                "bytes written without a hash checkpoint",
            ));
        }
        let size = self.hasher.len();
        let digest = self.hasher.clone().finish();
        self.file.flush().ctx("write temp blob", &self.tmp)?;
        self.file
            .get_ref()
            .sync_all()
            .ctx("fsync temp blob", &self.tmp)?;
        let dest = self.blobs_dir.join(digest.hex());
        // An existing blob with this name already holds these bytes (or is
        // corrupt, which `verify` reports); replacing it heals corruption.
        fs::rename(&self.tmp, &dest).ctx("rename blob into place", &dest)?;
        sync_dir(&self.blobs_dir)?;
        self.committed = true;
        Ok((digest, size))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Hash the file at `path` and compare with `digest`.
pub(crate) fn check_file(path: &Path, digest: &Digest) -> Result<u64> {
    let mut r = VerifyingReader::open_path(path, *digest)?;
    let n = io::copy(&mut r, &mut io::sink()).map_err(|e| r.map_err(e))?;
    Ok(n)
}

/// Reads a blob and fails at end of file if the bytes do not hash to the
/// expected digest, so streaming consumers never act on unverified data
/// without learning of it.
pub struct VerifyingReader {
    inner: BufReader<File>,
    path: PathBuf,
    expected: Digest,
    hasher: Hasher,
    mismatch: Option<Digest>,
    verified: bool,
}

impl VerifyingReader {
    /// Open `path`, expecting its bytes to hash to `expected`.
    pub fn open_path(path: &Path, expected: Digest) -> Result<Self> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::NotFound {
                    what: format!("blob {expected}"),
                    hint: Some(format!("expected at {}", path.display())),
                }
            } else {
                Error::Io {
                    op: "open blob",
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
        Ok(VerifyingReader {
            inner: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            expected,
            hasher: Hasher::new(),
            mismatch: None,
            verified: false,
        })
    }

    /// Turn an `io::Error` from this reader back into the precise error.
    pub fn map_err(&self, e: io::Error) -> Error {
        match self.mismatch {
            Some(actual) => Error::CorruptBlob {
                digest: self.expected,
                path: self.path.clone(),
                actual: actual.to_string(),
            },
            None => Error::Io {
                op: "read blob",
                path: self.path.clone(),
                source: e,
            },
        }
    }
}

impl Read for VerifyingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.verified {
            let actual = std::mem::take(&mut self.hasher).finish();
            if actual != self.expected {
                self.mismatch = Some(actual);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} at {} hashes to {actual}",
                        self.expected,
                        self.path.display()
                    ),
                ));
            }
            self.verified = true;
        } else if self.verified && n > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {} at {} grew while being read",
                    self.expected,
                    self.path.display()
                ),
            ));
        } else {
            self.hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

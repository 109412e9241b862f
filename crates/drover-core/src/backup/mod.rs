//! `drover store backup` and `drover store restore`: a whole store in one
//! file, copied while everything runs, and a new store made from it.
//!
//! The file is a tar (zstd-compressed when asked, recognised by its magic
//! on restore) whose members are, in order:
//!
//! ```text
//! backup.json              the manifest: format, drover version, time, source host,
//!                          counts, the digest of every state file, every blob
//! drover.db                the state database, one consistent moment of it (SQLite's
//!                          online backup API): tags, referrers, releases, instances, ledger
//! ledger.head              the signed ledger head, read *before* that moment (it only
//!                          moves forward, after each commit, so it is never ahead of the copy)
//! keys/…, policy.toml      the host key and any other keys; the deploy policy
//! blobs/sha256/<hex>       every blob, re-hashed as it is copied (a corrupt one fails the backup)
//! logs/…                   kept instance logs, if the store has them
//! volumes/…                with `--volumes` only: copied live (see below)
//! backup-end.json          the trailer: digests of the live files; a file without it is truncated
//! ```
//!
//! Left out, because they are re-created: `rootfs/` (unpacked roots, from
//! the blobs), `cache/`, `tmp/`, `run/` (runtime state of processes this
//! host runs), `instances/` (bundles of those processes), `index.json`
//! (rewritten from the database), lock files and the disk reserve.
//!
//! Volumes are read file by file while their services may write them: a
//! file changed meanwhile may be torn (the report names files whose size
//! changed while read). For a consistent copy of a volume, stop or drain
//! the service writing it first, or back up from the service itself.
//!
//! A restore makes a new store in a missing or empty directory: it
//! unpacks into a directory beside the target and renames it into place
//! only when everything checked out — the manifest, every member's digest,
//! every blob against its name, the trailer, then `verify` over the new
//! store — so a corrupt or truncated file leaves nothing behind. Members
//! are hostile until checked: only the names above, no absolute paths or
//! `..`, no hard links, symbolic links only inside volumes, and nothing
//! ever written through a link. The restored store's live instances are
//! marked lost (`instance.lost`: their processes belong to the source
//! host, or to the store the backup was taken of) and a `store.restore`
//! ledger entry names the source; `apply` then starts new ones.

mod read;
mod write;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub use read::restore;
pub use write::backup;

/// The manifest's `format`; a restore refuses any other.
pub const FORMAT: &str = "drover-backup/1";
pub(crate) const MANIFEST: &str = "backup.json";
pub(crate) const TRAILER: &str = "backup-end.json";
/// The manifest and trailer are JSON; never read more of either.
pub(crate) const MAX_DOCUMENT: u64 = 256 << 20;
pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// What a backup says about itself (its first member).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub drover_version: String,
    pub created: String,
    pub source: Source,
    pub schema_version: u32,
    /// `path → digest` of each state file (database, ledger head, keys, policy).
    pub files: BTreeMap<String, Digest>,
    pub blobs: Vec<BlobEntry>,
    pub counts: Counts,
    /// What was left out, and why.
    pub skipped: Vec<String>,
}

/// The host and store a backup was taken from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Source {
    pub hostname: Option<String>,
    pub machine_id: Option<String>,
    pub boot_id: Option<String>,
    pub store: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub logs: u64,
    /// Whether volumes are in it (`--volumes`).
    pub volumes: bool,
    pub volume_files: u64,
}

/// The last member: what was copied live.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Trailer {
    /// `path → digest` of every log and volume file, as archived.
    pub(crate) files: BTreeMap<String, Digest>,
    /// Live files whose size changed while they were read.
    pub(crate) torn: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Include `volumes/` (copied live).
    pub volumes: bool,
    /// zstd-compress the file.
    pub compress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub file: PathBuf,
    pub bytes: u64,
    pub compressed: bool,
    pub source: Source,
    pub counts: Counts,
    /// Live files (volumes, logs) that changed while read: possibly torn.
    pub torn: Vec<String>,
    pub skipped: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub store: PathBuf,
    pub file: PathBuf,
    pub source: Source,
    /// When the backup was taken.
    pub created: String,
    pub counts: Counts,
    /// Instances that were live in the backup, now recorded lost.
    pub lost: Vec<String>,
    pub seconds: f64,
}

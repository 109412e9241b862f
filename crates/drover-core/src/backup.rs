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

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock;
use crate::digest::{Digest, Hasher};
use crate::durable::sync_dir;
use crate::error::{Error, IoContext, Result};
use crate::instance::{self, host};
use crate::ledger::NewEntry;
use crate::progress::Progress;
use crate::state;
use crate::store::Store;

/// The manifest's `format`; a restore refuses any other.
pub const FORMAT: &str = "drover-backup/1";
const MANIFEST: &str = "backup.json";
const TRAILER: &str = "backup-end.json";
/// The manifest and trailer are JSON; never read more of either.
const MAX_DOCUMENT: u64 = 256 << 20;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

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
struct Trailer {
    /// `path → digest` of every log and volume file, as archived.
    files: BTreeMap<String, Digest>,
    /// Live files whose size changed while they were read.
    torn: Vec<String>,
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

const SKIPPED: &[&str] = &[
    "rootfs/ (unpacked roots: re-made from the blobs)",
    "cache/, tmp/ (build caches, in-flight writes)",
    "run/, instances/ (runtime state and bundles of processes this host runs)",
    "index.json (rewritten from the database)",
];

/// One thing to put in the archive.
enum Item {
    File {
        name: String,
        path: PathBuf,
        size: u64,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u64,
    },
    Dir {
        name: String,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u64,
    },
    Link {
        name: String,
        target: PathBuf,
        uid: u32,
        gid: u32,
        mtime: u64,
    },
}

/// Write a backup of `store` to `file` (a temp file beside it, renamed at
/// the end).
pub fn backup(
    store: &Store,
    file: &Path,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Instant::now();
    let root = store.root();
    let mut skipped: Vec<String> = SKIPPED.iter().map(|s| s.to_string()).collect();
    // The head first: it only moves forward, after commits, so read before
    // the snapshot it never names an entry the snapshot lacks.
    let head_path = root.join(crate::ledger::head::FILE);
    let head = match fs::read(&head_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("read the signed ledger head", head_path, e)),
    };
    let snapshot = store.tmp_dir().join(format!(
        "backup-{}-{}.db",
        std::process::id(),
        clock::now_ms()
    ));
    let _cleanup = RemoveOnDrop(snapshot.clone());
    store.db().snapshot(&snapshot)?;
    let head_tmp = snapshot.with_extension("head");
    let _cleanup_head = RemoveOnDrop(head_tmp.clone());

    // The state files, each digested for the manifest.
    let mut state_items = vec![file_item("drover.db", &snapshot)?];
    if let Some(bytes) = &head {
        fs::write(&head_tmp, bytes).ctx("write a temp file", &head_tmp)?;
        state_items.push(file_item("ledger.head", &head_tmp)?);
    }
    let mut keys = Vec::new();
    walk(root, Path::new("keys"), &mut keys, false)?;
    state_items.extend(keys);
    if root.join("policy.toml").is_file() {
        state_items.push(file_item("policy.toml", &root.join("policy.toml"))?);
    }
    let mut files = BTreeMap::new();
    for item in &state_items {
        if let Item::File { name, path, .. } = item {
            files.insert(name.clone(), digest_file(path)?);
        }
    }

    // Blobs, by name; anything else in their directory is not one.
    let blob_dir = root.join("blobs").join("sha256");
    let mut blobs = Vec::new();
    for e in fs::read_dir(&blob_dir).ctx("list blobs", &blob_dir)? {
        let e = e.ctx("list blobs", &blob_dir)?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(digest) = format!("sha256:{name}").parse::<Digest>() else {
            skipped.push(format!("blobs/sha256/{name} (not a blob name)"));
            continue;
        };
        let meta = e.metadata().ctx("inspect blob", &e.path())?;
        if meta.is_file() {
            blobs.push(BlobEntry {
                digest,
                size: meta.len(),
            });
        }
    }
    blobs.sort_by_key(|b| b.digest.hex());

    let mut live = Vec::new();
    walk(root, Path::new("logs"), &mut live, false)?;
    let logs = live
        .iter()
        .filter(|i| matches!(i, Item::File { .. }))
        .count() as u64;
    if opts.volumes {
        walk(root, Path::new("volumes"), &mut live, true)?;
    } else {
        skipped.push("volumes/ (not asked for: --volumes)".into());
    }
    let volume_files = live
        .iter()
        .filter(|i| matches!(i, Item::File { .. }))
        .count() as u64
        - logs;

    let here = host::current();
    let counts = Counts {
        blobs: blobs.len() as u64,
        blob_bytes: blobs.iter().map(|b| b.size).sum(),
        logs,
        volumes: opts.volumes,
        volume_files,
    };
    let manifest = Manifest {
        format: FORMAT.into(),
        drover_version: env!("CARGO_PKG_VERSION").into(),
        created: clock::now_rfc3339(),
        source: Source {
            hostname: hostname(),
            machine_id: here.machine_id.clone(),
            boot_id: here.boot_id.clone(),
            store: root.to_path_buf(),
        },
        schema_version: state::SCHEMA_VERSION,
        files,
        blobs,
        counts: counts.clone(),
        skipped: skipped.clone(),
    };

    let total: u64 = state_items.iter().chain(&live).map(size_of).sum::<u64>() + counts.blob_bytes;
    let items = state_items.len() + live.len() + manifest.blobs.len();
    progress.phase("backup", items as u64, total);

    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = file
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{} names no file", file.display())))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{base}.tmp-{}", std::process::id()));
    let guard = RemoveOnDrop(tmp.clone());
    let out = BufWriter::new(File::create(&tmp).ctx("create the backup file", &tmp)?);
    let mut trailer = Trailer::default();
    let out = if opts.compress {
        let enc = zstd::Encoder::new(out, 3).ctx("start compressing", &tmp)?;
        let enc = write_archive(
            enc,
            &manifest,
            &state_items,
            root,
            &live,
            &mut trailer,
            progress,
            &tmp,
        )?;
        enc.finish().ctx("finish compressing", &tmp)?
    } else {
        write_archive(
            out,
            &manifest,
            &state_items,
            root,
            &live,
            &mut trailer,
            progress,
            &tmp,
        )?
    };
    let f = out
        .into_inner()
        .map_err(|e| Error::io("write the backup", &tmp, e.into_error()))?;
    f.sync_all().ctx("sync the backup", &tmp)?;
    let bytes = f.metadata().ctx("inspect the backup", &tmp)?.len();
    drop(f);
    fs::rename(&tmp, file).ctx("move the backup into place", file)?;
    std::mem::forget(guard);
    sync_dir(&dir)?;
    Ok(BackupReport {
        file: file.to_path_buf(),
        bytes,
        compressed: opts.compress,
        source: manifest.source,
        counts,
        torn: trailer.torn,
        skipped,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[allow(clippy::too_many_arguments)]
fn write_archive<W: Write>(
    out: W,
    manifest: &Manifest,
    state_items: &[Item],
    root: &Path,
    live: &[Item],
    trailer: &mut Trailer,
    progress: &dyn Progress,
    file: &Path,
) -> Result<W> {
    let werr = |e: io::Error| Error::io("write the backup", file, e);
    let mut tar = tar::Builder::new(out);
    let doc = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    append_bytes(&mut tar, MANIFEST, &doc).map_err(werr)?;
    for item in state_items {
        append(&mut tar, item, progress).map_err(werr)?;
    }
    let blob_dir = root.join("blobs").join("sha256");
    for b in &manifest.blobs {
        let path = blob_dir.join(b.digest.hex());
        let f = File::open(&path).map_err(|e| Error::NotFound {
            what: format!("blob {}", b.digest),
            hint: Some(format!(
                "it went from {} during the backup ({e}); run the backup again",
                path.display()
            )),
        })?;
        let mut h = header(tar::EntryType::Regular, 0o644, 0, 0, 0);
        h.set_size(b.size);
        let mut r = Exact::new(f, b.size, progress);
        tar.append_data(&mut h, format!("blobs/sha256/{}", b.digest.hex()), &mut r)
            .map_err(werr)?;
        let got = r.hasher.finish();
        if got != b.digest || r.short {
            return Err(Error::CorruptBlob {
                digest: b.digest,
                path,
                actual: got.to_string(),
            });
        }
    }
    for item in live {
        if let Some((name, digest, torn)) = append(&mut tar, item, progress).map_err(werr)? {
            if torn {
                trailer.torn.push(name.clone());
            }
            trailer.files.insert(name, digest);
        }
    }
    let doc = serde_json::to_vec_pretty(trailer).expect("a trailer serializes");
    append_bytes(&mut tar, TRAILER, &doc).map_err(werr)?;
    tar.into_inner().map_err(werr)
}

fn header(kind: tar::EntryType, mode: u32, uid: u32, gid: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid.into());
    h.set_gid(gid.into());
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o600, 0, 0, 0);
    h.set_size(bytes.len() as u64);
    tar.append_data(&mut h, name, bytes)
}

/// Append one item; for a file, `(name, digest of what was archived,
/// whether it changed size while read)`.
fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    item: &Item,
    progress: &dyn Progress,
) -> io::Result<Option<(String, Digest, bool)>> {
    match item {
        Item::File {
            name,
            path,
            size,
            mode,
            uid,
            gid,
            mtime,
        } => {
            let f = File::open(path)?;
            let mut h = header(tar::EntryType::Regular, *mode, *uid, *gid, *mtime);
            h.set_size(*size);
            let mut r = Exact::new(f, *size, progress);
            tar.append_data(&mut h, name, &mut r)?;
            let now = fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
            let torn = r.short || now != *size;
            Ok(Some((name.clone(), r.hasher.finish(), torn)))
        }
        Item::Dir {
            name,
            mode,
            uid,
            gid,
            mtime,
        } => {
            let mut h = header(tar::EntryType::Directory, *mode, *uid, *gid, *mtime);
            tar.append_data(&mut h, format!("{name}/"), io::empty())?;
            Ok(None)
        }
        Item::Link {
            name,
            target,
            uid,
            gid,
            mtime,
        } => {
            let mut h = header(tar::EntryType::Symlink, 0o777, *uid, *gid, *mtime);
            tar.append_link(&mut h, name, target)?;
            Ok(None)
        }
    }
}

/// Exactly `len` bytes of a file that may change meanwhile: cut where it
/// grew, zero-filled where it shrank (`short`); hashed as yielded.
struct Exact<'a, R> {
    inner: R,
    left: u64,
    short: bool,
    hasher: Hasher,
    progress: &'a dyn Progress,
}

impl<'a, R: Read> Exact<'a, R> {
    fn new(inner: R, len: u64, progress: &'a dyn Progress) -> Self {
        Exact {
            inner,
            left: len,
            short: false,
            hasher: Hasher::new(),
            progress,
        }
    }
}

impl<R: Read> Read for Exact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = if self.short {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        self.hasher.update(&buf[..n]);
        self.progress.advance(n as u64);
        Ok(n)
    }
}

fn size_of(item: &Item) -> u64 {
    match item {
        Item::File { size, .. } => *size,
        _ => 0,
    }
}

fn file_item(name: &str, path: &Path) -> Result<Item> {
    let m = fs::metadata(path).ctx("inspect", path)?;
    Ok(Item::File {
        name: name.into(),
        path: path.to_path_buf(),
        size: m.len(),
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime().max(0) as u64,
    })
}

/// Everything under `root/rel` (if it exists), directories before what
/// they hold; symbolic links only with `links` (volumes); sockets, FIFOs
/// and devices never.
fn walk(root: &Path, rel: &Path, out: &mut Vec<Item>, links: bool) -> Result<()> {
    let path = root.join(rel);
    let meta = match fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("inspect", path, e)),
    };
    let name = rel.to_string_lossy().into_owned();
    let (uid, gid, mtime) = (meta.uid(), meta.gid(), meta.mtime().max(0) as u64);
    let ft = meta.file_type();
    if ft.is_dir() {
        out.push(Item::Dir {
            name,
            mode: meta.mode() & 0o7777,
            uid,
            gid,
            mtime,
        });
        let mut names: Vec<_> = fs::read_dir(&path)
            .ctx("list", &path)?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for n in names {
            walk(root, &rel.join(n), out, links)?;
        }
    } else if ft.is_file() {
        out.push(Item::File {
            name,
            path,
            size: meta.len(),
            mode: meta.mode() & 0o7777,
            uid,
            gid,
            mtime,
        });
    } else if ft.is_symlink() && links {
        let target = fs::read_link(&path).ctx("read link", &path)?;
        out.push(Item::Link {
            name,
            target,
            uid,
            gid,
            mtime,
        });
    }
    Ok(())
}

fn digest_file(path: &Path) -> Result<Digest> {
    let mut h = Hasher::new();
    let mut f = File::open(path).ctx("read", path)?;
    io::copy(&mut f, &mut h).ctx("read", path)?;
    Ok(h.finish())
}

fn hostname() -> Option<String> {
    let h = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Make a new store at `target` (missing or empty) from the backup `file`.
pub fn restore(file: &Path, target: &Path, progress: &dyn Progress) -> Result<RestoreReport> {
    let started = Instant::now();
    let target = std::path::absolute(target).ctx("resolve the store path", target)?;
    match fs::read_dir(&target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Usage(format!(
                    "{} is not empty: a restore makes a new store only in a missing or empty \
                     directory (move it aside, or name another with --store)",
                    target.display()
                )));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read the restore target", &target, e)),
    }
    let (parent, name) = match (target.parent(), target.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.to_string_lossy().into_owned()),
        _ => {
            return Err(Error::Usage(format!(
                "cannot restore into {}",
                target.display()
            )));
        }
    };
    fs::create_dir_all(&parent).ctx("create the directory for the store", &parent)?;
    let staging = parent.join(format!(".{name}.restore-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .ctx("create the restore directory", &staging)?;
    let made = unpack(file, &staging, progress).and_then(|m| finish(file, &staging, &target, m));
    let (manifest, lost) = match made {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&staging, &target) {
        let _ = fs::remove_dir_all(&staging);
        return Err(Error::io("move the restored store into place", &target, e));
    }
    sync_dir(&parent)?;
    Ok(RestoreReport {
        store: target,
        file: file.to_path_buf(),
        source: manifest.source,
        created: manifest.created,
        counts: manifest.counts,
        lost,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Where a member may go, by its first components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    State,
    Blob,
    Log,
    Volume,
}

fn bad(file: &Path, what: impl std::fmt::Display) -> Error {
    Error::corrupt(
        format!("backup {}", file.display()),
        format!("{what}; nothing was restored"),
    )
}

/// Read and check every member, writing it under `dir`.
fn unpack(file: &Path, dir: &Path, progress: &dyn Progress) -> Result<Manifest> {
    let mut f = File::open(file).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            what: format!("backup {}", file.display()),
            hint: None,
        },
        _ => Error::io("open the backup", file, e),
    })?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).ctx("read the backup", file)?;
    let f = {
        use std::io::Seek;
        let mut f = f;
        f.seek(io::SeekFrom::Start(0))
            .ctx("read the backup", file)?;
        f
    };
    let reader: Box<dyn Read> = if n == 4 && magic == ZSTD_MAGIC {
        Box::new(zstd::Decoder::new(f).ctx("read the backup", file)?)
    } else {
        Box::new(BufReader::new(f))
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive
        .entries()
        .map_err(|e| bad(file, format!("not a tar archive ({e})")))?;
    let mut first = match entries.next() {
        Some(Ok(e)) => e,
        Some(Err(e)) => return Err(bad(file, format!("not a drover backup ({e})"))),
        None => return Err(bad(file, "it is empty")),
    };
    if first.path_bytes().as_ref() != MANIFEST.as_bytes() {
        return Err(bad(
            file,
            format!("not a drover backup: it does not begin with {MANIFEST}"),
        ));
    }
    let manifest: Manifest = serde_json::from_slice(&read_doc(&mut first, file)?)
        .map_err(|e| bad(file, format!("its manifest does not parse: {e}")))?;
    if manifest.format != FORMAT {
        return Err(Error::Usage(format!(
            "{} is a {:?} backup; this drover reads {FORMAT}",
            file.display(),
            manifest.format
        )));
    }
    if manifest.schema_version > state::SCHEMA_VERSION {
        return Err(Error::Usage(format!(
            "{} was made by a newer drover ({}, database schema {}; this one knows {}): restore it \
             with that version",
            file.display(),
            manifest.drover_version,
            manifest.schema_version,
            state::SCHEMA_VERSION
        )));
    }
    let total = manifest.counts.blob_bytes;
    progress.phase("restore", manifest.counts.blobs, total);
    let blobs: BTreeMap<String, u64> = manifest
        .blobs
        .iter()
        .map(|b| (format!("blobs/sha256/{}", b.digest.hex()), b.size))
        .collect();
    let mut seen_state = BTreeMap::new();
    let mut seen_blobs = BTreeSet::new();
    let mut seen_live = BTreeMap::new();
    let mut dirs = Vec::new();
    let mut trailer: Option<Trailer> = None;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| bad(file, format!("it is truncated or damaged ({e})")))?;
        if trailer.is_some() {
            return Err(bad(file, format!("a member follows {TRAILER}")));
        }
        let raw = entry.path_bytes().into_owned();
        if raw == TRAILER.as_bytes() {
            let t = serde_json::from_slice(&read_doc(&mut entry, file)?)
                .map_err(|e| bad(file, format!("its trailer does not parse: {e}")))?;
            trailer = Some(t);
            continue;
        }
        let (rel, part) = check_name(&raw).map_err(|why| {
            bad(
                file,
                format!("member {:?} {why}", String::from_utf8_lossy(&raw)),
            )
        })?;
        let shown = rel.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o600) & 0o7777;
        let uid = entry.header().uid().unwrap_or(0) as u32;
        let gid = entry.header().gid().unwrap_or(0) as u32;
        let dest = dir.join(&rel);
        no_links_above(dir, &rel).map_err(|why| bad(file, format!("member {shown:?} {why}")))?;
        match kind {
            tar::EntryType::Directory if part != Part::Blob => {
                match fs::create_dir(&dest) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dest.is_dir() => {}
                    Err(e) => return Err(Error::io("restore directory", &dest, e)),
                }
                dirs.push((dest, mode, uid, gid, part == Part::Volume));
            }
            tar::EntryType::Symlink if part == Part::Volume => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| bad(file, format!("link {shown:?} has no target")))?
                    .into_owned();
                make_parents(dir, &rel)?;
                std::os::unix::fs::symlink(&target, &dest).map_err(|e| {
                    bad(
                        file,
                        format!("member {shown:?} cannot be made ({e}; listed twice?)"),
                    )
                })?;
                let _ = std::os::unix::fs::lchown(&dest, Some(uid), Some(gid));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                make_parents(dir, &rel)?;
                let out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)
                    .map_err(|e| {
                        bad(
                            file,
                            format!("member {shown:?} cannot be made ({e}; listed twice?)"),
                        )
                    })?;
                let size = entry.header().size().unwrap_or(0);
                let mut w = HashingWriter {
                    out: BufWriter::new(out),
                    hasher: Hasher::new(),
                };
                let copied = io::copy(&mut entry, &mut w).map_err(|e| {
                    bad(
                        file,
                        format!("it is truncated or damaged in {shown:?} ({e})"),
                    )
                })?;
                if copied != size {
                    return Err(bad(file, format!("it is truncated in {shown:?}")));
                }
                let out = w
                    .out
                    .into_inner()
                    .map_err(|e| Error::io("restore", &dest, e.into_error()))?;
                out.sync_all().ctx("restore", &dest)?;
                let digest = w.hasher.finish();
                match part {
                    Part::Blob => {
                        let Some(&want) = blobs.get(&shown) else {
                            return Err(bad(
                                file,
                                format!("blob {shown:?} is not in its manifest"),
                            ));
                        };
                        let hex = rel.file_name().unwrap_or_default().to_string_lossy();
                        if digest.hex() != hex || size != want {
                            return Err(bad(
                                file,
                                format!(
                                    "blob sha256:{hex} does not match its digest (its bytes hash to {digest})"
                                ),
                            ));
                        }
                        seen_blobs.insert(shown);
                        progress.advance(size);
                        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644))
                            .ctx("restore", &dest)?;
                    }
                    Part::State => {
                        if manifest.files.get(&shown) != Some(&digest) {
                            return Err(bad(
                                file,
                                format!("{shown} does not match its digest in the manifest"),
                            ));
                        }
                        seen_state.insert(shown, digest);
                        fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o777))
                            .ctx("restore", &dest)?;
                    }
                    Part::Log | Part::Volume => {
                        seen_live.insert(shown, digest);
                        if part == Part::Volume {
                            let _ = std::os::unix::fs::lchown(&dest, Some(uid), Some(gid));
                        }
                        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
                            .ctx("restore", &dest)?;
                    }
                }
            }
            other => {
                return Err(bad(
                    file,
                    format!("member {shown:?} is a {other:?}, which a backup never holds there"),
                ));
            }
        }
    }
    let Some(trailer) = trailer else {
        return Err(bad(
            file,
            format!("it is truncated: it ends before its last member, {TRAILER}"),
        ));
    };
    if let Some(missing) = manifest.files.keys().find(|k| !seen_state.contains_key(*k)) {
        return Err(bad(file, format!("{missing} is missing")));
    }
    if let Some(missing) = blobs.keys().find(|k| !seen_blobs.contains(*k)) {
        return Err(bad(file, format!("{missing} is missing")));
    }
    if trailer.files != seen_live {
        let odd = trailer
            .files
            .iter()
            .find(|(k, v)| seen_live.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .or_else(|| {
                seen_live
                    .keys()
                    .find(|k| !trailer.files.contains_key(*k))
                    .cloned()
            })
            .unwrap_or_default();
        return Err(bad(
            file,
            format!("{odd} does not match its digest in {TRAILER}"),
        ));
    }
    // Directory modes last: a read-only one must not stop what goes in it.
    for (d, mode, uid, gid, own) in dirs.into_iter().rev() {
        if own {
            let _ = std::os::unix::fs::lchown(&d, Some(uid), Some(gid));
        }
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).ctx("restore", &d)?;
    }
    Ok(manifest)
}

/// Open the unpacked store, check it as `drover verify` does, record the
/// restore and mark the instances lost.
fn finish(
    file: &Path,
    dir: &Path,
    target: &Path,
    manifest: Manifest,
) -> Result<(Manifest, Vec<String>)> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).ctx("restore", dir)?;
    let mut store = Store::open(dir)?;
    let report = store.verify()?;
    if let Some(p) = report.problems.first() {
        return Err(bad(
            file,
            format!(
                "the restored store does not verify ({} problems; first: {} {}: {})",
                report.problems.len(),
                p.problem,
                p.digest,
                p.detail
            ),
        ));
    }
    let source_host = manifest
        .source
        .hostname
        .clone()
        .unwrap_or_else(|| "an unnamed host".into());
    let why = format!(
        "restored from a backup of {source_host} ({}) taken {}: its processes are not this store's",
        host::HostId::describe(
            manifest.source.machine_id.as_deref(),
            manifest.source.boot_id.as_deref()
        ),
        manifest.created
    );
    let mut lost = Vec::new();
    for i in instance::list(store.db(), false)? {
        if (i.state.is_live() || i.state == instance::State::Created)
            && instance::mark_lost(store.db_mut(), &i.id, &why)?
        {
            lost.push(i.id);
        }
    }
    let details = json!({
        "file": file.display().to_string(),
        "store": target.display().to_string(),
        "source": manifest.source,
        "created": manifest.created,
        "drover_version": manifest.drover_version,
        "blobs": manifest.counts.blobs,
        "volumes": manifest.counts.volumes,
        "lost": lost,
    });
    store.db_mut().write(|tx| {
        tx.record(NewEntry::new(
            "store.restore",
            [source_host.clone()],
            details.clone(),
        ))
        .map(drop)
    })?;
    drop(store);
    Ok((manifest, lost))
}

/// A member's name, checked: relative, plain components only, under one
/// of the parts a backup holds.
fn check_name(raw: &[u8]) -> std::result::Result<(PathBuf, Part), &'static str> {
    use std::os::unix::ffi::OsStrExt;
    let trimmed = raw.strip_suffix(b"/").unwrap_or(raw);
    let path = Path::new(std::ffi::OsStr::from_bytes(trimmed));
    if trimmed.is_empty() || raw.starts_with(b"/") {
        return Err("is absolute or empty");
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_owned()),
            _ => return Err("is not a plain relative path (`..`, `.` or absolute)"),
        }
    }
    if trimmed
        .split(|b| *b == b'/')
        .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        return Err("is not a plain relative path (`..`, `.` or an empty component)");
    }
    let first = parts[0].to_str().unwrap_or("");
    let part = match (first, parts.len()) {
        ("drover.db" | "ledger.head" | "policy.toml", 1) => Part::State,
        ("keys", _) => Part::State,
        ("blobs", 1) => Part::Blob,
        ("blobs", 2) if parts[1] == "sha256" => Part::Blob,
        ("blobs", 3) if parts[1] == "sha256" => {
            let hex = parts[2].to_str().unwrap_or("");
            if hex.len() != 64
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err("is not a blob name");
            }
            Part::Blob
        }
        ("logs", _) => Part::Log,
        ("volumes", _) => Part::Volume,
        _ => return Err("is not part of a drover backup"),
    };
    Ok((path.to_path_buf(), part))
}

/// Refuse a member whose way down goes through a symbolic link (one an
/// earlier member of a volume made).
fn no_links_above(dir: &Path, rel: &Path) -> std::result::Result<(), &'static str> {
    let mut at = dir.to_path_buf();
    let n = rel.components().count();
    for (i, c) in rel.components().enumerate() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() && i + 1 < n => {
                return Err("goes through a symbolic link");
            }
            Ok(m) if !m.is_dir() && i + 1 < n => return Err("is under a file"),
            _ => {}
        }
    }
    Ok(())
}

fn make_parents(dir: &Path, rel: &Path) -> Result<()> {
    if let Some(parent) = rel.parent() {
        let p = dir.join(parent);
        fs::create_dir_all(&p).ctx("restore directory", &p)?;
    }
    Ok(())
}

fn read_doc(entry: &mut impl Read, file: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    entry
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut buf)
        .map_err(|e| bad(file, format!("it is truncated or damaged ({e})")))?;
    if buf.len() as u64 > MAX_DOCUMENT {
        return Err(bad(file, "its manifest is too large"));
    }
    Ok(buf)
}

struct HashingWriter<W> {
    out: W,
    hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_checked_before_anything_is_written() {
        let hex = "a".repeat(64);
        assert_eq!(check_name(b"drover.db").unwrap().1, Part::State);
        assert_eq!(check_name(b"keys/host.key").unwrap().1, Part::State);
        assert_eq!(
            check_name(format!("blobs/sha256/{hex}").as_bytes())
                .unwrap()
                .1,
            Part::Blob
        );
        assert_eq!(check_name(b"volumes/data/x").unwrap().1, Part::Volume);
        assert_eq!(check_name(b"logs/a/log").unwrap().1, Part::Log);
        for hostile in [
            &b"/etc/passwd"[..],
            b"../escape",
            b"volumes/../../escape",
            b"volumes/./x",
            b"volumes//x",
            b"rootfs/x",
            b"blobs/sha256/short",
            b"blobs/sha256/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            b"drover.db/x",
            b"",
        ] {
            assert!(
                check_name(hostile).is_err(),
                "{:?}",
                String::from_utf8_lossy(hostile)
            );
        }
    }

    #[test]
    fn a_member_below_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("volumes/v")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("volumes/v/l")).unwrap();
        assert!(no_links_above(dir.path(), Path::new("volumes/v/l/passwd")).is_err());
        assert!(no_links_above(dir.path(), Path::new("volumes/v/other")).is_ok());
    }
}

//! Writing a backup: the state snapshot, the blobs re-hashed, the live
//! files read exactly as long as they were when listed.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{
    BackupOptions, BackupReport, BlobEntry, Counts, FORMAT, MANIFEST, Manifest, Source, TRAILER,
    Trailer,
};
use crate::clock;
use crate::digest::{Digest, Hasher};
use crate::durable::sync_dir;
use crate::error::{Error, IoContext, Result};
use crate::instance::host;
use crate::progress::Progress;
use crate::state;
use crate::store::Store;

const SKIPPED: &[&str] = &[
    "rootfs/ (unpacked roots: re-made from the blobs)",
    "cache/, tmp/ (build caches, in-flight writes)",
    "run/, instances/ (runtime state and bundles of processes this host runs; only their logs go)",
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
    instance_logs(root, &mut live)?;
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
            let f = match File::open(path) {
                Ok(f) => f,
                // Gone since it was listed (a log rotated past its last
                // file, a file deleted in a volume): recorded empty, torn.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let mut h = header(tar::EntryType::Regular, *mode, *uid, *gid, *mtime);
                    tar.append_data(&mut h, name, io::empty())?;
                    return Ok(Some((name.clone(), Hasher::new().finish(), true)));
                }
                Err(e) => return Err(e),
            };
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
/// The logs of the instances the store has now (`instances/<id>/log`,
/// `log.N`). Their bundles are this host's runtime state and stay behind,
/// but their output goes along: restored beside the lost instances, it is
/// what `drover logs` shows of them, and kept when `apply` replaces them.
fn instance_logs(root: &Path, out: &mut Vec<Item>) -> Result<()> {
    let dir = root.join("instances");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    ids.sort();
    for id in ids {
        let log = crate::runtime::log_path(&dir.join(&id));
        for file in crate::instance::log::files(&log) {
            let name = file.file_name().expect("a log file has a name");
            walk(
                root,
                &Path::new("instances").join(&id).join(name),
                out,
                false,
            )?;
        }
    }
    Ok(())
}

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

pub(super) fn digest_file(path: &Path) -> Result<Digest> {
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

pub(super) struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

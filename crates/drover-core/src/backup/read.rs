//! Restoring a backup: every member checked as it is read, into a
//! directory beside the target that is renamed into place at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::{
    FORMAT, MANIFEST, MAX_DOCUMENT, Manifest, RestoreReport, TRAILER, Trailer, ZSTD_MAGIC,
};
use crate::digest::Hasher;
use crate::durable::sync_dir;
use crate::error::{Error, IoContext, Result};
use crate::instance::{self, host};
use crate::ledger::NewEntry;
use crate::progress::Progress;
use crate::state;
use crate::store::Store;

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
        "file": std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf()).display().to_string(),
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
        // Only the log files of an instance's bundle travel.
        ("instances", 3) if is_log_name(parts[2].to_str().unwrap_or("")) => Part::Log,
        ("instances", _) => return Err("is not an instance's log"),
        ("volumes", _) => Part::Volume,
        _ => return Err("is not part of a drover backup"),
    };
    Ok((path.to_path_buf(), part))
}

/// `log` or `log.<n>`: an instance's log files, and nothing else of its
/// bundle.
fn is_log_name(name: &str) -> bool {
    name == "log"
        || name
            .strip_prefix("log.")
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
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
        assert_eq!(check_name(b"instances/abc/log").unwrap().1, Part::Log);
        assert_eq!(check_name(b"instances/abc/log.2").unwrap().1, Part::Log);
        for not_a_log in [
            &b"instances/abc/config.json"[..],
            b"instances/abc/log.x",
            b"instances/abc",
            b"instances/abc/sub/log",
        ] {
            assert!(check_name(not_a_log).is_err(), "{not_a_log:?}");
        }
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

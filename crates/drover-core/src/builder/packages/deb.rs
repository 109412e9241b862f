//! Reading one `.deb`: an ar archive of `debian-binary` ("2.0"),
//! `control.tar[.gz|.xz|.zst]` and `data.tar[.gz|.xz|.zst]`.
//!
//! The control archive is read into memory (the `control` paragraph,
//! `md5sums`, `conffiles`, the maintainer scripts); the data archive is
//! written into a staging directory and described entry by entry as the
//! builder's layer entries, each regular file hashed (sha256 and SHA-1) on
//! its way to disk.
//!
//! A `.deb` is hostile until read, like a layer (`store::unpack`): names
//! with `..`, absolute names, NUL or non-UTF-8 bytes are refused, as are
//! device nodes and FIFOs (named), hard links to anything but a regular
//! file earlier in the same archive, a path through a symlink (every
//! directory is opened from the staging root one component at a time with
//! `O_NOFOLLOW`), the same path twice, and wrong or misordered ar members.
//! What the data archive inflates to is held to `layer_bytes` (and
//! `inflate_ratio` past `Limits::RATIO_FLOOR`), its entries to
//! `layer_entries`, its tar extension headers to `tar_header_bytes`, the
//! control archive to `index_bytes`. Files land in staging as plain 0644
//! files owned by drover: their modes and owners (setuid bits included)
//! live in the entries, never on the staging disk.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, mkdirat};
use nix::unistd::{linkat, symlinkat};
use sha1::Digest as _;

use crate::builder::sbom::Sha1;
use crate::builder::scan::{Entry, Source, StatKey};
use crate::builder::tar::Kind;
use crate::digest::Hasher;
use crate::error::{Error, IoContext, Result};
use crate::limits::Limits;
use crate::store::baseline::headers::Headers;
use crate::sys;

/// The maintainer scripts a control archive may hold.
pub const SCRIPTS: [&str; 6] = [
    "preinst", "postinst", "prerm", "postrm", "config", "triggers",
];

/// What one `.deb` holds.
#[derive(Debug, Clone)]
pub struct Deb {
    /// The `control` file: the package's paragraph.
    pub control: String,
    pub md5sums: Option<String>,
    pub conffiles: Option<String>,
    /// The maintainer scripts present ([`SCRIPTS`]), by name.
    pub scripts: Vec<(String, Vec<u8>)>,
    /// Every other control member (`shlibs`, `symbols`, `templates`, …).
    pub other: Vec<(String, Vec<u8>)>,
    /// The data archive's entries in archive order, written under the
    /// staging directory: paths relative to `/`, regular files with
    /// `Source::Disk`, `sha256` and `sha1`. Directories the archive
    /// implies but does not list appear as root-owned 0755 directories.
    pub entries: Vec<Entry>,
}

/// Read the `.deb` at `path` (named `name` in errors, e.g. "package
/// nginx-light"); write its data tree into `staging` (created if missing,
/// and expected empty).
pub fn unpack(path: &Path, name: &str, staging: &Path, limits: &Limits) -> Result<Deb> {
    let what = format!("{name} ({})", path.display());
    let refuse = |why: String| Error::corrupt(&what, format!("{why}; refused"));
    let mut file = File::open(path).ctx("open package", path)?;
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|_| refuse("not an ar archive (too short)".into()))?;
    if &magic != b"!<arch>\n" {
        return Err(refuse("not a .deb: no ar archive header".into()));
    }
    let mut control: Option<Control> = None;
    let mut entries: Option<Vec<Entry>> = None;
    let mut index = 0;
    while let Some((member, size)) = ar_header(&mut file).map_err(|why| refuse(why.into()))? {
        let mut body = (&mut file).take(size);
        match (index, member.as_str()) {
            (0, "debian-binary") => {
                let mut v = Vec::new();
                (&mut body).take(64).read_to_end(&mut v).ctx("read", path)?;
                let v = String::from_utf8_lossy(&v);
                if !v.starts_with("2.") || size > 64 {
                    return Err(refuse(format!(
                        "debian-binary says {:?}; only format 2.x is known",
                        v.trim()
                    )));
                }
            }
            (0, other) => {
                return Err(refuse(format!(
                    "its first member is {other:?}, not debian-binary: not a .deb"
                )));
            }
            (1, m) if m.starts_with("control.tar") => {
                let r = decoder(&m["control.tar".len()..], &mut body)
                    .map_err(|why| refuse(format!("member {m}: {why}")))?;
                control = Some(read_control(r, &what, limits)?);
            }
            (2, m) if m.starts_with("data.tar") => {
                let compressed = Cell::new(0u64);
                let counted = Counted {
                    inner: &mut body,
                    n: &compressed,
                };
                let r = decoder(&m["data.tar".len()..], counted)
                    .map_err(|why| refuse(format!("member {m}: {why}")))?;
                entries = Some(read_data(r, &compressed, &what, staging, limits)?);
            }
            (_, m) if m.starts_with('_') => {}
            (1 | 2, m) => {
                let want = if index == 1 {
                    "control.tar"
                } else {
                    "data.tar"
                };
                return Err(refuse(format!("member {m:?} where {want}.* belongs")));
            }
            (_, m) => return Err(refuse(format!("unexpected member {m:?} after data.tar"))),
        }
        io::copy(&mut body, &mut io::sink()).ctx("read", path)?;
        if size % 2 == 1 {
            let mut pad = [0u8; 1];
            let _ = file.read(&mut pad).ctx("read", path)?;
        }
        // Members named `_*` are skipped wherever they are (dpkg's rule).
        if index == 0 || !member.starts_with('_') {
            index += 1;
        }
    }
    let control = control.ok_or_else(|| refuse("no control.tar member".into()))?;
    let entries = entries.ok_or_else(|| refuse("no data.tar member".into()))?;
    Ok(Deb {
        control: control.control,
        md5sums: control.md5sums,
        conffiles: control.conffiles,
        scripts: control.scripts,
        other: control.other,
        entries,
    })
}

/// The next ar member's (name, size), or None at the end of the archive.
fn ar_header(f: &mut File) -> std::result::Result<Option<(String, u64)>, &'static str> {
    let mut h = [0u8; 60];
    let mut got = 0;
    while got < 60 {
        match f.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("an ar member header is cut short"),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err("cannot read an ar member header"),
        }
    }
    if &h[58..60] != b"`\n" {
        return Err("an ar member header is malformed");
    }
    let name = std::str::from_utf8(&h[..16])
        .map_err(|_| "an ar member name is not text")?
        .trim_end()
        .trim_end_matches('/')
        .to_string();
    let size = std::str::from_utf8(&h[48..58])
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or("an ar member size is not a number")?;
    Ok(Some((name, size)))
}

/// The decompressor for a member's extension ("", ".gz", ".xz", ".zst").
fn decoder<'a>(ext: &str, r: impl Read + 'a) -> std::result::Result<Box<dyn Read + 'a>, String> {
    Ok(match ext {
        "" => Box::new(r),
        ".gz" => Box::new(flate2::read::MultiGzDecoder::new(r)),
        ".xz" => Box::new(xz2::read::XzDecoder::new_multi_decoder(r)),
        ".zst" => Box::new(zstd::stream::Decoder::new(r).map_err(|e| e.to_string())?),
        other => {
            return Err(format!(
                "compression {:?} is not supported (gzip, xz, zstd or none)",
                other.trim_start_matches('.')
            ));
        }
    })
}

/// Counts the compressed bytes read (for the inflation ratio).
struct Counted<'a, R> {
    inner: R,
    n: &'a Cell<u64>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n.set(self.n.get() + n as u64);
        Ok(n)
    }
}

/// A decompressed tar stream held to its bounds; the bound that trips is
/// kept in `tripped`, as the error to report.
struct Bounded<'a, R> {
    inner: R,
    read: u64,
    max: u64,
    limit: &'static str,
    /// Compressed bytes read, when the inflation ratio applies.
    compressed: Option<&'a Cell<u64>>,
    ratio: u64,
    headers: Headers,
    what: &'a str,
    tripped: &'a Cell<Option<Error>>,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        let over = if self.read > self.max {
            Some(Limits::exceeded(
                self.limit,
                self.what.to_string(),
                format!("it unpacks to more than {} bytes", self.max),
            ))
        } else if let Some(c) = self.compressed
            && self.read > Limits::RATIO_FLOOR
            && self.read / c.get().max(1) > self.ratio
        {
            Some(Limits::exceeded(
                "inflate_ratio",
                self.what.to_string(),
                format!(
                    "{} compressed bytes inflated to {}, more than {} times as many",
                    c.get(),
                    self.read,
                    self.ratio
                ),
            ))
        } else {
            self.headers.feed(&buf[..n]).err().map(|f| match f {
                crate::store::baseline::headers::Fault::TooLarge { .. } => {
                    Limits::exceeded("tar_header_bytes", self.what.to_string(), f.to_string())
                }
                crate::store::baseline::headers::Fault::Corrupt(why) => {
                    Error::corrupt(self.what, why)
                }
            })
        };
        match over {
            None => Ok(n),
            Some(e) => {
                let msg = e.to_string();
                self.tripped.set(Some(e));
                Err(io::Error::other(msg))
            }
        }
    }
}

struct Control {
    control: String,
    md5sums: Option<String>,
    conffiles: Option<String>,
    scripts: Vec<(String, Vec<u8>)>,
    other: Vec<(String, Vec<u8>)>,
}

fn read_control(r: Box<dyn Read + '_>, what: &str, limits: &Limits) -> Result<Control> {
    let tripped = Cell::new(None);
    let what_control = format!("control.tar of {what}");
    let bounded = Bounded {
        inner: r,
        read: 0,
        max: limits.index_bytes,
        limit: "index_bytes",
        compressed: None,
        ratio: limits.inflate_ratio,
        headers: Headers::new(limits.tar_header_bytes),
        what: &what_control,
        tripped: &tripped,
    };
    let mut out = Control {
        control: String::new(),
        md5sums: None,
        conffiles: None,
        scripts: Vec::new(),
        other: Vec::new(),
    };
    let mut control = None;
    let res = (|| -> Result<()> {
        let bad = |e: io::Error| Error::corrupt(&what_control, e.to_string());
        let mut ar = tar::Archive::new(bounded);
        for entry in ar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = entry.path_bytes().into_owned();
            let name = match normal(&raw) {
                Ok(None) => continue,
                Ok(Some(n)) => n,
                Err(why) => {
                    return Err(Error::corrupt(
                        &what_control,
                        format!("entry {:?}: {why}; refused", String::from_utf8_lossy(&raw)),
                    ));
                }
            };
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            if !kind.is_file() || name.contains('/') {
                return Err(Error::corrupt(
                    &what_control,
                    format!("entry {name:?} is not a plain file at the top; refused"),
                ));
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(bad)?;
            let text = || {
                String::from_utf8(bytes.clone())
                    .map_err(|_| Error::corrupt(&what_control, format!("{name} is not UTF-8 text")))
            };
            match name.as_str() {
                "control" => control = Some(text()?),
                "md5sums" => out.md5sums = Some(text()?),
                "conffiles" => out.conffiles = Some(text()?),
                n if SCRIPTS.contains(&n) => out.scripts.push((name, bytes)),
                _ => out.other.push((name, bytes)),
            }
        }
        Ok(())
    })();
    if let Some(e) = tripped.take() {
        return Err(e);
    }
    res?;
    out.control = control.ok_or_else(|| {
        Error::corrupt(&what_control, "it has no control file; refused".to_string())
    })?;
    Ok(out)
}

fn read_data(
    r: Box<dyn Read + '_>,
    compressed: &Cell<u64>,
    what: &str,
    staging: &Path,
    limits: &Limits,
) -> Result<Vec<Entry>> {
    let tripped = Cell::new(None);
    let what_data = format!("data.tar of {what}");
    let bounded = Bounded {
        inner: r,
        read: 0,
        max: limits.layer_bytes,
        limit: "layer_bytes",
        compressed: Some(compressed),
        ratio: limits.inflate_ratio,
        headers: Headers::new(limits.tar_header_bytes),
        what: &what_data,
        tripped: &tripped,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(staging)
        .ctx("create staging directory", staging)?;
    let root = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(staging)
        .ctx("open staging directory", staging)?;
    let mut w = Writer {
        root: root.into(),
        staging: staging.to_path_buf(),
        what: what_data.clone(),
        entry: String::new(),
        entries: Vec::new(),
        seen: HashMap::new(),
        buf: vec![0; 256 << 10],
    };
    let res = (|| -> Result<()> {
        let bad = |e: io::Error| Error::corrupt(&what_data, e.to_string());
        let mut ar = tar::Archive::new(bounded);
        let mut count = 0u64;
        for entry in ar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            count += 1;
            if count > limits.layer_entries {
                return Err(Limits::exceeded(
                    "layer_entries",
                    what_data.clone(),
                    format!("more than {} entries", limits.layer_entries),
                ));
            }
            w.entry = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            w.put(&mut entry)?;
        }
        // Whatever follows the end of the archive must still decompress
        // (a truncated or corrupt stream is refused), within the bounds.
        io::copy(&mut ar.into_inner(), &mut io::sink()).map_err(bad)?;
        Ok(())
    })();
    if let Some(e) = tripped.take() {
        return Err(e);
    }
    res?;
    Ok(w.entries)
}

/// Writes a data archive into staging, refusing anything that would reach
/// outside it.
struct Writer {
    root: OwnedFd,
    staging: PathBuf,
    what: String,
    /// The entry being written, for messages.
    entry: String,
    entries: Vec<Entry>,
    /// Index in `entries` of every path so far.
    seen: HashMap<String, usize>,
    buf: Vec<u8>,
}

impl Writer {
    fn put<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let Some(path) = normal(&raw).map_err(|why| self.refuse(why))? else {
            return Ok(()); // "./": the root itself
        };
        let h = entry.header();
        let what = self.what.clone();
        let bad = |e: io::Error| Error::corrupt(what.as_str(), e.to_string());
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::Hardlink,
            tar::EntryType::Char => return Err(self.refuse("a character device node")),
            tar::EntryType::Block => return Err(self.refuse("a block device node")),
            tar::EntryType::Fifo => return Err(self.refuse("a FIFO")),
            other => return Err(self.refuse(format!("entries of type {other:?} are not allowed"))),
        };
        let mode = h.mode().map_err(bad)? & 0o7777;
        let uid = u32::try_from(h.uid().map_err(bad)?).map_err(|_| self.refuse("uid too large"))?;
        let gid = u32::try_from(h.gid().map_err(bad)?).map_err(|_| self.refuse("gid too large"))?;
        if let Some(&i) = self.seen.get(&path) {
            // A directory listed again updates its attributes; anything else twice is refused.
            if kind == Kind::Dir && self.entries[i].kind == Kind::Dir {
                let e = &mut self.entries[i];
                (e.mode, e.uid, e.gid) = (mode, uid, gid);
                return Ok(());
            }
            return Err(self.refuse("the same path twice in one package"));
        }
        let (dir, name) = self.parent(&path)?;
        let disk = self.staging.join(&path);
        let mut e = Entry {
            path: path.clone(),
            kind,
            mode,
            uid,
            gid,
            size: 0,
            link: None,
            source: None,
            sha256: None,
            sha1: None,
            xattrs: Vec::new(),
        };
        match kind {
            Kind::Dir => {
                mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
                    .map_err(io::Error::from)
                    .ctx("create directory", &disk)?;
            }
            Kind::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.refuse("a symlink without a target"))?;
                if target.is_empty() || target.contains(&0) {
                    return Err(self.refuse("a symlink with an empty or NUL target"));
                }
                let target = std::str::from_utf8(&target)
                    .map_err(|_| self.refuse("a symlink target that is not UTF-8"))?
                    .to_string();
                symlinkat(target.as_str(), Some(dir.as_raw_fd()), name)
                    .map_err(io::Error::from)
                    .ctx("create symlink", &disk)?;
                e.size = 0;
                e.link = Some(target);
            }
            Kind::Hardlink => {
                let raw = entry.link_name_bytes().unwrap_or_default();
                let target = normal(&raw)
                    .map_err(|why| self.refuse(format!("hard link target: {why}")))?
                    .ok_or_else(|| self.refuse("a hard link to the root"))?;
                let i = *self.seen.get(&target).ok_or_else(|| {
                    self.refuse(format!(
                        "a hard link to {target}, which is not earlier in the package"
                    ))
                })?;
                let (i, target) = match self.entries[i].kind {
                    Kind::File => (i, target),
                    Kind::Hardlink => {
                        let t = self.entries[i].link.clone().unwrap_or_default();
                        (self.seen[&t], t)
                    }
                    _ => {
                        return Err(self.refuse(format!(
                            "a hard link to {target}, which is not a regular file"
                        )));
                    }
                };
                let (tdir, tname) = self.parent(&target)?;
                linkat(
                    Some(tdir.as_raw_fd()),
                    tname,
                    Some(dir.as_raw_fd()),
                    name,
                    AtFlags::empty(),
                )
                .map_err(io::Error::from)
                .ctx("create hard link", &disk)?;
                // A new link changes the inode's ctime: the target's recorded stat follows.
                let tdisk = self.staging.join(&target);
                let meta = fs::symlink_metadata(&tdisk).ctx("inspect", &tdisk)?;
                if let Some(Source::Disk { stat, .. }) = &mut self.entries[i].source {
                    *stat = StatKey::of(&meta);
                }
                e.link = Some(target);
            }
            Kind::File => {
                let flags = OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                let mut file = File::from(
                    sys::openat(dir.as_fd(), name, flags, Mode::from_bits_truncate(0o644))
                        .ctx("create file", &disk)?,
                );
                let mut sha256 = Hasher::new();
                let mut sha1 = sha1::Sha1::new();
                loop {
                    let n = entry.read(&mut self.buf).map_err(bad)?;
                    if n == 0 {
                        break;
                    }
                    sha256.update(&self.buf[..n]);
                    sha1.update(&self.buf[..n]);
                    file.write_all(&self.buf[..n]).ctx("write", &disk)?;
                }
                let meta = file.metadata().ctx("inspect", &disk)?;
                e.size = sha256.len();
                e.sha256 = Some(sha256.finish());
                let sha1: Sha1 = sha1.finalize().into();
                e.sha1 = Some(sha1);
                e.source = Some(Source::Disk {
                    path: disk,
                    stat: StatKey::of(&meta),
                });
            }
        }
        self.seen.insert(path, self.entries.len());
        self.entries.push(e);
        Ok(())
    }

    /// Open the directory holding `path` and return it with the last name.
    /// Directories the archive implies but has not listed are made (and
    /// recorded); a symlink or a non-directory on the way is refused.
    fn parent<'p>(&mut self, path: &'p str) -> Result<(OwnedFd, &'p str)> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let mut fd = self
            .root
            .try_clone()
            .ctx("duplicate descriptor", &self.staging)?;
        let mut walked = String::new();
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        for c in dir.split('/').filter(|c| !c.is_empty()) {
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(c);
            match self.seen.get(&walked).map(|&i| self.entries[i].kind) {
                Some(Kind::Dir) => {}
                Some(kind) => {
                    let kind = match kind {
                        Kind::Symlink => "symlink",
                        _ => "file",
                    };
                    return Err(self.refuse(format!(
                        "{walked} (on the way) is a {kind}; refusing to go through it"
                    )));
                }
                None => {
                    self.implied_dir(fd.as_fd(), c, &walked)?;
                }
            }
            fd = sys::openat(fd.as_fd(), c, flags, Mode::empty()).map_err(|e| {
                if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
                    self.refuse(format!("{walked} (on the way) is not a directory"))
                } else {
                    Error::io("open directory", self.staging.join(&walked), e)
                }
            })?;
        }
        Ok((fd, name))
    }

    /// A directory the archive implies (`a/b/c` listed without `a/b`).
    fn implied_dir(&mut self, dir: BorrowedFd<'_>, name: &str, path: &str) -> Result<()> {
        let disk = self.staging.join(path);
        mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
            .map_err(io::Error::from)
            .ctx("create directory", &disk)?;
        self.seen.insert(path.to_string(), self.entries.len());
        self.entries.push(Entry::dir(path, 0o755, (0, 0)));
        Ok(())
    }

    fn refuse(&self, why: impl std::fmt::Display) -> Error {
        Error::corrupt(
            &self.what,
            format!("entry {:?}: {why}; refused", self.entry),
        )
    }
}

/// A member's name as a path relative to the root ("./usr/bin/" →
/// "usr/bin"), `None` for the root itself, or why it is refused.
fn normal(raw: &[u8]) -> std::result::Result<Option<String>, &'static str> {
    if raw.is_empty() {
        return Err("empty name");
    }
    if raw.contains(&0) {
        return Err("name contains NUL");
    }
    let name = std::str::from_utf8(raw).map_err(|_| "name is not UTF-8")?;
    let rel = name.strip_prefix("./").unwrap_or(name);
    if rel.starts_with('/') {
        return Err("absolute name");
    }
    let rel = rel.trim_end_matches('/');
    if rel.is_empty() || rel == "." {
        return Ok(None);
    }
    for c in rel.split('/') {
        match c {
            ".." => return Err("path escapes the root (..)"),
            "" | "." => return Err("name has an empty or '.' component"),
            _ => {}
        }
    }
    Ok(Some(rel.to_string()))
}

#[cfg(test)]
mod tests;

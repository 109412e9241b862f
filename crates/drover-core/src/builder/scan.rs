//! Turning a layer definition into the sorted list of entries its tar holds.
//!
//! The walk never follows a symlink (a link is recorded as a link), refuses
//! anything that resolves outside the build context, and refuses sockets,
//! fifos and device nodes by path. Permission bits are normalized the way git
//! does it — 0755 when any execute bit is set, else 0644; directories 0755 —
//! so a checkout made under another umask builds the same image. The special
//! bits (setuid, setgid, sticky), which no umask touches, are kept, and a
//! sticky directory is made 1777: it is a shared scratch space like /tmp.
//! `mode` and `dir_mode` override all of this. Owners are 0:0 unless `owner`
//! says otherwise.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use globset::{GlobSet, GlobSetBuilder};
use rayon::prelude::*;

use super::def::{CopyLayer, FileLayer};
use super::sbom::{Sha1, sha1_of};
use super::tar::Kind;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::store::baseline::{FileKind, FileRecord};

/// The identity of a file's content as far as metadata can tell; see
/// `statcache` for why these fields are enough to trust a cached hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl StatKey {
    pub fn of(m: &fs::Metadata) -> Self {
        StatKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        }
    }
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    Disk { path: PathBuf, stat: StatKey },
    Inline(Arc<[u8]>),
}

/// One entry of a layer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative path inside the image, `/`-separated, no leading or trailing `/`.
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Symlink target, or the path of the entry a hard link points at.
    pub link: Option<String>,
    pub source: Option<Source>,
    /// Content digest of a regular file (filled in before tarring).
    pub sha256: Option<Digest>,
    /// SHA-1 of the content, for the SBOM: taken from the same bytes as
    /// `sha256` whenever this build hashes the content (`None` when the
    /// digest came from the content-hash cache instead).
    pub sha1: Option<Sha1>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// A directory at `path` (relative) with this mode and owner.
    pub fn dir(path: impl Into<String>, mode: u32, (uid, gid): (u32, u32)) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Dir,
            mode,
            uid,
            gid,
            size: 0,
            link: None,
            source: None,
            sha256: None,
            sha1: None,
            xattrs: Vec::new(),
        }
    }

    /// A regular file at `path` (relative) holding `bytes`, its digests known.
    pub fn inline(
        path: impl Into<String>,
        bytes: impl Into<Arc<[u8]>>,
        mode: u32,
        (uid, gid): (u32, u32),
    ) -> Entry {
        let bytes: Arc<[u8]> = bytes.into();
        Entry {
            path: path.into(),
            kind: Kind::File,
            mode,
            uid,
            gid,
            size: bytes.len() as u64,
            link: None,
            sha256: Some(Digest::of(&bytes)),
            sha1: Some(sha1_of(&bytes)),
            source: Some(Source::Inline(bytes)),
            xattrs: Vec::new(),
        }
    }

    /// This entry as a baseline record.
    pub fn record(&self) -> FileRecord {
        FileRecord {
            path: format!("/{}", self.path),
            kind: match self.kind {
                Kind::File => FileKind::File,
                Kind::Dir => FileKind::Dir,
                Kind::Symlink => FileKind::Symlink,
                Kind::Hardlink => FileKind::Hardlink,
            },
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            sha256: self.sha256,
            link: self.link.as_ref().map(|l| {
                if self.kind == Kind::Hardlink {
                    format!("/{l}")
                } else {
                    l.clone()
                }
            }),
            // A hard link's attributes are its target's (one inode).
            xattrs: if self.kind == Kind::Hardlink {
                Default::default()
            } else {
                crate::store::baseline::xattr_map(
                    self.xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                )
            },
        }
    }
}

/// Entries for a `copy` layer, sorted by path.
pub fn copy_layer(context: &Path, layer: &CopyLayer) -> Result<Vec<Entry>> {
    let src = resolve_in_context(context, &layer.src)?;
    let meta = fs::symlink_metadata(&src).ctx("read copy source", &src)?;
    let include = globs(&layer.include, &src)?;
    let exclude = globs(&layer.exclude, &src)?;
    let (uid, gid) = layer.owner.unwrap_or((0, 0));
    let dest = layer.dest.trim_matches('/').to_string();
    let mut entries = parents_of(&dest);
    let walker = Walker {
        layer,
        // `**` (the default) keeps everything, including empty directories.
        include: if layer.include.iter().all(|g| g == "**") {
            None
        } else {
            Some(include)
        },
        exclude,
        uid,
        gid,
    };
    let mut out = Vec::new();
    if meta.is_dir() {
        if !dest.is_empty() {
            out.push(walker.entry(&src, dest.clone(), &meta)?);
        }
        out.append(&mut walker.walk_dir(&src, "", &dest)?);
    } else {
        // A single file copied to `dest` (which names the file itself).
        if dest.is_empty() {
            return Err(Error::input(
                &src,
                "a single file cannot be copied to \"/\"; name the destination file",
            ));
        }
        entries.pop(); // `dest` is the file, not a directory
        out.push(walker.entry(&src, dest.clone(), &meta)?);
    }
    if let Some(include) = &walker.include {
        prune_empty_dirs(&mut out, &dest, include);
    }
    entries.append(&mut out);
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries.dedup_by(|later, earlier| later.path == earlier.path);
    assign_hardlinks(&mut entries);
    Ok(entries)
}

/// Entries for an inline `file` layer.
pub fn file_layer(layer: &FileLayer) -> Vec<Entry> {
    let path = layer.dest.trim_matches('/').to_string();
    let mut entries = parents_of(&path);
    entries.pop();
    entries.push(Entry::inline(
        path,
        layer.content.as_bytes(),
        layer.mode,
        layer.owner,
    ));
    entries
}

/// `a/b/c` → directory entries `a`, `a/b`, `a/b/c` (root-owned, 0755), the
/// parents an image needs for a destination to exist.
fn parents_of(path: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        out.push(Entry::dir(acc.clone(), 0o755, (0, 0)));
    }
    out
}

/// Resolve `src` (relative, as written in the definition) inside `context`,
/// refusing anything — `..`, an absolute path, a symlink on the way — that
/// ends up outside it.
pub fn resolve_in_context(context: &Path, src: &str) -> Result<PathBuf> {
    let rel = Path::new(src);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::input(
            src,
            "copy source must be a relative path inside the build context",
        ));
    }
    let ctx = context
        .canonicalize()
        .ctx("resolve build context", context)?;
    let joined = ctx.join(rel);
    let real = joined.canonicalize().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::input(&joined, "copy source does not exist")
        } else {
            Error::Io {
                op: "resolve copy source",
                path: joined.clone(),
                source: e,
            }
        }
    })?;
    if !real.starts_with(&ctx) {
        return Err(Error::input(
            &joined,
            format!(
                "copy source resolves to {}, outside the build context {}",
                real.display(),
                ctx.display()
            ),
        ));
    }
    Ok(real)
}

fn globs(patterns: &[String], src: &Path) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = super::def::compile_glob(p)
            .map_err(|e| Error::input(src, format!("bad glob {p:?}: {e}")))?;
        b.add(g);
    }
    b.build().map_err(|e| Error::input(src, e.to_string()))
}

struct Walker<'a> {
    layer: &'a CopyLayer,
    include: Option<GlobSet>,
    exclude: GlobSet,
    uid: u32,
    gid: u32,
}

impl Walker<'_> {
    /// Entries below `dir`, in no particular order (the caller sorts).
    /// Directories are walked in parallel: a large tree is mostly `lstat`
    /// calls, which overlap well.
    fn walk_dir(&self, dir: &Path, rel: &str, dest: &str) -> Result<Vec<Entry>> {
        let names: Vec<_> = fs::read_dir(dir)
            .ctx("read directory", dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .ctx("read directory", dir)?;
        let parts: Vec<Vec<Entry>> = names
            .par_iter()
            .map(|name| -> Result<Vec<Entry>> {
                let Some(name_str) = name.to_str() else {
                    return Err(Error::input(dir.join(name), "file name is not valid UTF-8"));
                };
                let path = dir.join(name);
                let child_rel = if rel.is_empty() {
                    name_str.to_string()
                } else {
                    format!("{rel}/{name_str}")
                };
                if self.exclude.is_match(&child_rel) {
                    return Ok(Vec::new());
                }
                let meta = fs::symlink_metadata(&path).ctx("stat", &path)?;
                let target = if dest.is_empty() {
                    child_rel.clone()
                } else {
                    format!("{dest}/{child_rel}")
                };
                if meta.is_dir() {
                    let mut out = vec![self.entry(&path, target, &meta)?];
                    out.append(&mut self.walk_dir(&path, &child_rel, dest)?);
                    Ok(out)
                } else if self.include.as_ref().is_none_or(|g| g.is_match(&child_rel)) {
                    Ok(vec![self.entry(&path, target, &meta)?])
                } else {
                    Ok(Vec::new())
                }
            })
            .collect::<Result<_>>()?;
        Ok(parts.into_iter().flatten().collect())
    }

    fn entry(&self, path: &Path, target: String, meta: &fs::Metadata) -> Result<Entry> {
        let ft = meta.file_type();
        let perm = meta.mode() & 0o7777;
        let (kind, mode, size, link, source) = if ft.is_dir() {
            (
                Kind::Dir,
                self.layer.dir_mode.unwrap_or(normalize_mode(perm, true)),
                0,
                None,
                None,
            )
        } else if ft.is_file() {
            let mode = self.layer.mode.unwrap_or(normalize_mode(perm, false));
            let src = Source::Disk {
                path: path.to_path_buf(),
                stat: StatKey::of(meta),
            };
            (Kind::File, mode, meta.size(), None, Some(src))
        } else if ft.is_symlink() {
            let t = fs::read_link(path).ctx("read symlink", path)?;
            let Some(t) = t.to_str() else {
                return Err(Error::input(path, "symlink target is not valid UTF-8"));
            };
            (Kind::Symlink, 0o777, 0, Some(t.to_string()), None)
        } else {
            let what = if ft.is_socket() {
                "a socket"
            } else if ft.is_fifo() {
                "a fifo"
            } else if ft.is_block_device() || ft.is_char_device() {
                "a device node"
            } else {
                "not a regular file, directory or symlink"
            };
            return Err(Error::input(
                path,
                format!("{what} cannot be copied into an image; exclude it"),
            ));
        };
        let xattrs = if self.layer.xattrs {
            read_xattrs(path)?
        } else {
            Vec::new()
        };
        Ok(Entry {
            path: target,
            kind,
            mode,
            uid: self.uid,
            gid: self.gid,
            size,
            link,
            source,
            sha256: None,
            sha1: None,
            xattrs,
        })
    }
}

/// The mode an image gets for a source file or directory with `perm`
/// (see the module header).
pub fn normalize_mode(perm: u32, dir: bool) -> u32 {
    let special = perm & 0o7000;
    let base = if dir && special & 0o1000 != 0 {
        0o777
    } else if dir || perm & 0o111 != 0 {
        0o755
    } else {
        0o644
    };
    base | special
}

/// With an include filter, keep only the directories an include glob
/// matches itself (even when empty: `include = ["data"]` on an empty
/// `data/` keeps it, so a volume can mount there) and those that lead to
/// something kept. `dest` is where the source lands in the image; globs
/// match paths relative to it.
fn prune_empty_dirs(entries: &mut Vec<Entry>, dest: &str, include: &GlobSet) {
    let relative = |path: &str| -> Option<String> {
        if dest.is_empty() {
            return Some(path.to_string());
        }
        path.strip_prefix(dest)?
            .strip_prefix('/')
            .map(str::to_string)
    };
    let matched = |e: &Entry| {
        e.kind == Kind::Dir && relative(&e.path).is_some_and(|rel| include.is_match(&rel))
    };
    let keep: std::collections::HashSet<String> = entries
        .iter()
        .filter(|e| e.kind != Kind::Dir || matched(e))
        .flat_map(|e| {
            let mut parents = vec![e.path.clone()];
            let mut p = e.path.as_str();
            while let Some((head, _)) = p.rsplit_once('/') {
                parents.push(head.to_string());
                p = head;
            }
            parents
        })
        .collect();
    entries.retain(|e| e.kind != Kind::Dir || e.path == dest || keep.contains(&e.path));
}

/// Files that share an inode become one file plus hard links to it; the
/// first path in sorted order is the file, so the result is deterministic.
pub(super) fn assign_hardlinks(entries: &mut [Entry]) {
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    for e in entries.iter_mut() {
        if let Some(Source::Disk { stat, .. }) = &e.source
            && e.kind == Kind::File
        {
            let key = (stat.dev, stat.ino);
            // Only files that had nlink > 1 can share an inode within one walk.
            if let Some(target) = first.get(&key) {
                e.kind = Kind::Hardlink;
                e.link = Some(target.clone());
                e.size = 0;
                // The link shares its target's inode, xattrs included.
                e.xattrs.clear();
            } else {
                first.insert(key, e.path.clone());
            }
        }
    }
}

fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    crate::sys::xattrs(path).ctx("read extended attributes", path)
}

#[cfg(test)]
mod tests {
    use super::{copy_layer, normalize_mode};
    use crate::builder::def::CopyLayer;

    fn copy(include: &[&str], dest: &str) -> CopyLayer {
        CopyLayer {
            src: "src".into(),
            dest: dest.into(),
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: vec![],
            mode: None,
            dir_mode: None,
            owner: None,
            xattrs: false,
        }
    }

    /// Regression (issue 17): `include = ["data"]` on an empty `data/`
    /// dropped it, and a volume could then not mount there.
    #[test]
    fn an_include_glob_keeps_the_empty_directories_it_matches() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for d in ["data", "var/lib/app", "var/cache", "empty/deep"] {
            std::fs::create_dir_all(src.join(d)).unwrap();
        }
        std::fs::write(src.join("app.conf"), "x").unwrap();
        std::fs::write(src.join("var/cache/keep.txt"), "x").unwrap();
        let paths = |include: &[&str], dest: &str| -> Vec<String> {
            copy_layer(dir.path(), &copy(include, dest))
                .unwrap()
                .into_iter()
                .map(|e| e.path)
                .collect()
        };
        assert_eq!(
            paths(&["data", "var/lib/app", "**/*.txt"], "/"),
            [
                "data",
                "var",
                "var/cache",
                "var/cache/keep.txt",
                "var/lib",
                "var/lib/app"
            ]
        );
        // Globs match relative to the source wherever it lands.
        assert_eq!(
            paths(&["data", "app.conf"], "/srv"),
            ["srv", "srv/app.conf", "srv/data"]
        );
        // Directories only on the way to kept files stay as they were:
        // `empty/deep` matches nothing and leads to nothing.
        assert!(
            !paths(&["*.conf"], "/")
                .iter()
                .any(|p| p.starts_with("empty"))
        );
        assert_eq!(paths(&["empty/*"], "/"), ["empty", "empty/deep"]);
    }

    #[test]
    fn umask_noise_is_normalized_and_special_bits_are_kept() {
        for (perm, dir, want) in [
            (0o600, false, 0o644),
            (0o666, false, 0o644),
            (0o700, false, 0o755),
            (0o4755, false, 0o4755),
            (0o4700, false, 0o4755),
            (0o700, true, 0o755),
            (0o777, true, 0o755),
            (0o1777, true, 0o1777),
            (0o1700, true, 0o1777),
            (0o2775, true, 0o2755),
        ] {
            assert_eq!(normalize_mode(perm, dir), want, "{perm:o} dir={dir}");
        }
    }
}

//! Installing a locked packages layer: the `.deb` files its lock names
//! (from the package cache, downloading what it lacks), each unpacked into
//! a staging directory in parallel, merged into one list of layer entries
//! with the dpkg database (`dpkg`) on top. No resolving here: the lock is
//! the whole truth.
//!
//! Merging follows dpkg where an image leaves it a choice:
//!
//! * a path below a directory the image so far holds as a symlink to a
//!   directory (`/lib` → `usr/lib` on a merged-/usr base) is installed
//!   through the link, as dpkg would, never replacing it with a directory;
//! * a directory listed by several packages is the first one's;
//! * a file or link two packages both ship is the later one's (in lock
//!   order, by name), and the build says so — Debian resolves that with
//!   `Replaces`, which a coherent set seldom needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::cache::PackageCache;
use super::deb::{self, Deb};
use super::dpkg::{self, Installed};
use super::fetch::{self, DebRequest};
use super::repo::Online;
use crate::builder::Progress;
use crate::builder::lock::LockedLayer;
use crate::builder::scan::Entry;
use crate::builder::tar::Kind;
use crate::error::{IoContext, Result};
use crate::store::Store;
use crate::store::baseline::{FileKind, Merger};

/// A locked layer installed into staging: its entries (sorted by path,
/// digests known) and what the dpkg database records of each package.
pub struct Unpacked {
    pub entries: Vec<Entry>,
    pub installed: Vec<Installed>,
    /// Things worth a warning that do not spoil the layer.
    pub warnings: Vec<String>,
}

/// Install `locked` into `staging` (an empty directory that must outlive
/// the entries), on top of the image so far (`image`) whose earlier
/// packages layers installed `earlier`.
pub fn install(
    store: &Store,
    locked: &LockedLayer,
    image: &Merger,
    earlier: &[Installed],
    staging: &Path,
    online: Online,
    progress: &dyn Progress,
) -> Result<Unpacked> {
    let cache = PackageCache::of(store)?;
    let limits = store.limits().clone();
    let requests: Vec<DebRequest> = locked
        .packages
        .iter()
        .map(|p| DebRequest {
            name: p.name.clone(),
            url: p.url.clone(),
            sha256: p.sha256,
            size: p.size,
        })
        .collect();
    let fetched = fetch::fetch_debs(&requests, &cache, &limits, online, progress)?;
    let total: u64 = locked.packages.iter().map(|p| p.size).sum();
    progress.phase("unpack", locked.packages.len() as u64, total);
    let debs: Vec<Deb> = locked
        .packages
        .par_iter()
        .zip(&fetched.paths)
        .enumerate()
        .map(|(i, (p, path))| {
            let dir = staging.join(i.to_string());
            let deb = deb::unpack(path, &format!("package {}", p.name), &dir, &limits)?;
            progress.advance(p.size);
            Ok(deb)
        })
        .collect::<Result<_>>()?;
    let mut warnings: Vec<String> = fetched
        .damaged
        .iter()
        .map(|name| {
            format!("package {name}: its cached copy did not match the lock's sha256; downloaded it again")
        })
        .collect();
    let mut merged: BTreeMap<String, (Entry, usize)> = BTreeMap::new();
    let mut installed = Vec::with_capacity(debs.len());
    for (i, (p, deb)) in locked.packages.iter().zip(debs).enumerate() {
        let mut files = vec!["/.".to_string()];
        for mut e in deb.entries {
            e.path = through_links(image, &e.path);
            if e.kind == Kind::Hardlink
                && let Some(l) = &e.link
            {
                e.link = Some(through_links(image, l));
            }
            files.push(format!("/{}", e.path));
            match merged.get(&e.path) {
                Some((old, _)) if old.kind == Kind::Dir && e.kind == Kind::Dir => continue,
                Some((_, by)) if *by != i => warnings.push(format!(
                    "/{} is shipped by both {} and {}; {}'s is installed",
                    e.path, locked.packages[*by].name, p.name, p.name
                )),
                _ => {}
            }
            merged.insert(e.path.clone(), (e, i));
        }
        installed.push(Installed {
            name: p.name.clone(),
            architecture: p.architecture.clone(),
            control: deb.control,
            md5sums: deb.md5sums,
            conffiles: deb.conffiles,
            // debconf loads a package's templates from beside its
            // scripts when they run (`scripts = true`).
            scripts: deb
                .scripts
                .into_iter()
                .chain(deb.other.into_iter().filter(|(n, _)| n == "templates"))
                .collect(),
            files,
        });
    }
    let mut entries: Vec<Entry> = merged.into_values().map(|(e, _)| e).collect();
    for e in dpkg::database(earlier, &installed) {
        if !entries.iter().any(|x| x.path == e.path) {
            entries.push(e);
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Unpacked {
        entries,
        installed,
        warnings,
    })
}

/// `path` (relative) with each leading component that the image so far
/// holds as a symlink to a directory replaced by where it points, as dpkg
/// installs through `/lib` → `usr/lib`. Paths that do not go through such
/// a link come back unchanged.
fn through_links(image: &Merger, path: &str) -> String {
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    let mut hops = 0;
    let mut i = 0;
    // The last component is the entry itself: never followed.
    while i + 1 < parts.len() {
        let prefix = format!("/{}", parts[..=i].join("/"));
        let Some(rec) = image.get(&prefix) else {
            i += 1;
            continue;
        };
        if rec.kind != FileKind::Symlink || hops >= 40 {
            i += 1;
            continue;
        }
        let Some(target) = rec.link.as_deref() else {
            i += 1;
            continue;
        };
        let base: Vec<String> = if target.starts_with('/') {
            Vec::new()
        } else {
            parts[..i].to_vec()
        };
        let mut resolved = base;
        for c in target.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    resolved.pop();
                }
                c => resolved.push(c.to_string()),
            }
        }
        let candidate = format!("/{}", resolved.join("/"));
        if resolved.is_empty()
            || image
                .get(&candidate)
                .is_none_or(|r| !matches!(r.kind, FileKind::Dir | FileKind::Symlink))
        {
            // A dangling link or one to a file: leave the path alone.
            i += 1;
            continue;
        }
        hops += 1;
        let rest = parts.split_off(i + 1);
        parts = resolved;
        parts.extend(rest);
        // Look again from the start: the target may itself go through a link.
        i = 0;
    }
    parts.join("/")
}

/// A directory under the store's tmp that holds a build's unpacked
/// packages and is removed with it.
pub struct Staging(PathBuf);

impl Staging {
    pub fn new(store: &Store) -> Result<Staging> {
        let dir = store.tmp_dir().join(format!(
            "packages-{}-{}",
            std::process::id(),
            crate::clock::now_rfc3339().replace([':', '.'], "")
        ));
        std::fs::create_dir_all(&dir).ctx("create staging directory", &dir)?;
        Ok(Staging(dir))
    }

    /// A fresh subdirectory for layer `index`.
    pub fn layer(&self, index: usize) -> Result<PathBuf> {
        let dir = self.0.join(index.to_string());
        std::fs::create_dir_all(&dir).ctx("create staging directory", &dir)?;
        Ok(dir)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::baseline::FileRecord;

    fn rec(path: &str, kind: FileKind, link: Option<&str>) -> FileRecord {
        FileRecord {
            path: path.into(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            sha256: None,
            link: link.map(str::to_string),
            xattrs: Default::default(),
        }
    }

    #[test]
    fn paths_go_through_the_images_directory_links_as_dpkg_installs_them() {
        let mut image = Merger::default();
        image.put(rec("/usr", FileKind::Dir, None));
        image.put(rec("/usr/lib", FileKind::Dir, None));
        image.put(rec("/lib", FileKind::Symlink, Some("usr/lib")));
        image.put(rec("/lib64", FileKind::Symlink, Some("/usr/lib64")));
        image.put(rec("/bin", FileKind::Symlink, Some("usr/bin")));
        image.put(rec("/etc", FileKind::Dir, None));
        image.put(rec("/etc/alt", FileKind::Symlink, Some("../lib")));
        assert_eq!(
            through_links(&image, "lib/x86_64-linux-gnu/libc.so.6"),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        // A link to something the image does not hold is left alone.
        assert_eq!(through_links(&image, "lib64/ld.so"), "lib64/ld.so");
        assert_eq!(through_links(&image, "bin/sh"), "bin/sh");
        // The entry itself is never followed; chains are.
        assert_eq!(through_links(&image, "lib"), "lib");
        assert_eq!(through_links(&image, "etc/alt/x"), "usr/lib/x");
        assert_eq!(through_links(&image, "usr/share/doc"), "usr/share/doc");
    }

    #[test]
    fn link_loops_end() {
        let mut image = Merger::default();
        image.put(rec("/a", FileKind::Symlink, Some("b")));
        image.put(rec("/b", FileKind::Symlink, Some("a")));
        assert_eq!(
            through_links(&image, "a/x").split('/').next_back(),
            Some("x")
        );
    }
}

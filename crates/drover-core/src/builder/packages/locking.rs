//! `drover lock`: resolving each packages layer of a definition against
//! its repositories' signed indexes and writing the result as a
//! [`Lock`]. The only place that resolves; a build reads the lock.
//!
//! Resolving is conservative, as `cargo update` is: a layer whose request
//! did not change keeps its lock entry untouched; a layer whose request
//! changed (or `--update PKG…` names some of its packages) is resolved
//! again with every other package it locked kept at its locked version
//! whenever the indexes still have it; `--update` alone resolves
//! everything afresh.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rayon::prelude::*;

use super::Repository;
use super::cache::PackageCache;
use super::index::{self, Package};
use super::repo::{self, IndexOptions, Online};
use super::resolve::{self, Request as Resolve, Requirement, Universe};
use super::sources;
use crate::builder::def::{DEBIAN_KEYRING, ImageDef, LayerDef, PackagesLayer};
use crate::builder::lock::{Lock, LockedLayer, LockedPackage, LockedRepository, Request, VERSION};
use crate::error::{Error, Result};
use crate::store::Store;

/// What `drover lock` refreshes beyond what the definition changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Update {
    /// Nothing: unchanged layers keep their entries.
    #[default]
    Nothing,
    /// Every package of every layer, afresh.
    All,
    /// These packages (and what they newly need), wherever they are locked.
    Only(Vec<String>),
}

/// The outcome of locking a definition.
#[derive(Debug, Clone)]
pub struct Locked {
    pub lock: Lock,
    /// Per layer: what changed against the previous lock, for people
    /// (`+ curl 7.88.1-10`, `~ libc6 2.36-9 → 2.36-9+deb12u10`, `- x`).
    pub changes: Vec<(usize, Vec<String>)>,
    /// Provider choices the resolver made, and indexes served offline.
    pub notes: Vec<String>,
}

/// Lock `def`'s packages layers, building for `host_arch`; `previous` is
/// the lock on disk, if any.
pub fn lock(
    store: &Store,
    def: &ImageDef,
    host_arch: &str,
    previous: Option<&Lock>,
    update: &Update,
    online: Online,
) -> Result<Locked> {
    let mut layers = Vec::new();
    let mut changes = Vec::new();
    let mut notes = Vec::new();
    for (i, layer) in def.layers.iter().enumerate() {
        let LayerDef::Packages(p) = layer else {
            continue;
        };
        let request = Request::of(p, host_arch);
        let before = previous.and_then(|l| l.layers.iter().find(|l| l.index == i));
        let unchanged = before.filter(|b| b.input == request.input());
        if let (Some(b), Update::Nothing) = (unchanged, update) {
            layers.push(b.clone());
            continue;
        }
        let keep: BTreeMap<String, String> = match (before, update) {
            (_, Update::All) | (None, _) => BTreeMap::new(),
            (Some(b), Update::Only(names)) => b
                .packages
                .iter()
                .filter(|p| !names.contains(&p.name))
                .map(|p| (p.name.clone(), p.version.clone()))
                .collect(),
            (Some(b), Update::Nothing) => b
                .packages
                .iter()
                .map(|p| (p.name.clone(), p.version.clone()))
                .collect(),
        };
        if let (Some(b), Update::Only(names)) = (unchanged, update)
            && !names
                .iter()
                .any(|n| b.packages.iter().any(|p| &p.name == n))
        {
            layers.push(b.clone());
            continue;
        }
        let (locked, layer_notes) = resolve_layer(store, def, i, p, &request, &keep, online)?;
        changes.push((i, differences(before, &locked)));
        notes.extend(layer_notes);
        layers.push(locked);
    }
    if let Update::Only(names) = update {
        let known: BTreeSet<&str> = layers
            .iter()
            .flat_map(|l| l.packages.iter().map(|p| p.name.as_str()))
            .collect();
        let unknown: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !known.contains(n))
            .collect();
        if !unknown.is_empty() {
            return Err(Error::Usage(format!(
                "--update {}: not in the lock of {} (name packages the lock lists)",
                unknown.join(", "),
                def.file.display()
            )));
        }
    }
    Ok(Locked {
        lock: Lock {
            version: VERSION,
            layers,
        },
        changes,
        notes,
    })
}

/// The repositories a layer reads: the ones it names, or the machine's apt
/// sources for its suite.
pub fn repositories(p: &PackagesLayer, arch: &str) -> Result<Vec<Repository>> {
    if p.repositories.is_empty() {
        let machine = sources::machine_sources(std::path::Path::new("/"))?;
        let mut repos = sources::repositories_for(&machine, &p.suite, arch)?;
        for r in &mut repos {
            r.components = p.components.clone();
        }
        return Ok(repos);
    }
    Ok(p.repositories
        .iter()
        .map(|r| Repository {
            url: r.url.clone(),
            suite: p.suite.clone(),
            components: p.components.clone(),
            keyring: PathBuf::from(r.keyring.as_deref().unwrap_or(DEBIAN_KEYRING)),
        })
        .collect())
}

fn resolve_layer(
    store: &Store,
    def: &ImageDef,
    i: usize,
    p: &PackagesLayer,
    request: &Request,
    keep: &BTreeMap<String, String>,
    online: Online,
) -> Result<(LockedLayer, Vec<String>)> {
    let at = |e: String| Error::input(&def.file, format!("layer[{i}].packages: {e}"));
    let repos = repositories(p, &request.arch)?;
    let cache = PackageCache::of(store)?;
    let limits = store.limits().clone();
    let opts = IndexOptions {
        online,
        ..Default::default()
    };
    let fetched: Vec<repo::Indexes> = repos
        .par_iter()
        .map(|r| repo::fetch_indexes(r, &request.arch, &cache, &limits, &opts))
        .collect::<Result<_>>()?;
    let mut notes: Vec<String> = fetched
        .iter()
        .filter_map(|x| {
            x.offline.as_ref().map(|why| {
                format!(
                    "{} {}: read from the cache ({why})",
                    x.repo.url, x.repo.suite
                )
            })
        })
        .collect();
    let mut universe: Vec<Package> = Vec::new();
    for (n, x) in fetched.iter().enumerate() {
        let parsed: Vec<Vec<Package>> = x
            .packages
            .par_iter()
            .map(|(_, text)| index::parse_packages(text, n, &request.arch))
            .collect::<Result<_>>()?;
        universe.extend(parsed.into_iter().flatten());
    }
    prefer_locked(&mut universe, keep);
    let requirements = p
        .packages
        .iter()
        .map(|s| Requirement::parse(s).map_err(|e| at(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let u = Universe::new(&universe);
    let resolution = resolve::resolve(
        &u,
        &Resolve {
            packages: requirements,
            arch: request.arch.clone(),
            recommends: p.recommends,
            essential: p.essential,
        },
    )
    .map_err(|e| at(e.to_string()))?;
    notes.extend(
        resolution
            .choices
            .iter()
            .map(|c| format!("layer[{i}]: {c}")),
    );
    let mut packages: Vec<LockedPackage> = resolution
        .packages
        .iter()
        .map(|r| {
            let pkg = &universe[r.package];
            LockedPackage {
                name: pkg.name.clone(),
                version: pkg.version.to_string(),
                architecture: pkg.architecture.clone(),
                source: pkg.source.clone(),
                url: format!("{}/{}", fetched[pkg.repo].repo.url, pkg.filename),
                sha256: pkg.sha256,
                size: pkg.size,
            }
        })
        .collect();
    packages.sort();
    let repositories = fetched
        .iter()
        .map(|x| LockedRepository {
            url: x.repo.url.clone(),
            suite: x.repo.suite.clone(),
            keyring: x.repo.keyring.display().to_string(),
            date: x.release_date.clone(),
            inrelease: x.inrelease,
            origin: x.origin.clone(),
            release: x.version.clone(),
        })
        .collect();
    Ok((
        LockedLayer {
            index: i,
            input: request.input(),
            request: request.clone(),
            repositories,
            packages,
        },
        notes,
    ))
}

/// Keep what the lock had wherever the indexes still offer it: every other
/// version of a package locked at a version still on offer is dropped, so
/// the resolver can only pick the locked one; a locked version no longer
/// offered leaves the package free.
fn prefer_locked(universe: &mut Vec<Package>, keep: &BTreeMap<String, String>) {
    let offered: BTreeSet<(String, String)> = universe
        .iter()
        .filter(|pkg| keep.contains_key(&pkg.name))
        .map(|pkg| (pkg.name.clone(), pkg.version.to_string()))
        .collect();
    universe.retain(|pkg| {
        keep.get(&pkg.name).is_none_or(|v| {
            pkg.version.to_string() == *v || !offered.contains(&(pkg.name.clone(), v.clone()))
        })
    });
}

/// What changed in a layer's packages, for people.
fn differences(before: Option<&LockedLayer>, after: &LockedLayer) -> Vec<String> {
    let old: BTreeMap<&str, &str> = before
        .map(|b| {
            b.packages
                .iter()
                .map(|p| (p.name.as_str(), p.version.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let new: BTreeMap<&str, &str> = after
        .packages
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    let mut out = Vec::new();
    for (name, v) in &new {
        match old.get(name) {
            None => out.push(format!("+ {name} {v}")),
            Some(o) if o != v => out.push(format!("~ {name} {o} → {v}")),
            _ => {}
        }
    }
    for (name, v) in &old {
        if !new.contains_key(name) {
            out.push(format!("- {name} {v}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "Package: libc6\nVersion: 2.36-9\nArchitecture: amd64\nFilename: pool/l/libc6_2.36-9.deb\nSize: 1\nSHA256: 0000000000000000000000000000000000000000000000000000000000000001\n\n\
Package: libc6\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\nFilename: pool/l/libc6_u4.deb\nSize: 1\nSHA256: 0000000000000000000000000000000000000000000000000000000000000002\n\n\
Package: app\nVersion: 1.0\nArchitecture: amd64\nDepends: libc6 (>= 2.36)\nFilename: pool/a/app.deb\nSize: 1\nSHA256: 0000000000000000000000000000000000000000000000000000000000000003\n\n\
Package: zlib1g\nVersion: 1:1.3\nArchitecture: amd64\nFilename: pool/z/z.deb\nSize: 1\nSHA256: 0000000000000000000000000000000000000000000000000000000000000004\n";

    fn chosen(keep: &[(&str, &str)]) -> Vec<String> {
        let mut universe = index::parse_packages(INDEX, 0, "amd64").unwrap();
        let keep = keep
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        prefer_locked(&mut universe, &keep);
        let u = Universe::new(&universe);
        let r = resolve::resolve(
            &u,
            &Resolve {
                packages: vec![Requirement::parse("app").unwrap()],
                arch: "amd64".into(),
                recommends: false,
                essential: false,
            },
        )
        .unwrap();
        r.packages
            .iter()
            .map(|p| universe[p.package].label())
            .collect()
    }

    #[test]
    fn locked_versions_stay_while_the_indexes_offer_them() {
        // Fresh: the newest.
        assert_eq!(chosen(&[]), ["app 1.0", "libc6 2.36-9+deb12u4"]);
        // Locked at the older one, still offered: kept.
        assert_eq!(chosen(&[("libc6", "2.36-9")]), ["app 1.0", "libc6 2.36-9"]);
        // Locked at a version the indexes dropped: free again.
        assert_eq!(
            chosen(&[("libc6", "2.35-1")]),
            ["app 1.0", "libc6 2.36-9+deb12u4"]
        );
    }

    #[test]
    fn changes_read_as_added_changed_removed() {
        let pkg = |n: &str, v: &str| LockedPackage {
            name: n.into(),
            version: v.into(),
            architecture: "amd64".into(),
            source: n.into(),
            url: String::new(),
            sha256: crate::digest::Digest::of(n.as_bytes()),
            size: 1,
        };
        let layer = |packages| LockedLayer {
            index: 0,
            input: crate::digest::Digest::of(b""),
            request: Request {
                packages: vec![],
                suite: "bookworm".into(),
                components: vec![],
                arch: "amd64".into(),
                repositories: vec![],
                recommends: false,
                essential: false,
            },
            repositories: vec![],
            packages,
        };
        let before = layer(vec![pkg("a", "1"), pkg("b", "1")]);
        let after = layer(vec![pkg("b", "2"), pkg("c", "1")]);
        assert_eq!(
            differences(Some(&before), &after),
            ["~ b 1 → 2", "+ c 1", "- a 1"]
        );
    }
}

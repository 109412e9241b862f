//! `drover.lock`: the exact Debian packages each `packages` layer of a
//! definition resolved to — name, version, architecture, URL, sha256, size —
//! and the signed repository indexes they were read from (their `Release`
//! dates and `InRelease` digests).
//!
//! A lock always locks. When one exists, a build installs exactly what it
//! lists and never resolves again; a definition whose packages no longer
//! match it fails, naming what differs. The lock is tied to the *meaning* of
//! each packages section ([`Request`]: the set of requested packages, the
//! suite, components, architecture, repositories and the `recommends` and
//! `essential` switches), not to its bytes, so comments, key order, CRLF and
//! the order of the package list do not matter. `scripts` changes how the
//! layer is built, not what it holds, so it is not part of the request.
//!
//! The file is TOML, written in one canonical form (sorted, no host data),
//! so two machines that resolve the same request against the same indexes
//! write the same bytes.
//!
//! ```toml
//! # drover.lock: written by `drover lock`; a build installs exactly this.
//! version = 1
//!
//! [[layer]]
//! index = 0
//! input = "sha256:…"          # digest of the request below
//!
//! [layer.request]              # the request, for people and for diffs
//! packages = ["nginx-light"]
//! suite = "bookworm"
//! …
//! [[layer.repository]]
//! url = "http://deb.debian.org/debian"
//! suite = "bookworm"
//! date = "Sat, 11 Jul 2026 10:16:37 UTC"
//! inrelease = "sha256:…"
//!
//! [[layer.package]]
//! name = "nginx-light"
//! version = "1.22.1-9+deb12u2"
//! architecture = "amd64"
//! source = "nginx"
//! url = "http://deb.debian.org/debian/pool/main/n/nginx/nginx-light_…_amd64.deb"
//! sha256 = "sha256:…"
//! size = 123456
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::def::{ImageDef, LayerDef, PackagesLayer};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

/// The lock format this drover writes and reads.
pub const VERSION: u32 = 1;

/// The lock file of a definition: `drover.lock` beside `drover.toml`, or
/// `<stem>.lock` beside any other definition file name.
pub fn path_for(definition: &Path) -> PathBuf {
    let name = match definition.file_stem().and_then(|s| s.to_str()) {
        Some(stem) if definition.file_name().and_then(|n| n.to_str()) != Some("drover.toml") => {
            format!("{stem}.lock")
        }
        _ => "drover.lock".to_string(),
    };
    definition.with_file_name(name)
}

/// What a packages layer asks for, in the canonical form its lock is tied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Sorted, as written (`name` or `name=version`).
    pub packages: Vec<String>,
    pub suite: String,
    /// Sorted.
    pub components: Vec<String>,
    pub arch: String,
    /// Sorted `url` or `url keyring`; empty: the machine's apt sources.
    pub repositories: Vec<String>,
    pub recommends: bool,
    pub essential: bool,
}

impl Request {
    /// The request of `layer`, built for `host_arch` when it names no architecture.
    pub fn of(layer: &PackagesLayer, host_arch: &str) -> Request {
        let mut packages = layer.packages.clone();
        packages.sort();
        let mut components = layer.components.clone();
        components.sort();
        let mut repositories: Vec<String> = layer
            .repositories
            .iter()
            .map(|r| match &r.keyring {
                Some(k) => format!("{} {k}", r.url),
                None => r.url.clone(),
            })
            .collect();
        repositories.sort();
        Request {
            packages,
            suite: layer.suite.clone(),
            components,
            arch: layer.arch.clone().unwrap_or_else(|| host_arch.to_string()),
            repositories,
            recommends: layer.recommends,
            essential: layer.essential,
        }
    }

    /// The digest the lock is tied to: of the canonical JSON of the request.
    pub fn input(&self) -> Digest {
        Digest::of(&serde_json::to_vec(self).expect("a request serializes"))
    }

    /// What changed from `old` to `self`, for a person: `added curl;
    /// removed ca-certificates; suite bookworm → trixie`.
    pub fn differences(&self, old: &Request) -> String {
        let mut out = Vec::new();
        let new_set: BTreeSet<&String> = self.packages.iter().collect();
        let old_set: BTreeSet<&String> = old.packages.iter().collect();
        let added: Vec<&str> = new_set.difference(&old_set).map(|s| s.as_str()).collect();
        let removed: Vec<&str> = old_set.difference(&new_set).map(|s| s.as_str()).collect();
        if !added.is_empty() {
            out.push(format!("packages added: {}", added.join(", ")));
        }
        if !removed.is_empty() {
            out.push(format!("packages removed: {}", removed.join(", ")));
        }
        let mut field = |name: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{name} {a} → {b}"));
            }
        };
        field("suite", old.suite.clone(), self.suite.clone());
        field("arch", old.arch.clone(), self.arch.clone());
        field(
            "components",
            old.components.join(","),
            self.components.join(","),
        );
        field(
            "repositories",
            list_or_default(&old.repositories),
            list_or_default(&self.repositories),
        );
        field(
            "recommends",
            old.recommends.to_string(),
            self.recommends.to_string(),
        );
        field(
            "essential",
            old.essential.to_string(),
            self.essential.to_string(),
        );
        if out.is_empty() {
            "the request's digest differs (the lock was edited by hand?)".into()
        } else {
            out.join("; ")
        }
    }
}

fn list_or_default(r: &[String]) -> String {
    if r.is_empty() {
        "(the machine's apt sources)".into()
    } else {
        r.join(", ")
    }
}

/// A whole `drover.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    #[serde(default, rename = "layer")]
    pub layers: Vec<LockedLayer>,
}

/// The resolution of one packages layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedLayer {
    /// The layer's index in the definition (`layer[index]`).
    pub index: usize,
    /// [`Request::input`] of the request it resolved.
    pub input: Digest,
    /// What the layer asked for, for people and for diffs.
    pub request: Request,
    #[serde(default, rename = "repository")]
    pub repositories: Vec<LockedRepository>,
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
}

/// A repository index a resolution read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedRepository {
    pub url: String,
    pub suite: String,
    pub keyring: String,
    /// The `Date` of its signed `Release`.
    pub date: String,
    /// sha256 of the `InRelease` file read.
    pub inrelease: Digest,
    /// `Origin` and `Version` of the release, when it says (`Debian`, `12.12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// One package to install.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The source package (`nginx` for `nginx-light`).
    pub source: String,
    pub url: String,
    pub sha256: Digest,
    pub size: u64,
}

impl LockedLayer {
    /// The distribution its packages come from, as an SBOM's purls name
    /// it: `debian-12` from the main repository's `Origin` and `Version`.
    pub fn distro(&self) -> Option<String> {
        self.repositories.iter().find_map(|r| {
            let origin = r.origin.as_deref()?.to_ascii_lowercase();
            let major = r.release.as_deref()?.split('.').next()?.to_string();
            (!origin.is_empty() && !major.is_empty()).then(|| format!("{origin}-{major}"))
        })
    }

    /// The layer's cache identity: every package's digest, in order, and
    /// the request.
    pub fn content_key(&self) -> Digest {
        let mut s = format!("drover-packages-v1\n{}\n", self.input);
        for p in &self.packages {
            let _ = writeln!(s, "{} {} {}", p.name, p.sha256, p.size);
        }
        Digest::of(s.as_bytes())
    }
}

impl Lock {
    /// Reads the lock at `path`; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<Lock>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io {
                    op: "read lock file",
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        Lock::parse(&text, path).map(Some)
    }

    /// Parses lock `text` (from `path`, for errors).
    pub fn parse(text: &str, path: &Path) -> Result<Lock> {
        let lock: Lock = toml::from_str(text).map_err(|e| {
            Error::input(
                path,
                format!(
                    "not a valid lock file: {}; delete it and run `drover lock` to write a new one",
                    e.message()
                ),
            )
        })?;
        if lock.version != VERSION {
            return Err(Error::input(
                path,
                format!(
                    "lock format {} is not one this drover reads ({VERSION}); run `drover lock` to rewrite it",
                    lock.version
                ),
            ));
        }
        for l in &lock.layers {
            if l.request.input() != l.input {
                return Err(Error::input(
                    path,
                    format!(
                        "layer[{}]: its input digest does not match its request (edited by hand?); run `drover lock` to rewrite it",
                        l.index
                    ),
                ));
            }
        }
        Ok(lock)
    }

    /// The canonical text of the lock.
    pub fn to_text(&self) -> String {
        let body = toml::to_string(self).expect("a lock serializes");
        format!(
            "# drover.lock: written by `drover lock`; a build installs exactly this.\n\
             # Change the definition and run `drover lock`, or `drover lock --update`.\n\n{body}"
        )
    }

    /// Writes the lock to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(".drover.lock.{}.tmp", std::process::id()));
        std::fs::write(&tmp, self.to_text()).ctx("write lock file", &tmp)?;
        std::fs::rename(&tmp, path).ctx("write lock file", path)
    }

    /// The locked layer for `layer[index]` of a definition asking `request`:
    /// `Ok(None)` when the lock has no entry for it; an error naming what
    /// differs when it has one for another request.
    pub fn layer(
        &self,
        index: usize,
        request: &Request,
        path: &Path,
    ) -> Result<Option<&LockedLayer>> {
        let Some(l) = self.layers.iter().find(|l| l.index == index) else {
            return Ok(None);
        };
        if l.input != request.input() {
            return Err(Error::input(
                path,
                format!(
                    "layer[{index}] (packages) no longer matches the lock: {}. \
                     Run `drover lock` to resolve the changed request (or `drover lock --update` to refresh everything)",
                    request.differences(&l.request)
                ),
            ));
        }
        Ok(Some(l))
    }

    /// Checks that the lock covers exactly `def`'s packages layers: the
    /// error names each stale, missing or extra layer.
    pub fn check(&self, def: &ImageDef, host_arch: &str, path: &Path) -> Result<()> {
        let mut problems = Vec::new();
        let mut wanted = BTreeSet::new();
        for (i, layer) in def.layers.iter().enumerate() {
            let LayerDef::Packages(p) = layer else {
                continue;
            };
            wanted.insert(i);
            let request = Request::of(p, host_arch);
            match self.layers.iter().find(|l| l.index == i) {
                None => problems.push(format!("layer[{i}] (packages) is not in the lock")),
                Some(l) if l.input != request.input() => problems.push(format!(
                    "layer[{i}] (packages) changed: {}",
                    request.differences(&l.request)
                )),
                Some(_) => {}
            }
        }
        for l in &self.layers {
            if !wanted.contains(&l.index) {
                problems.push(format!(
                    "the lock has layer[{}], which is not a packages layer of the definition",
                    l.index
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::input(
                path,
                format!(
                    "does not match {}: {}. Run `drover lock` to update it",
                    def.file.display(),
                    problems.join("; ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests;

//! What drover reads from a Debian repository's indexes: the binary
//! packages of a `Packages` file (`Package`) and the signed `Release`
//! (`InRelease` after its signature has been checked) that lists the
//! indexes with their sizes and sha256.

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::deb822::{self, Paragraph};
use super::relation::{self, Alternatives, Relation};
use super::version::Version;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// `Priority:`, best first (the order the resolver prefers providers in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Required,
    Important,
    Standard,
    Optional,
    Extra,
    /// Absent or not one of the above.
    Unknown,
}

impl Priority {
    pub fn parse(s: &str) -> Priority {
        match s.trim() {
            "required" => Priority::Required,
            "important" => Priority::Important,
            "standard" => Priority::Standard,
            "optional" => Priority::Optional,
            "extra" => Priority::Extra,
            _ => Priority::Unknown,
        }
    }
}

/// `Multi-Arch:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MultiArch {
    No,
    Same,
    Foreign,
    Allowed,
}

/// One binary package of a Packages index: what drover resolves, fetches,
/// verifies and records.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    pub name: String,
    pub version: Version,
    pub architecture: String,
    /// The source package (`Source: nginx (1.22.1-9)`); the package's own
    /// name and version when the field is absent or has no version.
    pub source: String,
    pub source_version: Version,
    pub depends: Vec<Alternatives>,
    pub pre_depends: Vec<Alternatives>,
    pub recommends: Vec<Alternatives>,
    pub provides: Vec<Relation>,
    pub conflicts: Vec<Relation>,
    pub breaks: Vec<Relation>,
    pub essential: bool,
    pub priority: Priority,
    pub multi_arch: MultiArch,
    /// The `.deb`'s path relative to the repository URL (`pool/main/...`).
    pub filename: String,
    pub size: u64,
    pub sha256: Digest,
    /// Which repository (the caller's index) the index came from.
    pub repo: usize,
}

impl Package {
    /// `name version` for messages.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.version)
    }
}

/// The packages of a Packages index `text` that run on `arch` (those of
/// `arch` and `all`), tagged with `repo`, in the index's order. A malformed
/// record fails the whole index, naming its line. Large indexes are parsed
/// in parallel, in slices cut at paragraph boundaries.
pub fn parse_packages(text: &str, repo: usize, arch: &str) -> Result<Vec<Package>> {
    let slices = slices(text, rayon::current_num_threads() * 4);
    let parsed: Vec<Result<Vec<Package>, (usize, String)>> = slices
        .par_iter()
        .map(|&(_, slice)| parse_slice(slice, repo, arch))
        .collect();
    let mut out = Vec::with_capacity(text.len() / 900);
    for (part, &(offset, _)) in parsed.into_iter().zip(&slices) {
        match part {
            Ok(pkgs) => out.extend(pkgs),
            Err((line, reason)) => {
                let line = line + text[..offset].bytes().filter(|&b| b == b'\n').count();
                return Err(Error::corrupt(
                    "Packages index",
                    format!("line {line}: {reason}"),
                ));
            }
        }
    }
    Ok(out)
}

/// `text` cut into about `n` slices at blank lines: (offset, slice).
fn slices(text: &str, n: usize) -> Vec<(usize, &str)> {
    const MIN: usize = 1 << 20;
    let size = (text.len() / n.max(1)).max(MIN);
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let target = start + size;
        let end = if target >= text.len() {
            text.len()
        } else {
            match text[target..].find("\n\n") {
                Some(i) => target + i + 2,
                None => text.len(),
            }
        };
        out.push((start, &text[start..end]));
        start = end;
    }
    out
}

/// The packages of one slice, or the line (in the slice) and reason of the
/// first error.
fn parse_slice(text: &str, repo: usize, arch: &str) -> Result<Vec<Package>, (usize, String)> {
    let mut out = Vec::with_capacity(text.len() / 900);
    for para in deb822::paragraphs(text) {
        let para = para.map_err(|e| (e.line, e.message))?;
        let p = package(&para, repo, arch).map_err(|reason| {
            let name = para.get("Package").unwrap_or("?");
            (para.line, format!("package {name:?}: {reason}"))
        })?;
        out.extend(p);
    }
    Ok(out)
}

/// The fields [`package`] reads, in the order of its slots.
const FIELDS: [&str; 16] = [
    "Package",
    "Version",
    "Architecture",
    "Source",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Provides",
    "Conflicts",
    "Breaks",
    "Essential",
    "Priority",
    "Multi-Arch",
    "Filename",
    "Size",
    "SHA256",
];

/// One record; `None` when it is for another architecture.
fn package(para: &Paragraph<'_>, repo: usize, arch: &str) -> Result<Option<Package>, String> {
    // One pass over the fields; names compare exactly first (the archive's
    // spelling), then in any case, without allocating.
    let mut slots: [Option<&str>; FIELDS.len()] = [None; FIELDS.len()];
    for f in &para.fields {
        let at = FIELDS.iter().position(|n| *n == f.name).or_else(|| {
            FIELDS
                .iter()
                .position(|n| n.len() == f.name.len() && n.eq_ignore_ascii_case(f.name))
        });
        if let Some(at) = at {
            slots[at] = Some(f.value);
        }
    }
    let [
        name,
        version,
        architecture,
        source,
        depends,
        pre_depends,
        recommends,
        provides,
        conflicts,
        breaks,
        essential,
        priority,
        multi_arch,
        filename,
        size,
        sha256,
    ] = slots;
    let name = need(name, "Package")?;
    let architecture = need(architecture, "Architecture")?;
    if architecture != arch && architecture != "all" {
        return Ok(None);
    }
    let version = Version::parse(need(version, "Version")?).map_err(|e| e.to_string())?;
    let (source, source_version) = match source {
        None => (name.to_string(), version.clone()),
        Some(s) => match s.split_once('(') {
            None => (s.trim().to_string(), version.clone()),
            Some((n, v)) => {
                let v = v.trim().strip_suffix(')').ok_or("Source: missing `)`")?;
                let sv = Version::parse(v.trim()).map_err(|e| format!("Source: {e}"))?;
                (n.trim().to_string(), sv)
            }
        },
    };
    let rels = |v: Option<&str>, field: &str| -> Result<Vec<Alternatives>, String> {
        v.map_or(Ok(Vec::new()), |v| {
            relation::parse_relations(v, arch).map_err(|e| format!("{field}: {e}"))
        })
    };
    let flat = |v: Option<&str>, field: &str| -> Result<Vec<Relation>, String> {
        v.map_or(Ok(Vec::new()), |v| {
            relation::parse_flat(v, arch).map_err(|e| format!("{field}: {e}"))
        })
    };
    let multi_arch = match multi_arch.map(str::trim) {
        None | Some("no") => MultiArch::No,
        Some("same") => MultiArch::Same,
        Some("foreign") => MultiArch::Foreign,
        Some("allowed") => MultiArch::Allowed,
        Some(other) => return Err(format!("Multi-Arch: unknown value {other:?}")),
    };
    let size = need(size, "Size")?;
    let size = size
        .parse::<u64>()
        .map_err(|_| format!("Size: not a number: {size:?}"))?;
    let sha256 = parse_sha256(need(sha256, "SHA256")?).ok_or("SHA256: not 64 hex digits")?;
    let filename = need(filename, "Filename")?;
    if filename.starts_with('/') || filename.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(format!(
            "Filename: {filename:?} is not a relative path inside the repository"
        ));
    }
    Ok(Some(Package {
        name: name.to_string(),
        version,
        architecture: architecture.to_string(),
        source,
        source_version,
        depends: rels(depends, "Depends")?,
        pre_depends: rels(pre_depends, "Pre-Depends")?,
        recommends: rels(recommends, "Recommends")?,
        provides: flat(provides, "Provides")?,
        conflicts: flat(conflicts, "Conflicts")?,
        breaks: flat(breaks, "Breaks")?,
        essential: essential.is_some_and(|e| e.trim().eq_ignore_ascii_case("yes")),
        priority: priority.map_or(Priority::Unknown, Priority::parse),
        multi_arch,
        filename: filename.to_string(),
        size,
        sha256,
        repo,
    }))
}

fn need<'a>(v: Option<&'a str>, field: &str) -> Result<&'a str, String> {
    v.ok_or_else(|| format!("no {field} field"))
}

/// 64 hex digits (either case) as a digest.
pub fn parse_sha256(hex_text: &str) -> Option<Digest> {
    let hex_text = hex_text.trim();
    if hex_text.len() != 64 {
        return None;
    }
    let mut raw = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut raw).ok()?;
    Some(Digest::from_bytes(raw))
}

/// A suite's `Release` (the clear text of `InRelease`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub origin: String,
    pub label: String,
    pub suite: String,
    pub codename: String,
    /// As written (`Sat, 10 Aug 2024 09:14:24 UTC`); see [`release_time`].
    pub date: String,
    pub valid_until: Option<String>,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    pub acquire_by_hash: bool,
    /// Every file the Release vouches for: path below `dists/<suite>/`,
    /// size, sha256.
    pub sha256: Vec<(String, u64, Digest)>,
}

impl Release {
    /// The size and sha256 the Release gives for `path`.
    pub fn file(&self, path: &str) -> Option<(u64, Digest)> {
        self.sha256
            .iter()
            .find(|(p, ..)| p == path)
            .map(|(_, size, d)| (*size, *d))
    }
}

/// Parse a Release body (already verified: no signature armour).
pub fn parse_release(text: &str) -> Result<Release> {
    let bad = |reason: String| Error::corrupt("Release file", reason);
    let paras = deb822::parse(text).map_err(|e| bad(e.to_string()))?;
    let [para] = paras.as_slice() else {
        return Err(bad(format!(
            "expected one paragraph, found {}",
            paras.len()
        )));
    };
    let text_field = |name: &str| para.get(name).unwrap_or("").trim().to_string();
    let words = |name: &str| -> Vec<String> {
        para.get(name)
            .unwrap_or("")
            .split_ascii_whitespace()
            .map(str::to_string)
            .collect()
    };
    let mut sha256 = Vec::new();
    let list = para
        .get("SHA256")
        .ok_or_else(|| bad("no SHA256 field: drover checks indexes only by sha256".to_string()))?;
    for (i, line) in list.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_ascii_whitespace();
        let (Some(hash), Some(size), Some(path), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(format!(
                "SHA256 entry {}: expected `<sha256> <size> <path>`, found {line:?}",
                i + 1
            )));
        };
        let digest = parse_sha256(hash).ok_or_else(|| {
            bad(format!(
                "SHA256 entry {}: {hash:?} is not 64 hex digits",
                i + 1
            ))
        })?;
        let size = size.parse::<u64>().map_err(|_| {
            bad(format!(
                "SHA256 entry {}: size {size:?} is not a number",
                i + 1
            ))
        })?;
        sha256.push((path.to_string(), size, digest));
    }
    let date = text_field("Date");
    if release_time(&date).is_none() {
        return Err(bad(format!(
            "Date {date:?} is not a date like `Sat, 10 Aug 2024 09:14:24 UTC`"
        )));
    }
    let valid_until = para.get("Valid-Until").map(|v| v.trim().to_string());
    if let Some(v) = &valid_until
        && release_time(v).is_none()
    {
        return Err(bad(format!("Valid-Until {v:?} is not a date")));
    }
    Ok(Release {
        origin: text_field("Origin"),
        label: text_field("Label"),
        suite: text_field("Suite"),
        codename: text_field("Codename"),
        date,
        valid_until,
        architectures: words("Architectures"),
        components: words("Components"),
        acquire_by_hash: para
            .get("Acquire-By-Hash")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("yes")),
        sha256,
    })
}

/// Seconds since the Unix epoch of a Release date (`Sat, 10 Aug 2024
/// 09:14:24 UTC`; the weekday is optional, the zone `UTC`, `GMT`, `Z` or
/// `+0000`).
pub fn release_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = match s.split_once(',') {
        Some((_, rest)) => rest.trim(),
        None => s,
    };
    let parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let [day, month, year, time, zone] = parts.as_slice() else {
        return None;
    };
    if !matches!(*zone, "UTC" | "GMT" | "Z" | "+0000") {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? + 1;
    let day: u32 = day.parse().ok()?;
    let year: u32 = year.parse().ok()?;
    if year > 9999 || time.len() != 8 {
        return None;
    }
    crate::clock::parse_rfc3339_secs(&format!("{year:04}-{month:02}-{day:02}T{time}Z"))
}

impl FromStr for Priority {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Priority::parse(s))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Priority::Required => "required",
            Priority::Important => "important",
            Priority::Standard => "standard",
            Priority::Optional => "optional",
            Priority::Extra => "extra",
            Priority::Unknown => "unknown",
        })
    }
}

#[cfg(test)]
pub(super) mod tests;

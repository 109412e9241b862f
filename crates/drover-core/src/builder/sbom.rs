//! SPDX 2.3 SBOMs: what an image holds, for outside tools (`pyspdxtools`,
//! scanners) to read. Attached to every built image as an unsigned artifact
//! of type [`SBOM_ARTIFACT_TYPE`]; the image's signature covers the image.
//!
//! The document lists the image as one package, every regular file with its
//! SHA-1 and SHA-256 (SPDX requires SHA-1 for files), and the packages of a
//! dpkg status file (`var/lib/dpkg/status`) or an apk database
//! (`lib/apk/db/installed`) with their purls. It is a function of the image
//! alone — no tag, no clock: `created` is the image config's `created` — so
//! the same image always gets the same SBOM, and a rebuild of an image that
//! already has one writes nothing.
//!
//! SHA-1 needs the content, which the builder reads only for files it has
//! not seen. Wherever it does read a file to take its sha256 (hashing a
//! large file ahead, or tarring a small one), it takes the SHA-1 from the
//! same bytes (`Entry::sha1`). The SHA-1s are kept per layer in the store's
//! cache (`cache/sbom/<diff_id>.sha1.json`, a map from content sha256 to
//! SHA-1): a built layer takes its entries' SHA-1s, then the map of the
//! previous build of its slot, and reads from disk only what neither knows
//! (content whose sha256 came from the content-hash cache); a base layer
//! without a map (pulled, imported) is read once from its blob.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;
use sha1::Digest as _;

use super::scan::{Entry, Source, StatKey};
use super::tar::Kind;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::store::baseline::{self, Baseline, Change, FileKind};
use crate::store::{Descriptor, Layout, Store, artifact};

pub use crate::trust::attest::SBOM_ARTIFACT_TYPE;

/// The media type of the SBOM content.
pub const CONTENT_MEDIA_TYPE: &str = "application/spdx+json";
/// Where dpkg and apk keep their installed-package databases (image paths).
pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";
pub const APK_INSTALLED: &str = "/lib/apk/db/installed";

/// A SHA-1 digest (raw).
pub type Sha1 = [u8; 20];
/// SHA-1 of file contents, by their sha256.
pub type Sha1s = HashMap<Digest, Sha1>;

pub(crate) fn sha1_of(bytes: &[u8]) -> Sha1 {
    sha1::Sha1::digest(bytes).into()
}

/// An installed OS package, as its package database lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub manager: Manager,
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    /// The source package, when it differs from the binary's name
    /// (`nginx` for `nginx-light`; Debian's `Source` field).
    pub source: Option<String>,
    /// The distribution (`debian-12`), for the purl's `distro` qualifier.
    pub distro: Option<String>,
    /// An SPDX license expression, from a machine-readable copyright file.
    pub license: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Deb,
    Apk,
}

impl Package {
    /// The package URL (purl spec), e.g.
    /// `pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12&upstream=glibc`
    /// (qualifiers sorted by key, as the spec asks).
    pub fn purl(&self) -> String {
        let (ty, ns) = match self.manager {
            Manager::Deb => ("deb", "debian"),
            Manager::Apk => ("apk", "alpine"),
        };
        let mut p = format!(
            "pkg:{ty}/{ns}/{}@{}",
            pct(&self.name.to_lowercase()),
            pct(&self.version)
        );
        let qualifiers: Vec<String> = [
            ("arch", &self.arch),
            ("distro", &self.distro),
            ("upstream", &self.source),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some(format!("{k}={}", pct(v.as_ref()?))))
        .collect();
        if !qualifiers.is_empty() {
            p.push('?');
            p.push_str(&qualifiers.join("&"));
        }
        p
    }
}

/// Percent-encode a purl component: everything but unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Stanzas of an RFC 822-style database (dpkg status, apk installed):
/// blocks separated by blank lines, each a list of (key, value) lines.
fn stanzas(text: &str, sep: char) -> Vec<Vec<(&str, &str)>> {
    let mut out = vec![Vec::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            if !out.last().is_some_and(Vec::is_empty) {
                out.push(Vec::new());
            }
            continue;
        }
        // Continuation lines (dpkg descriptions) start with whitespace.
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(sep) {
            out.last_mut()
                .expect("one stanza")
                .push((k.trim(), v.trim()));
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn field<'a>(stanza: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    stanza
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| *v)
        .filter(|v| !v.is_empty())
}

/// The installed packages of a dpkg status file: those whose `Status` ends
/// in `installed` (not `config-files`, `half-installed`, ...).
pub fn parse_dpkg(text: &str) -> Vec<Package> {
    stanzas(text, ':')
        .iter()
        .filter(|s| {
            field(s, "Status").is_some_and(|st| st.split_whitespace().last() == Some("installed"))
        })
        .filter_map(|s| {
            let name = field(s, "Package")?.to_string();
            // `Source: nginx` or `Source: nginx (1.22.1-9)`; absent when
            // the source package has the binary's name.
            let source = field(s, "Source")
                .and_then(|v| v.split_whitespace().next())
                .filter(|src| *src != name)
                .map(str::to_string);
            Some(Package {
                manager: Manager::Deb,
                version: field(s, "Version")?.to_string(),
                arch: field(s, "Architecture").map(str::to_string),
                name,
                source,
                distro: None,
                license: None,
            })
        })
        .collect()
}

/// The packages of an apk installed database (`P:`, `V:`, `A:` lines).
pub fn parse_apk(text: &str) -> Vec<Package> {
    stanzas(text, ':')
        .iter()
        .filter_map(|s| {
            Some(Package {
                manager: Manager::Apk,
                name: field(s, "P")?.to_string(),
                version: field(s, "V")?.to_string(),
                arch: field(s, "A").map(str::to_string),
                source: None,
                distro: None,
                license: None,
            })
        })
        .collect()
}

/// SPDX wants `YYYY-MM-DDThh:mm:ssZ`; image configs may carry fractions.
fn spdx_time(created: Option<&str>) -> String {
    let secs = created
        .and_then(crate::clock::parse_rfc3339_secs)
        .unwrap_or(0);
    let t = crate::clock::format_rfc3339(secs, 0);
    match t.split_once('.') {
        Some((whole, _)) => format!("{whole}Z"),
        None => t,
    }
}

/// An SPDX id from free text: letters, digits, `.` and `-` only.
fn spdx_id(prefix: &str, text: &str, n: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{prefix}-{n}-{clean}")
}

/// An SPDX 2.3 document, as drover writes it (JSON field names per the
/// SPDX 2.3 JSON schema).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub spdx_version: &'static str,
    pub data_license: &'static str,
    #[serde(rename = "SPDXID")]
    pub spdx_id: &'static str,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    pub packages: Vec<SpdxPackage>,
    pub files: Vec<SpdxFile>,
    pub relationships: Vec<Relationship>,
    /// Every `LicenseRef-…` a package's license uses (SPDX wants each declared).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub has_extracted_licensing_infos: Vec<ExtractedLicense>,
}

/// A license without an SPDX id, as Debian names it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractedLicense {
    pub license_id: String,
    pub name: String,
    pub extracted_text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreationInfo {
    pub creators: Vec<String>,
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpdxPackage {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    pub download_location: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_package_purpose: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    pub files_analyzed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_verification_code: Option<VerificationCode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license_declared: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationCode {
    pub package_verification_code_value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: &'static str,
    pub reference_type: &'static str,
    pub reference_locator: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpdxFile {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub file_name: String,
    pub checksums: [Checksum; 2],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    pub algorithm: &'static str,
    pub checksum_value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: &'static str,
    pub related_spdx_element: String,
}

const IMAGE_ID: &str = "SPDXRef-Image";

fn contains(id: &str) -> Relationship {
    Relationship {
        spdx_element_id: IMAGE_ID.into(),
        relationship_type: "CONTAINS",
        related_spdx_element: id.into(),
    }
}

/// The SPDX 2.3 document of the image `image`. Pure: `files` is the image's
/// baseline, `sha1` must know every regular file's content.
pub fn document(
    image: &Digest,
    created: Option<&str>,
    files: &Baseline,
    sha1: &Sha1s,
    packages: &[Package],
) -> Result<Document> {
    let mut spdx_files = Vec::new();
    let mut relationships = vec![Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES",
        related_spdx_element: IMAGE_ID.into(),
    }];
    let mut sha1_hexes = Vec::new();
    for (n, f) in files
        .files
        .iter()
        .filter(|f| matches!(f.kind, FileKind::File | FileKind::Hardlink))
        .enumerate()
    {
        let Some(sha256) = f.sha256 else {
            // A hard link whose target the layers never wrote has no
            // content to describe; a regular file always has some.
            if f.kind == FileKind::Hardlink {
                continue;
            }
            return Err(Error::corrupt(
                format!("baseline of {image}"),
                format!("{} has no content digest", f.path),
            ));
        };
        let s1 = sha1.get(&sha256).ok_or_else(|| {
            Error::corrupt(
                format!("SBOM of {image}"),
                format!("no SHA-1 known for {} ({sha256})", f.path),
            )
        })?;
        let id = format!("SPDXRef-File-{n}");
        let s1 = hex::encode(s1);
        relationships.push(contains(&id));
        spdx_files.push(SpdxFile {
            spdx_id: id,
            file_name: format!(".{}", f.path),
            checksums: [
                Checksum {
                    algorithm: "SHA1",
                    checksum_value: s1.clone(),
                },
                Checksum {
                    algorithm: "SHA256",
                    checksum_value: sha256.hex(),
                },
            ],
        });
        sha1_hexes.push(s1);
    }
    // SPDX 2.3 §7.9: SHA-1 of the sorted, concatenated file SHA-1s.
    sha1_hexes.sort_unstable();
    let image_pkg = SpdxPackage {
        spdx_id: IMAGE_ID.into(),
        name: image.to_string(),
        version_info: None,
        download_location: "NOASSERTION",
        primary_package_purpose: Some("CONTAINER"),
        checksums: vec![Checksum {
            algorithm: "SHA256",
            checksum_value: image.hex(),
        }],
        files_analyzed: !spdx_files.is_empty(),
        package_verification_code: (!spdx_files.is_empty()).then(|| VerificationCode {
            package_verification_code_value: hex::encode(sha1_of(sha1_hexes.concat().as_bytes())),
        }),
        external_refs: Vec::new(),
        license_declared: None,
        source_info: None,
    };
    let mut spdx_packages = vec![image_pkg];
    for (n, p) in packages.iter().enumerate() {
        let id = spdx_id("Package", &p.name, n);
        relationships.push(contains(&id));
        spdx_packages.push(SpdxPackage {
            spdx_id: id,
            name: p.name.clone(),
            version_info: Some(p.version.clone()),
            download_location: "NOASSERTION",
            primary_package_purpose: None,
            checksums: Vec::new(),
            files_analyzed: false,
            package_verification_code: None,
            external_refs: vec![ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_type: "purl",
                reference_locator: p.purl(),
            }],
            license_declared: p.license.clone(),
            source_info: p
                .source
                .as_ref()
                .map(|s| format!("built from the source package {s}")),
        });
    }
    let refs: std::collections::BTreeSet<&str> = packages
        .iter()
        .filter_map(|p| p.license.as_deref())
        .flat_map(debian::license_refs)
        .collect();
    let has_extracted_licensing_infos = refs
        .into_iter()
        .map(|id| ExtractedLicense {
            license_id: id.to_string(),
            name: id.trim_start_matches("LicenseRef-").to_string(),
            extracted_text: format!(
                "A license a Debian package's machine-readable copyright file names {:?}, which has no SPDX identifier; see /usr/share/doc/<package>/copyright in the image.",
                id.trim_start_matches("LicenseRef-")
            ),
        })
        .collect();
    Ok(Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("drover image {image}"),
        document_namespace: format!("https://drover.dev/spdx/{}", image.hex()),
        creation_info: CreationInfo {
            creators: vec![format!("Tool: drover-{}", env!("CARGO_PKG_VERSION"))],
            created: spdx_time(created),
        },
        packages: spdx_packages,
        files: spdx_files,
        relationships,
        has_extracted_licensing_infos,
    })
}

/// One layer of the image being built, for the SBOM.
pub(crate) struct LayerInput {
    pub desc: Descriptor,
    pub diff_id: Digest,
    /// For a layer built now: its entries (digests filled in, and the
    /// SHA-1s taken while writing it) and the diff_id of the previous build
    /// of its slot, whose SHA-1s it may reuse.
    pub built: Option<(Vec<Entry>, Option<Digest>)>,
}

fn sha1_cache_path(layout: &Layout, diff_id: &Digest) -> PathBuf {
    layout
        .cache_dir()
        .join("sbom")
        .join(format!("{}.sha1.json", diff_id.hex()))
}

/// A layer's cached SHA-1 map; `None` when absent or unreadable (it is
/// then computed again).
fn load_sha1s(layout: &Layout, diff_id: &Digest) -> Option<Sha1s> {
    let raw: BTreeMap<String, String> =
        serde_json::from_slice(&fs::read(sha1_cache_path(layout, diff_id)).ok()?).ok()?;
    raw.into_iter()
        .map(|(k, v)| {
            let d: Digest = format!("sha256:{k}").parse().ok()?;
            let s: Sha1 = hex::decode(v).ok()?.try_into().ok()?;
            Some((d, s))
        })
        .collect()
}

fn save_sha1s(store: &Store, diff_id: &Digest, map: &Sha1s) -> Result<()> {
    let path = sha1_cache_path(store.layout(), diff_id);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).ctx("create cache directory", dir)?;
    }
    let raw: BTreeMap<String, String> =
        map.iter().map(|(k, v)| (k.hex(), hex::encode(v))).collect();
    let bytes =
        serde_json::to_vec(&raw).map_err(|e| Error::corrupt("SHA-1 cache", e.to_string()))?;
    crate::durable::write_atomic(store.tmp_dir(), &path, &bytes)
}

/// SHA-1s of a built layer's files: those taken while the layer was
/// written, then `known`, and only then read from the sources. `None` when
/// a file read here changed since it was tarred (its stat differs): the
/// caller then reads the layer blob.
fn sha1s_from_entries(entries: &[Entry], known: &Sha1s) -> Option<Sha1s> {
    entries
        .par_iter()
        .filter(|e| e.kind == Kind::File)
        // One read buffer per worker, not one per file.
        .map_init(
            || vec![0u8; 256 << 10],
            |buf, e| {
                let sha256 = e.sha256?;
                if let Some(s) = e.sha1.or_else(|| known.get(&sha256).copied()) {
                    return Some((sha256, s));
                }
                let s = match e.source.as_ref()? {
                    Source::Inline(bytes) => sha1_of(bytes),
                    Source::Disk { path, stat } => {
                        let s = sha1_of_file(path, buf)?;
                        // The content-hash cache's rule: same stat, same content.
                        let after = fs::symlink_metadata(path).ok()?;
                        (StatKey::of(&after) == *stat).then_some(s)?
                    }
                };
                Some((sha256, s))
            },
        )
        .collect()
}

fn sha1_of_file(path: &std::path::Path, buf: &mut [u8]) -> Option<Sha1> {
    let mut f = fs::File::open(path).ok()?;
    let mut ctx = sha1::Sha1::new();
    loop {
        let n = f.read(buf).ok()?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Some(ctx.finalize().into())
}

/// Read a layer blob: the SHA-1 of every regular file, and the content of
/// the files named in `want` (path and sha256).
fn scan_blob(
    store: &Store,
    layer: &Descriptor,
    want: &[(String, Digest)],
) -> Result<(Sha1s, HashMap<Digest, Vec<u8>>)> {
    let bad = |e: std::io::Error| Error::corrupt(format!("layer {}", layer.digest), e.to_string());
    baseline::read_layer(store, layer, |r, budget| {
        let mut sha1s = Sha1s::new();
        let mut found = HashMap::new();
        let mut ar = tar::Archive::new(r);
        let mut buf = vec![0u8; 256 << 10];
        for entry in ar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            budget.entry()?;
            let Change::Put(rec) = baseline::change_of(&entry)? else {
                continue;
            };
            if rec.kind != FileKind::File {
                continue;
            }
            let keep = want.iter().any(|(p, _)| *p == rec.path);
            let mut content = Vec::new();
            let mut h = Hasher::new();
            let mut s1 = sha1::Sha1::new();
            loop {
                let n = entry.read(&mut buf).map_err(bad)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                s1.update(&buf[..n]);
                if keep {
                    content.extend_from_slice(&buf[..n]);
                }
            }
            let sha256 = h.finish();
            sha1s.insert(sha256, s1.finalize().into());
            if keep && want.contains(&(rec.path.clone(), sha256)) {
                found.insert(sha256, content);
            }
        }
        Ok((sha1s, found))
    })
}

/// Write the SBOM of a just-built image (unless it has one) and return its
/// artifact descriptor; the caller records the referrer. `Ok((desc, true))`
/// when it was written now.
pub(crate) fn attach(
    store: &Store,
    image: &Descriptor,
    created: Option<&str>,
    files: &Baseline,
    layers: &[LayerInput],
    distro: Option<&str>,
) -> Result<(Descriptor, bool)> {
    if let Some(r) = store
        .referrers(&image.digest, Some(SBOM_ARTIFACT_TYPE))?
        .into_iter()
        .next()
    {
        let mut d = Descriptor::new(&r.media_type, r.digest, r.size);
        d.artifact_type = Some(r.artifact_type);
        return Ok((d, false));
    }
    // The package databases the image ends up with (regular files only).
    let want: Vec<(String, Digest)> = [DPKG_STATUS, APK_INSTALLED]
        .iter()
        .filter_map(|p| {
            let f = files.files.iter().find(|f| f.path == *p)?;
            (f.kind == FileKind::File).then_some((f.path.clone(), f.sha256?))
        })
        .collect();
    let mut contents: HashMap<Digest, Vec<u8>> = HashMap::new();
    let layout = store.layout();
    let mut sha1s = Sha1s::new();
    for l in layers {
        let cached = load_sha1s(layout, &l.diff_id);
        let from_sources = match (&cached, &l.built) {
            (None, Some((entries, prev))) => {
                let known = prev
                    .and_then(|p| load_sha1s(layout, &p))
                    .unwrap_or_default();
                sha1s_from_entries(entries, &known)
            }
            _ => None,
        };
        let map = match (cached, from_sources) {
            (Some(m), _) => m,
            (None, Some(m)) => {
                save_sha1s(store, &l.diff_id, &m)?;
                m
            }
            (None, None) => {
                let (m, found) = scan_blob(store, &l.desc, &want)?;
                contents.extend(found);
                save_sha1s(store, &l.diff_id, &m)?;
                m
            }
        };
        sha1s.extend(map);
    }
    let mut texts = read_files(store, layers, &want, contents)?;
    let mut packages = Vec::new();
    for (path, sha256) in &want {
        let text = String::from_utf8_lossy(texts.get(sha256).map_or(&[][..], Vec::as_slice));
        packages.extend(if path == DPKG_STATUS {
            parse_dpkg(&text)
        } else {
            parse_apk(&text)
        });
    }
    describe_debian(store, layers, files, &mut packages, distro, &mut texts)?;
    let doc = document(&image.digest, created, files, &sha1s, &packages)?;
    let bytes = serde_json::to_vec(&doc).map_err(|e| Error::corrupt("SBOM", e.to_string()))?;
    let desc = artifact::put(store, image, SBOM_ARTIFACT_TYPE, CONTENT_MEDIA_TYPE, &bytes)?;
    Ok((desc, true))
}

/// The contents of the files `want` (path and sha256), `known` first,
/// then from the sources of the built layers, then from the layer blobs
/// (each read at most once, newest first).
fn read_files(
    store: &Store,
    layers: &[LayerInput],
    want: &[(String, Digest)],
    mut known: HashMap<Digest, Vec<u8>>,
) -> Result<HashMap<Digest, Vec<u8>>> {
    let mut missing: Vec<(String, Digest)> = want
        .iter()
        .filter(|(_, d)| !known.contains_key(d))
        .cloned()
        .collect();
    missing.retain(|(path, sha256)| {
        let found = layers.iter().rev().find_map(|l| {
            let (entries, _) = l.built.as_ref()?;
            let e = entries.iter().find(|e| format!("/{}", e.path) == *path)?;
            let bytes = match &e.source {
                Some(Source::Inline(b)) => Some(b.to_vec()),
                Some(Source::Disk { path, .. }) => fs::read(path).ok(),
                None => None,
            };
            bytes.filter(|b| Digest::of(b) == *sha256)
        });
        match found {
            Some(b) => {
                known.insert(*sha256, b);
                false
            }
            None => true,
        }
    });
    for l in layers.iter().rev() {
        if missing.is_empty() {
            break;
        }
        let found = scan_blob(store, &l.desc, &missing)?.1;
        missing.retain(|(_, d)| !found.contains_key(d));
        known.extend(found);
    }
    if let Some((path, sha256)) = missing.first() {
        return Err(Error::corrupt(
            format!("{path} ({sha256})"),
            "the baseline lists it but no layer holds that content",
        ));
    }
    Ok(known)
}

/// Debian packages get the distribution (the image's os-release, else
/// `distro`, what the build installed them from) and the license their
/// machine-readable copyright file declares.
fn describe_debian(
    store: &Store,
    layers: &[LayerInput],
    files: &Baseline,
    packages: &mut [Package],
    distro: Option<&str>,
    texts: &mut HashMap<Digest, Vec<u8>>,
) -> Result<()> {
    if !packages.iter().any(|p| p.manager == Manager::Deb) {
        return Ok(());
    }
    let regular = |path: &str| {
        let f = files.files.iter().find(|f| f.path == path)?;
        (f.kind == FileKind::File).then_some((f.path.clone(), f.sha256?))
    };
    let os_release = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| regular(p));
    let copyrights: Vec<Option<(String, Digest)>> = packages
        .iter()
        .map(|p| regular(&format!("/usr/share/doc/{}/copyright", p.name)))
        .collect();
    let want: Vec<(String, Digest)> = os_release
        .iter()
        .chain(copyrights.iter().flatten())
        .cloned()
        .collect();
    let read = read_files(store, layers, &want, std::mem::take(texts))?;
    let text = |d: &Digest| read.get(d).map(|b| String::from_utf8_lossy(b).into_owned());
    let distro = os_release
        .and_then(|(_, d)| debian::distro_of_os_release(&text(&d)?))
        .or(distro.map(str::to_string));
    for (p, copyright) in packages.iter_mut().zip(&copyrights) {
        if p.manager != Manager::Deb {
            continue;
        }
        p.distro = distro.clone();
        p.license = copyright
            .as_ref()
            .and_then(|(_, d)| debian::license_of_copyright(&text(d)?));
    }
    *texts = read;
    Ok(())
}

/// The SBOM attached to `image`, parsed (no checks beyond JSON).
pub fn stored(store: &Store, image: &Digest) -> Result<Option<Value>> {
    artifact::first_json(store, image, SBOM_ARTIFACT_TYPE, "SBOM")
}

mod debian;
#[cfg(test)]
mod tests;

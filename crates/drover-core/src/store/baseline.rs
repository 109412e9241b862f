//! The baseline: every file of an image (path, type, mode, owner, size,
//! content hash, link target), stored as an OCI 1.1 artifact whose `subject`
//! is the image manifest. Drift detection measures running instances
//! against it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Descriptor, Store, VerifyingReader, artifact, oci};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::limits::Limits;

pub(crate) mod headers;
#[cfg(test)]
pub(crate) use headers::agrees_with_the_tar_crate;

pub const ARTIFACT_TYPE: &str = "application/vnd.drover.baseline.v1+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Hardlink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Absolute path inside the image.
    pub path: String,
    #[serde(rename = "type")]
    pub kind: FileKind,
    #[serde(serialize_with = "octal_ser", deserialize_with = "octal_de")]
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Digest>,
    /// Symlink target, or for a hard link the path it shares content with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Extended attributes, name → lowercase hex of the value. Left out
    /// when there are none, so baselines of images without any (all that
    /// drover builds by default) are byte for byte what they always were.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

/// The `xattrs` of a [`FileRecord`] from (name, value) pairs.
pub fn xattr_map<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), hex::encode(v)))
        .collect()
}

fn octal_ser<S: Serializer>(mode: &u32, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

fn octal_de<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    u32::from_str_radix(&s, 8).map_err(serde::de::Error::custom)
}

/// The whole file manifest of an image, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    pub schema_version: u32,
    pub files: Vec<FileRecord>,
}

/// Applies layers in order, the way a container runtime stacks them.
#[derive(Default)]
pub struct Merger {
    files: BTreeMap<String, FileRecord>,
}

impl Merger {
    pub fn from_baseline(b: Baseline) -> Self {
        Merger {
            files: b.files.into_iter().map(|f| (f.path.clone(), f)).collect(),
        }
    }

    pub fn put(&mut self, rec: FileRecord) {
        // A non-directory replacing a directory hides everything under it.
        if rec.kind != FileKind::Dir
            && self
                .files
                .get(&rec.path)
                .is_some_and(|f| f.kind == FileKind::Dir)
        {
            self.remove_tree(&rec.path, false);
        }
        // A hard link shares its target's content hash.
        let mut rec = rec;
        if rec.kind == FileKind::Hardlink
            && let Some(t) = rec.link.as_ref().and_then(|l| self.files.get(l))
        {
            rec.sha256 = t.sha256;
            rec.size = t.size;
        }
        self.files.insert(rec.path.clone(), rec);
    }

    /// The record at `path` (absolute), if the layers so far leave one.
    pub fn get(&self, path: &str) -> Option<&FileRecord> {
        self.files.get(path)
    }

    /// Apply one record of a layer as its tar entry reads: a whiteout name
    /// (`.wh.<name>`, `.wh..wh..opq`) deletes, anything else is [`put`](Self::put).
    pub fn apply_record(&mut self, rec: FileRecord) {
        let (dir, name) = rec.path.rsplit_once('/').unwrap_or(("", &rec.path));
        if name == ".wh..wh..opq" {
            let dir = if dir.is_empty() { "/" } else { dir };
            self.remove_tree(dir, true);
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            self.remove_tree(&format!("{dir}/{hidden}"), false);
        } else {
            self.put(rec);
        }
    }

    /// Remove `path` and its subtree (a whiteout), or only the subtree (opaque).
    pub fn remove_tree(&mut self, path: &str, keep_self: bool) {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        self.files
            .retain(|p, _| !(p.starts_with(&prefix) || (!keep_self && p == path)));
    }

    pub fn finish(self) -> Baseline {
        Baseline {
            schema_version: 1,
            files: self.files.into_values().collect(),
        }
    }
}

/// Read one layer blob (gzip, zstd or plain tar) and apply it to `m`.
pub fn apply_layer(store: &Store, layer: &Descriptor, m: &mut Merger) -> Result<()> {
    read_layer(store, layer, |r, budget| apply_tar(r, budget, m))
}

/// Stream one layer's tar, decompressed per its media type, through `f`;
/// then drain the blob so the verifying reader sees all of it and checks
/// its digest. A corrupt blob is the root cause of any other error too, so
/// its error wins.
///
/// The layer is hostile until read: what it inflates to is held to the
/// store's limits (`layer_bytes`, and `inflate_ratio` past
/// [`Limits::RATIO_FLOOR`], measured against the compressed bytes read so
/// far, so a bomb is stopped early), its tar headers are followed as they
/// stream by, so an extension header (GNU long name or link, PAX) declaring
/// more than `tar_header_bytes` is refused before the tar crate reads its
/// body whole into memory (see `headers`), and `f` calls [`Budget::entry`]
/// for each tar entry (`layer_entries`). A bound that trips is the error,
/// naming itself and the layer, whatever `f` made of the failed read.
pub(crate) fn read_layer<T>(
    store: &Store,
    layer: &Descriptor,
    f: impl FnOnce(&mut dyn Read, &Budget) -> Result<T>,
) -> Result<T> {
    let mut reader = store.open_blob(&layer.digest)?;
    let budget = Budget::new(layer.digest, store.limits().clone());
    let res = {
        let counted = Counted {
            inner: &mut reader,
            budget: &budget,
        };
        decoder(layer, counted).and_then(|r| {
            let mut r = Inflated {
                inner: r,
                budget: &budget,
                read: 0,
                headers: headers::Headers::new(budget.limits.tar_header_bytes),
            };
            f(&mut r, &budget)
        })
    };
    if let Some(e) = budget.tripped.take() {
        return Err(e);
    }
    if let Err(io) = std::io::copy(&mut reader, &mut std::io::sink()) {
        return Err(reader.map_err(io));
    }
    res
}

/// The bounds one layer is read under (see [`read_layer`]).
pub(crate) struct Budget {
    layer: Digest,
    limits: Limits,
    /// Compressed bytes read so far.
    compressed: Cell<u64>,
    entries: Cell<u64>,
    /// The bound that tripped, if one did.
    tripped: Cell<Option<Error>>,
}

impl Budget {
    pub(crate) fn new(layer: Digest, limits: Limits) -> Budget {
        Budget {
            layer,
            limits,
            compressed: Cell::new(0),
            entries: Cell::new(0),
            tripped: Cell::new(None),
        }
    }

    #[cfg(test)]
    pub(crate) fn read_compressed(&self, n: u64) {
        self.compressed.set(self.compressed.get() + n);
    }

    #[cfg(test)]
    pub(crate) fn take_tripped(&self) -> Option<Error> {
        self.tripped.take()
    }

    /// Count one more tar entry; past `layer_entries` that is the error.
    pub(crate) fn entry(&self) -> Result<()> {
        let n = self.entries.get() + 1;
        self.entries.set(n);
        if n > self.limits.layer_entries {
            return Err(self.exceeded(
                "layer_entries",
                format!("more than {} entries", self.limits.layer_entries),
            ));
        }
        Ok(())
    }

    fn exceeded(&self, name: &'static str, detail: String) -> Error {
        Limits::exceeded(name, format!("layer {}", self.layer), detail)
    }

    /// Check `inflated` bytes so far; remember and return the bound it broke.
    pub(crate) fn check(&self, inflated: u64) -> std::io::Result<()> {
        let l = &self.limits;
        let compressed = self.compressed.get().max(1);
        let over = if inflated > l.layer_bytes {
            Some(self.exceeded(
                "layer_bytes",
                format!("it unpacks to more than {} bytes", l.layer_bytes),
            ))
        } else if inflated > Limits::RATIO_FLOOR && inflated / compressed > l.inflate_ratio {
            Some(self.exceeded(
                "inflate_ratio",
                format!(
                    "{compressed} compressed bytes inflated to {inflated} bytes, more than {} \
                     times as many (a compression bomb?)",
                    l.inflate_ratio
                ),
            ))
        } else {
            None
        };
        match over {
            None => Ok(()),
            Some(e) => Err(self.trip(e)),
        }
    }

    /// What the header tracker found: a header past `tar_header_bytes`, or
    /// one the tar reader would fail on too.
    fn fault(&self, fault: headers::Fault) -> std::io::Error {
        let e = match fault {
            headers::Fault::TooLarge { .. } => self.exceeded("tar_header_bytes", fault.to_string()),
            headers::Fault::Corrupt(why) => Error::corrupt(format!("layer {}", self.layer), why),
        };
        self.trip(e)
    }

    /// Remember `e` as the error of this read; the I/O error that stops it.
    fn trip(&self, e: Error) -> std::io::Error {
        let msg = e.to_string();
        self.tripped.set(Some(e));
        std::io::Error::other(msg)
    }
}

/// The compressed side: counts what the decoder reads.
struct Counted<'a> {
    inner: &'a mut VerifyingReader,
    budget: &'a Budget,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let c = &self.budget.compressed;
        c.set(c.get() + n as u64);
        Ok(n)
    }
}

/// The inflated side: refuses to yield past the budget, or a tar header
/// past `tar_header_bytes`.
struct Inflated<'a> {
    inner: Box<dyn Read + 'a>,
    budget: &'a Budget,
    read: u64,
    headers: headers::Headers,
}

impl Read for Inflated<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.budget.check(self.read)?;
        self.headers
            .feed(&buf[..n])
            .map_err(|f| self.budget.fault(f))?;
        Ok(n)
    }
}

/// The layer's tar stream, decompressed per its media type.
pub(crate) fn decoder<'a>(layer: &Descriptor, blob: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let what = || format!("layer {}", layer.digest);
    Ok(match layer.media_type.as_str() {
        oci::MEDIA_LAYER_GZIP | oci::DOCKER_LAYER_GZIP => {
            Box::new(flate2::read::MultiGzDecoder::new(blob))
        }
        oci::MEDIA_LAYER_ZSTD => Box::new(
            zstd::stream::Decoder::new(blob).map_err(|e| Error::corrupt(what(), e.to_string()))?,
        ),
        oci::MEDIA_LAYER_TAR => Box::new(blob),
        other => {
            return Err(Error::corrupt(
                what(),
                format!("unsupported media type {other}"),
            ));
        }
    })
}

fn bad(e: std::io::Error) -> Error {
    Error::corrupt("layer tar", e.to_string())
}

fn apply_tar(r: &mut dyn Read, budget: &Budget, m: &mut Merger) -> Result<()> {
    let mut ar = tar::Archive::new(r);
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        budget.entry()?;
        match change_of(&entry)? {
            Change::Opaque(dir) => m.remove_tree(&dir, true),
            Change::Whiteout(path) => m.remove_tree(&path, false),
            Change::Put(mut rec) => {
                if rec.kind != FileKind::Hardlink {
                    rec.xattrs = pax_xattrs(&mut entry)?;
                }
                if rec.kind == FileKind::File {
                    let mut h = Hasher::new();
                    std::io::copy(&mut entry, &mut h).map_err(bad)?;
                    rec.size = h.len();
                    rec.sha256 = Some(h.finish());
                }
                m.put(rec);
            }
            Change::Unrecorded => {}
        }
    }
    Ok(())
}

/// An entry's PAX `SCHILY.xattr.*` records, as a record's `xattrs`.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(exts) = entry.pax_extensions().map_err(bad)? {
        for ext in exts {
            let ext = ext.map_err(bad)?;
            if let Some(key) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                out.insert(key.to_string(), hex::encode(ext.value_bytes()));
            }
        }
    }
    Ok(out)
}

/// What one layer entry does to an image's file tree. Shared by the
/// baseline and the unpacker, so both read every entry the same way.
pub(crate) enum Change {
    /// `.wh..wh..opq`: empty this directory, keeping it.
    Opaque(String),
    /// `.wh.<name>`: remove this path and everything under it.
    Whiteout(String),
    /// Add or replace a path. A regular file's `size` and `sha256` are left
    /// to whoever reads its content.
    Put(FileRecord),
    /// Not part of a baseline: the root itself, device nodes, FIFOs, other types.
    Unrecorded,
}

pub(crate) fn change_of<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Change> {
    let raw = entry.path().map_err(bad)?.to_string_lossy().into_owned();
    let path = format!(
        "/{}",
        raw.trim_start_matches("./")
            .trim_start_matches('/')
            .trim_end_matches('/')
    );
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
    if name == ".wh..wh..opq" {
        let dir = if dir.is_empty() { "/" } else { dir };
        return Ok(Change::Opaque(dir.to_string()));
    }
    if let Some(hidden) = name.strip_prefix(".wh.") {
        return Ok(Change::Whiteout(format!("{dir}/{hidden}")));
    }
    // `.` names the root as `./` does.
    if path == "/" || path == "/." {
        return Ok(Change::Unrecorded);
    }
    let h = entry.header();
    let kind = match h.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => FileKind::File,
        tar::EntryType::Directory => FileKind::Dir,
        tar::EntryType::Symlink => FileKind::Symlink,
        tar::EntryType::Link => FileKind::Hardlink,
        _ => return Ok(Change::Unrecorded),
    };
    let link = entry.link_name().map_err(bad)?.map(|l| {
        let l = l.to_string_lossy().into_owned();
        if kind == FileKind::Hardlink {
            format!("/{}", l.trim_start_matches("./").trim_start_matches('/'))
        } else {
            l
        }
    });
    Ok(Change::Put(FileRecord {
        path,
        kind,
        mode: h.mode().map_err(bad)? & 0o7777,
        uid: h.uid().map_err(bad)? as u32,
        gid: h.gid().map_err(bad)? as u32,
        size: 0,
        sha256: None,
        link,
        xattrs: BTreeMap::new(),
    }))
}

/// The baseline artifact attached to an image, if it has one.
pub fn stored(store: &Store, manifest_digest: &Digest) -> Result<Option<Baseline>> {
    artifact::first_json(store, manifest_digest, ARTIFACT_TYPE, "baseline")
}

/// The baseline of an image: its attached artifact when there is one, else
/// computed from its layers.
pub fn of_image(store: &Store, manifest_digest: &Digest) -> Result<Baseline> {
    if let Some(b) = stored(store, manifest_digest)? {
        return Ok(b);
    }
    let manifest = store.manifest(manifest_digest)?;
    let mut m = Merger::default();
    for layer in &manifest.layers {
        apply_layer(store, layer, &mut m)?;
    }
    Ok(m.finish())
}

/// Store `baseline` as an artifact whose subject is `image`; returns the
/// artifact manifest's descriptor (the caller records the referrer).
pub fn store_artifact(
    store: &Store,
    image: &Descriptor,
    baseline: &Baseline,
) -> Result<Descriptor> {
    let bytes =
        serde_json::to_vec(baseline).map_err(|e| Error::corrupt("baseline", e.to_string()))?;
    artifact::put(store, image, ARTIFACT_TYPE, ARTIFACT_TYPE, &bytes)
}

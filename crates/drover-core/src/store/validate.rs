//! Whether an image is what its manifest and config say it is: the check a
//! pull makes before it names an image, a build makes of its base before
//! building on it, and `verify` makes of every stored image's layers.
//!
//! Blob digests alone do not make an image whole: a manifest can declare
//! sizes its blobs do not have, media types nothing can read, or a config
//! whose `rootfs.diff_ids` (the digests of the uncompressed layers, which
//! signatures, provenance and every later image built on it carry) are not
//! those of its layers. Each of these is refused here, naming the layer.

use std::io::Read;

use rayon::prelude::*;

use super::oci::{self, Descriptor, ImageConfig, Manifest};
use super::{Layout, Store, VerifyingReader, baseline};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::limits::Limits;

/// The layer media types drover reads (foreign and non-distributable
/// layers, which name URLs to fetch from elsewhere, are not among them).
const LAYER_TYPES: &[&str] = &[
    oci::MEDIA_LAYER_TAR,
    oci::MEDIA_LAYER_GZIP,
    oci::MEDIA_LAYER_ZSTD,
    oci::DOCKER_LAYER_GZIP,
];

/// Validate the image `manifest` (`manifest_len` bytes), whose blobs are in
/// the store: its media types, its config (size, `config_bytes`), each
/// layer's size as declared and its diff_id against its uncompressed bytes
/// (`layer_bytes` at most). `what` names the image in errors. Returns the
/// config.
pub fn image(
    store: &Store,
    what: &str,
    manifest: &Manifest,
    manifest_len: u64,
) -> Result<ImageConfig> {
    let limits = store.limits();
    if manifest_len > limits.manifest_bytes {
        return Err(Limits::exceeded(
            "manifest_bytes",
            format!("manifest of {what}"),
            format!("{manifest_len} bytes, more than {}", limits.manifest_bytes),
        ));
    }
    let media_type = manifest
        .media_type
        .as_deref()
        .unwrap_or(oci::MEDIA_MANIFEST);
    if !oci::is_manifest(media_type) || manifest.artifact_type.is_some() {
        return Err(Error::corrupt(
            what,
            format!(
                "its manifest is a {media_type}{}, not an image manifest",
                manifest
                    .artifact_type
                    .as_deref()
                    .map(|t| format!(" of artifact type {t}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let config = &manifest.config;
    let config_what = || format!("config {} of {what}", config.digest);
    if config.media_type != oci::MEDIA_CONFIG && config.media_type != oci::DOCKER_CONFIG {
        return Err(Error::corrupt(
            config_what(),
            format!(
                "media type {:?} is not an image config's",
                config.media_type
            ),
        ));
    }
    if config.size > limits.config_bytes {
        return Err(Limits::exceeded(
            "config_bytes",
            config_what(),
            format!("{} bytes, more than {}", config.size, limits.config_bytes),
        ));
    }
    check_size(store.layout(), config, config_what)?;
    let image_config = store.image_config(manifest)?;
    let diff_ids = &image_config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(Error::corrupt(
            config_what(),
            format!(
                "it lists {} diff_ids for the manifest's {} layers",
                diff_ids.len(),
                manifest.layers.len()
            ),
        ));
    }
    let layout = store.layout();
    let cap = limits.layer_bytes;
    manifest
        .layers
        .par_iter()
        .zip(diff_ids)
        .enumerate()
        .try_for_each(|(i, (layer, diff_id))| {
            let layer_what = || format!("layer {} ({}) of {what}", i + 1, layer.digest);
            check_size(layout, layer, layer_what)?;
            check_diff_id(layout, cap, layer, diff_id, layer_what)
        })?;
    Ok(image_config)
}

/// The size of the stored manifest `digest`, refused past `manifest_bytes`
/// before anything reads it (`what` names it).
pub fn manifest_size(store: &Store, digest: &Digest, what: &str) -> Result<u64> {
    let path = store.blob_path(digest);
    let len = std::fs::metadata(&path)
        .map_err(|e| Error::io("read the size of blob", &path, e))?
        .len();
    let cap = store.limits().manifest_bytes;
    if len > cap {
        return Err(Limits::exceeded(
            "manifest_bytes",
            format!("manifest of {what}"),
            format!("{len} bytes, more than {cap}"),
        ));
    }
    Ok(len)
}

/// The blob of `d` has the size `d` declares.
fn check_size(layout: &Layout, d: &Descriptor, what: impl Fn() -> String) -> Result<()> {
    let path = layout.blob_path(&d.digest);
    let len = std::fs::metadata(&path)
        .map_err(|e| Error::io("read the size of blob", &path, e))?
        .len();
    if len != d.size {
        return Err(Error::corrupt(
            what(),
            format!(
                "its blob is {len} bytes, but the manifest declares {}",
                d.size
            ),
        ));
    }
    Ok(())
}

/// The layer `layer`, decompressed per its media type (which must be one
/// drover reads), hashes to `diff_id`; its compressed bytes are checked
/// against its digest on the way. Reads at most `cap` (`layer_bytes`)
/// uncompressed bytes.
pub fn check_diff_id(
    layout: &Layout,
    cap: u64,
    layer: &Descriptor,
    diff_id: &Digest,
    what: impl Fn() -> String,
) -> Result<()> {
    if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
        return Err(Error::corrupt(
            what(),
            format!(
                "media type {:?} is not a layer drover can read (one of {})",
                layer.media_type,
                LAYER_TYPES.join(", ")
            ),
        ));
    }
    let mut blob = VerifyingReader::open_path(&layout.blob_path(&layer.digest), layer.digest)?;
    let res = baseline::decoder(layer, &mut blob).and_then(|mut r| {
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r
                .read(&mut buf)
                .map_err(|e| Error::corrupt(what(), format!("decompressing it: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if hasher.len() > cap {
                return Err(Limits::exceeded(
                    "layer_bytes",
                    what(),
                    format!("it unpacks to more than {cap} bytes"),
                ));
            }
        }
        Ok(hasher.finish())
    });
    // Drain the blob so its digest is checked: a corrupt blob is the root
    // cause of any other error, so its error wins.
    if let Err(io) = std::io::copy(&mut blob, &mut std::io::sink()) {
        return Err(blob.map_err(io));
    }
    let actual = res?;
    if actual != *diff_id {
        return Err(Error::corrupt(
            what(),
            format!(
                "uncompressed it hashes to {actual}, but the image config's diff_id for it is {diff_id}"
            ),
        ));
    }
    Ok(())
}

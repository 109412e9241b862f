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
/// (`layer_bytes` at most). `what` names the image in errors. Layers in
/// `checked` had their diff_id checked as they arrived ([`DiffIdCheck`]);
/// the rest are read back from the store. Returns the config.
pub fn image(
    store: &Store,
    what: &str,
    manifest: &Manifest,
    manifest_len: u64,
    checked: &std::collections::BTreeSet<Digest>,
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
            if checked.contains(&layer.digest) {
                return Ok(());
            }
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
    known_layer(layer, &what)?;
    let mut blob = VerifyingReader::open_path(&layout.blob_path(&layer.digest), layer.digest)?;
    let res = baseline::decoder(layer, &mut blob).and_then(|r| hash_uncompressed(r, cap, &what));
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

/// A layer's diff_id, checked while its compressed bytes arrive: they are
/// [`fed`](DiffIdCheck::feed) to a thread that decompresses and hashes them,
/// so a pull pays for the check on a second core, at the pace of the
/// network, rather than in a second pass over the stored layer.
pub struct DiffIdCheck {
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<Result<Digest>>>,
    what: String,
}

impl DiffIdCheck {
    /// Start checking `layer` (named `what` in errors), reading at most
    /// `cap` uncompressed bytes; refuses a media type drover cannot read.
    pub fn start(layer: &Descriptor, cap: u64, what: String) -> Result<DiffIdCheck> {
        known_layer(layer, || what.clone())?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let media_type = layer.media_type.clone();
        let name = what.clone();
        let thread = std::thread::spawn(move || {
            let mut input = ChannelReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            };
            let res = {
                let decoded: Box<dyn Read + '_> = match media_type.as_str() {
                    oci::MEDIA_LAYER_GZIP | oci::DOCKER_LAYER_GZIP => {
                        Box::new(flate2::read::MultiGzDecoder::new(&mut input))
                    }
                    oci::MEDIA_LAYER_ZSTD => Box::new(
                        zstd::stream::Decoder::new(&mut input)
                            .map_err(|e| Error::corrupt(&name, e.to_string()))?,
                    ),
                    _ => Box::new(&mut input),
                };
                hash_uncompressed(decoded, cap, || name.clone())
            };
            // Take whatever follows the compressed stream, so the sender
            // never waits on a reader that stopped.
            let _ = std::io::copy(&mut input, &mut std::io::sink());
            res
        });
        Ok(DiffIdCheck {
            tx: Some(tx),
            thread: Some(thread),
            what,
        })
    }

    /// The next compressed bytes of the layer. A full channel is awaited,
    /// not blocked on, so the runtime's timers (the registry time-outs)
    /// keep running while the thread catches up.
    pub async fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        let sent = match &self.tx {
            Some(tx) => Some(tx.send(bytes.to_vec()).await),
            None => None,
        };
        if let Some(Err(_)) = sent {
            // The thread stopped early: its error says why.
            self.tx = None;
            return self.join().map(drop);
        }
        Ok(())
    }

    /// All bytes are in: the uncompressed layer must hash to `diff_id`.
    pub fn finish(mut self, diff_id: &Digest) -> Result<()> {
        self.tx = None;
        let actual = self.join()?;
        if actual != *diff_id {
            return Err(Error::corrupt(
                &self.what,
                format!(
                    "uncompressed it hashes to {actual}, but the image config's diff_id for it is {diff_id}"
                ),
            ));
        }
        Ok(())
    }

    fn join(&mut self) -> Result<Digest> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(res)) => res,
            Some(Err(_)) => Err(Error::Failed(format!(
                "checking {}: the thread panicked",
                self.what
            ))),
            None => Err(Error::Failed(format!(
                "checking {}: already finished",
                self.what
            ))),
        }
    }
}

impl Drop for DiffIdCheck {
    fn drop(&mut self) {
        // Closing the channel ends the thread; it is not waited for.
        self.tx = None;
    }
}

/// Refuse a layer media type drover cannot read.
fn known_layer(layer: &Descriptor, what: impl Fn() -> String) -> Result<()> {
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
    Ok(())
}

/// The sha256 of what `r` yields, refused past `cap` bytes (`layer_bytes`).
fn hash_uncompressed(mut r: impl Read, cap: u64, what: impl Fn() -> String) -> Result<Digest> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| Error::corrupt(what(), format!("decompressing it: {e}")))?;
        if n == 0 {
            return Ok(hasher.finish());
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
}

/// The bytes sent down a channel, as a reader.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            // The checking thread is not in the runtime, so it may block.
            match self.rx.blocking_recv() {
                Some(next) => {
                    self.buf = next;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_diff_id_is_checked_as_the_bytes_arrive() {
        let tar = vec![7u8; 300_000];
        let gz = gzip(&tar);
        let layer = Descriptor::new(oci::MEDIA_LAYER_GZIP, Digest::of(&gz), gz.len() as u64);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let run = |diff_id: &Digest, cap: u64| {
            let mut c = DiffIdCheck::start(&layer, cap, "layer x".into())?;
            for piece in gz.chunks(1000) {
                rt.block_on(c.feed(piece))?;
            }
            c.finish(diff_id)
        };
        run(&Digest::of(&tar), 1 << 20).unwrap();
        let e = run(&Digest::of(b"other"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("diff_id"), "{e}");
        let e = run(&Digest::of(&tar), 1000).unwrap_err();
        assert!(e.to_string().contains("layer_bytes"), "{e}");
        let odd = Descriptor::new("application/x-odd", Digest::of(&gz), 1);
        assert!(DiffIdCheck::start(&odd, 1, "layer y".into()).is_err());
        // Not gzip at all: refused, and feeding never blocks.
        let mut c = DiffIdCheck::start(&layer, 1 << 20, "layer z".into()).unwrap();
        let fed: Result<()> = (0..100).try_for_each(|_| rt.block_on(c.feed(&[0u8; 4096])));
        assert!(fed.is_err() || c.finish(&Digest::of(&tar)).is_err());
    }
}

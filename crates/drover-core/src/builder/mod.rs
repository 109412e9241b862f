//! The builder: `drover.toml` in, an immutable OCI image in the store out.
//!
//! Flow: parse the definition (`def`) → resolve the base → for each layer,
//! list its entries (`scan`), learn every file's content digest (`statcache`),
//! then reuse or write the layer (`layer`) → assemble config and manifest →
//! attach the baseline (`baseline`), the SBOM (`sbom`) and the signed
//! provenance (`provenance`) → tag it and record it in the ledger in one
//! transaction. Same definition and inputs ⇒ same manifest digest: every
//! byte written is decided by the inputs, never by the host, the clock, the
//! umask or the thread count.

pub mod def;
mod layer;
pub mod provenance;
pub mod sbom;
mod scan;
mod statcache;
mod tar;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

pub use def::{Base, Compression, HealthCheck, ImageDef, LayerDef, Probe, RuntimeConfig};
pub use layer::CacheUse;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::ledger::NewEntry;
use crate::store::baseline;
use crate::store::{Descriptor, ImageConfig, Manifest, Store, oci};
use crate::trust::attest::{self, PROVENANCE_ARTIFACT_TYPE, SBOM_ARTIFACT_TYPE};

/// The image label that carries the health check, as JSON.
pub const HEALTH_LABEL: &str = "vnd.drover.health";

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Overrides the definition's `image.compression`.
    pub compression: Option<Compression>,
    /// Overrides the definition's `image.compression_level`.
    pub compression_level: Option<u32>,
    /// Overrides the definition's `name:tag`.
    pub tag: Option<String>,
    /// Timestamp for every file and history entry (SOURCE_DATE_EPOCH); 0 when unset.
    pub source_date_epoch: Option<u64>,
    /// Hash every file and rebuild every layer.
    pub no_cache: bool,
    /// Compression threads; the output does not depend on it.
    pub threads: Option<usize>,
}

/// Receives progress; the CLI draws a bar on a terminal.
pub trait Progress: Sync {
    /// A new phase begins with this much work (files, bytes).
    fn phase(&self, _name: &str, _files: u64, _bytes: u64) {}
    /// This many more bytes of the current phase are done.
    fn advance(&self, _bytes: u64) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Debug, Clone, Serialize)]
pub struct LayerOutcome {
    pub source: String,
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
    pub files: usize,
    /// `None` for base-image layers.
    pub cache: Option<CacheUse>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildOutcome {
    pub digest: Digest,
    pub tag: String,
    pub config: Digest,
    pub baseline: Digest,
    /// The signed SLSA provenance artifact written by this build.
    pub provenance: Digest,
    /// The SPDX SBOM artifact (written once per image).
    pub sbom: Digest,
    pub layers: Vec<LayerOutcome>,
    /// Bytes of file content read and hashed (0 on a fully cached rebuild).
    pub hashed_bytes: u64,
    pub seconds: f64,
    /// Things that went wrong without spoiling the image.
    pub warnings: Vec<String>,
}

/// Build `def` into `store`.
pub fn build(
    store: &mut Store,
    def: &ImageDef,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildOutcome> {
    let started = Instant::now();
    let started_on = crate::clock::now_rfc3339();
    let epoch = opts.source_date_epoch.unwrap_or(0);
    let compression = opts
        .compression
        .or(def.compression)
        .unwrap_or(Compression::Gzip);
    // The definition's level belongs to the definition's compression; a
    // different compression given on the command line starts from its own default.
    let def_level = def
        .compression_level
        .filter(|_| def.compression.unwrap_or_default() == compression);
    let level = opts
        .compression_level
        .or(def_level)
        .unwrap_or(compression.default_level());
    if !compression.levels().contains(&level) {
        let r = compression.levels();
        return Err(Error::Usage(format!(
            "{level} is not a {compression} level (expected {} to {})",
            r.start(),
            r.end()
        )));
    }
    let tag = crate::store::normalize_tag(
        opts.tag
            .as_deref()
            .unwrap_or(&format!("{}:{}", def.name, def.tag)),
    );
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));

    // The deploy policy's word on the base: not revoked, and allowed.
    if let Base::Store(base) | Base::Layout { digest: base, .. } = &def.base {
        crate::trust::policy::enforce_base(store, base, &tag)?;
    }
    let (base_manifest, base_config, mut merger) = resolve_base(store, def)?;
    let mut manifest_layers = base_manifest
        .as_ref()
        .map(|m| m.layers.clone())
        .unwrap_or_default();
    let mut config = base_config.unwrap_or_else(|| ImageConfig {
        architecture: host_arch().into(),
        os: "linux".into(),
        rootfs: oci::RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        },
        ..Default::default()
    });
    let created = crate::clock::format_rfc3339(epoch as i64, 0);

    let context = def
        .context
        .canonicalize()
        .ctx("resolve build context", &def.context)?;
    let def_file = def.file.canonicalize().unwrap_or_else(|_| def.file.clone());
    // Scan every layer's inputs, load the content-hash cache and each
    // layer's previous record, all at once: on a no-op rebuild these reads
    // are most of the work.
    let layout = store.layout().clone();
    let settings = layer::Settings {
        mtime: epoch,
        compression,
        level,
        threads,
        use_cache: !opts.no_cache,
    };
    let (stat_cache, scanned) = rayon::join(
        || statcache::StatCache::load(&layout.cache_dir(), &context),
        || {
            def.layers
                .par_iter()
                .enumerate()
                .map(|(i, layer_def)| {
                    let slot = format!("{}#{i}", def_file.display());
                    let (entries, previous) = rayon::join(
                        || match layer_def {
                            LayerDef::Copy(c) => scan::copy_layer(&context, c),
                            LayerDef::File(f) => Ok(scan::file_layer(f)),
                        },
                        || layer::previous(&layout, &slot, &settings),
                    );
                    Ok((entries?, previous, slot))
                })
                .collect::<Result<Vec<_>>>()
        },
    );
    let mut stat_cache = stat_cache;
    let mut outcomes: Vec<LayerOutcome> = base_manifest
        .iter()
        .flat_map(|m| m.layers.iter().zip(&config.rootfs.diff_ids))
        .map(|(l, diff_id)| LayerOutcome {
            source: "base".into(),
            digest: l.digest,
            diff_id: *diff_id,
            size: l.size,
            media_type: l.media_type.clone(),
            files: 0,
            cache: None,
        })
        .collect();
    // What the SBOM and the provenance need of each layer.
    let mut sbom_layers: Vec<sbom::LayerInput> = base_manifest
        .iter()
        .flat_map(|m| m.layers.iter().zip(&config.rootfs.diff_ids))
        .map(|(l, diff_id)| sbom::LayerInput {
            desc: l.clone(),
            diff_id: *diff_id,
            built: None,
        })
        .collect();
    let mut inputs: Vec<provenance::Dependency> = Vec::new();
    let mut hashed_bytes = 0;
    for (layer_def, (mut entries, previous, slot)) in def.layers.iter().zip(scanned?) {
        let source = match layer_def {
            LayerDef::Copy(c) => format!("copy {} -> {}", c.src, c.dest),
            LayerDef::File(f) => format!("file {}", f.dest),
        };
        // Large files are hashed first (at most this much, less what the
        // content-hash cache already knows); the rest as they are tarred.
        let ahead: Vec<u64> = entries
            .iter()
            .filter(|e| e.sha256.is_none() && e.size > layer::HASH_AHEAD_ABOVE)
            .map(|e| e.size)
            .collect();
        progress.phase("hash", ahead.len() as u64, ahead.iter().sum());
        hashed_bytes += stat_cache.hash_entries(
            &mut entries,
            opts.no_cache,
            layer::HASH_AHEAD_ABOVE,
            &|n| progress.advance(n),
        )?;
        let total: u64 = entries.iter().map(|e| e.size).sum();
        progress.phase("layer", entries.len() as u64, total);
        let previous_diff_id = previous.as_ref().map(|p| p.diff_id);
        let (mut rec, cache, learned) =
            layer::produce(store, &mut entries, &settings, &slot, previous, &|n| {
                progress.advance(n)
            })?;
        for (i, hashed_at, digest, _) in learned {
            hashed_bytes += entries[i].size;
            stat_cache.remember(&entries[i], hashed_at, digest);
        }
        inputs.push(provenance::layer_input(
            layer_def,
            &source,
            &rec.files,
            &rec.diff_id,
        )?);
        for f in std::mem::take(&mut rec.files) {
            merger.put(f);
        }
        let desc = Descriptor::new(&rec.media_type, rec.blob, rec.size);
        manifest_layers.push(desc.clone());
        config.rootfs.diff_ids.push(rec.diff_id);
        config.history.push(oci::History {
            created: Some(created.clone()),
            created_by: Some(format!("drover build: {source}")),
            comment: None,
            empty_layer: false,
        });
        outcomes.push(LayerOutcome {
            source,
            digest: rec.blob,
            diff_id: rec.diff_id,
            size: rec.size,
            media_type: rec.media_type.clone(),
            files: entries.len(),
            cache: Some(cache),
        });
        sbom_layers.push(sbom::LayerInput {
            desc,
            diff_id: rec.diff_id,
            built: Some((entries, previous_diff_id)),
        });
    }
    // The content-hash cache (a few MB of JSON for a large tree) is saved
    // while the image is assembled, and even if that fails: the hashes are
    // right either way.
    let tmp_dir = layout.tmp_dir().to_path_buf();
    std::thread::scope(|s| {
        let saved = s.spawn(|| stat_cache.save(&tmp_dir));
        let built = (|| -> Result<BuildOutcome> {
            apply_runtime_config(&mut config, &def.config)?;
            config.created = Some(created);
            let config_desc = store.put_json(oci::MEDIA_CONFIG, &config)?;
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(oci::MEDIA_MANIFEST.into()),
                artifact_type: None,
                config: config_desc.clone(),
                layers: manifest_layers,
                subject: None,
                annotations: BTreeMap::new(),
            };
            let image = store.put_json(oci::MEDIA_MANIFEST, &manifest)?;
            let files = merger.finish();
            let baseline_desc = baseline::store_artifact(store, &image, &files)?;
            let (sbom_desc, _) = sbom::attach(
                store,
                &image,
                config.created.as_deref(),
                &files,
                &sbom_layers,
            )?;
            drop(files);

            let def_digest = std::fs::read(&def.file).map(|b| Digest::of(&b)).ok();
            let predicate = provenance::predicate(provenance::BuildFacts {
                def,
                definition: def_digest,
                tag: &tag,
                compression,
                level,
                epoch,
                threads,
                no_cache: opts.no_cache,
                inputs,
                started_on,
                baseline: baseline_desc.digest,
                sbom: sbom_desc.digest,
            });
            let key = crate::keys::host_key(store.root())?;
            let statement = predicate.statement(&image.digest, &tag)?;
            let prov_desc = attest::put(store, &image, PROVENANCE_ARTIFACT_TYPE, &statement, &key)?;
            // Replaced: this store's earlier provenance of the same image
            // (see `provenance`); others' is kept.
            let replaced: Vec<Digest> =
                provenance::verified(store, &image.digest, &[key.public()])?
                    .into_iter()
                    .map(|p| p.artifact)
                    .filter(|d| *d != prov_desc.digest)
                    .collect();

            let details = serde_json::json!({
                "tag": tag,
                "definition": def_file.display().to_string(),
                "definition_sha256": def_digest.map(|d| d.to_string()),
                "provenance": prov_desc.digest,
                "replaced_provenance": replaced,
                "sbom": sbom_desc.digest,
                "compression": compression.to_string(),
                "compression_level": level,
                "source_date_epoch": epoch,
                "layers": outcomes.iter().map(|l| serde_json::json!({ "digest": l.digest, "source": l.source, "cache": l.cache })).collect::<Vec<_>>(),
            });
            store.mutate(|m| {
                let previous = m.set_tag(&tag, &image)?;
                m.add_referrer(&baseline_desc, &image.digest, baseline::ARTIFACT_TYPE)?;
                m.add_referrer(&sbom_desc, &image.digest, SBOM_ARTIFACT_TYPE)?;
                m.add_referrer(&prov_desc, &image.digest, PROVENANCE_ARTIFACT_TYPE)?;
                for old in &replaced {
                    m.remove_referrer(old)?;
                }
                let mut details = details;
                details["previous"] = serde_json::json!(previous);
                m.record(NewEntry::new(
                    "image.build",
                    vec![
                        image.digest.to_string(),
                        baseline_desc.digest.to_string(),
                        prov_desc.digest.to_string(),
                        sbom_desc.digest.to_string(),
                    ],
                    details,
                ))
            })?;
            Ok(BuildOutcome {
                digest: image.digest,
                tag,
                config: config_desc.digest,
                baseline: baseline_desc.digest,
                provenance: prov_desc.digest,
                sbom: sbom_desc.digest,
                layers: outcomes,
                hashed_bytes,
                seconds: started.elapsed().as_secs_f64(),
                warnings: Vec::new(),
            })
        })();
        // The image is built and tagged by now; a cache that could not be
        // saved only makes the next build slower, so it is a warning.
        let saved = saved
            .join()
            .map_err(|_| Error::corrupt("content-hash cache", "saving it panicked"))
            .and_then(|r| r);
        built.map(|mut out| {
            if let Err(e) = saved {
                out.warnings
                    .push(format!("content-hash cache not saved: {e}"));
            }
            out
        })
    })
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

type BaseParts = (Option<Manifest>, Option<ImageConfig>, baseline::Merger);

fn resolve_base(store: &Store, def: &ImageDef) -> Result<BaseParts> {
    let digest = match &def.base {
        Base::Scratch => return Ok((None, None, baseline::Merger::default())),
        Base::Store(d) => *d,
        Base::Layout { dir, digest } => import_from_layout(store, dir, digest)?,
    };
    if !store.has_blob(&digest) {
        return Err(Error::NotFound {
            what: format!("base image {digest}"),
            hint: Some(
                "pull or build it into the store first, or name an OCI layout with `layout`".into(),
            ),
        });
    }
    let manifest = store.manifest(&digest)?;
    if manifest
        .media_type
        .as_deref()
        .is_some_and(|m| !oci::is_manifest(m))
        || manifest.artifact_type.is_some()
    {
        return Err(Error::input(
            def.file.clone(),
            format!("base {digest} is not an image manifest"),
        ));
    }
    let config = store.image_config(&manifest)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::corrupt(
            format!("base image {digest}"),
            "config diff_ids do not match the manifest's layers",
        ));
    }
    let merger = baseline::Merger::from_baseline(baseline::of_image(store, &digest)?);
    Ok((Some(manifest), Some(config), merger))
}

/// Copy an image (manifest, config, layers) from another OCI layout into the
/// store, verifying every blob on the way in.
fn import_from_layout(store: &Store, dir: &Path, digest: &Digest) -> Result<Digest> {
    let blob_path = |d: &Digest| dir.join("blobs").join("sha256").join(d.hex());
    let copy = |d: &Digest| -> Result<()> {
        if store.has_blob(d) {
            return Ok(());
        }
        let src = blob_path(d);
        let mut r = crate::store::VerifyingReader::open_path(&src, *d)?;
        let mut w = store.blob_writer()?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut r, &mut buf).map_err(|e| r.map_err(e))?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
        }
        w.commit()?;
        Ok(())
    };
    copy(digest)?;
    let manifest = store.manifest(digest)?;
    copy(&manifest.config.digest)?;
    for l in &manifest.layers {
        copy(&l.digest)?;
    }
    Ok(*digest)
}

fn apply_runtime_config(config: &mut ImageConfig, rc: &RuntimeConfig) -> Result<()> {
    let c = &mut config.config;
    if rc.entrypoint.is_some() {
        c.entrypoint = rc.entrypoint.clone();
        // As with Docker: a new entrypoint drops the base image's cmd.
        c.cmd = None;
    }
    if rc.cmd.is_some() {
        c.cmd = rc.cmd.clone();
    }
    for (k, v) in &rc.env {
        c.env
            .retain(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) != k);
        c.env.push(format!("{k}={v}"));
    }
    if rc.workdir.is_some() {
        c.working_dir = rc.workdir.clone();
    }
    if rc.user.is_some() {
        c.user = rc.user.clone();
    }
    for p in &rc.ports {
        c.exposed_ports.insert(p.clone(), serde_json::Map::new());
    }
    c.labels.extend(rc.labels.clone());
    if rc.stop_signal.is_some() {
        c.stop_signal = rc.stop_signal.clone();
    }
    if let Some(h) = &rc.health {
        let json =
            serde_json::to_string(h).map_err(|e| Error::corrupt("health check", e.to_string()))?;
        c.labels.insert(HEALTH_LABEL.into(), json);
    }
    Ok(())
}

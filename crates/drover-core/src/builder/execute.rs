//! Carrying out a build [`Plan`]: every read and write a build makes, one
//! function per step of the plan (see `plan` for the steps), strung
//! together by [`run`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use super::layer::{self, CacheUse, LayerRecord};
use super::lock::{Lock, LockedLayer};
use super::packages::{self, dpkg::Installed, install::Staging, repo::Online};
use super::plan::{self, BaseStep, GeneratedStep, LayerStep, Plan};
use super::run::{self, Sandbox};
use super::scan::{self, Entry};
use super::statcache::StatCache;
use super::{BuildOutcome, ImageDef, LayerDef, LayerOutcome, Progress, accounts, provenance, sbom};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::ledger::NewEntry;
use crate::store::baseline::{self, FileRecord};
use crate::store::{Descriptor, ImageConfig, Layout, Manifest, Store, oci};
use crate::trust::attest::{self, PROVENANCE_ARTIFACT_TYPE, SBOM_ARTIFACT_TYPE};

/// The image as far as it is built: the base's parts, then each built layer's.
struct Image {
    /// The manifest's layers.
    layers: Vec<Descriptor>,
    outcomes: Vec<LayerOutcome>,
    /// What the SBOM needs of each layer.
    sbom: Vec<sbom::LayerInput>,
    /// The base's config (or scratch's): the built layers are not in it yet.
    config: ImageConfig,
    /// The diff ids of the built layers.
    diff_ids: Vec<Digest>,
    /// Every file of the image, for the baseline and the SBOM.
    files: baseline::Merger,
    /// What the provenance names of each built layer.
    inputs: Vec<provenance::Dependency>,
    /// Bytes of file content read and hashed.
    hashed_bytes: u64,
    /// What the packages layers so far installed (for the dpkg status).
    installed: Vec<Installed>,
    /// The packages whose maintainer scripts ran (`scripts = true`), by
    /// dpkg info name: later layers' triggers reach them.
    configured: Vec<String>,
    /// The distribution the packages came from (`debian-12`), for the SBOM.
    distro: Option<String>,
    warnings: Vec<String>,
}

/// A layer's inputs, scanned: its entries, the previous build of its slot.
type Scanned = (Vec<Entry>, Option<LayerRecord>);

/// Carry out `plan`, made from `def`, in `store`.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    store: &mut Store,
    def: &ImageDef,
    plan: &Plan,
    progress: &dyn Progress,
    sandbox: Option<&Arc<dyn Sandbox>>,
    lock: Option<&Lock>,
    online: Online,
    started: Instant,
    started_on: String,
) -> Result<BuildOutcome> {
    let mut image = base(store, def, plan)?;
    let staging = match lock {
        Some(_) => Some(Staging::new(store)?),
        None => None,
    };
    let context = def
        .context
        .canonicalize()
        .ctx("resolve build context", &def.context)?;
    let layout = store.layout().clone();
    let (mut stat_cache, scanned) = scan(&layout, &context, plan);
    let generated_after = |i: usize| plan.generated.as_ref().filter(|g| g.after == i);
    for (i, (step, scanned)) in plan.layers.iter().zip(scanned?).enumerate() {
        if let Some(g) = generated_after(i) {
            build_generated(store, def, plan, g, &mut stat_cache, progress, &mut image)?;
        }
        if let LayerDef::Packages(_) = step.def {
            let (Some(lock), Some(staging)) = (lock, staging.as_ref()) else {
                return Err(Error::Usage(format!(
                    "{}: a packages layer needs drover.lock (run `drover lock`)",
                    step.source
                )));
            };
            let Some(locked) = lock.layers.iter().find(|l| l.index == i) else {
                return Err(Error::Usage(format!(
                    "{}: layer[{i}] is not in drover.lock (run `drover lock`)",
                    step.source
                )));
            };
            let before = image.installed.len();
            let ctx = (locked, staging, online);
            build_packages(store, plan, step, ctx, progress, &mut image)?;
            if let Some(scripts) = &step.scripts {
                let layer = image.installed[before..].to_vec();
                build_scripts(store, plan, scripts, &layer, sandbox, progress, &mut image)?;
            }
            continue;
        }
        if let LayerDef::Run(r) = step.def {
            let start = image.config.rootfs.diff_ids.iter().chain(&image.diff_ids);
            let parent = run::Parent {
                config: &image.config,
                layers: image.layers.iter().cloned().zip(start.copied()).collect(),
            };
            let built = run::build(
                store,
                plan,
                step,
                r,
                &context,
                &mut stat_cache,
                parent,
                scanned.1,
                sandbox,
                progress,
            )?;
            image.hashed_bytes += built.hashed_bytes;
            image.inputs.push(built.input);
            add_layer(
                &mut image,
                &step.source,
                built.rec,
                built.cache,
                built.files,
                None,
            );
            continue;
        }
        build_layer(
            store,
            plan,
            step,
            scanned,
            &mut stat_cache,
            progress,
            &mut image,
        )?;
    }
    if let Some(g) = plan
        .generated
        .as_ref()
        .filter(|g| g.after >= plan.layers.len())
    {
        build_generated(store, def, plan, g, &mut stat_cache, progress, &mut image)?;
    }
    // The content-hash cache (a few MB of JSON for a large tree) is saved
    // while the image is assembled, and even if that fails: the hashes are
    // right either way.
    let tmp_dir = layout.tmp_dir().to_path_buf();
    std::thread::scope(|s| {
        let saved = s.spawn(|| stat_cache.save(&tmp_dir));
        let built = finish(store, def, plan, image, started, started_on);
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

/// Step 1: the base, checked against the deploy policy and resolved to its
/// layers, config and files.
fn base(store: &mut Store, def: &ImageDef, plan: &Plan) -> Result<Image> {
    let (manifest, config, files) = match &plan.base {
        BaseStep::Scratch { architecture } => (
            None,
            plan::scratch_config(architecture),
            baseline::Merger::default(),
        ),
        BaseStep::Image { digest, layout } => {
            crate::trust::policy::enforce_base(store, digest, &plan.tag)?;
            if let Some(dir) = layout {
                import_from_layout(store, dir, digest)?;
            }
            let (manifest, config, files) = resolve_base(store, &def.file, digest)?;
            (Some(manifest), config, files)
        }
    };
    let base_layers = || {
        manifest
            .iter()
            .flat_map(|m| m.layers.iter().zip(&config.rootfs.diff_ids))
    };
    let outcomes = base_layers()
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
    let sbom = base_layers()
        .map(|(l, diff_id)| sbom::LayerInput {
            desc: l.clone(),
            diff_id: *diff_id,
            built: None,
        })
        .collect();
    Ok(Image {
        layers: manifest.map(|m| m.layers).unwrap_or_default(),
        outcomes,
        sbom,
        config,
        diff_ids: Vec::new(),
        files,
        inputs: Vec::new(),
        hashed_bytes: 0,
        installed: Vec::new(),
        configured: Vec::new(),
        distro: None,
        warnings: Vec::new(),
    })
}

/// The base image `digest`, which must be an image manifest in the store
/// (`definition` is the file that names it, for the error), validated as
/// a pull validates an image (`store::validate`).
fn resolve_base(
    store: &Store,
    definition: &Path,
    digest: &Digest,
) -> Result<(Manifest, ImageConfig, baseline::Merger)> {
    if !store.has_blob(digest) {
        return Err(Error::NotFound {
            what: format!("base image {digest}"),
            hint: Some(
                "pull or build it into the store first, or name an OCI layout with `layout`".into(),
            ),
        });
    }
    let what = format!("base image {digest}");
    let len = crate::store::validate::manifest_size(store, digest, &what)?;
    let manifest = store.manifest(digest)?;
    if manifest
        .media_type
        .as_deref()
        .is_some_and(|m| !oci::is_manifest(m))
        || manifest.artifact_type.is_some()
    {
        return Err(Error::input(
            definition.to_path_buf(),
            format!("base {digest} is not an image manifest"),
        ));
    }
    // As fully as a pull: sizes, media types, each layer's diff_id, before
    // anything is built (and signed) on it.
    let config = crate::store::validate::image(store, &what, &manifest, len, &Default::default())?;
    let files = baseline::Merger::from_baseline(baseline::of_image(store, digest)?);
    Ok((manifest, config, files))
}

/// Copy an image (manifest, config, layers) from another OCI layout into the
/// store, verifying every blob on the way in.
fn import_from_layout(store: &Store, dir: &Path, digest: &Digest) -> Result<()> {
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
    Ok(())
}

/// Scan every layer's inputs, load the content-hash cache and each layer's
/// previous record, all at once: on a no-op rebuild these reads are most
/// of the work.
fn scan(layout: &Layout, context: &Path, plan: &Plan) -> (StatCache, Result<Vec<Scanned>>) {
    rayon::join(
        || StatCache::load(&layout.cache_dir(), context),
        || {
            plan.layers
                .par_iter()
                .map(|step| {
                    let (entries, previous) = rayon::join(
                        || match step.def {
                            LayerDef::Copy(c) => scan::copy_layer(context, c),
                            LayerDef::File(f) => Ok(scan::file_layer(f)),
                            // Installed from the lock, in order.
                            LayerDef::Packages(_) => Ok(Vec::new()),
                            // Known only once the command has run.
                            LayerDef::Run(_) => Ok(Vec::new()),
                        },
                        || layer::previous(layout, &step.slot, &plan.settings),
                    );
                    Ok((entries?, previous))
                })
                .collect()
        },
    )
}

/// Step 2, a packages layer (`packages::step`).
fn build_packages(
    store: &Store,
    plan: &Plan,
    step: &LayerStep,
    (locked, staging, online): (&LockedLayer, &Staging, Online),
    progress: &dyn Progress,
    image: &mut Image,
) -> Result<()> {
    let parent: Vec<Digest> = image
        .config
        .rootfs
        .diff_ids
        .iter()
        .chain(&image.diff_ids)
        .copied()
        .collect();
    let built = packages::step::build(
        store,
        plan,
        step,
        locked,
        &parent,
        &image.files,
        &image.installed,
        (staging, online),
        progress,
    )?;
    image.inputs.extend(built.inputs);
    image.installed.extend(built.installed);
    image.warnings.extend(built.warnings);
    if image.distro.is_none() {
        image.distro = locked.distro();
    }
    let files = built.rec.files.len();
    let sbom = built.entries.map(|e| (e, built.previous_diff_id));
    add_layer(image, &step.source, built.rec, built.cache, files, sbom);
    Ok(())
}

/// Step 2, the maintainer scripts of a packages layer that installed
/// `layer` (`packages::scripts`), run on the image so far.
fn build_scripts(
    store: &mut Store,
    plan: &Plan,
    step: &plan::ScriptsStep,
    layer: &[Installed],
    sandbox: Option<&Arc<dyn Sandbox>>,
    progress: &dyn Progress,
    image: &mut Image,
) -> Result<()> {
    let start = image.config.rootfs.diff_ids.iter().chain(&image.diff_ids);
    let parent = run::Parent {
        config: &image.config,
        layers: image.layers.iter().cloned().zip(start.copied()).collect(),
    };
    let built = packages::scripts::build(
        store,
        plan,
        step,
        layer,
        &image.configured,
        parent,
        &image.files,
        sandbox,
        progress,
    )?;
    image.inputs.push(built.input);
    image.configured = built.configured;
    add_layer(
        image,
        &step.source,
        built.rec,
        built.cache,
        built.files,
        None,
    );
    Ok(())
}

/// Step 2, one layer: hash what the content-hash cache does not know, then
/// reuse or write the layer, and add it to `image`.
fn build_layer(
    store: &Store,
    plan: &Plan,
    step: &LayerStep,
    scanned: Scanned,
    stat_cache: &mut StatCache,
    progress: &dyn Progress,
    image: &mut Image,
) -> Result<()> {
    let input = |files: &[FileRecord], diff_id: &Digest| {
        provenance::layer_input(step.def, &step.source, files, diff_id)
    };
    let named = (step.source.as_str(), step.slot.as_str());
    produce_layer(
        store, plan, named, scanned, &input, stat_cache, progress, image,
    )
}

/// Step 2, the generated layer (`accounts`): made from the image so far.
fn build_generated(
    store: &Store,
    def: &ImageDef,
    plan: &Plan,
    step: &GeneratedStep,
    stat_cache: &mut StatCache,
    progress: &dyn Progress,
    image: &mut Image,
) -> Result<()> {
    let layers: Vec<(&sbom::LayerInput, &str)> = image
        .sbom
        .iter()
        .zip(image.outcomes.iter().map(|o| o.source.as_str()))
        .collect();
    let dbs = accounts::databases(store, &image.files, &layers)?;
    let entries = accounts::entries(def, &image.files, &dbs)?;
    let previous = layer::previous(store.layout(), &step.slot, &plan.settings);
    // Its input is what it holds: the file records, as for a copy layer.
    let input = |files: &[FileRecord], diff_id: &Digest| {
        let records = serde_json::to_vec(files)
            .map_err(|e| Error::corrupt("layer file records", e.to_string()))?;
        let mut d = provenance::Dependency::new(&step.source, None, &Digest::of(&records));
        d.annotations
            .insert("diffId".into(), serde_json::json!(diff_id));
        Ok(d)
    };
    let named = (step.source.as_str(), step.slot.as_str());
    produce_layer(
        store,
        plan,
        named,
        (entries, previous),
        &input,
        stat_cache,
        progress,
        image,
    )
}

/// A layer's dependency in the provenance, from its file records and diff id.
type Input<'a> = dyn Fn(&[FileRecord], &Digest) -> Result<provenance::Dependency> + 'a;

/// Hash, reuse or write the layer of `entries` (named `source`, cached in
/// `slot`) and add it to `image`.
#[allow(clippy::too_many_arguments)]
fn produce_layer(
    store: &Store,
    plan: &Plan,
    (source, slot): (&str, &str),
    (mut entries, previous): Scanned,
    input: &Input,
    stat_cache: &mut StatCache,
    progress: &dyn Progress,
    image: &mut Image,
) -> Result<()> {
    // Large files are hashed first (at most this much, less what the
    // content-hash cache already knows); the rest as they are tarred.
    let ahead: Vec<u64> = entries
        .iter()
        .filter(|e| e.sha256.is_none() && e.size > layer::HASH_AHEAD_ABOVE)
        .map(|e| e.size)
        .collect();
    progress.phase("hash", ahead.len() as u64, ahead.iter().sum());
    image.hashed_bytes += stat_cache.hash_entries(
        &mut entries,
        !plan.settings.use_cache,
        layer::HASH_AHEAD_ABOVE,
        &|n| progress.advance(n),
    )?;
    let total: u64 = entries.iter().map(|e| e.size).sum();
    progress.phase("layer", entries.len() as u64, total);
    let previous_diff_id = previous.as_ref().map(|p| p.diff_id);
    let (rec, cache, learned) =
        layer::produce(store, &mut entries, &plan.settings, slot, previous, &|n| {
            progress.advance(n)
        })?;
    for (i, hashed_at, digest, _) in learned {
        image.hashed_bytes += entries[i].size;
        stat_cache.remember(&entries[i], hashed_at, digest);
    }
    image.inputs.push(input(&rec.files, &rec.diff_id)?);
    let files = entries.len();
    add_layer(
        image,
        source,
        rec,
        cache,
        files,
        Some((entries, previous_diff_id)),
    );
    Ok(())
}

/// Add a built (or reused) layer to `image`: its files, descriptor, diff
/// id, outcome and what the SBOM needs (`built`: its entries, when their
/// sources can still be read).
fn add_layer(
    image: &mut Image,
    source: &str,
    mut rec: LayerRecord,
    cache: CacheUse,
    files: usize,
    built: Option<(Vec<Entry>, Option<Digest>)>,
) {
    for f in std::mem::take(&mut rec.files) {
        image.files.apply_record(f);
    }
    let desc = Descriptor::new(&rec.media_type, rec.blob, rec.size);
    image.layers.push(desc.clone());
    image.diff_ids.push(rec.diff_id);
    image.outcomes.push(LayerOutcome {
        source: source.to_string(),
        digest: rec.blob,
        diff_id: rec.diff_id,
        size: rec.size,
        media_type: rec.media_type.clone(),
        files,
        cache: Some(cache),
    });
    image.sbom.push(sbom::LayerInput {
        desc,
        diff_id: rec.diff_id,
        built,
    });
}

/// Steps 3 to 5: config and manifest; baseline, SBOM and provenance; the
/// tag, referrers and ledger entry in one transaction.
fn finish(
    store: &mut Store,
    def: &ImageDef,
    plan: &Plan,
    image: Image,
    started: Instant,
    started_on: String,
) -> Result<BuildOutcome> {
    let config = plan.config(image.config, &image.diff_ids)?;
    let config_desc = store.put_json(oci::MEDIA_CONFIG, &config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.into()),
        artifact_type: None,
        config: config_desc.clone(),
        layers: image.layers,
        subject: None,
        annotations: BTreeMap::new(),
    };
    let manifest_desc = store.put_json(oci::MEDIA_MANIFEST, &manifest)?;
    let files = image.files.finish();
    let baseline_desc = baseline::store_artifact(store, &manifest_desc, &files)?;
    let (sbom_desc, _) = sbom::attach(
        store,
        &manifest_desc,
        config.created.as_deref(),
        &files,
        &image.sbom,
        image.distro.as_deref(),
    )?;
    drop(files);
    let attached = Attached {
        baseline: baseline_desc,
        sbom: sbom_desc,
    };
    let signed = sign_provenance(
        store,
        def,
        plan,
        &manifest_desc,
        image.inputs,
        &attached,
        started_on,
    )?;
    record(
        store,
        plan,
        &manifest_desc,
        &attached,
        &signed,
        &image.outcomes,
    )?;
    Ok(BuildOutcome {
        digest: manifest_desc.digest,
        tag: plan.tag.clone(),
        config: config_desc.digest,
        baseline: attached.baseline.digest,
        provenance: signed.desc.digest,
        sbom: attached.sbom.digest,
        layers: image.outcomes,
        hashed_bytes: image.hashed_bytes,
        seconds: started.elapsed().as_secs_f64(),
        warnings: image.warnings,
    })
}

/// The baseline and SBOM artifacts of the image.
struct Attached {
    baseline: Descriptor,
    sbom: Descriptor,
}

/// The provenance written by this build.
struct Signed {
    desc: Descriptor,
    /// This store's earlier provenance of the same image, which it replaces.
    replaced: Vec<Digest>,
    /// sha256 of the definition file (`None` if it could not be read again).
    definition: Option<Digest>,
}

/// Step 4's last part: the provenance, signed by the store's host key.
fn sign_provenance(
    store: &Store,
    def: &ImageDef,
    plan: &Plan,
    image: &Descriptor,
    inputs: Vec<provenance::Dependency>,
    attached: &Attached,
    started_on: String,
) -> Result<Signed> {
    let definition = std::fs::read(&def.file).map(|b| Digest::of(&b)).ok();
    let predicate = provenance::predicate(provenance::BuildFacts {
        def,
        definition,
        tag: &plan.tag,
        compression: plan.settings.compression,
        level: plan.settings.level,
        epoch: plan.epoch,
        threads: plan.settings.threads,
        no_cache: !plan.settings.use_cache,
        inputs,
        started_on,
        baseline: attached.baseline.digest,
        sbom: attached.sbom.digest,
    });
    // The store's own signer: the host key its database loaded, not a second copy.
    let key = store.db().signer()?.clone();
    let statement = predicate.statement(&image.digest, &plan.tag)?;
    let desc = attest::put(store, image, PROVENANCE_ARTIFACT_TYPE, &statement, &key)?;
    // Replaced: this store's earlier provenance of the same image (see
    // `provenance`); others' is kept.
    let replaced = provenance::verified(store, &image.digest, &[key.public()])?
        .into_iter()
        .map(|p| p.artifact)
        .filter(|d| *d != desc.digest)
        .collect();
    Ok(Signed {
        desc,
        replaced,
        definition,
    })
}

/// Step 5: tag the image, record its referrers (dropping the replaced
/// provenance) and the `image.build` ledger entry, in one transaction.
fn record(
    store: &mut Store,
    plan: &Plan,
    image: &Descriptor,
    attached: &Attached,
    signed: &Signed,
    outcomes: &[LayerOutcome],
) -> Result<()> {
    let details = serde_json::json!({
        "tag": plan.tag,
        "definition": plan.definition.display().to_string(),
        "definition_sha256": signed.definition.map(|d| d.to_string()),
        "provenance": signed.desc.digest,
        "replaced_provenance": signed.replaced,
        "sbom": attached.sbom.digest,
        "compression": plan.settings.compression.to_string(),
        "compression_level": plan.settings.level,
        "source_date_epoch": plan.epoch,
        "layers": outcomes.iter().map(|l| serde_json::json!({ "digest": l.digest, "source": l.source, "cache": l.cache })).collect::<Vec<_>>(),
    });
    store.mutate(|m| {
        let previous = m.set_tag(&plan.tag, image)?;
        m.add_referrer(&attached.baseline, &image.digest, baseline::ARTIFACT_TYPE)?;
        m.add_referrer(&attached.sbom, &image.digest, SBOM_ARTIFACT_TYPE)?;
        m.add_referrer(&signed.desc, &image.digest, PROVENANCE_ARTIFACT_TYPE)?;
        for old in &signed.replaced {
            m.remove_referrer(old)?;
        }
        let mut details = details;
        details["previous"] = serde_json::json!(previous);
        m.record(NewEntry::new(
            "image.build",
            vec![
                image.digest.to_string(),
                attached.baseline.digest.to_string(),
                signed.desc.digest.to_string(),
                attached.sbom.digest.to_string(),
            ],
            details,
        ))
    })
}

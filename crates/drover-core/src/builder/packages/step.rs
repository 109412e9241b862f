//! One packages layer of a build: reused whole when an earlier build made
//! it from the same lock entries on the same parent, else installed
//! (`install`) and written like every other layer.
//!
//! The cache key is the lock's entries for the layer
//! ([`LockedLayer::content_key`]), the diff ids of the layers below it (a
//! merged-/usr parent changes where files land, and the dpkg status lists
//! the earlier packages layers' packages) and the layer settings. A hit
//! reads no `.deb` at all: the record beside the key keeps what the dpkg
//! database of a later packages layer needs of this one.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::dpkg::Installed;
use super::install::{self, Staging};
use super::repo::Online;
use crate::builder::lock::LockedLayer;
use crate::builder::plan::{LayerStep, Plan};
use crate::builder::scan::Entry;
use crate::builder::{CacheUse, Progress, layer, provenance};
use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::store::Store;
use crate::store::baseline::Merger;

/// A packages layer, built or reused.
pub(crate) struct Built {
    pub rec: layer::LayerRecord,
    pub cache: CacheUse,
    /// Its entries, when it was built now (the SBOM reads their sources).
    pub entries: Option<Vec<Entry>>,
    pub previous_diff_id: Option<Digest>,
    /// The layer, then each `.deb`, as the provenance names them.
    pub inputs: Vec<provenance::Dependency>,
    /// What later packages layers' dpkg status must list of this one.
    pub installed: Vec<Installed>,
    pub warnings: Vec<String>,
}

/// What the cache keeps beside a built packages layer.
#[derive(Serialize, Deserialize)]
struct Marker {
    /// The layer's key in the layer cache (hex).
    layer: String,
    installed: Vec<Record>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    name: String,
    architecture: String,
    control: String,
}

/// Build (or reuse) the packages layer `step`, locked as `locked`, on a
/// parent whose layers have `parent` diff ids and whose files are `image`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    store: &Store,
    plan: &Plan,
    step: &LayerStep,
    locked: &LockedLayer,
    parent: &[Digest],
    image: &Merger,
    earlier: &[Installed],
    (staging, online): (&Staging, Online),
    progress: &dyn Progress,
) -> Result<Built> {
    let settings = &plan.settings;
    let key = Digest::of(
        json!({
            "format": "drover-packages-layer-v1",
            "lock": locked.content_key(),
            "parent": parent,
            "media_type": layer::media_type(settings.compression),
            "level": settings.level,
            "mtime": settings.mtime,
        })
        .to_string()
        .as_bytes(),
    );
    let mut inputs = vec![provenance::Dependency::new(
        step.source.clone(),
        None,
        &locked.content_key(),
    )];
    for p in &locked.packages {
        let mut d = provenance::Dependency::new(
            format!("{}_{}_{}.deb", p.name, p.version, p.architecture),
            Some(p.url.clone()),
            &p.sha256,
        );
        d.annotations.insert(
            "purl".into(),
            json!(format!(
                "pkg:deb/debian/{}@{}?arch={}",
                p.name, p.version, p.architecture
            )),
        );
        inputs.push(d);
    }
    let marker_path = store
        .cache_dir()
        .join("packages")
        .join(format!("{}.json", key.hex()));
    if settings.use_cache
        && let Some(marker) = fs::read(&marker_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
        && let Some(rec) = layer::cached(store.layout(), &marker.layer)
    {
        inputs[0]
            .annotations
            .insert("diffId".into(), json!(rec.diff_id));
        let installed = marker
            .installed
            .into_iter()
            .map(|r| Installed {
                name: r.name,
                architecture: r.architecture,
                control: r.control,
                md5sums: None,
                conffiles: None,
                scripts: Vec::new(),
                files: Vec::new(),
            })
            .collect();
        return Ok(Built {
            rec,
            cache: CacheUse::Hit,
            entries: None,
            previous_diff_id: None,
            inputs,
            installed,
            warnings: Vec::new(),
        });
    }

    let dir = staging.layer(parent.len())?;
    let mut unpacked = install::install(store, locked, image, earlier, &dir, online, progress)?;
    let total: u64 = unpacked.entries.iter().map(|e| e.size).sum();
    progress.phase("layer", unpacked.entries.len() as u64, total);
    let previous = layer::previous(store.layout(), &step.slot, settings);
    let previous_diff_id = previous.as_ref().map(|p| p.diff_id);
    let (rec, cache, _) = layer::produce(
        store,
        &mut unpacked.entries,
        settings,
        &step.slot,
        previous,
        &|n| progress.advance(n),
    )?;
    let marker = Marker {
        layer: rec.key.hex(),
        installed: unpacked
            .installed
            .iter()
            .map(|i| Record {
                name: i.name.clone(),
                architecture: i.architecture.clone(),
                control: i.control.clone(),
            })
            .collect(),
    };
    save(store, &marker_path, &marker)?;
    inputs[0]
        .annotations
        .insert("diffId".into(), json!(rec.diff_id));
    Ok(Built {
        rec,
        cache,
        entries: Some(unpacked.entries),
        previous_diff_id,
        inputs,
        installed: unpacked.installed,
        warnings: unpacked.warnings,
    })
}

fn save(store: &Store, path: &Path, marker: &Marker) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).ctx("create cache directory", dir)?;
    }
    let bytes = serde_json::to_vec(marker).expect("a marker serializes");
    crate::durable::write_atomic(store.tmp_dir(), path, &bytes)
}

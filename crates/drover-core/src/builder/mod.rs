//! The builder: `drover.toml` in, an immutable OCI image in the store out.
//!
//! Flow: parse the definition (`def`) → plan the build (`plan`: pure, the
//! definition and options in, the steps out) → carry the plan out
//! (`execute`): resolve the base → for each layer, list its entries
//! (`scan`), learn every file's content digest (`statcache`), then reuse or
//! write the layer (`layer`) → assemble config and manifest → attach the
//! baseline (`baseline`), the SBOM (`sbom`) and the signed provenance
//! (`provenance`) → tag it and record it in the ledger in one transaction.
//! Same definition and inputs ⇒ same manifest digest: every byte written is
//! decided by the inputs, never by the host, the clock, the umask or the
//! thread count.

pub mod def;
mod execute;
mod layer;
pub mod packages;
mod plan;
pub mod provenance;
pub mod sbom;
mod scan;
mod statcache;
mod tar;

use std::time::Instant;

use serde::Serialize;

pub use def::{Base, Compression, HealthCheck, ImageDef, LayerDef, Probe, RuntimeConfig};
pub use layer::CacheUse;

use crate::digest::Digest;
use crate::error::Result;
use crate::store::Store;

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
    let definition = def.file.canonicalize().unwrap_or_else(|_| def.file.clone());
    let host = plan::Host {
        definition: &definition,
        arch: host_arch(),
        cpus: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let plan = plan::plan(def, opts, &host)?;
    execute::run(store, def, &plan, progress, started, started_on)
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

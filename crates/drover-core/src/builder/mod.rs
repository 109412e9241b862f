//! The builder: `drover.toml` in, an immutable OCI image in the store out.
//!
//! Flow: parse the definition (`def`) and read its `drover.lock` (`lock`;
//! resolved and written by `packages::locking` when missing) → plan the
//! build (`plan`: pure, the definition and options in, the steps out) →
//! carry the plan out (`execute`): resolve the base → for each layer, list
//! its entries (`scan`), learn every file's content digest (`statcache`),
//! then reuse or write the layer (`layer`); a `packages` layer installs its
//! locked `.deb` files (`packages`), a `run` layer runs its command in a
//! [`Sandbox`] and takes what it changed (`run`), the accounts layer merges
//! users and groups (`accounts`) → assemble config and manifest → attach the
//! baseline (`baseline`), the SBOM (`sbom`) and the signed provenance
//! (`provenance`) → tag it and record it in the ledger in one transaction.
//! Same definition and inputs ⇒ same manifest digest: every byte written is
//! decided by the inputs, never by the host, the clock, the umask or the
//! thread count.

mod accounts;
pub mod def;
mod execute;
mod layer;
pub mod lock;
pub mod packages;
mod plan;
pub mod provenance;
pub mod run;
pub mod sbom;
pub(crate) mod scan;
mod statcache;
pub(crate) mod tar;

use std::time::Instant;

use serde::Serialize;

pub use def::{Account, Base, Compression, HealthCheck, ImageDef, LayerDef, Probe, RuntimeConfig};
pub use layer::CacheUse;
pub use run::{RunOutcome, RunStatus, RunStep, Sandbox};

use crate::digest::Digest;
use crate::error::Result;
use crate::store::Store;

/// The image label that carries the health check, as JSON.
pub const HEALTH_LABEL: &str = "vnd.drover.health";

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Where `run` layers run; a definition with one fails without it
    /// (unless every run layer is cached).
    pub sandbox: Option<std::sync::Arc<dyn Sandbox>>,
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
    /// Refuse to resolve packages: a definition with packages layers needs
    /// its `drover.lock` (for CI; without it a missing lock is written).
    pub locked: bool,
    /// Never use the network: every index and `.deb` comes from the cache.
    pub offline: bool,
}

pub use crate::progress::{NoProgress, Progress};

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
    let online = if opts.offline {
        packages::repo::Online::No
    } else {
        packages::repo::Online::Auto
    };
    let (lock, wrote) = packages_lock(store, def, host.arch, opts.locked, online)?;
    let built = execute::run(
        store,
        def,
        &plan,
        progress,
        opts.sandbox.as_ref(),
        lock.as_ref(),
        online,
        started,
        started_on,
    );
    built.map(|mut out| {
        out.warnings.extend(wrote);
        out
    })
}

/// The lock of a definition with packages layers, checked against it: a
/// build installs exactly what it names, and refuses a stale one. A
/// missing lock is resolved and written (and said so: the second value),
/// unless `locked`.
fn packages_lock(
    store: &Store,
    def: &ImageDef,
    arch: &str,
    locked: bool,
    online: packages::repo::Online,
) -> Result<(Option<lock::Lock>, Option<String>)> {
    if !def
        .layers
        .iter()
        .any(|l| matches!(l, LayerDef::Packages(_)))
    {
        return Ok((None, None));
    }
    let path = lock::path_for(&def.file);
    if let Some(lock) = lock::Lock::read(&path)? {
        lock.check(def, arch, &path)?;
        return Ok((Some(lock), None));
    }
    if locked {
        return Err(crate::Error::NotFound {
            what: format!("{} (the packages' lock)", path.display()),
            hint: Some(format!(
                "run `drover lock -f {}` to resolve the packages and write it",
                def.file.display()
            )),
        });
    }
    let resolved = packages::locking::lock(
        store,
        def,
        arch,
        None,
        &packages::locking::Update::Nothing,
        online,
    )?;
    resolved.lock.write(&path)?;
    let count: usize = resolved.lock.layers.iter().map(|l| l.packages.len()).sum();
    Ok((
        Some(resolved.lock),
        Some(format!(
            "{} did not exist: resolved {count} packages and wrote it (commit it; `drover build --locked` refuses to resolve)",
            path.display()
        )),
    ))
}

/// The Debian/OCI name of the building host's architecture.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

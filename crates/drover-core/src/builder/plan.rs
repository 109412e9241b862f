//! The build plan: everything a build decides before it reads a file or
//! touches the store. Pure: the definition, the options and a few facts
//! about the host (as data) in, a [`Plan`] out; `execute` carries it out.
//!
//! A build runs these steps, in this order:
//!
//! 1. **base** ([`BaseStep`]): scratch, or an image (checked against the
//!    deploy policy as the base of the plan's tag, copied in first when it
//!    comes from an OCI layout); its layers, config and baseline are the start;
//! 2. **layers** ([`LayerStep`]), in definition order: scan the inputs, hash
//!    what the content-hash cache does not know, reuse or write the layer;
//!    and the **generated layer** ([`GeneratedStep`]: accounts, homes,
//!    tmpfs mount points) at the one place [`GeneratedStep::after`] says;
//! 3. **config and manifest**: the start's config plus each layer's diff id
//!    and history entry, the runtime config over it ([`Plan::config`]);
//! 4. **baseline**, **SBOM** (unless the image has one) and **provenance**,
//!    signed by the store's host key (replacing this store's earlier
//!    provenance of the same image);
//! 5. **record**, in one store transaction: the tag, the three referrers and
//!    the `image.build` ledger entry.
//!
//! Steps 4 and 5 decide nothing the plan does not already hold (the tag and
//! the parameters the provenance and the ledger name), so they have no type
//! of their own. Signing the image itself is the caller's (`drover build --sign`).

use std::path::{Path, PathBuf};

use super::HEALTH_LABEL;
use super::def::{Base, Compression, ImageDef, LayerDef, RuntimeConfig};
use super::layer::Settings;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::runtime::tmpfs::LABEL as TMPFS_LABEL;
use crate::store::{ImageConfig, oci};

/// What the plan needs to know of the host, passed in so planning stays pure.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// The definition file, canonicalized (or as given when that failed):
    /// it names each layer's cache slot and the ledger entry.
    pub definition: &'a Path,
    /// The OCI architecture a scratch image claims (`amd64`, `arm64`, ...).
    pub arch: &'a str,
    /// Compression threads when the options do not say.
    pub cpus: usize,
}

/// What a build of one definition will do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<'a> {
    /// The tag the image gets (`name` alone means `name:latest`).
    pub tag: String,
    /// SOURCE_DATE_EPOCH: every file's mtime, and (as [`Plan::created`]) the
    /// config's and every history entry's timestamp.
    pub epoch: u64,
    /// `epoch` in RFC 3339.
    pub created: String,
    /// How every layer is written: compression, level, mtime, threads and
    /// whether earlier results may be reused. With the layer's entries,
    /// compression, level and mtime make up a layer's cache key.
    pub settings: Settings,
    /// The definition file as the ledger names it (see [`Host::definition`]).
    pub definition: PathBuf,
    pub base: BaseStep<'a>,
    pub layers: Vec<LayerStep<'a>>,
    /// The layer the build writes itself, if the definition asks for one.
    pub generated: Option<GeneratedStep>,
    /// The runtime config, applied over the base's by [`Plan::config`].
    pub runtime: &'a RuntimeConfig,
}

/// What the first layer goes on.
#[derive(Debug, Clone, PartialEq)]
pub enum BaseStep<'a> {
    /// Nothing: no layers, no files, and a config that names only the
    /// platform ([`scratch_config`]).
    Scratch { architecture: String },
    /// An image, by manifest digest: in the store, or first copied in from
    /// the OCI layout `layout`.
    Image {
        digest: Digest,
        layout: Option<&'a Path>,
    },
}

/// One layer to build.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStep<'a> {
    pub def: &'a LayerDef,
    /// The layer as the build names it: in its output, the config's history
    /// and the provenance (`copy <src> -> <dest>`, `file <dest>`).
    pub source: String,
    /// The layer's place in its definition (`<definition>#<index>`): the
    /// layer cache remembers the last build of each slot, which is the usual
    /// whole-layer hit and lends its compressed chunks to the next build.
    pub slot: String,
    /// The config history entry of the layer.
    pub history: oci::History,
    /// For a packages layer with `scripts = true`: the layer its
    /// maintainer scripts make, right after it.
    pub scripts: Option<ScriptsStep>,
}

/// The layer a packages layer's maintainer scripts make when run on the
/// image so far (`packages::scripts`): what they changed, as a run
/// layer's is.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptsStep {
    /// `scripts of layer[<i>] (packages ...)`.
    pub source: String,
    /// `<definition>#<i>.scripts`.
    pub slot: String,
    pub history: oci::History,
}

/// The layer the build generates (see `builder::accounts`): the
/// definition's accounts merged into the image's `/etc/passwd` and
/// `/etc/group`, their homes, and the mount points of its tmpfs paths.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedStep {
    /// How many of the definition's layers come before it: all of them.
    /// Last, because every account database below it is then final — base
    /// image, copied files, Debian's base-passwd, users a package's or a
    /// run step's script added — so the merge sees every clash, and
    /// nothing above it can overwrite the merged files. The price: a
    /// `run` step cannot use the accounts by name (it can by number).
    pub after: usize,
    /// Names the accounts and mount points, as `LayerStep::source` does.
    pub source: String,
    /// `<definition>#accounts`: its own slot in the layer cache.
    pub slot: String,
    pub history: oci::History,
}

/// Plan the build of `def` with `opts` on `host`. Fails (as a usage error)
/// only when the compression level does not fit the compression.
pub fn plan<'a>(def: &'a ImageDef, opts: &super::BuildOptions, host: &Host) -> Result<Plan<'a>> {
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
    let created = crate::clock::format_rfc3339(epoch as i64, 0);
    let base = match &def.base {
        Base::Scratch => BaseStep::Scratch {
            architecture: host.arch.into(),
        },
        Base::Store(digest) => BaseStep::Image {
            digest: *digest,
            layout: None,
        },
        Base::Layout { dir, digest } => BaseStep::Image {
            digest: *digest,
            layout: Some(dir),
        },
    };
    let layers = def
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let source = match layer {
                LayerDef::Copy(c) => format!("copy {} -> {}", c.src, c.dest),
                LayerDef::File(f) => format!("file {}", f.dest),
                LayerDef::Packages(p) => packages_source(p),
                LayerDef::Run(r) => format!("run {}", r.command.join(" ")),
            };
            let history = |source: &str| oci::History {
                created: Some(created.clone()),
                created_by: Some(format!("drover build: {source}")),
                comment: None,
                empty_layer: false,
            };
            let scripts = match layer {
                LayerDef::Packages(p) if p.scripts => {
                    let source = format!("scripts of layer[{i}] ({source})");
                    Some(ScriptsStep {
                        slot: format!("{}#{i}.scripts", host.definition.display()),
                        history: history(&source),
                        source,
                    })
                }
                _ => None,
            };
            LayerStep {
                def: layer,
                slot: format!("{}#{i}", host.definition.display()),
                history: history(&source),
                source,
                scripts,
            }
        })
        .collect();
    let generated = generated(def, host, &created);
    Ok(Plan {
        tag,
        epoch,
        settings: Settings {
            mtime: epoch,
            compression,
            level,
            threads: opts.threads.unwrap_or(host.cpus),
            use_cache: !opts.no_cache,
        },
        created,
        definition: host.definition.to_path_buf(),
        base,
        layers,
        generated,
        runtime: &def.config,
    })
}

/// A packages layer as the build names it: `packages a, b, c` (the first
/// few names, then how many more).
fn packages_source(p: &super::def::PackagesLayer) -> String {
    const SHOWN: usize = 4;
    let mut names: Vec<&str> = p
        .packages
        .iter()
        .map(|s| s.split('=').next().unwrap_or(s))
        .collect();
    names.sort_unstable();
    let more = names.len().saturating_sub(SHOWN);
    let more = if more > 0 {
        format!(" (+{more})")
    } else {
        String::new()
    };
    names.truncate(SHOWN);
    format!("packages {}{more}", names.join(", "))
}

fn generated(def: &ImageDef, host: &Host, created: &str) -> Option<GeneratedStep> {
    let names: Vec<&str> = def.accounts.iter().map(|a| a.name.as_str()).collect();
    let points: Vec<&str> = super::accounts::mount_points(&def.config.tmpfs)
        .map(|t| t.path.as_str())
        .collect();
    let mut parts = Vec::new();
    if !names.is_empty() {
        parts.push(format!("accounts {}", names.join(", ")));
    }
    if !points.is_empty() {
        parts.push(format!("tmpfs mount points {}", points.join(", ")));
    }
    if parts.is_empty() {
        return None;
    }
    let source = parts.join("; ");
    Some(GeneratedStep {
        after: def.layers.len(),
        slot: format!("{}#accounts", host.definition.display()),
        history: oci::History {
            created: Some(created.to_string()),
            created_by: Some(format!("drover build: {source}")),
            comment: None,
            empty_layer: false,
        },
        source,
    })
}

/// The config a scratch image starts from: Linux on `architecture`, no layers.
pub fn scratch_config(architecture: &str) -> ImageConfig {
    ImageConfig {
        architecture: architecture.into(),
        os: "linux".into(),
        rootfs: oci::RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        },
        ..Default::default()
    }
}

impl Plan<'_> {
    /// The image's config: `start` (the base's, or scratch's) with each
    /// built layer's diff id (`diff_ids`, one per [`LayerStep`]) and history
    /// entry appended, then the runtime config applied over it.
    pub fn config(&self, start: ImageConfig, diff_ids: &[Digest]) -> Result<ImageConfig> {
        let histories = self.histories();
        debug_assert_eq!(diff_ids.len(), histories.len());
        let mut config = start;
        for (history, diff_id) in histories.into_iter().zip(diff_ids) {
            config.rootfs.diff_ids.push(*diff_id);
            config.history.push(history.clone());
        }
        apply_runtime_config(&mut config, self.runtime)?;
        config.created = Some(self.created.clone());
        Ok(config)
    }
}

impl Plan<'_> {
    /// The history entries of the layers built, in build order: the
    /// definition's (each packages layer's scripts right after it), with
    /// the generated one at its place.
    pub fn histories(&self) -> Vec<&oci::History> {
        let mut out: Vec<&oci::History> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            if let Some(g) = self.generated.as_ref().filter(|g| g.after == i) {
                out.push(&g.history);
            }
            out.push(&l.history);
            out.extend(l.scripts.as_ref().map(|s| &s.history));
        }
        if let Some(g) = self
            .generated
            .as_ref()
            .filter(|g| g.after >= self.layers.len())
        {
            out.push(&g.history);
        }
        out
    }
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
    if !rc.tmpfs.is_empty() {
        c.labels.insert(
            TMPFS_LABEL.into(),
            crate::runtime::tmpfs::to_label(&rc.tmpfs),
        );
    }
    if let Some(init) = rc.init {
        c.labels
            .insert(crate::runtime::spec::INIT_LABEL.into(), init.to_string());
    }
    if let Some(h) = &rc.health {
        let json =
            serde_json::to_string(h).map_err(|e| Error::corrupt("health check", e.to_string()))?;
        c.labels.insert(HEALTH_LABEL.into(), json);
    }
    Ok(())
}

#[cfg(test)]
mod tests;

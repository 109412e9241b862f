//! The fleet's registry, configured once (`drover fleet registry set`), and
//! how a host gets an image it does not hold: [`fetch_image`] pulls it by
//! digest from there and checks it against the fleet's policy.
//!
//! Each host keeps its own blob store; the state database names images by
//! digest only. A release made on one host is run on another by pulling its
//! manifest (and layers, and referrers: signatures and provenance) from the
//! fleet registry, the way a Nomad or Kubernetes node pulls a pod's image.
//! The setting is one `<registry>/<repository>` (`http://` in front for a
//! plain-HTTP registry, loopback only), in `fleet_settings` under
//! [`crate::state::fleet::REGISTRY`]; `drover push` of a release's image
//! there (by tag or digest) is what makes it available to the fleet.

use serde_json::json;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::state::fleet::REGISTRY;
use crate::store::Store;
use crate::store::registry::{self, Remote};
use crate::trust::policy::{self, Operation, Origin, Verdict};

/// The fleet's registry, as set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRegistry {
    /// `<registry>/<repository>`, e.g. `registry.example.com/fleet`.
    pub remote: Remote,
    /// Plain HTTP (written `http://…`); loopback registries only.
    pub insecure: bool,
}

impl FleetRegistry {
    /// Parse a setting: `[http://|https://]<registry>/<repository>`, no
    /// tag and no digest.
    pub fn parse(text: &str) -> Result<FleetRegistry> {
        let (insecure, rest) = match text.strip_prefix("http://") {
            Some(r) => (true, r),
            None => (false, text.strip_prefix("https://").unwrap_or(text)),
        };
        let bad = |why: &str| {
            Error::Usage(format!(
                "fleet registry {text:?}: {why}; expected [http://]<registry>/<repository>, \
                 e.g. registry.example.com/fleet (http:// only for a loopback registry)"
            ))
        };
        if !Remote::is_remote(rest) {
            return Err(bad("it names no registry host"));
        }
        let remote = Remote::parse(rest)?;
        if remote.tag.is_some() || remote.digest.is_some() {
            return Err(bad(
                "a fleet registry has no tag or digest: images are pulled by digest",
            ));
        }
        if insecure && !remote.is_loopback() {
            return Err(bad(
                "plain HTTP is only allowed for loopback registries; use TLS",
            ));
        }
        Ok(FleetRegistry { remote, insecure })
    }

    /// Where `digest` is pulled from.
    pub fn image(&self, digest: &Digest) -> Remote {
        Remote {
            digest: Some(*digest),
            ..self.remote.clone()
        }
    }
}

impl std::fmt::Display for FleetRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.insecure {
            f.write_str("http://")?;
        }
        write!(f, "{}", self.remote)
    }
}

/// The fleet's registry, if one is set.
pub fn registry(store: &Store) -> Result<Option<FleetRegistry>> {
    store
        .db()
        .read()
        .fleet_setting(REGISTRY)?
        .map(|s| FleetRegistry::parse(&s.value))
        .transpose()
}

/// Set the fleet's registry (`None`: clear it); recorded as
/// `fleet.registry`. Returns whether anything changed.
pub fn set_registry(store: &mut Store, text: Option<&str>) -> Result<bool> {
    let normal = text
        .map(FleetRegistry::parse)
        .transpose()?
        .map(|r| r.to_string());
    store
        .db_mut()
        .set_fleet_setting(REGISTRY, normal.as_deref(), "fleet.registry", json!({}))
}

/// Make sure image `digest` is in this host's blob store: if its manifest
/// is not, pull it by digest from the fleet's registry (with its layers and
/// referrers), and check it against the fleet's policy before it is
/// usable. A pull the policy refuses (`allowed_registries`, then the whole
/// policy on what arrived) is recorded and returned as
/// [`Error::Refused`]; without a fleet registry, an image not here is
/// [`Error::NotFound`] saying how to set one.
pub fn fetch_image(store: &mut Store, digest: &Digest) -> Result<()> {
    if store.has_blob(digest) {
        return Ok(());
    }
    let Some(fleet) = registry(store)? else {
        return Err(Error::NotFound {
            what: format!("image {digest} in this host's store"),
            hint: Some(
                "the fleet has no registry to pull it from: `drover fleet registry set <registry>/<repository>`"
                    .into(),
            ),
        });
    };
    let remote = fleet.image(digest);
    let reference = remote.to_string();
    policy::enforce_pull(store, &reference, &remote.registry, Operation::Pull)?;
    let opts = registry::Options {
        insecure: fleet.insecure,
        credentials: registry::credentials(&remote.registry)?,
        ..Default::default()
    };
    let report = registry::pull(store, &remote, &opts)?;
    if report.digest != *digest {
        // An image index by that digest resolves to a platform's manifest:
        // the release names the manifest, so that is what must be here.
        return Err(Error::Usage(format!(
            "{reference} is an image index (its manifest for this host is {}); a release names an image manifest",
            report.digest
        )));
    }
    let p = policy::load_for(store)?;
    match p.evaluate(store, digest, Origin::Registry(&remote.registry))? {
        Verdict::Allowed { .. } => Ok(()),
        Verdict::Refused(r) => Err(policy::refuse(store, r, Operation::Pull)),
    }
}

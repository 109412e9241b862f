//! Deploy policy and revocation: which images may be run, deployed, built
//! on or pulled, and the one place that says no.
//!
//! The policy lives in `<store>/policy.toml`, unless the fleet's policy is
//! set in the state database (`drover policy set`, [`set_fleet`]), which
//! then wins for every store sharing it (see [`load_for`]). When neither is
//! there the
//! built-in default applies ([`Policy::default_for`]): only images built and
//! signed on this host — a valid signature by the host key (`keys/host.pub`)
//! and provenance signed by it naming drover's builder. The default is not
//! written to disk: a store created by an older drover gets the same policy
//! as a new one, and `drover policy show` prints the effective policy (as a
//! file that can be saved as `policy.toml` and edited) and says where it
//! came from. Keys a file leaves out keep their default.
//!
//! Rules, checked in this order; the first that fails refuses the image:
//!
//! | rule | refuses |
//! |------|---------|
//! | `revoked` (always on) | a revoked image, or one built on a revoked base |
//! | `allowed_registries` | an image pulled, or to be pulled, from a registry not listed |
//! | `require_signature` | an image without a valid signature by a `trusted_keys` key (one that fails to verify is named as the reason, but a tampered copy beside a good one refuses nothing) |
//! | `require_provenance` | an image without provenance signed by a trusted key naming a `trusted_builders` builder |
//! | `allowed_base_images` | an image whose base (from its provenance, or the definition at build time) is not listed |
//!
//! [`Policy::evaluate`] is the pure part (store in, verdict out);
//! [`enforce`] loads the policy, evaluates it and, on refusal, commits a
//! `policy.refuse` ledger entry in its own transaction (the refused
//! operation fails, the record of the refusal stays) and returns
//! [`Error::Refused`]. There is no switch to bypass it.
//!
//! Revocations (`drover revoke`) are rows of the `revocations` table, each
//! with an `image.revoke` ledger entry. Every path that starts an instance
//! — `run`, deploys, `serve`'s heals (see [`crate::deploy::converge`]) —
//! passes [`super::admit`]: the whole policy, not only revocation, since
//! whoever can write the database can point a release at another image.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value as Json, json};

use super::attest::{self, PROVENANCE_ARTIFACT_TYPE, SLSA_PREDICATE_TYPE};
use super::signature;
use crate::clock;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::keys::dsse::Failure;
use crate::keys::{HOST_PUB, PublicKey};
use crate::ledger::{self, NewEntry};

use crate::store::Store;
use crate::toml_doc::{self, Checker, Node, Table};

/// The policy file's name in the state directory.
pub const FILE: &str = "policy.toml";

const KEYS: &[&str] = &[
    "trusted_keys",
    "require_signature",
    "require_provenance",
    "trusted_builders",
    "allowed_registries",
    "allowed_base_images",
    "replace_revoked",
];

/// The effective policy of a store.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// Public key files as written (relative paths are under the state dir).
    pub trusted_keys: Vec<String>,
    pub require_signature: bool,
    pub require_provenance: bool,
    /// SLSA builder ids whose provenance counts.
    pub trusted_builders: Vec<String>,
    /// Registry hosts (`host[:port]`) images may be pulled from; empty: any.
    pub allowed_registries: Vec<String>,
    /// Base images allowed, each a manifest digest or a tag pattern
    /// (`busybox:*`, `*` matching any run of characters) matched against the
    /// store's tags naming the base; empty: any. `scratch` is always allowed.
    pub allowed_base_images: Vec<String>,
    /// Whether `serve` moves a service off a revoked image by itself.
    pub replace_revoked: bool,
    /// Where this policy came from.
    pub source: Source,
    /// Signing keys the whole fleet trusts (`drover policy trust`, kept in
    /// the state database), in addition to `trusted_keys`.
    pub fleet_keys: Vec<crate::state::TrustedKey>,
    #[serde(skip)]
    keys: Vec<PublicKey>,
}

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "lowercase")]
pub enum Source {
    /// Read from this file.
    File(PathBuf),
    /// The built-in default, because this file does not exist.
    Default(PathBuf),
    /// The fleet's policy, kept in the state database (`drover policy
    /// set`): says when and by whom it was set. It wins over a
    /// `policy.toml` beside the store, which is then not read.
    Fleet(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Default(p) => write!(
                f,
                "the built-in default ({} does not exist; write this there to change it)",
                p.display()
            ),
            Source::Fleet(how) => write!(
                f,
                "the fleet's policy in the state database ({how}; `drover policy unset` goes back to policy.toml)"
            ),
        }
    }
}

/// What is being done with the image, for messages and the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Run,
    Apply,
    Rollback,
    Build,
    Pull,
    /// `drover policy check`: evaluated, nothing done.
    Check,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Run => "run",
            Operation::Apply => "apply",
            Operation::Rollback => "rollback",
            Operation::Build => "build",
            Operation::Pull => "pull",
            Operation::Check => "check",
        }
    }
}

/// Where an image comes from, for `allowed_registries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin<'a> {
    /// The store: built here, imported, or pulled earlier (the pull was checked).
    Local,
    /// A registry host (`host[:port]`), as a fleet file or `pull` names it.
    Registry(&'a str),
}

/// Why an image is refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    /// The image (a digest; a registry reference when nothing is pulled yet).
    pub image: String,
    pub rule: &'static str,
    pub reason: String,
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        Error::Refused {
            image: r.image,
            rule: r.rule.to_string(),
            reason: r.reason,
        }
    }
}

/// The outcome of evaluating an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Every rule passed; `passed` says how, rule by rule.
    Allowed {
        passed: Vec<(String, String)>,
    },
    Refused(Refusal),
}

pub use crate::state::Revocation;

impl Policy {
    /// The built-in default for `state_dir`: images built and signed by
    /// this host. Creates the host key if it does not exist yet.
    pub fn default_for(state_dir: &Path) -> Result<Policy> {
        let host = crate::keys::host_key(state_dir)?.public();
        Ok(Policy {
            trusted_keys: vec![HOST_PUB.to_string()],
            require_signature: true,
            require_provenance: true,
            trusted_builders: vec![attest::BUILDER_ID.to_string()],
            allowed_registries: vec![],
            allowed_base_images: vec![],
            replace_revoked: true,
            source: Source::Default(state_dir.join(FILE)),
            fleet_keys: vec![],
            keys: vec![host],
        })
    }

    /// The keys signatures and provenance are checked against.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// The policy as a `policy.toml` (what `drover policy show` prints).
    pub fn to_toml(&self) -> String {
        let list = |v: &[String]| {
            let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(", "))
        };
        let mut keys = String::new();
        for (path, key) in self.trusted_keys.iter().zip(&self.keys) {
            keys.push_str(&format!("  {path:?}, # key {}\n", &key.keyid()[..12]));
        }
        if !self.fleet_keys.is_empty() {
            keys.push_str(
                "  # and, for the whole fleet (`drover policy trust`, `policy untrust KEYID`):\n",
            );
        }
        for k in &self.fleet_keys {
            keys.push_str(&format!(
                "  # key {}{}, trusted {} by {}\n",
                k.keyid,
                k.name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                k.added,
                k.actor
            ));
        }
        format!(
            "# drover deploy policy; effective policy from {}\n\
             trusted_keys = [\n{keys}]\n\
             require_signature = {}\n\
             require_provenance = {}\n\
             trusted_builders = {}\n\
             # registries images may be pulled from; [] allows any\n\
             allowed_registries = {}\n\
             # base images: digests or tag patterns (\"busybox:*\"); [] allows any\n\
             allowed_base_images = {}\n\
             # let `serve` roll a service back off a revoked image by itself\n\
             replace_revoked = {}\n",
            self.source,
            self.require_signature,
            self.require_provenance,
            list(&self.trusted_builders),
            list(&self.allowed_registries),
            list(&self.allowed_base_images),
            self.replace_revoked,
        )
    }

    /// Evaluate `image` (in `store`) arriving from `origin` against this
    /// policy: the first rule that fails, or how each passed.
    pub fn evaluate(&self, store: &Store, image: &Digest, origin: Origin<'_>) -> Result<Verdict> {
        let refuse = |rule: &'static str, reason: String| {
            Ok(Verdict::Refused(Refusal {
                image: image.to_string(),
                rule,
                reason,
            }))
        };
        let mut passed = Vec::new();
        if let Some(r) = revocation_of(store, image)? {
            return refuse("revoked", r.describe());
        }
        passed.push((
            "revoked".to_string(),
            "neither it nor an image it is built on is revoked".to_string(),
        ));
        if let Some(reason) = self.registry_problem(origin) {
            return refuse("allowed_registries", reason);
        }
        if let Origin::Registry(r) = origin {
            passed.push(("allowed_registries".into(), format!("{r} is allowed")));
        }

        if self.require_signature {
            let check = signature::check(store, image, &self.keys)?;
            if let Some(problem) = check.problem() {
                return refuse(
                    "require_signature",
                    format!(
                        "{problem} (sign it with `drover sign {}`, or trust its signer's key in {})",
                        image.short(),
                        FILE
                    ),
                );
            }
            let (sig, key) = &check.valid[0];
            passed.push((
                "require_signature".into(),
                format!("signature {} by key {}", sig.short(), &key.keyid()[..12]),
            ));
        }

        let provenance = self.provenance(store, image)?;
        if self.require_provenance {
            match &provenance {
                Ok(p) => passed.push((
                    "require_provenance".into(),
                    format!("provenance {} by builder {}", p.artifact.short(), p.builder),
                )),
                Err(why) => return refuse("require_provenance", why.clone()),
            }
        }

        if !self.allowed_base_images.is_empty() {
            match &provenance {
                Err(why) => {
                    return refuse(
                        "allowed_base_images",
                        format!("its base image is not known: {why}"),
                    );
                }
                Ok(p) => match p.base {
                    None => passed.push(("allowed_base_images".into(), "no base (scratch)".into())),
                    Some(b) => match self.base_problem(store, &b)? {
                        Some(tags) => {
                            return refuse(
                                "allowed_base_images",
                                format!("its base image {b}{tags} is not in allowed_base_images"),
                            );
                        }
                        None => passed.push(("allowed_base_images".into(), format!("base {b}"))),
                    },
                },
            }
        }
        Ok(Verdict::Allowed { passed })
    }

    /// Why `base` may not be built on, if it may not: the rule and the
    /// reason, about the base itself ("it was revoked (…)").
    pub fn check_base(
        &self,
        store: &Store,
        base: &Digest,
    ) -> Result<Option<(&'static str, String)>> {
        if let Some(r) = revocation_of(store, base)? {
            return Ok(Some(("revoked", r.describe())));
        }
        if self.allowed_base_images.is_empty() {
            return Ok(None);
        }
        Ok(self.base_problem(store, base)?.map(|tags| {
            (
                "allowed_base_images",
                format!("it{tags} is not in allowed_base_images"),
            )
        }))
    }

    /// Why `registry` may not be pulled from, if it may not.
    pub fn registry_problem(&self, origin: Origin<'_>) -> Option<String> {
        match origin {
            Origin::Registry(r)
                if !self.allowed_registries.is_empty()
                    && !self.allowed_registries.iter().any(|a| a == r) =>
            {
                Some(format!(
                    "registry {r} is not in allowed_registries ({})",
                    self.allowed_registries.join(", ")
                ))
            }
            _ => None,
        }
    }

    /// `None` when `base` is allowed; else how the store tags it (" (tagged
    /// a, b)" or ""), for the message.
    fn base_problem(&self, store: &Store, base: &Digest) -> Result<Option<String>> {
        let digest = base.to_string();
        if self.allowed_base_images.contains(&digest) {
            return Ok(None);
        }
        let names: Vec<String> = store
            .tags()?
            .into_iter()
            .filter(|t| t.digest == *base)
            .map(|t| t.name)
            .collect();
        let hit = self
            .allowed_base_images
            .iter()
            .filter(|a| !a.starts_with("sha256:"))
            .any(|pattern| names.iter().any(|n| glob(pattern, n)));
        if hit {
            return Ok(None);
        }
        Ok(Some(if names.is_empty() {
            String::new()
        } else {
            format!(" (tagged {})", names.join(", "))
        }))
    }

    /// The image's provenance by a trusted key and builder, or why there is none.
    fn provenance(
        &self,
        store: &Store,
        image: &Digest,
    ) -> Result<std::result::Result<Provenance, String>> {
        let all = attest::list(store, image, PROVENANCE_ARTIFACT_TYPE)?;
        if all.is_empty() {
            return Ok(Err(
                "it has no provenance (build it with `drover build`, which records it)".into(),
            ));
        }
        // As with signatures: one good statement is enough; those that do
        // not verify are only the reason given when there is none.
        let mut why = None;
        let mut bad = None;
        let mut good = None;
        for a in &all {
            match a.verify(image, SLSA_PREDICATE_TYPE, &self.keys) {
                Ok((_, st)) => {
                    let builder = st.predicate["runDetails"]["builder"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if self.trusted_builders.contains(&builder) {
                        good.get_or_insert(Provenance {
                            artifact: a.artifact,
                            builder,
                            base: base_of(&st.predicate),
                        });
                    } else {
                        why.get_or_insert(format!(
                            "provenance {} names builder {builder:?}, not one of trusted_builders",
                            a.artifact.short()
                        ));
                    }
                }
                Err(Failure::NoSignatureByKey) => {
                    why.get_or_insert("its provenance is not signed by a trusted key".to_string());
                }
                Err(f) => {
                    bad.get_or_insert(format!(
                        "provenance {} is not valid: {f}",
                        a.artifact.short()
                    ));
                }
            }
        }
        Ok(good.ok_or_else(|| {
            bad.or(why)
                .expect("at least one attestation, and each gave a reason")
        }))
    }
}

/// Verified provenance, as far as policy cares.
struct Provenance {
    artifact: Digest,
    builder: String,
    base: Option<Digest>,
}

/// The base image digest in a SLSA predicate (see [`attest::SLSA_PREDICATE_TYPE`]).
fn base_of(predicate: &Json) -> Option<Digest> {
    predicate["buildDefinition"]["resolvedDependencies"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == "base-image")
        .and_then(|d| d["digest"]["sha256"].as_str())
        .and_then(|h| format!("sha256:{h}").parse().ok())
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

/// The policy of the store at `state_dir`: its `policy.toml`, or the
/// built-in default when there is none.
pub fn load(state_dir: &Path) -> Result<Policy> {
    let path = state_dir.join(FILE);
    if !path.exists() {
        return Policy::default_for(state_dir);
    }
    let text = toml_doc::read(&path, "a policy file")?;
    parse(&text, &path, state_dir)
}

/// The policy of `store` ([`load`]) with the signing keys the fleet trusts
/// (`drover policy trust`) added to its trusted keys: what every check of
/// an image in the store goes by.
///
/// The fleet's policy (`drover policy set`, in the state database) wins
/// over `<store>/policy.toml` once it is set: every host of a fleet then
/// goes by the same text. Its `trusted_keys` paths are read on each host
/// (relative to that host's store), so the default `keys/host.pub` is each
/// host's own key; on a store that joined a fleet, that entry also stands
/// for every joined host's key (registered in the `hosts` table), so an
/// image built and signed on one host of the fleet passes on the others.
pub fn load_for(store: &Store) -> Result<Policy> {
    let read = store.db().read();
    let mut policy = match read.fleet_setting(crate::state::fleet::POLICY)? {
        None => load(store.root())?,
        Some(set) => {
            let mut p = parse(&set.value, Path::new(FLEET_FILE), store.root())?;
            p.source = Source::Fleet(format!("set {} by {}", set.updated, set.actor));
            p
        }
    };
    if policy.trusted_keys.iter().any(|k| k == HOST_PUB)
        && crate::state::hosts::local_host(store.root()).is_some()
    {
        for key in read.host_public_keys()? {
            if !policy.keys.contains(&key) {
                policy.keys.push(key);
            }
        }
    }
    for k in read.trusted_keys(false)? {
        let key = PublicKey::from_pem(&k.public_key, read.path())?;
        if !policy.keys.contains(&key) {
            policy.keys.push(key);
        }
        policy.fleet_keys.push(k);
    }
    Ok(policy)
}

/// What errors in the fleet's policy name as its file.
pub const FLEET_FILE: &str = "the fleet policy (state database)";

/// Make `text` the fleet's policy (`drover policy set`), or clear it with
/// `None` (`drover policy unset`: `policy.toml` applies again). The text is
/// checked first as this store reads it. Recorded in the ledger
/// (`policy.set`, with the text's digest; `policy.unset`). Returns whether
/// anything changed.
pub fn set_fleet(store: &mut Store, text: Option<&str>, file: &Path) -> Result<bool> {
    let details = match text {
        Some(t) => {
            parse(t, file, store.root())?;
            json!({"digest": Digest::of(t.as_bytes()).to_string(), "from": file.display().to_string()})
        }
        None => json!({}),
    };
    let action = if text.is_some() {
        "policy.set"
    } else {
        "policy.unset"
    };
    store
        .db_mut()
        .set_fleet_setting(crate::state::fleet::POLICY, text, action, details)
}

/// Check policy `text` (from `file`, named in errors); key paths are
/// relative to `state_dir`.
pub fn parse(text: &str, file: &Path, state_dir: &Path) -> Result<Policy> {
    let (root, c) = toml_doc::parse(text, file)?;
    let t = c.table(&root, "", KEYS)?;
    let flag = |key: &str, default: bool| -> Result<bool> {
        t.get(key)
            .map_or(Ok(default), |n| c.boolean(n, &t.key(key)))
    };
    let require_signature = flag("require_signature", true)?;
    let require_provenance = flag("require_provenance", true)?;
    let replace_revoked = flag("replace_revoked", true)?;

    let (trusted_keys, keys) = match t.get("trusted_keys") {
        None => (
            vec![HOST_PUB.to_string()],
            vec![crate::keys::host_key(state_dir)?.public()],
        ),
        Some(n) => trusted_keys(&c, n, state_dir)?,
    };
    if keys.is_empty() && (require_signature || require_provenance) {
        let n = t
            .get("trusted_keys")
            .expect("only an explicit list is empty");
        return Err(c.err(
            n.at(),
            "trusted_keys",
            "no key is trusted, so no image could pass require_signature or require_provenance; \
             list a public key, e.g. [\"keys/host.pub\"]",
        ));
    }
    let trusted_builders = match t.get("trusted_builders") {
        None => vec![attest::BUILDER_ID.to_string()],
        Some(n) => non_empty_strings(&c, &t, n, "trusted_builders")?,
    };
    if trusted_builders.is_empty() && require_provenance {
        let n = t
            .get("trusted_builders")
            .expect("only an explicit list is empty");
        return Err(c.err(
            n.at(),
            "trusted_builders",
            format!(
                "no builder is trusted, so no image could pass require_provenance; \
                 drover's own is [{:?}]",
                attest::BUILDER_ID
            ),
        ));
    }
    let allowed_registries = match t.get("allowed_registries") {
        None => vec![],
        Some(n) => {
            let key = t.key("allowed_registries");
            let list = c.array(n, &key, "an array of registry hosts")?;
            let mut out = Vec::new();
            for (i, item) in list.iter().enumerate() {
                let k = toml_doc::index_key(&key, i);
                let s = c.string(item, &k)?;
                if s.is_empty() || s.contains('/') || s.contains("://") || s.contains('@') {
                    return Err(c.err(
                        item.at(),
                        &k,
                        format!(
                            "{s:?} is not a registry host (expected host[:port], e.g. \"registry.example.com\")"
                        ),
                    ));
                }
                out.push(s.to_string());
            }
            out
        }
    };
    let allowed_base_images = match t.get("allowed_base_images") {
        None => vec![],
        Some(n) => {
            let key = t.key("allowed_base_images");
            let list = c.array(n, &key, "an array of digests or tag patterns")?;
            let mut out = Vec::new();
            for (i, item) in list.iter().enumerate() {
                let k = toml_doc::index_key(&key, i);
                let s = c.string(item, &k)?;
                if s.starts_with("sha256:") {
                    s.parse::<Digest>().map_err(|e| c.err(item.at(), &k, e))?;
                } else if s.is_empty() || !s.contains(':') {
                    return Err(c.err(
                        item.at(),
                        &k,
                        format!(
                            "{s:?} is neither a digest (\"sha256:…\") nor a tag pattern \
                             (\"name:tag\", `*` for any characters, e.g. \"busybox:*\")"
                        ),
                    ));
                }
                out.push(s.to_string());
            }
            out
        }
    };
    Ok(Policy {
        trusted_keys,
        require_signature,
        require_provenance,
        trusted_builders,
        allowed_registries,
        allowed_base_images,
        replace_revoked,
        source: Source::File(file.to_path_buf()),
        fleet_keys: vec![],
        keys,
    })
}

fn trusted_keys(
    c: &Checker<'_>,
    node: &Node,
    state_dir: &Path,
) -> Result<(Vec<String>, Vec<PublicKey>)> {
    let key = "trusted_keys";
    let list = c.array(node, key, "an array of public key files")?;
    let (mut names, mut keys) = (Vec::new(), Vec::new());
    for (i, item) in list.iter().enumerate() {
        let k = toml_doc::index_key(key, i);
        let s = c.string(item, &k)?;
        let path = state_dir.join(s);
        let public = PublicKey::load(&path).map_err(|e| {
            c.err(
                item.at(),
                &k,
                format!("cannot use {} as a public key: {e}", path.display()),
            )
        })?;
        names.push(s.to_string());
        keys.push(public);
    }
    Ok((names, keys))
}

fn non_empty_strings(c: &Checker<'_>, t: &Table<'_>, n: &Node, name: &str) -> Result<Vec<String>> {
    let key = t.key(name);
    let list = c.array(n, &key, "an array of strings")?;
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let k = toml_doc::index_key(&key, i);
        let s = c.string(item, &k)?;
        if s.is_empty() {
            return Err(c.err(item.at(), &k, "must not be empty"));
        }
        out.push(s.to_string());
    }
    Ok(out)
}

/// Load the store's policy and evaluate `image` for `op`; on refusal commit
/// a `policy.refuse` ledger entry and return [`Error::Refused`].
pub fn enforce(store: &mut Store, image: &Digest, origin: Origin<'_>, op: Operation) -> Result<()> {
    let policy = load_for(store)?;
    match policy.evaluate(store, image, origin)? {
        Verdict::Allowed { .. } => Ok(()),
        Verdict::Refused(r) => Err(refuse(store, r, op)),
    }
}

/// Refuse to build `building` (the tag being built) on `base` when the policy
/// does not allow that base (recorded like any refusal, as `build`).
pub fn enforce_base(store: &mut Store, base: &Digest, building: &str) -> Result<()> {
    let policy = load_for(store)?;
    match policy.check_base(store, base)? {
        None => Ok(()),
        Some((rule, why)) => Err(refuse(
            store,
            Refusal {
                image: base.to_string(),
                rule,
                reason: format!("{why}; it is the base of {building}"),
            },
            Operation::Build,
        )),
    }
}

/// Refuse a pull from `registry` of `reference` (for `op`: `pull`, or the
/// `apply` that would pull) unless the policy allows that registry
/// (recorded like any refusal).
pub fn enforce_pull(
    store: &mut Store,
    reference: &str,
    registry: &str,
    op: Operation,
) -> Result<()> {
    let policy = load_for(store)?;
    match policy.registry_problem(Origin::Registry(registry)) {
        None => Ok(()),
        Some(reason) => Err(refuse(
            store,
            Refusal {
                image: reference.to_string(),
                rule: "allowed_registries",
                reason,
            },
            op,
        )),
    }
}

/// Record `r` (`policy.refuse`) in its own transaction and turn it into the
/// error to return. A failure to record is reported instead: a refusal the
/// ledger does not show would be a hole in the trail.
pub fn refuse(store: &mut Store, r: Refusal, op: Operation) -> Error {
    let recorded = store.db_mut().write(|tx| {
        tx.record(NewEntry::new(
            "policy.refuse",
            [r.image.clone()],
            json!({"rule": r.rule, "reason": r.reason, "operation": op.as_str()}),
        ))
        .map(drop)
    });
    match recorded {
        Ok(()) => r.into(),
        Err(e) => e,
    }
}

/// A revocation that reaches an image: its own, or that of an image it was
/// built on, at any depth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reached {
    pub revocation: Revocation,
    /// The images between: empty when the image itself is revoked, else the
    /// bases walked through, nearest first, ending at the revoked one.
    pub via: Vec<Digest>,
}

impl Reached {
    /// "it was revoked (…)" or "it is built on … which was revoked (…)".
    pub fn describe(&self) -> String {
        let r = &self.revocation;
        if self.via.is_empty() {
            return format!("it was revoked ({}, by {})", r.reason, r.actor);
        }
        let through: Vec<String> = self.via[..self.via.len() - 1]
            .iter()
            .map(|d| d.to_string())
            .collect();
        format!(
            "it is built on {}{}, which was revoked ({}, by {})",
            r.digest,
            if through.is_empty() {
                String::new()
            } else {
                format!(" (through {})", through.join(", "))
            },
            r.reason,
            r.actor
        )
    }
}

/// The revocation that reaches `image`, if one does: its own, or that of a
/// base image its provenance names, and so on down (an image built on an
/// image built on a revoked one contains the revoked one's layers).
///
/// Bases are read from every provenance statement attached, verified or
/// not: this only ever refuses, so a forged statement can add a base (and
/// get an image refused) but never hide one that a genuine statement names.
pub fn revocation_of(store: &Store, image: &Digest) -> Result<Option<Reached>> {
    let db = store.db().read();
    if db.revocation_count()? == 0 {
        return Ok(None);
    }
    // Breadth first, each image once; a chain is at most as long as the
    // store has images, and a cycle (forged) ends at the visited set.
    let mut queue = std::collections::VecDeque::from([(*image, Vec::new())]);
    let mut seen = std::collections::BTreeSet::from([*image]);
    while let Some((d, via)) = queue.pop_front() {
        if let Some(r) = db.revocation(&d)? {
            return Ok(Some(Reached { revocation: r, via }));
        }
        for a in attest::list(store, &d, PROVENANCE_ARTIFACT_TYPE)? {
            let Some(base) = a
                .statement_unverified()
                .and_then(|st| base_of(&st.predicate))
            else {
                continue;
            };
            if seen.insert(base) {
                let mut v = via.clone();
                v.push(base);
                queue.push_back((base, v));
            }
        }
    }
    Ok(None)
}

/// `image` and every image it is built on, nearest first, as any
/// provenance statement attached says (verified or not, as for
/// [`revocation_of`]: this only ever serves to refuse).
pub(crate) fn lineage(store: &Store, image: &Digest) -> Result<Vec<Digest>> {
    let mut out = vec![*image];
    let mut seen = std::collections::BTreeSet::from([*image]);
    let mut i = 0;
    while i < out.len() {
        let d = out[i];
        i += 1;
        for a in attest::list(store, &d, PROVENANCE_ARTIFACT_TYPE)? {
            if let Some(base) = a
                .statement_unverified()
                .and_then(|st| base_of(&st.predicate))
                && seen.insert(base)
            {
                out.push(base);
            }
        }
    }
    Ok(out)
}

/// Revoke the image `reference` names (a tag is resolved and its digest
/// recorded; a full digest need not be in the store, so an image can be
/// revoked before it ever arrives). Records `image.revoke`. Revoking a
/// revoked image changes nothing and returns the first revocation.
pub fn revoke(store: &mut Store, reference: &str, reason: &str) -> Result<(Revocation, bool)> {
    if reason.trim().is_empty() {
        return Err(Error::Usage(
            "a revocation needs a reason (--reason \"CVE-2026-1234 in openssl\")".into(),
        ));
    }
    let digest = match reference.parse::<Digest>() {
        Ok(d) => d,
        Err(_) => store.resolve(reference)?.digest,
    };
    let actor = ledger::actor();
    store.db_mut().write(|tx| {
        if let Some(r) = tx.read().revocation(&digest)? {
            return Ok((r, false));
        }
        let r = Revocation {
            digest,
            reason: reason.to_string(),
            time: clock::now_rfc3339(),
            actor: actor.clone(),
        };
        tx.add_revocation(&r)?;
        tx.record(NewEntry::new(
            "image.revoke",
            [digest.to_string()],
            json!({"reason": reason, "reference": reference}),
        ))?;
        Ok((r, true))
    })
}

/// Lift the revocation of the image `reference` names (a mistaken one):
/// the row goes, and an `image.unrevoke` ledger entry keeps both the
/// revocation it lifts and `reason`. Returns the lifted revocation.
pub fn unrevoke(store: &mut Store, reference: &str, reason: &str) -> Result<Revocation> {
    if reason.trim().is_empty() {
        return Err(Error::Usage(
            "lifting a revocation needs a reason (--reason \"revoked the wrong digest\")".into(),
        ));
    }
    let digest = match reference.parse::<Digest>() {
        Ok(d) => d,
        Err(_) => store.resolve(reference)?.digest,
    };
    store.db_mut().write(|tx| {
        let r = tx
            .read()
            .revocation(&digest)?
            .ok_or_else(|| Error::NotFound {
                what: format!("a revocation of {digest}"),
                hint: Some("`drover revoke --list` lists them".into()),
            })?;
        tx.remove_revocation(&digest)?;
        tx.record(NewEntry::new(
            "image.unrevoke",
            [digest.to_string()],
            json!({"reason": reason, "revoked": {"reason": r.reason, "time": r.time,
                       "actor": r.actor}}),
        ))?;
        Ok(r)
    })
}

#[cfg(test)]
mod tests;

//! `drover trace`: the answer to "which exact, approved image is this
//! instance running, and who built it from what?", with every link checked.
//!
//! The chain is instance → release → image → signatures → provenance
//! (definition, inputs, base image) → SBOM → baseline → last drift result;
//! for a live instance, its `config.json` and its root are also checked
//! now (every file of the root hashed against the baseline), never taken
//! from the last scan alone.
//! Each [`Link`] says what it found and whether it holds; a link that does
//! not hold names why. Nothing here changes anything: a trace reads the
//! store and the database and re-hashes the blobs it names.

use serde::Serialize;
use serde_json::Value;

use crate::builder::provenance;
use crate::deploy::release::{self, Release};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::instance::{self, Instance};
use crate::keys::PublicKey;
use crate::store::{Store, artifact, baseline};
use crate::trust::attest::{
    self, PROVENANCE_ARTIFACT_TYPE, SBOM_ARTIFACT_TYPE, SLSA_PREDICATE_TYPE,
};
use crate::trust::signature;

/// One checked step of the chain.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    /// What this step is: `instance`, `release`, `image`, `signature`, ...
    pub kind: &'static str,
    /// The thing itself: an id, `service@N`, a digest.
    pub name: String,
    /// True when the step was checked and holds.
    pub ok: bool,
    /// Facts worth printing, in order.
    pub facts: Vec<(String, String)>,
    /// Why it does not hold (when `ok` is false).
    pub problem: Option<String>,
    /// Steps that hang off this one.
    pub children: Vec<Link>,
}

impl Link {
    fn new(kind: &'static str, name: impl Into<String>) -> Link {
        Link {
            kind,
            name: name.into(),
            ok: true,
            facts: Vec::new(),
            problem: None,
            children: Vec::new(),
        }
    }

    fn fact(mut self, k: &str, v: impl std::fmt::Display) -> Link {
        self.facts.push((k.into(), v.to_string()));
        self
    }

    fn fail(mut self, why: impl Into<String>) -> Link {
        self.ok = false;
        self.problem = Some(why.into());
        self
    }

    /// True when this step and everything under it holds.
    pub fn all_ok(&self) -> bool {
        self.ok && self.children.iter().all(Link::all_ok)
    }
}

/// Whose word counts: the keys whose signatures and provenance count, and
/// the builders whose provenance does (the policy's, unless told others).
#[derive(Debug, Clone)]
pub struct Trust {
    pub keys: Vec<PublicKey>,
    pub builders: Vec<String>,
}

/// Trace `target`: an instance (id, prefix or name), a release
/// (`service@N`), or an image (tag, digest or digest prefix), judged by
/// `trust` the way the deploy policy judges.
pub fn trace(store: &Store, target: &str, trust: &Trust) -> Result<Link> {
    if let Some((service, n)) = target.rsplit_once('@')
        && let Ok(n) = n.parse::<i64>()
    {
        let db = store.db();
        let r = release::release(db.read(), service, n)?;
        return Ok(of_release(store, &r, None, trust));
    }
    match instance::find(store.db(), target) {
        Ok(i) => return of_instance(store, &i, trust),
        Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    let image = store.resolve(target).map_err(|e| match e {
        Error::NotFound { .. } => Error::NotFound {
            what: format!("{target:?} as an instance, a release (service@N) or an image"),
            hint: Some(
                "`drover ps`, `drover releases SERVICE` and `drover images` list them".into(),
            ),
        },
        e => e,
    })?;
    Ok(of_image(store, &image.digest, trust))
}

fn of_instance(store: &Store, i: &Instance, trust: &Trust) -> Result<Link> {
    let mut link = Link::new("instance", &i.id)
        .fact("state", i.state.as_str())
        .fact("image", i.image)
        .fact("created", &i.created);
    if let Some(c) = &i.condemned {
        link = link.fact("condemned", c);
    }
    // An instance of another host of the fleet: what the database and this
    // store hold is traced here; its bundle, root and process are that
    // host's, checked by a trace there.
    let elsewhere =
        store.db().read().instance_host(&i.id)?.filter(|h| {
            crate::state::hosts::local_host(store.root()).is_none_or(|(me, _)| &me != h)
        });
    if let Some(h) = &elsewhere {
        link = link.fact("host", h);
    }
    link.children.push(drift_link(store, &i.id)?);
    if let Some(h) = &elsewhere {
        link.children
            .push(Link::new("config and root", format!("on host {h}")).fact(
                "checked",
                format!(
                    "not from here: they are on {h} (`drover trace {}` there checks them now)",
                    i.id
                ),
            ));
    } else if i.state.is_live() {
        // Checked now, not taken from the last scan: a config.json edited
        // or a root file changed a minute ago must show here.
        link.children.push(config_now(store, i));
        link.children.push(root_now(store, i));
    }
    let release = match (&i.service, i.release) {
        (Some(s), Some(n)) => {
            let db = store.db();
            Some(release::release(db.read(), s, n)?)
        }
        _ => None,
    };
    match release {
        Some(r) => {
            let r_link = of_release(store, &r, Some(&i.image), trust);
            link.children.push(r_link);
        }
        None => {
            link = link.fact("started by", "drover run (no release)");
            link.children.push(of_image(store, &i.image, trust));
        }
    }
    Ok(link)
}

fn of_release(store: &Store, r: &Release, running: Option<&Digest>, trust: &Trust) -> Link {
    let mut link = Link::new("release", format!("{}@{}", r.service, r.number))
        .fact("image", r.image)
        .fact("config", r.config_digest)
        .fact("outcome", r.outcome.as_str())
        .fact("by", &r.author)
        .fact("at", &r.created);
    if !r.message.is_empty() {
        link = link.fact("message", &r.message);
    }
    if let Some(of) = r.rollback_of {
        link = link.fact("rollback of", format!("{}@{of}", r.service));
    }
    if let Some(d) = running
        && d != &r.image
    {
        link = link.fail(format!(
            "the instance runs {d}, but its release names {}",
            r.image
        ));
    }
    link.children.push(of_image(store, &r.image, trust));
    link
}

/// The image and everything attached to it.
pub fn of_image(store: &Store, digest: &Digest, trust: &Trust) -> Link {
    let mut link = Link::new("image", digest.to_string());
    let tags: Vec<String> = store
        .tags()
        .map(|ts| {
            ts.into_iter()
                .filter(|t| t.digest == *digest)
                .map(|t| t.name)
                .collect()
        })
        .unwrap_or_default();
    if !tags.is_empty() {
        link = link.fact("tags", tags.join(", "));
    }
    match revoked(store, digest) {
        Ok(Some(why)) => link = link.fail(format!("revoked: {why}")),
        Ok(None) => {}
        Err(e) => link = link.fail(e.to_string()),
    }
    if !store.has_blob(digest) {
        // A host of a fleet holds only the images it runs.
        return link.fail(
            "not in this host's store (`drover fleet fetch` pulls it from the fleet's registry)",
        );
    }
    match blobs_intact(store, digest) {
        Ok((n, bytes)) => {
            link = link.fact("blobs", format!("{n} intact ({bytes} bytes re-hashed)"))
        }
        Err(e) => link = link.fail(e.to_string()),
    }
    link.children.push(signatures_link(store, digest, trust));
    link.children.push(provenance_link(store, digest, trust));
    link.children.push(sbom_link(store, digest));
    link.children.push(baseline_link(store, digest));
    link
}

/// Manifest, config and every layer, re-hashed.
fn blobs_intact(store: &Store, digest: &Digest) -> Result<(usize, u64)> {
    let manifest = store.manifest(digest)?;
    let mut bytes = store.check_blob(digest)? + store.check_blob(&manifest.config.digest)?;
    for l in &manifest.layers {
        bytes += store.check_blob(&l.digest)?;
    }
    Ok((manifest.layers.len() + 2, bytes))
}

/// Why `digest` is revoked (itself or an image it is built on), if it is.
fn revoked(store: &Store, digest: &Digest) -> Result<Option<String>> {
    Ok(crate::trust::policy::revocation_of(store, digest)?.map(|r| r.describe()))
}

fn signatures_link(store: &Store, digest: &Digest, trust: &Trust) -> Link {
    let link = Link::new("signatures", format!("{} trusted key(s)", trust.keys.len()));
    let check = match signature::check(store, digest, &trust.keys) {
        Ok(c) => c,
        Err(e) => return link.fail(e.to_string()),
    };
    let mut link = link;
    for (d, k) in &check.valid {
        link.children
            .push(Link::new("signature", d.to_string()).fact("key", k.keyid()));
    }
    // As the policy judges: one that fails to verify counts against the
    // image only when there is no good one; it is shown either way.
    for (d, f) in &check.invalid {
        let bad = Link::new("signature", d.to_string());
        link.children.push(if check.is_trusted() {
            bad.fact("ignored, NOT valid", f)
        } else {
            bad.fail(f.to_string())
        });
    }
    if check.other > 0 {
        link = link.fact("by other keys", check.other);
    }
    match check.problem() {
        Some(p) => link.fail(p),
        None => link,
    }
}

fn provenance_link(store: &Store, digest: &Digest, trust: &Trust) -> Link {
    let link = Link::new("provenance", SLSA_PREDICATE_TYPE);
    let all = match attest::list(store, digest, PROVENANCE_ARTIFACT_TYPE) {
        Ok(v) => v,
        Err(e) => return link.fail(e.to_string()),
    };
    if all.is_empty() {
        return link.fail(
            "the image has no provenance (it was not built here, or it was pulled without it)",
        );
    }
    // Each statement verified once: the newest by a trusted key and builder
    // speaks for the image; others are shown, and count against it only
    // when there is none.
    let mut verified = Vec::new();
    let mut skipped = Vec::new();
    for a in &all {
        match provenance::check(a, digest, &trust.keys) {
            Ok(p) => verified.push(p),
            Err(f) => skipped.push((f.to_string(), a.artifact)),
        }
    }
    provenance::newest_first(&mut verified);
    let chosen = verified
        .iter()
        .find(|p| trust.builders.contains(&p.builder_id));
    for p in &verified {
        if chosen.is_none_or(|c| c.artifact != p.artifact) {
            skipped.push((
                "an older or untrusted builder's statement".into(),
                p.artifact,
            ));
        }
    }
    let mut link = link;
    for (why, artifact) in &skipped {
        let s = Link::new("statement", artifact.to_string());
        link.children.push(if chosen.is_some() {
            s.fact("ignored", why)
        } else {
            s.fail(why.clone())
        });
    }
    let Some(p) = chosen else {
        return link.fail(match verified.first() {
            Some(p) => format!(
                "its provenance names builder {}, not one of the trusted builders ({})",
                p.builder_id,
                trust.builders.join(", ")
            ),
            None => "no provenance statement is signed by a trusted key".into(),
        });
    };
    let mut stmt = Link::new("statement", p.artifact.to_string())
        .fact("signed by", &p.keyid)
        .fact("builder", &p.builder_id)
        .fact("built", format!("{} .. {}", p.started_on, p.finished_on))
        .fact("invocation", &p.invocation_id)
        .fact("inputs", p.dependencies.len());
    for d in &p.dependencies {
        let mut dep = Link::new("input", &d.name);
        if let Some(uri) = &d.uri {
            dep = dep.fact("uri", uri);
        }
        if let Some(h) = d.digest.get("sha256") {
            dep = dep.fact("sha256", h);
        }
        stmt.children.push(dep);
    }
    link.children.push(stmt);
    link
}

fn sbom_link(store: &Store, digest: &Digest) -> Link {
    let link = Link::new("sbom", "SPDX");
    match artifact::all(store, digest, SBOM_ARTIFACT_TYPE) {
        Err(e) => link.fail(e.to_string()),
        Ok(v) if v.is_empty() => link.fail("the image has no SBOM"),
        Ok(v) => {
            // The one `builder::sbom::stored` reads.
            let (r, bytes) = &v[0];
            let doc: Value = match serde_json::from_slice(bytes) {
                Ok(d) => d,
                Err(e) => return link.fail(format!("SBOM {} does not parse: {e}", r.digest)),
            };
            let count = |k: &str| doc[k].as_array().map_or(0, Vec::len);
            Link::new("sbom", r.digest.to_string())
                .fact("spdx", doc["spdxVersion"].as_str().unwrap_or("?"))
                .fact("files", count("files"))
                .fact("packages", count("packages"))
        }
    }
}

fn baseline_link(store: &Store, digest: &Digest) -> Link {
    let link = Link::new("baseline", "file manifest");
    match store.referrers(digest, Some(baseline::ARTIFACT_TYPE)) {
        Err(e) => link.fail(e.to_string()),
        Ok(rs) if rs.is_empty() => {
            link.fail("the image has no baseline; drift is measured against its layers")
        }
        Ok(rs) => match baseline::stored(store, digest) {
            Ok(Some(b)) => {
                Link::new("baseline", rs[0].digest.to_string()).fact("files", b.files.len())
            }
            Ok(None) => link.fail("the baseline vanished while reading it"),
            Err(e) => link.fail(e.to_string()),
        },
    }
}

/// The instance's `config.json` against what it was launched with, now.
fn config_now(store: &Store, i: &Instance) -> Link {
    let file = i.bundle(store.root()).join("config.json");
    let link = Link::new("config", file.display().to_string());
    let findings = crate::drift::instance::config(i, &i.bundle(store.root()));
    if findings.is_empty() {
        return link.fact("checked", "now: as launched");
    }
    let first: Vec<String> = findings.iter().take(5).map(|f| f.to_string()).collect();
    link.fail(format!(
        "drifted now ({} finding(s)): {}",
        findings.len(),
        first.join("; ")
    ))
}

/// The image's root scanned against its baseline now (every file hashed),
/// and the instance's process on that very root.
fn root_now(store: &Store, i: &Instance) -> Link {
    let link = Link::new("root", i.launch.rootfs.display().to_string());
    let report = match crate::drift::scan_image(store, &i.image, &crate::drift::Budget::unlimited())
    {
        Ok(r) => r,
        Err(e) => return link.fail(format!("could not be checked now: {e}")),
    };
    let link = link
        .fact("checked", "now")
        .fact("files", report.files_checked);
    if let Some(d) = crate::drift::root_identity(i) {
        return link.fail(format!("drifted now: {d}"));
    }
    if report.findings.is_empty() {
        return link;
    }
    let first: Vec<String> = report
        .findings
        .iter()
        .take(5)
        .map(|f| f.to_string())
        .collect();
    link.fail(format!(
        "drifted now ({} finding(s)): {}",
        report.findings.len(),
        first.join("; ")
    ))
}

fn drift_link(store: &Store, id: &str) -> Result<Link> {
    Ok(match crate::drift::last(store, id)? {
        None => Link::new("drift", "last result").fact("scanned", "never"),
        Some((time, findings, action)) if findings.is_empty() => Link::new("drift", "last result")
            .fact("clean at", time)
            .fact("action", action),
        Some((time, findings, action)) => {
            let paths: Vec<String> = findings
                .iter()
                .take(5)
                .map(|f| f["path"].as_str().unwrap_or("?").to_string())
                .collect();
            Link::new("drift", "last result")
                .fact("at", time)
                .fact("findings", findings.len())
                .fact("paths", paths.join(", "))
                .fact("action", &action)
                .fail(format!("drifted ({} finding(s)), {action}", findings.len()))
        }
    })
}

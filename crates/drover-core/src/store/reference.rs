//! What a user types to name an image in the store, parsed once
//! ([`parse`]) and resolved once ([`super::Store::resolve`]): every command
//! that takes an image goes through here.
//!
//! | written                         | names |
//! |---------------------------------|-------|
//! | `name:tag`, `name`              | the tag (`name` is `name:latest`) |
//! | `name[:tag]@sha256:<64 hex>`    | that image, if the store knows it by `name` (below) |
//! | `sha256:<64 hex>`               | that image, tagged or not |
//! | `sha256:<6..63 hex>`, `<6..64 hex>` | the one image whose digest starts so (tagged, run by an instance or release, or pulled by digest) |
//!
//! `name@digest` is checked against the name, as Docker does: the store must
//! know the image by that repository — a tag of it (`name:*`) points at the
//! digest, or the image was pulled from or pushed to that repository (the
//! ledger's `image.pull` and `image.push` entries say so; a registry name is
//! compared after docker.io normalisation). A tag written with it
//! (`name:tag@digest`) must not point at another image. Otherwise the
//! reference is refused as not found, naming the names the image has:
//! `doesnotexist@sha256:…` never runs an image.
//!
//! A bare hex word is a tag name first (`cafe01` may be `cafe01:latest`),
//! then a digest prefix. Fewer than [`MIN_PREFIX`] digits is no prefix.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::registry::Remote;
use super::{Descriptor, Store};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::grammar;
use crate::ledger::Filter;

/// The fewest hex digits that name an image by prefix.
pub const MIN_PREFIX: usize = 6;

/// A parsed image reference (see the module table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `name:tag`. `hex` is the text as written when it is all hex digits,
    /// so it may also be a digest prefix (looked up when no such tag exists).
    Tag {
        name: String,
        hex: Option<String>,
    },
    /// `name[:tag]@digest`, the name as written.
    Pinned {
        name: String,
        digest: Digest,
    },
    Digest(Digest),
    /// At least [`MIN_PREFIX`] lowercase hex digits.
    Prefix(String),
    /// A registry reference without a digest (`127.0.0.1:5000/hello:1.0`):
    /// the store names what it pulled `<repository>:<tag>`.
    Remote(Remote),
}

fn invalid(s: &str, why: &str) -> Error {
    Error::Usage(format!(
        "invalid reference {s:?}: {why} (expected name:tag, name@sha256:<64 hex>, sha256:<hex>, \
         or at least {MIN_PREFIX} hex digits of a digest)"
    ))
}

fn too_short(s: &str) -> Error {
    Error::Usage(format!(
        "{s:?}: a digest prefix needs at least {MIN_PREFIX} hex digits"
    ))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parse what a user typed; a malformed reference is a usage error.
pub fn parse(s: &str) -> Result<ImageRef> {
    if s.is_empty() {
        return Err(invalid(s, "it is empty"));
    }
    if let Some((name, digest)) = s.split_once('@') {
        let digest: Digest = digest.parse().map_err(|_| {
            invalid(
                s,
                "after '@' comes the full digest, sha256:<64 lowercase hex>",
            )
        })?;
        check_name(s, name)?;
        return Ok(ImageRef::Pinned {
            name: name.to_string(),
            digest,
        });
    }
    if let Some(hex) = s.strip_prefix("sha256:") {
        if !is_hex(hex) || hex.len() > 64 {
            return Err(invalid(s, "sha256: is followed by up to 64 hex digits"));
        }
        let hex = hex.to_ascii_lowercase();
        return match hex.len() {
            64 => Ok(ImageRef::Digest(format!("sha256:{hex}").parse().map_err(
                |e: crate::digest::ParseDigestError| invalid(s, &e.to_string()),
            )?)),
            n if n < MIN_PREFIX => Err(too_short(s)),
            _ => Ok(ImageRef::Prefix(hex)),
        };
    }
    if Remote::is_remote(s) {
        return Remote::parse(s)
            .map(ImageRef::Remote)
            .map_err(|e| invalid(s, &e.to_string()));
    }
    let name = super::normalize_tag(s);
    if grammar::tagged_name(&name).is_ok() {
        let hex = (is_hex(s) && s.len() <= 64).then(|| s.to_string());
        return Ok(ImageRef::Tag { name, hex });
    }
    // Upper-case hex is no tag, but is a digest prefix.
    if is_hex(s) && s.len() <= 64 {
        return match s.len() {
            n if n < MIN_PREFIX => Err(too_short(s)),
            _ => Ok(ImageRef::Prefix(s.to_ascii_lowercase())),
        };
    }
    Err(invalid(s, &tag_problem(s)))
}

/// Why `s` is not `name[:tag]`, in the grammar's words.
fn tag_problem(s: &str) -> String {
    let last = s.rsplit('/').next().unwrap_or(s);
    let (repo, tag) = match last.split_once(':') {
        Some((_, t)) => (&s[..s.len() - t.len() - 1], Some(t)),
        None => (s, None),
    };
    if let Err(e) = grammar::repository(repo) {
        return e;
    }
    match tag.map(grammar::tag) {
        Some(Err(e)) => e,
        _ => "not a name:tag".into(),
    }
}

/// The name part of `name@digest`: a local `repository[:tag]`, or a
/// registry's `host/repository[:tag]`.
fn check_name(s: &str, name: &str) -> Result<()> {
    if Remote::is_remote(name) {
        return Remote::parse(name)
            .map(drop)
            .map_err(|e| invalid(s, &e.to_string()));
    }
    let (repo, tag) = split_tag(name);
    grammar::repository(repo).map_err(|e| invalid(s, &e))?;
    if let Some(t) = tag {
        grammar::tag(t).map_err(|e| invalid(s, &e))?;
    }
    Ok(())
}

/// `repository[:tag]` → its parts (a `:` in a host's port is not a tag).
pub(crate) fn split_tag(name: &str) -> (&str, Option<&str>) {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, t)) => (&name[..name.len() - t.len() - 1], Some(t)),
        None => (name, None),
    }
}

/// The names a repository written by a user may be known by: as written,
/// and for a registry name its normalised `registry/repository` and the
/// local repository a pull tags.
pub(crate) fn repository_forms(repo: &str) -> Vec<String> {
    let mut forms = vec![repo.to_string()];
    if Remote::is_remote(repo)
        && let Ok(r) = Remote::parse(repo)
    {
        forms.push(format!("{}/{}", r.registry, r.repository));
        forms.push(r.local_repository());
    }
    forms.sort();
    forms.dedup();
    forms
}

/// One image the store knows: tagged, or held without a tag by an
/// instance, a release, or a pull by digest (`drover images -a`).
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Its tags, by name.
    pub tags: Vec<String>,
    /// When it was first tagged, pulled or used, as far as the store says.
    pub created: Option<String>,
    /// What keeps an untagged image: `instance <id>`, `release <svc#n>`,
    /// `pulled <remote>`.
    pub held_by: Vec<String>,
}

impl Store {
    /// Resolve what a user typed to an image manifest descriptor: the one
    /// resolver every command uses (see the module header for the forms and
    /// the rule for `name@digest`).
    pub fn resolve(&self, reference: &str) -> Result<Descriptor> {
        let not_found = |hint: String| Error::NotFound {
            what: format!("image {reference:?}"),
            hint: Some(hint),
        };
        match parse(reference)? {
            ImageRef::Digest(d) => self.describe_manifest(&d),
            ImageRef::Tag { name, hex } => {
                if let Some(t) = self.tags()?.into_iter().find(|t| t.name == name) {
                    return Ok(Descriptor::new(&t.media_type, t.digest, t.size));
                }
                match hex {
                    Some(h) if h.len() >= MIN_PREFIX => self.resolve_prefix(reference, &h),
                    Some(_) => Err(Error::Usage(format!(
                        "{reference:?}: no tag {name} here, and a digest prefix needs at least \
                         {MIN_PREFIX} hex digits"
                    ))),
                    None => Err(not_found("see `drover images`".into())),
                }
            }
            ImageRef::Prefix(p) => self.resolve_prefix(reference, &p),
            ImageRef::Pinned { name, digest } => self.resolve_pinned(reference, &name, &digest),
            ImageRef::Remote(r) => Err(not_found(format!(
                "a registry reference: `drover pull {r}` brings it here as {}:{}",
                r.local_repository(),
                r.tag.as_deref().unwrap_or("latest")
            ))),
        }
    }

    /// The one image whose digest starts with `hex`, among [`Store::images`].
    fn resolve_prefix(&self, reference: &str, hex: &str) -> Result<Descriptor> {
        let one = pick(reference, hex, self.images(true)?)?;
        Ok(Descriptor::new(&one.media_type, one.digest, one.size))
    }

    /// `name@digest`: the image, if the store knows it by `name`.
    fn resolve_pinned(&self, reference: &str, name: &str, digest: &Digest) -> Result<Descriptor> {
        let desc = self.describe_manifest(digest).map_err(|e| match e {
            Error::NotFound { .. } => Error::NotFound {
                what: format!("image {reference:?}"),
                hint: Some(format!(
                    "the store has no image {digest}; `drover pull` it from a registry"
                )),
            },
            e => e,
        })?;
        let (repo, tag) = split_tag(name);
        if let Some(t) = tag {
            let tagged = super::normalize_tag(&format!("{repo}:{t}"));
            if let Some(other) = self.tags()?.iter().find(|x| x.name == tagged)
                && other.digest != *digest
            {
                return Err(Error::NotFound {
                    what: format!("image {reference:?}"),
                    hint: Some(format!(
                        "tag {tagged} points at {}, not {digest}",
                        other.digest
                    )),
                });
            }
        }
        let known = self.names_of(digest)?;
        if repository_forms(repo).iter().any(|f| known.contains(f)) {
            return Ok(desc);
        }
        let names = if known.is_empty() {
            "it has no name: refer to it by digest alone".to_string()
        } else {
            format!(
                "its names: {}",
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        Err(Error::NotFound {
            what: format!("image {reference:?}"),
            hint: Some(format!(
                "the store has {digest}, but not as {repo:?} ({names}); \
                 name@digest must name a repository the image is tagged in, pulled from or pushed to"
            )),
        })
    }

    /// The repositories the store knows `digest` by: its tags' repositories,
    /// and those the ledger says it was pulled from or pushed to (with the
    /// registry, and without, as a pull names it locally).
    pub fn names_of(&self, digest: &Digest) -> Result<BTreeSet<String>> {
        let mut names: BTreeSet<String> = self
            .tags()?
            .into_iter()
            .filter(|t| t.digest == *digest)
            .map(|t| split_tag(&t.name).0.to_string())
            .collect();
        for (_, remote) in self.transfers(Some(digest))? {
            names.insert(format!("{}/{}", remote.registry, remote.repository));
            names.insert(remote.local_repository());
        }
        Ok(names)
    }

    /// `(image, remote)` of each pull and push the ledger records, of
    /// `digest` or of every image.
    fn transfers(&self, digest: Option<&Digest>) -> Result<Vec<(Digest, Remote)>> {
        let mut out = Vec::new();
        for action in ["image.pull", "image.push"] {
            let entries = self.db().read().ledger(&Filter {
                action: Some(action.into()),
                subject: digest.map(Digest::to_string),
                ..Default::default()
            })?;
            for e in entries {
                let Some(d) = e.subjects.first().and_then(|s| s.parse::<Digest>().ok()) else {
                    continue;
                };
                let remote = e.details.get("remote").and_then(|r| r.as_str());
                if let Some(r) = remote.and_then(|r| Remote::parse(r).ok()) {
                    out.push((d, r));
                }
            }
        }
        Ok(out)
    }

    /// The images the store knows, by digest: every tagged one, and with
    /// `all` also those without a tag that an instance or release holds or
    /// that were pulled by digest (and are still here).
    pub fn images(&self, all: bool) -> Result<Vec<ImageInfo>> {
        let mut by: BTreeMap<Digest, ImageInfo> = BTreeMap::new();
        for t in self.tags()? {
            let i = by.entry(t.digest).or_insert_with(|| ImageInfo {
                digest: t.digest,
                media_type: t.media_type.clone(),
                size: t.size,
                tags: Vec::new(),
                created: Some(t.created.clone()),
                held_by: Vec::new(),
            });
            i.tags.push(t.name);
        }
        if !all {
            return Ok(by.into_values().collect());
        }
        let read = self.db().read();
        let mut held: Vec<(Digest, String)> = Vec::new();
        for (d, id) in read.live_instance_images()? {
            held.push((d, format!("instance {id}")));
        }
        for (d, r) in read.release_images()? {
            held.push((d, format!("release {r}")));
        }
        for (d, remote) in self.transfers(None)? {
            if remote.digest.is_some() {
                held.push((d, format!("pulled {remote}")));
            }
        }
        for (d, why) in held {
            if let Some(i) = by.get_mut(&d) {
                if i.tags.is_empty() && !i.held_by.contains(&why) {
                    i.held_by.push(why);
                }
                continue;
            }
            // Gone (collected) since it was recorded: not an image here.
            let Ok(desc) = self.describe_manifest(&d) else {
                continue;
            };
            by.insert(
                d,
                ImageInfo {
                    digest: d,
                    media_type: desc.media_type,
                    size: desc.size,
                    tags: Vec::new(),
                    created: None,
                    held_by: vec![why],
                },
            );
        }
        Ok(by.into_values().collect())
    }
}

/// The one of `images` whose digest starts with `hex`; none is not found,
/// more than one is a usage error listing them.
fn pick(reference: &str, hex: &str, images: Vec<ImageInfo>) -> Result<ImageInfo> {
    let mut hits: Vec<ImageInfo> = images
        .into_iter()
        .filter(|i| i.digest.hex().starts_with(hex))
        .collect();
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(Error::NotFound {
            what: format!("image {reference:?}"),
            hint: Some("no image's digest starts so; see `drover images -a`".into()),
        }),
        n => Err(Error::Usage(format!(
            "{reference:?} matches more than one image ({n}): {}; give more digits",
            hits.iter().map(describe).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// `sha256:… (hello:1, team/web:2)` or `sha256:… (untagged)`.
fn describe(i: &ImageInfo) -> String {
    let names = if i.tags.is_empty() {
        "untagged".to_string()
    } else {
        i.tags.join(", ")
    };
    format!("{} ({names})", i.digest)
}

#[cfg(test)]
mod tests;

//! The generated layer: the definition's `[[account]]`s merged into the
//! image's `/etc/passwd` and `/etc/group` (and `/etc/shadow`, `/etc/gshadow`
//! when the image has them), the accounts' home directories and the mount
//! points of the image's `[config] tmpfs` paths.
//!
//! Where it goes in the layer order is the plan's decision
//! (`plan::GeneratedStep::after`); what it holds is decided here from the
//! image built so far:
//!
//! - **merge, never replace**: every line the image has is kept, byte for
//!   byte and in order; new users and groups are appended in definition
//!   order, and accounts named as supplementary members are added to the
//!   group's member list. An account the image already has with the same
//!   ids is left as it is. A clash — the name with other ids, or the id
//!   taken by another name — is an error naming the account, the file and
//!   the layer that wrote it.
//! - **shadow files only if present**: an image without `/etc/shadow` (all
//!   distroless-style images, and Debian packages unpacked without their
//!   scripts) gets none; one that has it gets a locked entry (`name:!:…`)
//!   per new user, so `su`/`login` can never authenticate as one, and a
//!   `/etc/gshadow` gets `group:!::`.
//! - **homes**: `/home/<name>` unless `home` says otherwise (as apko and
//!   distroless do: `nonroot` lives in `/home/nonroot`), made 0755 and owned
//!   by the account; `home = "/nonexistent"` makes none.
//! - **mount points**: each tmpfs path of the image (outside `/tmp` and
//!   `/run`, which are tmpfs already) as an empty directory, since the
//!   runtime cannot make one in a read-only root.
//!
//! Directories the image has already keep their mode and owner (a home
//! takes the account's owner). A path through a symlink in the image is
//! refused: a tar entry there would replace the link. Same inputs, same
//! entries: everything is inline, so the layer's bytes follow.

use std::io::Read;

use super::def::{Account, ImageDef, NO_HOME};
use super::sbom::LayerInput;
use super::scan::{Entry, Source};
use super::tar::Kind;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::runtime::tmpfs::Tmpfs;
use crate::store::Store;
use crate::store::baseline::{self, Change, FileKind, FileRecord, Merger};

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";
const SHADOW: &str = "/etc/shadow";
const GSHADOW: &str = "/etc/gshadow";
/// More than any real account database; a base image's bigger one is refused.
const MAX_DB_BYTES: u64 = 16 << 20;

/// One of the image's account files, as the layers below left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub text: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Which layer wrote it, for messages (`base layer sha256:…`, `layer "copy …"`).
    pub from: String,
}

/// The image's account files, where it has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Databases {
    pub passwd: Option<Current>,
    pub group: Option<Current>,
    pub shadow: Option<Current>,
    pub gshadow: Option<Current>,
}

/// A clash, with the account (its index) and key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    pub account: usize,
    pub key: &'static str,
    pub message: String,
}

/// The files the accounts make: (absolute path, content, mode, uid, gid).
pub type Written = Vec<(&'static str, String, u32, u32, u32)>;

/// Merge `accounts` into `dbs`. Pure.
pub fn merge(accounts: &[Account], dbs: &Databases) -> std::result::Result<Written, Clash> {
    let mut passwd = Lines::of(dbs.passwd.as_ref(), PASSWD);
    let mut group = Lines::of(dbs.group.as_ref(), GROUP);
    let mut shadow = dbs.shadow.as_ref().map(|c| Lines::of(Some(c), SHADOW));
    let mut gshadow = dbs.gshadow.as_ref().map(|c| Lines::of(Some(c), GSHADOW));
    for (i, a) in accounts.iter().enumerate() {
        let clash = |key, message| Clash {
            account: i,
            key,
            message,
        };
        match (passwd.by_name(&a.name), passwd.by_id(a.uid)) {
            (Some(f), _) => {
                let (uid, gid) = (f.get(2).cloned(), f.get(3).cloned());
                if uid.as_deref() != Some(&a.uid.to_string()) {
                    return Err(clash(
                        "uid",
                        format!(
                            "user {:?} is uid {} in {}, not {}",
                            a.name,
                            uid.unwrap_or_default(),
                            passwd.origin(),
                            a.uid
                        ),
                    ));
                }
                if gid.as_deref() != Some(&a.gid.to_string()) {
                    return Err(clash(
                        "gid",
                        format!(
                            "user {:?} has gid {} in {}, not {}",
                            a.name,
                            gid.unwrap_or_default(),
                            passwd.origin(),
                            a.gid
                        ),
                    ));
                }
            }
            (None, Some(f)) => {
                return Err(clash(
                    "uid",
                    format!("uid {} is user {:?}'s in {}", a.uid, f[0], passwd.origin()),
                ));
            }
            (None, None) => {
                passwd.push(format!(
                    "{}:x:{}:{}::{}:{}",
                    a.name, a.uid, a.gid, a.home, a.shell
                ));
                if let Some(s) = &mut shadow
                    && s.by_name(&a.name).is_none()
                {
                    s.push(format!("{}:!:::::::", a.name));
                }
            }
        }
        let key = if a.group == a.name { "gid" } else { "group" };
        match (group.by_name(&a.group), group.by_id(a.gid)) {
            (Some(f), _) => {
                if f.get(2).map(String::as_str) != Some(&a.gid.to_string()) {
                    return Err(clash(
                        key,
                        format!(
                            "group {:?} is gid {} in {}, not {}",
                            a.group,
                            f.get(2).cloned().unwrap_or_default(),
                            group.origin(),
                            a.gid
                        ),
                    ));
                }
            }
            (None, Some(f)) => {
                return Err(clash(
                    key,
                    format!(
                        "gid {} is group {:?}'s in {} (name it: group = {:?})",
                        a.gid,
                        f[0],
                        group.origin(),
                        f[0]
                    ),
                ));
            }
            (None, None) => {
                group.push(format!("{}:x:{}:", a.group, a.gid));
                if let Some(g) = &mut gshadow
                    && g.by_name(&a.group).is_none()
                {
                    g.push(format!("{}:!::", a.group));
                }
            }
        }
    }
    // Memberships once every account's own group exists, so one account
    // may join another's.
    for (i, a) in accounts.iter().enumerate() {
        for g in &a.groups {
            if !group.add_member(g, &a.name) {
                return Err(Clash {
                    account: i,
                    key: "groups",
                    message: format!(
                        "no group {g:?} in {} nor among the accounts' groups",
                        group.origin()
                    ),
                });
            }
            if let Some(gs) = &mut gshadow {
                gs.add_member(g, &a.name);
            }
        }
    }
    let mut out = vec![passwd.finish(), group.finish()];
    out.extend(shadow.map(Lines::finish));
    out.extend(gshadow.map(Lines::finish));
    Ok(out)
}

/// An account file as lines, with where it came from.
struct Lines {
    path: &'static str,
    lines: Vec<String>,
    from: Option<String>,
    meta: (u32, u32, u32),
}

impl Lines {
    fn of(c: Option<&Current>, path: &'static str) -> Lines {
        let default_mode = if path == SHADOW || path == GSHADOW {
            0o640
        } else {
            0o644
        };
        Lines {
            path,
            lines: c
                .map(|c| c.text.lines().map(str::to_string).collect())
                .unwrap_or_default(),
            from: c.map(|c| c.from.clone()),
            meta: c.map_or((default_mode, 0, 0), |c| (c.mode, c.uid, c.gid)),
        }
    }

    fn origin(&self) -> String {
        match &self.from {
            Some(from) => format!("the image's {} (from {from})", self.path),
            None => format!("the accounts' {}", self.path),
        }
    }

    fn fields(line: &str) -> Option<Vec<String>> {
        (!line.starts_with('#') && line.contains(':'))
            .then(|| line.split(':').map(str::to_string).collect())
    }

    fn by_name(&self, name: &str) -> Option<Vec<String>> {
        self.lines
            .iter()
            .filter_map(|l| Self::fields(l))
            .find(|f| f[0] == name)
    }

    fn by_id(&self, id: u32) -> Option<Vec<String>> {
        let id = id.to_string();
        self.lines
            .iter()
            .filter_map(|l| Self::fields(l))
            .find(|f| f.get(2) == Some(&id))
    }

    fn push(&mut self, line: String) {
        self.lines.push(line);
    }

    /// Add `user` to the member list (the last field) of group `name`;
    /// false if there is no such group.
    fn add_member(&mut self, name: &str, user: &str) -> bool {
        for line in &mut self.lines {
            let Some(mut f) = Self::fields(line) else {
                continue;
            };
            if f[0] != name || f.len() < 4 {
                continue;
            }
            let members = f.last_mut().expect("at least four fields");
            if !members.split(',').any(|m| m == user) {
                if !members.is_empty() {
                    members.push(',');
                }
                members.push_str(user);
                *line = f.join(":");
            }
            return true;
        }
        false
    }

    fn finish(self) -> (&'static str, String, u32, u32, u32) {
        let mut text = self.lines.join("\n");
        text.push('\n');
        (self.path, text, self.meta.0, self.meta.1, self.meta.2)
    }
}

/// The generated layer's entries for `def` over the image so far (`files`:
/// its merged file records; `dbs`: its account files). Pure. An error
/// names the definition and the account or tmpfs path at fault.
pub fn entries(def: &ImageDef, files: &Merger, dbs: &Databases) -> Result<Vec<Entry>> {
    let at = |what: String, why: String| Error::input(&def.file, format!("{what}: {why}"));
    let mut out: Vec<Entry> = Vec::new();
    if !def.accounts.is_empty() {
        let written = merge(&def.accounts, dbs).map_err(|c| {
            at(
                format!(
                    "account[{}].{} ({})",
                    c.account, c.key, def.accounts[c.account].name
                ),
                c.message,
            )
        })?;
        for (path, text, mode, uid, gid) in written {
            parents(files, path, &mut out).map_err(|e| at(path.into(), e))?;
            let path = path.trim_start_matches('/');
            out.push(Entry::inline(path, text.into_bytes(), mode, (uid, gid)));
        }
    }
    for (i, a) in def.accounts.iter().enumerate() {
        if a.home == NO_HOME {
            continue;
        }
        let what = || format!("account[{i}].home ({})", a.name);
        parents(files, &a.home, &mut out).map_err(|e| at(what(), e))?;
        let mode = existing_dir(files, &a.home)
            .map_err(|e| at(what(), e))?
            .map_or(0o755, |r| r.mode);
        out.push(dir(&a.home, mode, a.uid, a.gid));
    }
    for t in mount_points(&def.config.tmpfs) {
        let what = || format!("config.tmpfs ({})", t.path);
        parents(files, &t.path, &mut out).map_err(|e| at(what(), e))?;
        let (mode, uid, gid) = existing_dir(files, &t.path)
            .map_err(|e| at(what(), e))?
            .map_or((0o755, 0, 0), |r| (r.mode, r.uid, r.gid));
        out.push(dir(&t.path, mode, uid, gid));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    // A home that is also a mount point, a parent met twice: the first
    // (an account's owner before a parent's default) stays.
    out.dedup_by(|later, earlier| later.path == earlier.path);
    Ok(out)
}

/// The tmpfs paths whose mount points the image must have: those outside
/// `/tmp` and `/run` (the runtime makes the others in those tmpfs).
pub fn mount_points(tmpfs: &[Tmpfs]) -> impl Iterator<Item = &Tmpfs> {
    tmpfs.iter().filter(|t| !t.inside_built_in())
}

fn dir(path: &str, mode: u32, uid: u32, gid: u32) -> Entry {
    Entry::dir(path.trim_start_matches('/'), mode, (uid, gid))
}

/// The record at `path` if it is a directory; an error if it is anything
/// else (a symlink would be replaced by the directory).
fn existing_dir<'a>(
    files: &'a Merger,
    path: &str,
) -> std::result::Result<Option<&'a FileRecord>, String> {
    match files.get(path) {
        None => Ok(None),
        Some(r) if r.kind == FileKind::Dir => Ok(Some(r)),
        Some(r) => Err(format!(
            "{path} is a {} in the image, not a directory{}",
            kind_name(&r.kind),
            match (&r.kind, &r.link) {
                (FileKind::Symlink, Some(to)) => {
                    format!(" (it points to {to}: name the real path)")
                }
                _ => String::new(),
            }
        )),
    }
}

/// Directory entries for the parents of `path`, keeping the image's mode
/// and owner where it has them.
fn parents(files: &Merger, path: &str, out: &mut Vec<Entry>) -> std::result::Result<(), String> {
    let mut acc = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        acc.push('/');
        acc.push_str(part);
        let (mode, uid, gid) =
            existing_dir(files, &acc)?.map_or((0o755, 0, 0), |r| (r.mode, r.uid, r.gid));
        out.push(dir(&acc, mode, uid, gid));
    }
    Ok(())
}

fn kind_name(k: &FileKind) -> &'static str {
    match k {
        FileKind::File => "file",
        FileKind::Dir => "directory",
        FileKind::Symlink => "symlink",
        FileKind::Hardlink => "hard link",
    }
}

/// The image's account files as the layers so far leave them. `layers`
/// are the image's layers so far, bottom first, each with its name in
/// the build's output (`base`, `copy rootfs -> /`).
pub fn databases(
    store: &Store,
    files: &Merger,
    layers: &[(&LayerInput, &str)],
) -> Result<Databases> {
    let read = |path| current(store, files, layers, path);
    Ok(Databases {
        passwd: read(PASSWD)?,
        group: read(GROUP)?,
        shadow: read(SHADOW)?,
        gshadow: read(GSHADOW)?,
    })
}

/// The file at `path` in the image so far: its record from `files` (so
/// whiteouts and later layers are already accounted for), its content
/// from the topmost layer holding exactly that content — a built layer's
/// sources, else a layer blob, streamed.
fn current(
    store: &Store,
    files: &Merger,
    layers: &[(&LayerInput, &str)],
    path: &str,
) -> Result<Option<Current>> {
    let Some(rec) = files.get(path) else {
        return Ok(None);
    };
    let refuse = |why: String| Error::input(path, why);
    if rec.kind != FileKind::File {
        return Err(refuse(format!(
            "is a {} in the image; accounts can only be merged into a regular file",
            kind_name(&rec.kind)
        )));
    }
    if rec.size > MAX_DB_BYTES {
        return Err(refuse(format!(
            "is {} bytes, more than an account database has (at most {MAX_DB_BYTES})",
            rec.size
        )));
    }
    let Some(want) = rec.sha256 else {
        return Err(Error::corrupt(
            path,
            "the image's record has no content digest",
        ));
    };
    let rel = path.trim_start_matches('/');
    let mut found = None;
    for (l, name) in layers.iter().rev() {
        if let Some((entries, _)) = &l.built {
            let bytes = entries
                .iter()
                .find(|e| e.path == rel && e.kind == Kind::File)
                .and_then(|e| match &e.source {
                    Some(Source::Inline(b)) => Some(b.to_vec()),
                    Some(Source::Disk { path, .. }) => std::fs::read(path).ok(),
                    None => None,
                });
            if let Some(b) = bytes.filter(|b| Digest::of(b) == want) {
                found = Some((b, format!("layer \"{name}\"")));
                break;
            }
        } else if let Some(b) = from_blob(store, l, path, &want)? {
            found = Some((b, format!("base layer {}", l.desc.digest)));
            break;
        }
    }
    let Some((bytes, from)) = found else {
        return Err(Error::corrupt(
            format!("{path} ({want})"),
            "the image lists it but no layer holds that content",
        ));
    };
    let text = String::from_utf8(bytes).map_err(|_| refuse("is not UTF-8 text".into()))?;
    Ok(Some(Current {
        text,
        mode: rec.mode,
        uid: rec.uid,
        gid: rec.gid,
        from,
    }))
}

/// The content of the regular file `path` in one layer blob, if it holds
/// one with digest `want` (the last such entry wins, as in unpacking).
fn from_blob(store: &Store, l: &LayerInput, path: &str, want: &Digest) -> Result<Option<Vec<u8>>> {
    let bad = |e: std::io::Error| Error::corrupt(format!("layer {}", l.desc.digest), e.to_string());
    baseline::read_layer(store, &l.desc, |r, budget| {
        let mut ar = tar::Archive::new(r);
        let mut found = None;
        for entry in ar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            budget.entry()?;
            let Change::Put(rec) = baseline::change_of(&entry)? else {
                continue;
            };
            if rec.path != path || rec.kind != FileKind::File || entry.size() > MAX_DB_BYTES {
                continue;
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(bad)?;
            if Digest::of(&bytes) == *want {
                found = Some(bytes);
            }
        }
        Ok(found)
    })
}

#[cfg(test)]
mod tests;

//! A drift sweep: live instances checked against their releases, each
//! image's root scanned once however many instances share it, findings
//! recorded, and — for `serve` — drifted service instances condemned, so
//! the reconciler replaces them (never patches them).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::json;

use super::instance::{self as checks, Drift};
use super::{Budget, Report, scan_image};
use crate::clock;
use crate::deploy::{release, traffic};
use crate::digest::Digest;
use crate::error::Result;
use crate::instance::{self, Instance, State};
use crate::ledger::NewEntry;
use crate::store::{Store, unpack};

/// Which instances to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    /// The instances of one service.
    Service(String),
    /// One instance (id, prefix or name).
    Instance(String),
}

/// What to do about drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Record and report it (`drover drift`); a root whose files drifted is
    /// marked, so that no later start reuses it.
    Report,
    /// Also condemn drifted service instances and move tainted roots aside,
    /// so they are replaced (`drover serve`).
    Replace,
}

/// One instance's result.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceDrift {
    pub instance: String,
    pub service: Option<String>,
    pub release: Option<i64>,
    pub image: Digest,
    pub findings: Vec<Drift>,
    /// none | reported | replaced
    pub action: &'static str,
}

/// One root's scan.
#[derive(Debug, Clone, Serialize)]
pub struct RootScan {
    pub image: Digest,
    pub files_checked: u64,
    pub bytes_hashed: u64,
    pub seconds: f64,
    /// Why it could not be scanned (its root is missing, its baseline is).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Sweep {
    pub instances: Vec<InstanceDrift>,
    pub roots: Vec<RootScan>,
}

impl Sweep {
    pub fn drifted(&self) -> bool {
        self.instances.iter().any(|i| !i.findings.is_empty())
    }
}

/// The ledger keeps at most this many paths per finding entry (the
/// `drift_findings` table keeps them all).
const LEDGER_PATHS: usize = 100;

/// Check `target`'s instances; see the module docs.
pub fn sweep(store: &mut Store, target: &Target, budget: &Budget, remedy: Remedy) -> Result<Sweep> {
    // On a fleet, only this host's instances: their roots are in this store.
    let me = instance::this_host(store.db());
    let live: Vec<Instance> = instance::refresh(store.db_mut(), false)?
        .into_iter()
        .filter(|i| !i.elsewhere(me.as_deref()))
        .collect();
    let chosen: Vec<Instance> = match target {
        Target::All => live
            .into_iter()
            .filter(|i| i.state == State::Running)
            .collect(),
        Target::Service(s) => live
            .into_iter()
            .filter(|i| i.state == State::Running && i.service.as_deref() == Some(s.as_str()))
            .collect(),
        Target::Instance(key) => vec![instance::find(store.db(), key)?],
    };
    // Each root once.
    let images: BTreeSet<Digest> = chosen.iter().map(|i| i.image).collect();
    let mut roots: BTreeMap<Digest, std::result::Result<Report, String>> = BTreeMap::new();
    let mut out = Sweep::default();
    for image in images {
        let t = Instant::now();
        let r = scan_image(store, &image, budget).map_err(|e| e.to_string());
        out.roots.push(RootScan {
            image,
            files_checked: r.as_ref().map_or(0, |r| r.files_checked),
            bytes_hashed: r.as_ref().map_or(0, |r| r.bytes_hashed),
            seconds: t.elapsed().as_secs_f64(),
            error: r.as_ref().err().cloned(),
        });
        roots.insert(image, r);
    }
    // Roots are moved aside and deleted below: not while gc decides.
    let _lease = store.lease("drift: set drifted roots aside")?;
    let mut tainted: BTreeSet<Digest> = BTreeSet::new();
    for inst in &chosen {
        let mut findings = Vec::new();
        if let (Some(svc), Some(n)) = (&inst.service, inst.release) {
            let db = store.db();
            let r = release::release(db.read(), svc, n)?;
            if r.image != inst.image {
                findings.push(Drift::Image {
                    want: r.image.to_string(),
                    got: inst.image.to_string(),
                });
            }
        }
        match &roots[&inst.image] {
            Ok(report) => findings.extend(report.findings.iter().cloned().map(Drift::File)),
            Err(e) => findings.push(Drift::Root { detail: e.clone() }),
        }
        findings.extend(checks::config(inst, &inst.bundle(store.root())));
        findings.extend(checks::process(inst));
        if inst.state == State::Running {
            findings.extend(root_identity(inst));
        }
        let (decisive, file_drift) = weigh(&findings);
        let replace = remedy == Remedy::Replace && inst.service.is_some() && decisive;
        let action = match (findings.is_empty(), replace) {
            (true, _) => "none",
            (false, true) => "replaced",
            (false, false) => "reported",
        };
        if replace && file_drift && tainted.insert(inst.image) {
            unpack::taint(store.layout(), &inst.image)?;
        } else if file_drift {
            // Reported only: the root stays for what runs on it, but no
            // later start may reuse it (`instance::run_many` moves a marked
            // root aside and unpacks a fresh, verified copy).
            unpack::mark_drifted(store.layout(), &inst.image)?;
        }
        record(store, inst, &findings, action)?;
        if replace && inst.condemned.is_none() {
            let why = format!("drift: {} finding(s), e.g. {}", findings.len(), findings[0]);
            traffic::condemn(store.db_mut(), &inst.id, &why)?;
        }
        out.instances.push(InstanceDrift {
            instance: inst.id.clone(),
            service: inst.service.clone(),
            release: inst.release,
            image: inst.image,
            findings,
            action,
        });
    }
    remove_unused_tainted(store)?;
    Ok(out)
}

/// Whether findings call for a replacement, and whether the root's files
/// drifted (then the root is moved aside too).
///
/// What could not be checked (an unreadable file, a root that could not be
/// scanned) is reported but replaces nothing: a fresh instance would fail
/// the same way, so it would only loop. Nor does a hard link that no longer
/// shares its inode (its content is still checked): a baseline can name a
/// link target that a later layer replaced, which a fresh root shows again.
fn weigh(findings: &[Drift]) -> (bool, bool) {
    let inconclusive = |c: &super::Change| {
        matches!(
            c,
            super::Change::Unreadable { .. } | super::Change::HardLink { .. }
        )
    };
    let decisive = findings.iter().any(|f| match f {
        Drift::Root { .. } => false,
        Drift::File(x) => !inconclusive(&x.change),
        _ => true,
    });
    let files = findings
        .iter()
        .any(|f| matches!(f, Drift::File(x) if !inconclusive(&x.change)));
    (decisive, files)
}

/// The instance's process runs on the image's current root (not on a copy
/// moved aside as tainted, nor on anything else).
pub fn root_identity(inst: &Instance) -> Option<Drift> {
    let pid = inst.pid?;
    let theirs = std::fs::metadata(format!("/proc/{pid}/root")).ok()?;
    let detail = match std::fs::metadata(&inst.launch.rootfs) {
        Ok(ours) if (ours.dev(), ours.ino()) == (theirs.dev(), theirs.ino()) => return None,
        Ok(_) => "it runs on another directory than its image's verified root (one found \
                  tainted and moved aside?)"
            .to_string(),
        Err(e) => format!(
            "its image's root {} is gone: {e}",
            inst.launch.rootfs.display()
        ),
    };
    Some(Drift::Process {
        what: "root".into(),
        detail,
    })
}

/// Append the result to `drift_findings`, and a ledger entry if anything
/// was found.
fn record(store: &mut Store, inst: &Instance, findings: &[Drift], action: &str) -> Result<()> {
    let all = serde_json::to_string(findings).expect("findings serialize");
    store.db_mut().write(|tx| {
        tx.add_drift(&inst.id, &inst.image, &all, action)?;
        if findings.is_empty() {
            return Ok(());
        }
        let paths: Vec<String> = findings
            .iter()
            .take(LEDGER_PATHS)
            .map(Drift::path)
            .collect();
        tx.record(NewEntry::new(
            "instance.drift",
            [inst.id.clone(), inst.image.to_string()],
            json!({"service": inst.service, "release": inst.release,
                       "findings": findings.len(), "paths": paths, "action": action}),
        ))
        .map(drop)
    })
}

/// The last recorded drift result of an instance: when, what, and what was
/// done (`None`: never scanned).
pub fn last(store: &Store, id: &str) -> Result<Option<(String, Vec<serde_json::Value>, String)>> {
    let row = store.db().read().last_drift(id)?;
    Ok(row.map(|(t, f, a)| (t, serde_json::from_str(&f).unwrap_or_default(), a)))
}

/// Delete tainted copies of roots no live instance runs on any more: those
/// moved aside before the oldest live instance of their image was created.
fn remove_unused_tainted(store: &mut Store) -> Result<()> {
    let me = instance::this_host(store.db());
    let live: Vec<Instance> = instance::list(store.db(), false)?
        .into_iter()
        .filter(|i| !i.elsewhere(me.as_deref()))
        .collect();
    for image in unpack::tainted_images(store.layout())? {
        let oldest = live
            .iter()
            .filter(|i| i.image == image)
            .filter_map(|i| clock::parse_rfc3339_secs(&i.created))
            .min()
            .map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s.max(0) as u64));
        let none_live = !live.iter().any(|i| i.image == image);
        unpack::remove_tainted(
            store.layout(),
            &image,
            if none_live { None } else { oldest },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Change, Finding};
    use super::*;

    fn file(change: Change) -> Drift {
        Drift::File(Finding {
            path: "/etc/motd".into(),
            change,
        })
    }

    #[test]
    fn only_conclusive_findings_replace() {
        assert_eq!(weigh(&[]), (false, false));
        let unreadable = file(Change::Unreadable {
            reason: "EMFILE".into(),
        });
        let link = file(Change::HardLink {
            target: "/etc/a".into(),
        });
        let root = Drift::Root {
            detail: "gone".into(),
        };
        assert_eq!(weigh(&[unreadable.clone(), link, root]), (false, false));
        let mode = file(Change::Mode {
            want: 0o644,
            got: 0o666,
        });
        assert_eq!(weigh(&[unreadable.clone(), mode]), (true, true));
        let config = Drift::Config {
            path: "/process/env".into(),
            detail: "added".into(),
        };
        assert_eq!(weigh(&[unreadable, config]), (true, false));
    }
}

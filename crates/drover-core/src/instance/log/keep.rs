//! Logs that outlive their instances. Removing an instance (a heal, a
//! redeploy, `rm`) moves its log files — a rename, same filesystem, so it
//! needs no room on a full disk — to `<store>/logs/instances/<id>/`, with
//! `meta.json` naming its service, release, slot, image and exit and the
//! retention its service asked for. `drover logs` reads them there;
//! [`collect`] (run by `drover gc`) removes them once they are older than
//! the service's `logs.keep` (default [`DEFAULT_KEEP_MS`], 7 days) or
//! beyond its newest `logs.keep_instances` (default
//! [`DEFAULT_KEEP_INSTANCES`]) — whichever comes first, so a crash loop
//! cannot fill the disk with kept logs.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::{IoContext, Result};
use crate::instance::Instance;
use crate::runtime;

/// How long a removed instance's log is kept, unless its service says.
pub const DEFAULT_KEEP_MS: u64 = 7 * 86_400_000;

/// How many removed instances' logs a service keeps, unless it says.
pub const DEFAULT_KEEP_INSTANCES: u32 = 10;

const META: &str = "meta.json";

/// Where removed instances' logs are kept.
pub fn root(store_root: &Path) -> PathBuf {
    store_root.join("logs").join("instances")
}

/// Where instance `id`'s log is kept once it is removed.
pub fn dir(store_root: &Path, id: &str) -> PathBuf {
    root(store_root).join(id)
}

/// What `meta.json` says of a kept log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    pub name: Option<String>,
    pub service: Option<String>,
    pub release: Option<i64>,
    pub slot: Option<u32>,
    pub image: String,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    /// How its process ended, as `ps` says it ("exit code 3").
    pub exit: Option<String>,
    /// When it was removed (RFC 3339): its retention counts from here.
    pub removed: String,
    pub keep_ms: u64,
    pub keep_instances: u32,
}

/// Move the log of `inst` (being removed) out of its bundle into the kept
/// logs. One that never wrote a line is kept too (its description), so
/// `drover logs` shows it empty rather than unknown.
pub fn keep(store_root: &Path, inst: &Instance) -> Result<()> {
    let log = runtime::log_path(&inst.bundle(store_root));
    let files = super::files(&log);
    if files.is_empty() && !inst.bundle(store_root).exists() {
        return Ok(());
    }
    let to = dir(store_root, &inst.id);
    fs::create_dir_all(&to).ctx("create kept log directory", &to)?;
    let policy = inst.launch.logs.unwrap_or_default();
    let meta = Meta {
        id: inst.id.clone(),
        name: inst.name.clone(),
        service: inst.service.clone(),
        release: inst.release,
        slot: inst.slot,
        image: inst.image.to_string(),
        created: inst.created.clone(),
        started: inst.started.clone(),
        finished: inst.finished.clone(),
        exit: inst.exit.map(|e| e.to_string()),
        removed: clock::now_rfc3339(),
        keep_ms: policy.keep_ms.unwrap_or(DEFAULT_KEEP_MS),
        keep_instances: policy.keep_instances.unwrap_or(DEFAULT_KEEP_INSTANCES),
    };
    // The files first (renames need no room), the description after: a
    // full disk loses the description, never the log.
    for f in files {
        let name = f.file_name().expect("a log file has a name");
        let dest = to.join(name);
        fs::rename(&f, &dest).ctx("keep instance log", &f)?;
    }
    let json = serde_json::to_vec_pretty(&meta).expect("meta serializes");
    let path = to.join(META);
    fs::write(&path, json).ctx("write kept log description", &path)
}

/// The kept log of instance `id`: its `log` file (rotated ones beside it),
/// if it is kept.
pub fn log_of(store_root: &Path, id: &str) -> Option<PathBuf> {
    let d = dir(store_root, id);
    d.is_dir().then(|| runtime::log_path(&d))
}

/// The description of instance `id`'s kept log.
pub fn meta(store_root: &Path, id: &str) -> Option<Meta> {
    let text = fs::read(dir(store_root, id).join(META)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The ids of every kept log.
pub fn ids(store_root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root(store_root))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// What [`collect`] removed.
#[derive(Debug, Default, Serialize)]
pub struct LogGcReport {
    /// The instances whose kept logs were removed.
    pub removed: Vec<String>,
    pub removed_bytes: u64,
    /// Kept logs left.
    pub kept: usize,
    /// Failed releases' logs in the layout before logs were kept per
    /// instance (`logs/<service>/release-<n>/`), removed after the default
    /// retention: `<service>/release-<n>`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub removed_old_layout: Vec<String>,
}

/// Remove the kept logs past their service's retention (see the module
/// docs), as of `now_ms`. A kept log without a readable description counts
/// as removed when its directory was last changed, with the defaults.
pub fn collect(store_root: &Path, now_ms: i64) -> Result<LogGcReport> {
    let mut all: Vec<(Meta, i64)> = Vec::new();
    for id in ids(store_root) {
        let d = dir(store_root, &id);
        let mtime_ms = fs::metadata(&d).map_or(0, |m| modified_ms(&m));
        let (meta, at) = match meta(store_root, &id) {
            Some(m) => {
                let at = clock::parse_rfc3339_secs(&m.removed).map_or(mtime_ms, |s| s * 1000);
                (m, at)
            }
            None => (
                Meta {
                    id: id.clone(),
                    name: None,
                    service: None,
                    release: None,
                    slot: None,
                    image: String::new(),
                    created: String::new(),
                    started: None,
                    finished: None,
                    exit: None,
                    removed: String::new(),
                    keep_ms: DEFAULT_KEEP_MS,
                    keep_instances: DEFAULT_KEEP_INSTANCES,
                },
                mtime_ms,
            ),
        };
        all.push((meta, at));
    }
    // Newest first within each service, so the count keeps the newest.
    all.sort_by(|a, b| a.0.service.cmp(&b.0.service).then(b.1.cmp(&a.1)));
    let mut report = LogGcReport::default();
    let mut rank = 0u32;
    let mut service: Option<Option<String>> = None;
    for (meta, at) in all {
        if service.as_ref() != Some(&meta.service) {
            service = Some(meta.service.clone());
            rank = 0;
        }
        rank += 1;
        let old = now_ms.saturating_sub(at) > meta.keep_ms as i64;
        // Instances run by hand (no service) are bounded by age only.
        let many = meta.service.is_some() && rank > meta.keep_instances;
        if !(old || many) {
            report.kept += 1;
            continue;
        }
        let d = dir(store_root, &meta.id);
        report.removed_bytes += dir_bytes(&d);
        fs::remove_dir_all(&d).ctx("remove kept log", &d)?;
        report.removed.push(meta.id);
    }
    report.removed.sort();
    collect_old_layout(store_root, now_ms, &mut report)?;
    Ok(report)
}

/// Remove `logs/<service>/release-<n>/` directories (written by drover
/// before logs were kept per instance) older than [`DEFAULT_KEEP_MS`], and
/// a service's directory once it is empty.
fn collect_old_layout(store_root: &Path, now_ms: i64, report: &mut LogGcReport) -> Result<()> {
    let logs = store_root.join("logs");
    let Ok(services) = fs::read_dir(&logs) else {
        return Ok(());
    };
    for service in services.flatten() {
        let name = service.file_name().to_string_lossy().into_owned();
        if name == "instances" || !service.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(releases) = fs::read_dir(service.path()) else {
            continue;
        };
        for release in releases.flatten() {
            let rname = release.file_name().to_string_lossy().into_owned();
            if !rname.starts_with("release-") {
                continue;
            }
            let changed_ms = release.metadata().map_or(0, |m| modified_ms(&m));
            if now_ms.saturating_sub(changed_ms) <= DEFAULT_KEEP_MS as i64 {
                continue;
            }
            let d = release.path();
            report.removed_bytes += dir_bytes(&d);
            fs::remove_dir_all(&d).ctx("remove kept log", &d)?;
            report.removed_old_layout.push(format!("{name}/{rname}"));
        }
        // Only when empty: anything else there is not drover's to remove.
        let _ = fs::remove_dir(service.path());
    }
    report.removed_old_layout.sort();
    Ok(())
}

/// When `m`'s file was last changed, in milliseconds since the epoch (0 if
/// unknown).
fn modified_ms(m: &fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

fn dir_bytes(d: &Path) -> u64 {
    fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::time::Duration;

    fn kept(root: &Path, id: &str, service: Option<&str>, removed_ms: i64, keep_ms: u64) {
        let d = dir(root, id);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("log"), "x\n").unwrap();
        let meta = Meta {
            id: id.into(),
            name: None,
            service: service.map(Into::into),
            release: Some(1),
            slot: Some(0),
            image: String::new(),
            created: String::new(),
            started: None,
            finished: None,
            exit: None,
            removed: clock::format_rfc3339(removed_ms / 1000, 0),
            keep_ms,
            keep_instances: 2,
        };
        fs::write(d.join(META), serde_json::to_vec(&meta).unwrap()).unwrap();
    }

    #[test]
    fn kept_logs_go_past_their_age_or_beyond_the_newest_few_of_their_service() {
        let t = tempfile::tempdir().unwrap();
        let now = 1_000_000_000_000;
        let day = 86_400_000;
        kept(t.path(), "old", Some("web"), now - 8 * day, 7 * day as u64);
        kept(t.path(), "a", Some("web"), now - 3000, 7 * day as u64);
        kept(t.path(), "b", Some("web"), now - 2000, 7 * day as u64);
        kept(t.path(), "c", Some("web"), now - 1000, 7 * day as u64);
        kept(t.path(), "db1", Some("db"), now - 2 * day, day as u64);
        kept(t.path(), "adhoc1", None, now - 1000, 7 * day as u64);
        kept(t.path(), "adhoc2", None, now - 900, 7 * day as u64);
        kept(t.path(), "adhoc3", None, now - 800, 7 * day as u64);
        let r = collect(t.path(), now).unwrap();
        assert_eq!(r.removed, ["a", "db1", "old"]);
        assert_eq!(r.kept, 5);
        assert_eq!(ids(t.path()), ["adhoc1", "adhoc2", "adhoc3", "b", "c"]);
    }

    #[test]
    fn failed_releases_logs_of_the_old_layout_go_after_the_default_retention() {
        let t = tempfile::tempdir().unwrap();
        let logs = t.path().join("logs");
        for (rel, age_days) in [
            ("web/release-2", 8),
            ("web/release-3", 1),
            ("db/release-1", 30),
        ] {
            let d = logs.join(rel);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("abc.log"), b"boom\n").unwrap();
            let when = std::time::SystemTime::now() - Duration::from_secs(age_days * 86_400);
            File::open(&d)
                .unwrap()
                .set_times(fs::FileTimes::new().set_modified(when))
                .unwrap();
        }
        let r = collect(t.path(), clock::now_ms()).unwrap();
        assert_eq!(r.removed_old_layout, ["db/release-1", "web/release-2"]);
        assert_eq!(r.removed_bytes, 10);
        assert!(logs.join("web/release-3/abc.log").exists());
        assert!(
            !logs.join("db").exists(),
            "an emptied service directory goes"
        );
    }
}

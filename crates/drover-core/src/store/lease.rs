//! Leases: who is using the store, and the one lock `gc` waits on.
//!
//! A lease is a shared `flock` on `<store>/store.lock` (its own open file,
//! so the kernel drops it when the process dies, however it dies) plus a
//! file `<store>/leases/<pid>-<n>` saying what holds it: a line for people
//! (`drover build -t app:1.2 .`, `serve: start an instance of web`), the
//! pid and the process's start time (so a reused pid is no holder). The
//! lock is the authority; the file only names the holder, and a file whose
//! process is gone is stale and removed by whoever lists them.
//!
//! `gc` takes the lock exclusively with [`exclusive`]: it polls, tells who
//! it waits for, and gives up after its `--wait`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// Held while an operation may create or need content gc would delete.
/// Dropping it removes its file and releases the lock.
#[must_use = "a lease protects only while it is held"]
pub struct Lease {
    _lock: Option<File>,
    file: Option<PathBuf>,
}

impl Lease {
    /// A lease that holds nothing: for a process that already holds the
    /// store exclusively (a shared lock on another open file would wait
    /// for itself).
    pub(super) fn none() -> Lease {
        Lease {
            _lock: None,
            file: None,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            let _ = fs::remove_file(f);
        }
    }
}

/// What a lease file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// What holds it, for people.
    pub what: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/<pid>/stat`).
    pub start: u64,
    /// When the lease was taken, in milliseconds since the epoch.
    pub since_ms: u64,
}

impl Holder {
    /// How long it has held the lease.
    pub fn held_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.since_ms))
    }

    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {}, {} s so far)",
            self.what,
            self.pid,
            self.held_for().as_secs()
        )
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The start time of `pid` (field 22 of `/proc/<pid>/stat`); None when no
/// such process runs. With the pid it names one process even after the pid
/// is reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    if rest.starts_with(['Z', 'X']) {
        return None;
    }
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub(super) fn lock_path(root: &Path) -> PathBuf {
    root.join("store.lock")
}

fn leases_dir(root: &Path) -> PathBuf {
    root.join("leases")
}

fn open_lock(root: &Path) -> Result<File> {
    let path = lock_path(root);
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx("open store lock", &path)
}

/// This process as people know it: its command line, shortened.
pub fn this_process() -> String {
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .map_or(argv0.clone(), |n| n.to_string_lossy().into_owned());
    let mut line = std::iter::once(name)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ");
    if line.chars().count() > 100 {
        line = line.chars().take(99).collect::<String>() + "…";
    }
    line
}

/// Take a lease on the store at `root` for `what`; waits while `gc` holds
/// the store (a moment: see `Store::gc`).
pub(super) fn take(root: &Path, what: &str) -> Result<Lease> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let dir = leases_dir(root);
    let holder = Holder {
        what: what.to_string(),
        pid,
        start: start_time(pid).unwrap_or(0),
        since_ms: now_ms(),
    };
    let file = dir.join(format!("{pid}-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
    let bytes = serde_json::to_vec(&holder).map_err(|e| Error::corrupt("lease", e.to_string()))?;
    // The file first, so whoever sees the lock held can name its holder.
    // It only names the holder: on a full disk (when `stop` and `rm` must
    // still work) the lease is the lock alone.
    let named = fs::create_dir_all(&dir).and_then(|()| fs::write(&file, bytes));
    if named.is_err() {
        let _ = fs::remove_file(&file);
    }
    let mut lease = Lease {
        _lock: None,
        file: named.is_ok().then_some(file),
    };
    let lock = open_lock(root)?;
    lock.lock_shared().ctx("lock store", &lock_path(root))?;
    lease._lock = Some(lock);
    Ok(lease)
}

/// The live holders of leases on the store at `root`, oldest first; stale
/// lease files (their process is gone) are removed on the way.
pub fn holders(root: &Path) -> Vec<Holder> {
    let dir = leases_dir(root);
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Ok(bytes) = fs::read(&path) else { continue };
        match serde_json::from_slice::<Holder>(&bytes) {
            Ok(h) if h.alive() => out.push(h),
            // Unreadable: a lease being written, or garbage; gone if old.
            Err(_)
                if entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60)) => {}
            _ => {
                let _ = fs::remove_file(&path);
            }
        }
    }
    out.sort_by_key(|h| h.since_ms);
    out
}

/// Take the store at `root` exclusively, waiting at most `wait` for the
/// leases on it to end. `waiting` is told who holds it, about once a
/// second while it waits. After `wait`, a `Busy` error names the holders.
pub(super) fn exclusive(
    root: &Path,
    wait: Duration,
    waiting: &mut dyn FnMut(&[Holder], Duration),
) -> Result<File> {
    let lock = open_lock(root)?;
    let started = Instant::now();
    let mut told = None::<Instant>;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).ctx("lock store", &lock_path(root));
            }
        }
        let waited = started.elapsed();
        if waited >= wait {
            let holders = holders(root);
            return Err(Error::Busy {
                what: format!("store {}", root.display()),
                reason: format!(
                    "gave up after {} s waiting for {}; run it again once that is done, or \
                     give --wait a longer time",
                    waited.as_secs(),
                    describe(&holders)
                ),
            });
        }
        if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            waiting(&holders(root), waited);
            told = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50).min(wait.saturating_sub(waited)));
    }
}

/// "A (pid 1, 3 s so far), B (…)", or what to say when no file names one.
pub fn describe(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "a process that holds the store lock without a lease file (an older drover, or one that found the disk full)"
            .into();
    }
    holders
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_names_its_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lease = take(dir.path(), "build of app:1").unwrap();
        let h = holders(dir.path());
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].what, "build of app:1");
        assert_eq!(h[0].pid, std::process::id());
        drop(lease);
        assert!(holders(dir.path()).is_empty());
    }

    #[test]
    fn exclusive_waits_for_a_lease_then_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let _lease = take(dir.path(), "pull of app:2").unwrap();
        let mut told = Vec::new();
        let err = exclusive(dir.path(), Duration::from_millis(300), &mut |h, _| {
            told.push(describe(h))
        })
        .unwrap_err();
        assert!(err.to_string().contains("pull of app:2"), "{err}");
        assert!(err.to_string().contains("--wait"), "{err}");
        assert!(told[0].contains("pull of app:2"), "{told:?}");
    }

    #[test]
    fn exclusive_goes_ahead_once_the_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let lease = take(dir.path(), "x").unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(lease)
        });
        exclusive(dir.path(), Duration::from_secs(10), &mut |_, _| {}).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn a_dead_holders_file_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(leases_dir(dir.path())).unwrap();
        let dead = Holder {
            what: "gone".into(),
            pid: std::process::id(),
            start: 1, // not this process's start time: a reused pid
            since_ms: 0,
        };
        let f = leases_dir(dir.path()).join("1-0");
        fs::write(&f, serde_json::to_vec(&dead).unwrap()).unwrap();
        assert!(holders(dir.path()).is_empty());
        assert!(!f.exists());
    }
}

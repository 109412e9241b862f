//! The filesystem scan: an unpacked root measured against its image's
//! baseline, every file's content included.
//!
//! One walk does everything. Each directory is a task on a dedicated rayon
//! pool; a task lists its directory, checks every entry's metadata against
//! the baseline and hashes the regular files whose metadata matched so far
//! (files of 1 MiB or more become tasks of their own, so one big file does
//! not hold up a directory). Nothing is looked up by path: every entry is
//! reached from its parent's descriptor, with `O_NOFOLLOW`, so a symlink is
//! never followed and a swapped component cannot redirect the walk; regular
//! files and directories are opened first and then `fstat`ed, so the
//! metadata checked is that of the very file read. Entries on another
//! filesystem (a mount inside the root) are reported, not entered.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use serde::{Serialize, Serializer};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::store::baseline::{Baseline, FileKind, FileRecord};
use crate::store::unpack::{Rootfs, Special, SpecialKind};
use crate::sys;

/// How much of the machine a scan may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Scanning threads (at least 1).
    pub threads: usize,
    /// Cap on the bytes read per second, all threads together.
    pub bytes_per_sec: Option<u64>,
    /// Run the threads at nice 19 and in the idle I/O class.
    pub low_priority: bool,
}

impl Budget {
    /// Everything: one thread per CPU, no cap. For a scan someone waits for.
    pub fn unlimited() -> Self {
        Budget {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            bytes_per_sec: None,
            low_priority: false,
        }
    }

    /// For scanning continuously beside the workload: one thread at the
    /// lowest CPU and I/O priority, reading at most 200 MiB/s.
    pub fn background() -> Self {
        Budget {
            threads: 1,
            bytes_per_sec: Some(200 << 20),
            low_priority: true,
        }
    }
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub root: PathBuf,
    /// Entries examined (files, directories, symlinks, everything).
    pub files_checked: u64,
    /// Content read and hashed.
    pub bytes_hashed: u64,
    /// Every difference, sorted by path; never truncated.
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when the root is exactly its baseline.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// One difference between the root and its baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Absolute path inside the image ("/etc/motd").
    pub path: String,
    #[serde(flatten)]
    pub change: Change,
}

/// What is different at a path: `want` is the baseline's, `got` the disk's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// On disk, not in the baseline.
    Added {
        kind: Kind,
    },
    /// In the baseline, not on disk.
    Removed {
        kind: Kind,
    },
    /// A different type of file (a file became a symlink, ...).
    Kind {
        want: Kind,
        got: Kind,
    },
    Content {
        want: Digest,
        got: Digest,
    },
    /// A regular file's size (its content was not hashed then).
    Size {
        want: u64,
        got: u64,
    },
    /// Permission bits, setuid, setgid and sticky included.
    Mode {
        #[serde(serialize_with = "octal")]
        want: u32,
        #[serde(serialize_with = "octal")]
        got: u32,
    },
    /// (uid, gid).
    Owner {
        want: (u32, u32),
        got: (u32, u32),
    },
    /// A symlink's target.
    Link {
        want: String,
        got: String,
    },
    /// A hard link that no longer shares its inode with `target`.
    HardLink {
        target: String,
    },
    /// A device node's (major, minor).
    Device {
        want: (u64, u64),
        got: (u64, u64),
    },
    /// Another filesystem is mounted here; the scan did not enter it.
    Mount {
        device: String,
    },
    /// An extended attribute added, removed or changed (`detail`).
    Xattr {
        name: String,
        detail: String,
    },
    /// It could not be read, so it could not be checked.
    Unreadable {
        reason: String,
    },
}

fn octal<S: Serializer>(mode: &u32, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// The type of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl Kind {
    fn of(st: &FileStat) -> Kind {
        match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Symlink,
            SFlag::S_IFIFO => Kind::Fifo,
            SFlag::S_IFCHR => Kind::CharDevice,
            SFlag::S_IFBLK => Kind::BlockDevice,
            SFlag::S_IFSOCK => Kind::Socket,
            _ => Kind::File,
        }
    }

    /// What a baseline record is on disk (a hard link is a regular file).
    fn of_record(kind: &FileKind) -> Kind {
        match kind {
            FileKind::File | FileKind::Hardlink => Kind::File,
            FileKind::Dir => Kind::Dir,
            FileKind::Symlink => Kind::Symlink,
        }
    }

    fn of_special(kind: SpecialKind) -> Kind {
        match kind {
            SpecialKind::Fifo => Kind::Fifo,
            SpecialKind::Char => Kind::CharDevice,
            SpecialKind::Block => Kind::BlockDevice,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::CharDevice => "char device",
            Kind::BlockDevice => "block device",
            Kind::Socket => "socket",
        })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.change)
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |d: &Digest| format!("sha256:{}…", d.short());
        match self {
            Change::Added { kind } => write!(f, "added ({kind})"),
            Change::Removed { kind } => write!(f, "removed ({kind})"),
            Change::Kind { want, got } => write!(f, "type {want} → {got}"),
            Change::Content { want, got } => {
                write!(f, "content {} ≠ baseline {}", short(got), short(want))
            }
            Change::Size { want, got } => write!(f, "size {want} → {got} bytes"),
            Change::Mode { want, got } => write!(f, "mode {want:04o} → {got:04o}"),
            Change::Owner { want, got } => {
                write!(f, "owner {}:{} → {}:{}", want.0, want.1, got.0, got.1)
            }
            Change::Link { want, got } => write!(f, "symlink target {want} → {got}"),
            Change::HardLink { target } => write!(f, "no longer a hard link of {target}"),
            Change::Device { want, got } => {
                write!(f, "device {}:{} → {}:{}", want.0, want.1, got.0, got.1)
            }
            Change::Mount { device } => write!(
                f,
                "another filesystem (device {device}) is mounted here; not scanned"
            ),
            Change::Xattr { name, detail } => write!(f, "extended attribute {name} {detail}"),
            Change::Unreadable { reason } => write!(f, "unreadable: {reason}"),
        }
    }
}

/// Extended attributes the host sets on files it stores (its LSM's label),
/// whatever the image says: not drift.
const HOST_LABELS: [&str; 3] = ["security.selinux", "security.apparmor", "security.SMACK64"];

/// Files at least this big are hashed as tasks of their own.
const BIG_FILE: i64 = 1 << 20;
/// Read buffer, one per scanning thread.
const BUF_SIZE: usize = 256 << 10;

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Scan `rootfs` against `baseline` within `budget`. The root's own
/// mountpoint directories (`rootfs.added`) only have to be directories;
/// its FIFOs and device nodes (`rootfs.specials`) are checked like files.
/// An error means the scan could not start (the root is missing, threads
/// could not be made); anything wrong inside the root is a finding.
pub fn scan(rootfs: &Rootfs, baseline: &Baseline, budget: &Budget) -> Result<Report> {
    // Each directory waiting for its turn holds a descriptor.
    sys::raise_open_files_limit();
    let root_path = &rootfs.path;
    let root = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(root_path);
    let root = match root {
        Ok(f) => OwnedFd::from(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                what: format!("root directory {}", root_path.display()),
                hint: Some("is the image unpacked? running an instance unpacks it".into()),
            });
        }
        Err(e) => return Err(Error::io("open root directory", root_path, e)),
    };
    let st = fstat(root.as_raw_fd())
        .map_err(|e| Error::io("inspect root directory", root_path, e.into()))?;
    let s = Scan::new(rootfs, baseline, budget, st.st_dev);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(budget.threads.max(1))
        .thread_name(|i| format!("drover-drift-{i}"))
        .start_handler({
            let low = budget.low_priority;
            move |_| {
                if low {
                    // Best effort: a scan at normal priority is still a scan.
                    let _ = sys::nice_thread();
                    let _ = sys::idle_io_thread();
                }
            }
        })
        .build()
        .map_err(|e| Error::Failed(format!("could not start scanning threads: {e}")))?;
    // "/" itself is not in baselines; unpacking makes it 0755.
    if st.st_mode & 0o7777 != 0o755 {
        s.found(
            "/",
            Change::Mode {
                want: 0o755,
                got: st.st_mode & 0o7777,
            },
        );
    }
    pool.scope(|scope| s.walk_dir(scope, root, String::new()));
    Ok(s.finish(root_path))
}

/// The state shared by every task of one scan.
struct Scan<'a> {
    files: &'a [FileRecord],
    /// Baseline path → index in `files`.
    index: HashMap<&'a str, usize>,
    /// Per record: inode + 1 once seen on disk, 0 before.
    seen: Vec<AtomicU64>,
    specials: HashMap<&'a str, (usize, &'a Special)>,
    specials_seen: Vec<AtomicBool>,
    mountpoints: HashSet<&'a str>,
    dev: u64,
    throttle: Option<Throttle>,
    /// Cleared the first time O_NOATIME is refused (files we do not own).
    noatime: AtomicBool,
    files_checked: AtomicU64,
    bytes_hashed: AtomicU64,
    findings: Mutex<Vec<Finding>>,
    /// Paths the scan could not look under (mounts, unreadable
    /// directories): what the baseline has there is not "removed".
    unseen_trees: Mutex<Vec<String>>,
}

impl<'a> Scan<'a> {
    fn new(rootfs: &'a Rootfs, baseline: &'a Baseline, budget: &Budget, dev: u64) -> Self {
        let files = &baseline.files[..];
        Scan {
            files,
            index: files
                .iter()
                .enumerate()
                .map(|(i, f)| (f.path.as_str(), i))
                .collect(),
            seen: files.iter().map(|_| AtomicU64::new(0)).collect(),
            specials: rootfs
                .specials
                .iter()
                .enumerate()
                .map(|(i, s)| (s.path.as_str(), (i, s)))
                .collect(),
            specials_seen: rootfs
                .specials
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
            mountpoints: rootfs.added.iter().map(String::as_str).collect(),
            dev,
            throttle: budget.bytes_per_sec.map(Throttle::new),
            noatime: AtomicBool::new(true),
            files_checked: AtomicU64::new(0),
            bytes_hashed: AtomicU64::new(0),
            findings: Mutex::new(Vec::new()),
            unseen_trees: Mutex::new(Vec::new()),
        }
    }

    fn found(&self, path: &str, change: Change) {
        let f = Finding {
            path: path.to_string(),
            change,
        };
        self.findings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }

    fn unreadable(&self, path: &str, e: impl fmt::Display) {
        self.found(
            path,
            Change::Unreadable {
                reason: e.to_string(),
            },
        );
    }

    fn not_entered(&self, path: &str) {
        self.unseen_trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.to_string());
    }

    /// Check every entry of directory `dir` (at `path`, "" for the root).
    fn walk_dir<'s>(&'s self, scope: &rayon::Scope<'s>, dir: OwnedFd, path: String) {
        let entries = match list(&dir) {
            Ok(e) => e,
            Err(e) => {
                let shown = if path.is_empty() { "/" } else { &path };
                self.unreadable(shown, e);
                self.not_entered(shown);
                return;
            }
        };
        let mut child = String::with_capacity(path.len() + 64);
        for (range, dtype) in &entries.items {
            let name = &entries.names[range.clone()];
            child.clear();
            child.push_str(&path);
            child.push('/');
            child.push_str(&String::from_utf8_lossy(name));
            self.entry(scope, dir.as_fd(), name, *dtype, &child);
        }
    }

    /// Check one entry: `name` in `dir`, at `path`.
    fn entry<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        dir: BorrowedFd<'_>,
        name: &[u8],
        dtype: Option<Type>,
        path: &str,
    ) {
        self.files_checked.fetch_add(1, Ordering::Relaxed);
        // Files and directories: open, then fstat the descriptor. Anything
        // else, or an open that failed: lstat.
        let mut opened = None;
        if matches!(dtype, Some(Type::File | Type::Directory)) {
            match self.open(dir, name, dtype == Some(Type::Directory)) {
                Ok(fd) => match fstat(fd.as_raw_fd()) {
                    Ok(st) => opened = Some((fd, st)),
                    Err(e) => return self.unreadable(path, e),
                },
                // It was swapped for something else meanwhile: look again.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                // Unreadable content is reported where content is checked.
                Err(_) => {}
            }
        }
        let (fd, st) = match opened {
            Some((fd, st)) => (Some(fd), st),
            None => match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => (None, st),
                // Gone since the directory was listed: it counts as absent.
                Err(nix::errno::Errno::ENOENT) => return,
                Err(e) => return self.unreadable(path, e),
            },
        };
        let got = Kind::of(&st);
        if st.st_dev != self.dev {
            self.mark_seen(path, st.st_ino);
            self.not_entered(path);
            let (major, minor) = (
                nix::sys::stat::major(st.st_dev),
                nix::sys::stat::minor(st.st_dev),
            );
            return self.found(
                path,
                Change::Mount {
                    device: format!("{major}:{minor}"),
                },
            );
        }
        if self.mountpoints.contains(path) {
            // Mounted over by the runtime: only the type matters.
            if got != Kind::Dir {
                self.found(
                    path,
                    Change::Kind {
                        want: Kind::Dir,
                        got,
                    },
                );
            }
            return;
        }
        if let Some(&i) = self.index.get(path) {
            self.seen[i].store(st.st_ino.wrapping_add(1), Ordering::Relaxed);
            let at = At { dir, name, path };
            self.check_record(scope, &self.files[i], &at, fd, &st);
            return;
        }
        if let Some(&(i, special)) = self.specials.get(path) {
            self.specials_seen[i].store(true, Ordering::Relaxed);
            return self.check_special(special, &st, path);
        }
        self.found(path, Change::Added { kind: got });
        if got == Kind::Dir {
            self.descend(scope, &At { dir, name, path }, fd, &st);
        }
    }

    fn check_record<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        rec: &'a FileRecord,
        at: &At<'_>,
        fd: Option<OwnedFd>,
        st: &FileStat,
    ) {
        let At { dir, name, path } = *at;
        let (want, got) = (Kind::of_record(&rec.kind), Kind::of(st));
        if want != got {
            self.found(path, Change::Kind { want, got });
            if got == Kind::Dir {
                self.descend(scope, at, fd, st);
            }
            return;
        }
        if rec.kind != FileKind::Hardlink {
            self.check_xattrs(rec, dir, name, path);
        }
        match rec.kind {
            FileKind::Dir => {
                self.check_meta(rec, st, path, true);
                self.descend(scope, at, fd, st);
            }
            FileKind::Symlink => {
                self.check_meta(rec, st, path, false);
                match nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name) {
                    Ok(target) => {
                        let want = rec.link.as_deref().unwrap_or_default();
                        if target.as_encoded_bytes() != want.as_bytes() {
                            self.found(
                                path,
                                Change::Link {
                                    want: want.to_string(),
                                    got: target.to_string_lossy().into_owned(),
                                },
                            );
                        }
                    }
                    Err(e) => self.unreadable(path, e),
                }
            }
            // Its inode is compared with its target's at the end; mode,
            // owner and content are the target's and checked there.
            FileKind::Hardlink if self.link_target(rec).is_some() => {}
            FileKind::File | FileKind::Hardlink => {
                // A hard link whose target the image later removed keeps
                // the old file's mode and owner, which the baseline lacks.
                if rec.kind == FileKind::File {
                    self.check_meta(rec, st, path, true);
                }
                if st.st_size as u64 != rec.size {
                    return self.found(
                        path,
                        Change::Size {
                            want: rec.size,
                            got: st.st_size as u64,
                        },
                    );
                }
                let Some(want) = rec.sha256 else { return };
                let fd = match fd {
                    Some(fd) => fd,
                    None => match self.open(dir, name, false) {
                        Ok(fd) => fd,
                        Err(e) => return self.unreadable(path, e),
                    },
                };
                let size = rec.size;
                if st.st_size >= BIG_FILE {
                    // Read-ahead in bigger steps when the pages are not cached.
                    let _ = nix::fcntl::posix_fadvise(
                        fd.as_raw_fd(),
                        0,
                        0,
                        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
                    );
                    let path = path.to_string();
                    scope.spawn(move |_| self.check_content(fd, size, want, &path));
                } else {
                    self.check_content(fd, size, want, path);
                }
            }
        }
    }

    /// Mode (unless a symlink's, which Linux ignores) and owner.
    fn check_meta(&self, rec: &FileRecord, st: &FileStat, path: &str, mode: bool) {
        let got = st.st_mode & 0o7777;
        if mode && got != rec.mode {
            self.found(
                path,
                Change::Mode {
                    want: rec.mode,
                    got,
                },
            );
        }
        if (st.st_uid, st.st_gid) != (rec.uid, rec.gid) {
            self.found(
                path,
                Change::Owner {
                    want: (rec.uid, rec.gid),
                    got: (st.st_uid, st.st_gid),
                },
            );
        }
    }

    /// Extended attributes against the baseline's: one added, removed or
    /// changed is a finding. `security.capability` (file capabilities) and
    /// every other namespace count; only the host's own LSM label
    /// ([`HOST_LABELS`]) is left out, as the host sets it, not the image.
    /// `trusted.*` is visible only to a privileged scan (as `serve` runs).
    fn check_xattrs(&self, rec: &FileRecord, dir: BorrowedFd<'_>, name: &[u8], path: &str) {
        use std::os::unix::ffi::OsStrExt;
        let on_disk = Path::new("/proc/self/fd")
            .join(dir.as_raw_fd().to_string())
            .join(std::ffi::OsStr::from_bytes(name));
        let got = match sys::xattrs(&on_disk) {
            Ok(v) => v,
            // A filesystem without extended attributes has none.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Vec::new(),
            Err(e) => return self.unreadable(path, format!("extended attributes: {e}")),
        };
        let counted = |k: &str| !HOST_LABELS.contains(&k);
        let got: HashMap<String, String> = got
            .into_iter()
            .filter(|(k, _)| counted(k))
            .map(|(k, v)| (k, hex::encode(v)))
            .collect();
        let change = |name: &str, detail: &str| {
            self.found(
                path,
                Change::Xattr {
                    name: name.to_string(),
                    detail: detail.to_string(),
                },
            )
        };
        for (k, want) in rec.xattrs.iter().filter(|(k, _)| counted(k)) {
            match got.get(k) {
                None => change(k, "removed"),
                Some(v) if v != want => change(k, "changed"),
                Some(_) => {}
            }
        }
        let mut added: Vec<&String> = got
            .keys()
            .filter(|k| !rec.xattrs.contains_key(*k))
            .collect();
        added.sort();
        for k in added {
            change(k, "added");
        }
    }

    fn check_special(&self, want: &Special, st: &FileStat, path: &str) {
        let (want_kind, got_kind) = (Kind::of_special(want.kind), Kind::of(st));
        if want_kind != got_kind {
            return self.found(
                path,
                Change::Kind {
                    want: want_kind,
                    got: got_kind,
                },
            );
        }
        let rec = FileRecord {
            path: String::new(),
            kind: FileKind::File,
            mode: want.mode,
            uid: want.uid,
            gid: want.gid,
            size: 0,
            sha256: None,
            link: None,
            xattrs: Default::default(),
        };
        self.check_meta(&rec, st, path, true);
        let got = (
            nix::sys::stat::major(st.st_rdev),
            nix::sys::stat::minor(st.st_rdev),
        );
        if want.kind != SpecialKind::Fifo && got != (want.major, want.minor) {
            self.found(
                path,
                Change::Device {
                    want: (want.major, want.minor),
                    got,
                },
            );
        }
    }

    fn check_content(&self, fd: OwnedFd, size: u64, want: Digest, path: &str) {
        match self.hash(fd, size) {
            Ok(got) if got == want => {}
            Ok(got) => self.found(path, Change::Content { want, got }),
            Err(e) => self.unreadable(path, e),
        }
    }

    /// The index of a hard link's target, if the baseline has it as a
    /// regular file.
    fn link_target(&self, rec: &FileRecord) -> Option<usize> {
        let i = *self.index.get(rec.link.as_deref()?)?;
        (self.files[i].kind == FileKind::File).then_some(i)
    }

    /// Walk into directory `name` (already opened as `fd` when it was a
    /// directory at listing time), unless it changed since `st`.
    fn descend<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        at: &At<'_>,
        fd: Option<OwnedFd>,
        st: &FileStat,
    ) {
        let At { dir, name, path } = *at;
        let fd = match fd {
            Some(fd) => fd,
            None => match self.open(dir, name, true).and_then(|fd| {
                let now = fstat(fd.as_raw_fd())?;
                if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) {
                    Ok(fd)
                } else {
                    Err(io::Error::other("replaced during the scan"))
                }
            }) {
                Ok(fd) => fd,
                Err(e) => {
                    self.unreadable(path, e);
                    return self.not_entered(path);
                }
            },
        };
        let path = path.to_string();
        scope.spawn(move |scope| self.walk_dir(scope, fd, path));
    }

    /// Open `name` in `dir` for reading without following a symlink (and
    /// without updating its access time when we may).
    fn open(&self, dir: BorrowedFd<'_>, name: &[u8], is_dir: bool) -> io::Result<OwnedFd> {
        let mut flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if is_dir {
            flags |= OFlag::O_DIRECTORY;
        } else {
            // A FIFO put in a file's place must not block the scan.
            flags |= OFlag::O_NONBLOCK;
        }
        if self.noatime.load(Ordering::Relaxed) {
            match sys::openat(dir, name, flags | OFlag::O_NOATIME, Mode::empty()) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    self.noatime.store(false, Ordering::Relaxed);
                }
                r => return r,
            }
        }
        sys::openat(dir, name, flags, Mode::empty())
    }

    /// sha256 of an open file of `size` bytes (as fstat said), read in
    /// this thread's buffer within the byte budget.
    fn hash(&self, fd: OwnedFd, size: u64) -> io::Result<Digest> {
        let mut file = File::from(fd);
        BUF.with_borrow_mut(|buf| {
            if buf.is_empty() {
                buf.resize(BUF_SIZE, 0);
            }
            let mut h = Hasher::new();
            loop {
                let n = match file.read(buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if let Some(t) = &self.throttle {
                    t.take(n as u64);
                }
                h.update(&buf[..n]);
                // A short read of a regular file is its end: skip the read
                // that would return 0 (a growing file is a race either way).
                if n < buf.len() && h.len() == size {
                    break;
                }
            }
            self.bytes_hashed.fetch_add(h.len(), Ordering::Relaxed);
            Ok(h.finish())
        })
    }

    fn mark_seen(&self, path: &str, ino: u64) {
        if let Some(&i) = self.index.get(path) {
            self.seen[i].store(ino.wrapping_add(1), Ordering::Relaxed);
        }
        if let Some(&(i, _)) = self.specials.get(path) {
            self.specials_seen[i].store(true, Ordering::Relaxed);
        }
    }

    /// What the walk did not see, hard links that split, and the report.
    fn finish(self, root: &Path) -> Report {
        let mut findings = self
            .findings
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        let unseen_trees = self
            .unseen_trees
            .into_inner()
            .unwrap_or_else(|e| e.into_inner());
        let hidden = |path: &str| {
            unseen_trees.iter().any(|t| {
                path.strip_prefix(t.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        };
        let seen: Vec<u64> = self.seen.into_iter().map(AtomicU64::into_inner).collect();
        for (i, rec) in self.files.iter().enumerate() {
            if seen[i] == 0 {
                if !hidden(&rec.path) {
                    findings.push(Finding {
                        path: rec.path.clone(),
                        change: Change::Removed {
                            kind: Kind::of_record(&rec.kind),
                        },
                    });
                }
                continue;
            }
            if rec.kind != FileKind::Hardlink {
                continue;
            }
            let target = rec.link.as_deref().and_then(|l| self.index.get(l).copied());
            if let Some(t) = target
                && self.files[t].kind == FileKind::File
                && seen[t] != 0
                && seen[t] != seen[i]
            {
                findings.push(Finding {
                    path: rec.path.clone(),
                    change: Change::HardLink {
                        target: self.files[t].path.clone(),
                    },
                });
            }
        }
        for (path, &(i, special)) in &self.specials {
            if !self.specials_seen[i].load(Ordering::Relaxed) && !hidden(path) {
                findings.push(Finding {
                    path: path.to_string(),
                    change: Change::Removed {
                        kind: Kind::of_special(special.kind),
                    },
                });
            }
        }
        findings.sort_by(|a, b| a.path.cmp(&b.path));
        Report {
            root: root.to_path_buf(),
            files_checked: self.files_checked.into_inner(),
            bytes_hashed: self.bytes_hashed.into_inner(),
            findings,
        }
    }
}

/// Where an entry is: `name` in directory `dir`, at `path` in the image.
#[derive(Clone, Copy)]
struct At<'e> {
    dir: BorrowedFd<'e>,
    name: &'e [u8],
    path: &'e str,
}

/// A directory's entries (but `.` and `..`): names packed in one buffer.
struct Listing {
    names: Vec<u8>,
    items: Vec<(std::ops::Range<usize>, Option<Type>)>,
}

fn list(dir: &OwnedFd) -> io::Result<Listing> {
    // A duplicate, because `Dir` takes ownership and closes what it holds.
    let mut d = Dir::from(dir.try_clone()?)?;
    let mut out = Listing {
        names: Vec::new(),
        items: Vec::new(),
    };
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let start = out.names.len();
        out.names.extend_from_slice(name);
        out.items.push((start..out.names.len(), entry.file_type()));
    }
    Ok(out)
}

/// A token bucket shared by the scanning threads: each read takes its size
/// in tokens, and whoever drives the balance negative sleeps until the
/// refill would cover it, so together they read at `rate` on average.
struct Throttle {
    rate: f64,
    /// Tokens saved up while idle, at most: a tenth of a second's worth.
    burst: f64,
    state: Mutex<(Instant, f64)>,
}

impl Throttle {
    fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        Throttle {
            rate,
            burst: rate / 10.0,
            state: Mutex::new((Instant::now(), 0.0)),
        }
    }

    fn take(&self, n: u64) {
        let wait = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let (last, tokens) = *st;
            let tokens =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
            let left = tokens - n as f64;
            *st = (now, left);
            if left < 0.0 { -left / self.rate } else { 0.0 }
        };
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}

#[cfg(test)]
mod tests;

//! The few system calls neither std nor nix wraps safely, shared by `build`
//! and `store`. Kept in one small module so the unsafe code is easy to audit.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

/// openat(2) with an owned result (nix 0.29 hands back a bare `RawFd`).
pub fn openat<P: ?Sized + nix::NixPath>(
    dir: BorrowedFd<'_>,
    name: &P,
    flags: OFlag,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags, mode)?;
    // SAFETY: openat just returned `fd`, so it is open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set one extended attribute of `path`, not following a final symlink.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let cname = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: both strings are NUL-terminated; `value` is valid for reads of its length.
    let rc = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Extended attributes of `path` (not following a final symlink), sorted by name.
pub fn xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let names = read_sized(|buf, len| {
        // SAFETY: `cpath` is NUL-terminated; `buf` points at `len` writable bytes (or is null with len 0).
        unsafe { libc::llistxattr(cpath.as_ptr(), buf.cast(), len) }
    })?;
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(io::Error::other)?;
        let value = read_sized(|buf, len| {
            // SAFETY: as above; `cname` is NUL-terminated.
            unsafe { libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), buf.cast(), len) }
        })?;
        out.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    out.sort();
    Ok(out)
}

/// Call a size-probing syscall twice: once for the size, once to fill.
fn read_sized(mut call: impl FnMut(*mut u8, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let n = call(std::ptr::null_mut(), 0);
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENOTSUP) {
                Ok(Vec::new())
            } else {
                Err(e)
            };
        }
        let mut buf = vec![0u8; n as usize];
        let m = call(buf.as_mut_ptr(), buf.len());
        if m >= 0 {
            buf.truncate(m as usize);
            return Ok(buf);
        }
        // ERANGE: it grew between the calls; ask again.
        if io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return Err(io::Error::last_os_error());
        }
    }
}

/// Reset every ignored signal (real-time ones included) to its default
/// action. Ignored dispositions survive fork and exec, and Rust ignores
/// SIGPIPE at startup: without this, a container started from a drover
/// process would inherit that.
pub fn reset_ignored_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a zeroed sigaction is a valid out-parameter; the query
        // changes nothing, and installing SIG_DFL runs no code of ours in
        // signal context. Numbers the kernel rejects just return -1.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
    }
}

/// fork(2), for the embedded runtime's init (`runtime::init`): it runs in
/// the container's init process, which libcontainer clones from one
/// thread, so the child is a whole copy of a single-threaded process.
pub fn fork_single_threaded() -> io::Result<nix::unistd::ForkResult> {
    // SAFETY: the caller is single-threaded (see above): no other thread
    // can hold a lock the child would then wait for forever, so the child
    // may allocate and run any code before it execs.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// Ignore SIGPIPE again (as Rust does at startup), so a write to a pipe
/// whose reader is gone fails with EPIPE instead of killing this process.
pub fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN runs no code of ours in signal context.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Lower the calling thread's CPU priority to nice 19, the lowest.
/// (`setpriority(PRIO_PROCESS, tid)` acts on one thread on Linux.)
pub fn nice_thread() -> io::Result<()> {
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: plain syscall with integer arguments; it touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 19) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Put the calling thread in the idle I/O class: its reads are served only
/// when no other process wants the disk.
pub fn idle_io_thread() -> io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    const IOPRIO_CLASS_IDLE: libc::c_int = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_int = 13;
    let tid = nix::unistd::gettid().as_raw();
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raise this process's soft limit on open files to its hard limit (a scan
/// of a wide tree keeps a descriptor per directory it has yet to visit).
/// Best effort: the limit stays as it was if that fails.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

// ---------------------------------------------------------------------------
// User namespaces and id-mapped mounts (instances' roots and volumes).

/// One line of a uid or gid map: ids `inside..inside+count` of the new
/// namespace are `outside..outside+count` of this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapLine {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// A new user namespace whose uid and gid maps are both `map`, held by the
/// returned descriptor (nothing runs in it). It is what an id-mapped mount
/// is given to say how ids translate.
pub fn userns_with_map(map: IdMapLine) -> io::Result<OwnedFd> {
    use nix::unistd::{ForkResult, Pid, fork, pipe};
    let (ready_r, ready_w) = pipe()?;
    let (hold_r, hold_w) = pipe()?;
    // SAFETY: the child only makes raw system calls (unshare, write, read,
    // _exit): no allocation and no lock, so forking a threaded process is
    // sound.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(ready_r);
            drop(hold_w);
            let ok: u8 = if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok() {
                1
            } else {
                0
            };
            let _ = nix::unistd::write(&ready_w, &[ok]);
            let mut b = [0u8; 1];
            // Returns when the parent closes its end: it has what it needs.
            let _ = nix::unistd::read(hold_r.as_raw_fd(), &mut b);
            // SAFETY: _exit ends the child without running the parent's
            // destructors or atexit handlers a second time.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(hold_r);
            let finish = |pid: Pid, hold: OwnedFd| {
                drop(hold);
                let _ = nix::sys::wait::waitpid(pid, None);
            };
            let mut b = [0u8; 1];
            let n = nix::unistd::read(ready_r.as_raw_fd(), &mut b).unwrap_or(0);
            if n != 1 || b[0] != 1 {
                finish(child, hold_w);
                return Err(io::Error::other(
                    "cannot create a user namespace (is user.max_user_namespaces 0?)",
                ));
            }
            let line = format!("{} {} {}\n", map.inside, map.outside, map.count);
            let result = (|| {
                std::fs::write(format!("/proc/{child}/uid_map"), &line)?;
                std::fs::write(format!("/proc/{child}/gid_map"), &line)?;
                std::fs::File::open(format!("/proc/{child}/ns/user")).map(OwnedFd::from)
            })();
            finish(child, hold_w);
            result
        }
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Attach a copy of the directory `src` at `dst` (an existing directory):
/// `nosuid,nodev`, read-only if asked, and id-mapped through the user
/// namespace `idmap` if given (a file owned by id `n` on disk is seen as
/// owned by whatever `n` maps to there). One mount, not recursive, private:
/// nothing mounted below `src` comes along, and nothing propagates.
pub fn attach_copy(
    src: &Path,
    dst: &Path,
    read_only: bool,
    idmap: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let csrc = CString::new(src.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let cdst = CString::new(dst.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let empty = c"";
    // SAFETY: `csrc` is NUL-terminated; the flags are plain integers.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            csrc.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree just returned this descriptor; nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let mut attr = MountAttr {
        attr_set: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    if read_only {
        attr.attr_set |= MOUNT_ATTR_RDONLY;
    }
    if let Some(ns) = idmap {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = ns.as_raw_fd() as u64;
    }
    // SAFETY: `attr` is a live, correctly laid out `struct mount_attr` whose
    // size is passed; the path is the empty C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both paths are NUL-terminated; the descriptor is open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            cdst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Every mount point at or below `dir`, deepest first (from this process's
/// mount table), so they can be detached in order.
pub fn mounts_under(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut out: Vec<std::path::PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| std::path::PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    Ok(out)
}

/// Is the directory `dir` the source of a mount somewhere (an instance's
/// view of a volume, say)? Read from this process's mount table: a mount
/// whose root, within its filesystem, is `dir`.
pub fn is_mount_source(dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir)?.dev();
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    // (root within the filesystem, mount point), for mounts of dir's filesystem.
    let mounts: Vec<(std::path::PathBuf, std::path::PathBuf)> = table
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .filter(|f| f.len() > 4 && f[2] == want)
        .map(|f| {
            (
                unescape_mountinfo(f[3]).into(),
                unescape_mountinfo(f[4]).into(),
            )
        })
        .collect();
    // Where dir is within its filesystem: through the mount that holds it.
    let Some((root, at)) = mounts
        .iter()
        .filter(|(_, at)| dir.starts_with(at))
        .max_by_key(|(_, at)| at.components().count())
    else {
        return Ok(false);
    };
    let inside = root.join(dir.strip_prefix(at).unwrap_or(dir));
    Ok(mounts
        .iter()
        .any(|(r, at)| *r == inside && !dir.starts_with(at)))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> std::ffi::OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// Mount an overlay at `at`: `lower` read-only below, every change in
/// `upper` (`work` is overlayfs's scratch space on the same filesystem).
/// No redirects, index or metacopy: the upper directory then holds only
/// plain files, directories, symlinks, whiteouts and opaque markers, which
/// is what a layer can say. `nosuid,nodev`.
pub fn mount_overlay(lower: &Path, upper: &Path, work: &Path, at: &Path) -> io::Result<()> {
    use nix::mount::{MsFlags, mount};
    for p in [lower, upper, work] {
        // overlayfs splits its options at ',' and lower directories at ':'.
        let b = p.as_os_str().as_bytes();
        if b.iter().any(|c| matches!(c, b',' | b':' | b'\\')) {
            return Err(io::Error::other(format!(
                "{}: an overlay cannot name a path with ',', ':' or '\\'",
                p.display()
            )));
        }
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        at,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(io::Error::from)
}

/// Detach the mount at `path` (lazily: a process still inside keeps its
/// view until it leaves).
pub fn detach(path: &Path) -> io::Result<()> {
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)
}

/// Wait up to `timeout` for `fd` to be readable (or closed, or failed):
/// true when a read would not block. (A log pipe's reader uses it to write
/// out a line that waits too long for its newline.)
pub fn readable(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: one valid pollfd, borrowed for the duration of the call.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        // On an error, the read that follows finds out what it is.
        return n != 0;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_thread_lowers_only_its_own_priorities() {
        let nice = || {
            // Field 19 of /proc/thread-self/stat; the name (field 2) may hold spaces.
            let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            rest.split(' ').nth(16).unwrap().parse::<i32>().unwrap()
        };
        let io_class = || {
            let tid = nix::unistd::gettid().as_raw();
            // SAFETY: ioprio_get takes two integers and touches no memory of ours.
            let prio = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, tid) };
            assert!(prio >= 0, "{}", std::io::Error::last_os_error());
            prio >> 13
        };
        let before = nice();
        std::thread::spawn(move || {
            super::nice_thread().unwrap();
            super::idle_io_thread().unwrap();
            assert_eq!(nice(), 19);
            assert_eq!(io_class(), 3, "IOPRIO_CLASS_IDLE");
        })
        .join()
        .unwrap();
        assert_eq!(nice(), before);
    }

    /// An id-mapped copy shows files owned by id n as owned by the id n
    /// maps to, read-only and nosuid, and detaches cleanly.
    #[test]
    fn an_id_mapped_copy_shifts_owners_and_detaches() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst with space");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(src.join("f"), b"x").unwrap();
        std::os::unix::fs::chown(src.join("f"), Some(0), Some(5)).unwrap();
        let ns = super::userns_with_map(super::IdMapLine {
            inside: 0,
            outside: 0x7000_0000,
            count: 65536,
        })
        .unwrap();
        super::attach_copy(&src, &dst, true, Some(std::os::fd::AsFd::as_fd(&ns))).unwrap();
        let m = std::fs::metadata(dst.join("f")).unwrap();
        let mounts = super::mounts_under(dir.path()).unwrap();
        let is_source = super::is_mount_source(&src).unwrap();
        let detached = super::detach(&dst);
        assert_eq!((m.uid(), m.gid()), (0x7000_0000, 0x7000_0005));
        assert_eq!(mounts, vec![dst.clone()]);
        assert!(is_source, "src is mounted at dst");
        detached.unwrap();
        assert!(!super::is_mount_source(&src).unwrap());
        assert!(super::mounts_under(dir.path()).unwrap().is_empty());
        assert!(!dst.join("f").exists());
    }
}

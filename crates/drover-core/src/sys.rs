//! The few system calls neither std nor nix wraps safely, shared by `build`
//! and `store`. Kept in one small module so the unsafe code is easy to audit.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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
}

//! `serve` under systemd, without libsystemd: the notify protocol
//! (`sd_notify`: one datagram to `$NOTIFY_SOCKET`, descriptors attached
//! for the fd store) and the descriptors systemd passes at start
//! (`$LISTEN_FDS`, `$LISTEN_FDNAMES`, from fd 3).
//!
//! What serve says: `READY=1` once it holds serve's lock; `FDSTORE=1` with
//! `FDNAME=<service>/<port>` for each listening socket, so that systemd
//! keeps a duplicate and passes it back at the next start (a `systemctl
//! restart` or a crash then refuses no connection: they wait in the
//! backlog); `FDSTOREREMOVE=1` when a port closes; `MAINPID=` when a
//! SIGHUP (`systemctl reload`) hands over to a new process;
//! `STOPPING=1` when it stops.
//!
//! Both variables are taken out of the environment at start: the
//! instances' monitors must not see them (runc, for one, would relay a
//! container's notifications to `$NOTIFY_SOCKET`). Serve keeps
//! `$NOTIFY_SOCKET` to itself and hands it to a successor it starts.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};

/// The first descriptor systemd passes.
const LISTEN_FDS_START: RawFd = 3;

/// What systemd told this process at start.
#[derive(Debug, Default)]
pub struct Environment {
    /// `$NOTIFY_SOCKET`: where to send notifications (`None`: not under
    /// systemd, or `Type=` without notifications).
    pub notify_socket: Option<OsString>,
    /// The descriptors passed (socket activation, the fd store), with
    /// their names (`unknown` when systemd had none).
    pub fds: Vec<(String, OwnedFd)>,
}

/// Take what systemd passed and remove it from the environment. Call it
/// first thing, before any other thread runs (the environment is not
/// thread-safe to change).
pub fn take() -> Environment {
    let notify_socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty());
    let pid_matches = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n: RawFd = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|_| pid_matches)
        .unwrap_or(0);
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|s| s.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    for var in [
        "NOTIFY_SOCKET",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ] {
        // SAFETY: the caller runs this before starting any thread, so no
        // one reads the environment concurrently.
        unsafe { std::env::remove_var(var) };
    }
    let mut fds = Vec::new();
    for i in 0..n.clamp(0, 4096) {
        let fd = LISTEN_FDS_START + i;
        // Ours from here: close-on-exec, so no monitor inherits it.
        if nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .is_err()
        {
            continue;
        }
        // SAFETY: systemd passed `fd` to this process (LISTEN_PID is ours,
        // LISTEN_FDS counts it), and nothing in it has used it yet.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = names
            .get(i as usize)
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        fds.push((name, owned));
    }
    Environment { notify_socket, fds }
}

/// Send `state` (lines such as `READY=1`) to `socket`, with `fds`
/// attached (for `FDSTORE=1`).
pub fn notify(socket: &OsString, state: &str, fds: &[RawFd]) -> io::Result<()> {
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => UnixAddr::new_abstract(abstract_name)?,
        None => UnixAddr::new(bytes)?,
    };
    let sock = UnixDatagram::unbound()?;
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    use std::os::fd::AsRawFd;
    sendmsg(
        sock.as_raw_fd(),
        &[io::IoSlice::new(state.as_bytes())],
        cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )?;
    Ok(())
}

/// The unit file of `drover serve`: `exe` run on `store`, with `serve_args`.
///
/// Why each setting (the README's "Operating under systemd" says more):
///
/// - `Type=notify`, `NotifyAccess=all`: serve says when it is ready; after
///   a SIGHUP its successor (another process) becomes the main one.
/// - `KillMode=process`: stop and restart signal serve alone. The
///   instances' monitors are serve's children, in this unit's cgroup (the
///   instances themselves are in cgroups of their own, under `/drover`);
///   the default, `control-group`, would kill them all, and `mixed` too
///   (SIGKILL to what remains after serve exits). They stay in the unit's
///   cgroup, counted in its accounting, and systemd lists them as left
///   over when serve stops.
/// - `ExecReload`: SIGHUP, a handover to the binary on disk; `systemctl
///   reload` after `drover upgrade --no-serve`, or just to restart serve.
/// - `FileDescriptorStoreMax`: the listening sockets survive a `systemctl
///   restart` or a crash in systemd's fd store.
/// - `OOMPolicy=continue`: an out-of-memory kill of one monitor stops no
///   unit.
/// - No mount-namespace sandboxing (`ProtectSystem=`, `ProtectHome=`,
///   `PrivateTmp=`, `ReadWritePaths=`…): each start would get a namespace
///   of its own, the monitors of one serve in another's; and no
///   `NoNewPrivileges=`, `SystemCallFilter=` or `RestrictSUIDSGID=`: the
///   instances inherit them from their monitors, and images that use
///   setuid programs or uncommon system calls would break.
pub fn unit(exe: &Path, store: &Path, serve_args: &str) -> String {
    let args = if serve_args.is_empty() {
        String::new()
    } else {
        format!(" {serve_args}")
    };
    format!(
        "# drover serve: keeps the services of one store converged and proxies their
# traffic. Written by `drover install-service`; see the README, \"Operating
# under systemd\". Stopping or restarting serve stops no instance.
[Unit]
Description=drover serve ({store})
Documentation=man:drover-serve(1)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=all
ExecStart={exe} --store {store} serve{args}
# A handover to a serve from the binary on disk: no connection refused.
ExecReload=/bin/kill -HUP $MAINPID
# Signal serve alone: the monitors of running instances live on.
KillMode=process
Restart=on-failure
RestartSec=1s
TimeoutStopSec=30s
# The proxies' listening sockets, kept across restarts.
FileDescriptorStoreMax=4096
OOMPolicy=continue
LimitNOFILE=1048576
TasksMax=infinity
UMask=0077
# No ProtectSystem=, ProtectHome=, PrivateTmp= (a mount namespace per start
# would separate serve from the monitors of the last one), no
# NoNewPrivileges=, SystemCallFilter=, RestrictSUIDSGID= (the instances
# inherit them): drover confines each instance itself (namespaces, a user
# namespace, capabilities, seccomp, a read-only root).

[Install]
WantedBy=multi-user.target
",
        exe = exe.display(),
        store = store.display(),
    )
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn notifications_carry_their_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sd = UnixDatagram::bind(&path).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = path.clone().into_os_string();
        notify(&socket, "FDSTORE=1\nFDNAME=web/80", &[l.as_raw_fd()]).unwrap();
        notify(&socket, "READY=1", &[]).unwrap();
        let mut buf = [0u8; 256];
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            sd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::empty(),
        )
        .unwrap();
        let fds = msg.cmsgs().unwrap().count();
        let n = msg.bytes;
        assert_eq!(&buf[..n], b"FDSTORE=1\nFDNAME=web/80");
        assert_eq!(fds, 1);
        let n = sd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}

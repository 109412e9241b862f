//! The build sandbox: where a build's `run` steps run (the builder's
//! [`Sandbox`]), by the embedded runtime, as instances do but on a
//! writable overlay.
//!
//! Each step gets an id range of its own (owner `build:<id>`, given back
//! afterwards; `gc` gives back what a killed build left), and runs as root
//! of that user namespace: the image so far is an id-mapped, read-only
//! view (`userns::attach_build`) under an overlay whose upper directory
//! receives the changes, so the image's root-owned files are root's inside
//! and what the command chowns lands in the upper directory as the
//! range's ids, which the builder shifts back. The runtime config is the
//! instances' (`runtime::spec`: seccomp denials, masked paths, no new
//! privileges), with a container root's usual capabilities (package
//! scripts chown and setuid), a network namespace with only `lo` unless
//! the step asks for the network, the build-context mounts read-only and
//! `/tmp` a tmpfs. Its output goes into a pipe of which the last lines are
//! kept; past its timeout the container is killed.

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{log, runtime_root, userns};
use crate::builder::run::{RunOutcome, RunStatus, RunStep, Sandbox, Tail};
use crate::error::{Error, IoContext, Result};
use crate::runtime::spec::{self, BindMount, IdMap, Launch, Limits};
use crate::runtime::{self, DriverKind};
use crate::store::Store;

/// The capabilities a container's root usually has (Docker's defaults):
/// enough for package scripts (chown, setuid helpers), nothing that
/// reaches outside the namespace.
const ROOT_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// `/tmp` of a run step (`/run` gets a quarter): builds unpack and compile there.
const TMPFS_BYTES: u64 = 512 << 20;

/// The real sandbox (see the module docs).
#[derive(Debug, Default)]
pub struct BuildSandbox;

impl Sandbox for BuildSandbox {
    fn run(&self, store: &mut Store, step: &RunStep<'_>) -> Result<RunOutcome> {
        let id = format!("build-{}", super::prepare::new_id()?);
        let owner = userns::build_owner(&id);
        let map = userns::hold(store.db_mut(), &owner)?;
        let pids = store.limits().pids;
        let bundle = store.tmp_dir().join(format!("{id}.bundle"));
        let result = run_in(store.root(), &id, &bundle, map, pids, step);
        let _ = fs::remove_dir_all(&bundle);
        let detached = userns::detach(store.root(), &id);
        let released = userns::release(store.db_mut(), &owner);
        let outcome = result?;
        detached?;
        released?;
        Ok(outcome)
    }
}

fn run_in(
    store_root: &Path,
    id: &str,
    bundle: &Path,
    map: IdMap,
    pids: u64,
    step: &RunStep<'_>,
) -> Result<RunOutcome> {
    let sources: Vec<PathBuf> = step.mounts.iter().map(|(p, _)| p.clone()).collect();
    let (lower, root, views) = userns::attach_build(store_root, id, step.lower, map, &sources)?;
    // The merged root is the upper directory's: owned and moded as the
    // image's root, in the range.
    let top = fs::metadata(step.lower).ctx("inspect", step.lower)?;
    std::os::unix::fs::chown(
        step.upper,
        Some(map.host + top.uid()),
        Some(map.host + top.gid()),
    )
    .ctx("prepare run directory", step.upper)?;
    fs::set_permissions(step.upper, fs::Permissions::from_mode(top.mode() & 0o7777))
        .ctx("prepare run directory", step.upper)?;
    crate::sys::mount_overlay(&lower, step.upper, step.work, &root).map_err(|e| {
        Error::Failed(format!(
            "overlay for a run step at {}: {e} (drover needs overlayfs on id-mapped layers, \
             Linux 5.19 or later)",
            root.display()
        ))
    })?;

    let (uid, gid) = step.user;
    let launch = Launch {
        id: id.to_string(),
        rootfs: root.clone(),
        args: step.args.to_vec(),
        env: step.env.to_vec(),
        cwd: step.cwd.to_string(),
        uid,
        gid,
        additional_gids: vec![],
        capabilities: if uid == 0 {
            ROOT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
        } else {
            vec![]
        },
        mounts: step
            .mounts
            .iter()
            .zip(views)
            .map(|((_, dest), source)| BindMount {
                source,
                target: dest.clone(),
                read_only: true,
            })
            .collect(),
        limits: Limits {
            pids: Some(pids),
            ..Limits::default()
        },
        tmpfs_bytes: TMPFS_BYTES,
        tmpfs: Vec::new(),
        userns: Some(map),
        root_view: Some(root),
        writable_root: true,
        own_network: !step.network,
        init: None,
        logs: None,
    };
    let mut config = spec::generate(&launch);
    // The id is random; what the command sees of the host must not be.
    config["hostname"] = serde_json::json!("drover-build");
    fs::create_dir_all(bundle).ctx("create run bundle", bundle)?;
    let bytes = serde_json::to_vec_pretty(&config).expect("JSON values serialize");
    fs::write(bundle.join("config.json"), bytes).ctx("write runtime config", bundle)?;

    let driver = runtime::driver(DriverKind::Embedded, &runtime_root(store_root));
    let (output, pipe) = log::pipe()?;
    // As for instances: the command may reopen /dev/stdout.
    nix::unistd::fchown(
        pipe.as_raw_fd(),
        Some(nix::unistd::Uid::from_raw(map.host + uid)),
        Some(nix::unistd::Gid::from_raw(map.host + gid)),
    )
    .map_err(std::io::Error::from)
    .ctx(
        "give the output pipe to the command's user",
        Path::new("<pipe>"),
    )?;
    let reader = std::thread::spawn(move || {
        let mut tail = Tail::default();
        let mut file = fs::File::from(output);
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.push(&buf[..n]);
        }
        tail.finish()
    });
    // The container inherits ignored signals (Rust ignores SIGPIPE).
    crate::sys::reset_ignored_signals();
    let created = driver.create(id, bundle, pipe.as_fd());
    crate::sys::ignore_sigpipe();
    drop(pipe);
    let status = created
        .and_then(|pid| driver.start(id).map(|()| pid))
        .and_then(|pid| wait(&*driver, id, pid, step.timeout));
    let deleted = driver.delete(id);
    let tail = reader.join().unwrap_or_default();
    let status = status?;
    deleted?;
    Ok(RunOutcome {
        status,
        tail,
        id_base: map.host,
        id_count: map.size,
    })
}

/// Wait for the container's init `pid` (this process's child) to exit;
/// past `timeout`, kill the container (its PID namespace goes with init).
fn wait(driver: &dyn runtime::Driver, id: &str, pid: u32, timeout: Duration) -> Result<RunStatus> {
    let target = Pid::from_raw(pid as i32);
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match waitpid(target, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(RunStatus::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(RunStatus::Signaled(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                return Err(Error::Failed(format!(
                    "run step {id}: cannot wait for its process {pid}: {e}"
                )));
            }
        }
        if Instant::now() >= deadline {
            let _ = driver.kill(id, libc::SIGKILL);
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(target, None);
            return Ok(RunStatus::TimedOut);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

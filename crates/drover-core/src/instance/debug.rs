//! `drover debug`: a look inside a running instance without touching it.
//!
//! Instances are never changed, so there is no shell *into* one (`drover
//! exec` says why). A debug session is instead an ephemeral instance that
//! mirrors one: the same image, the same environment, limits, capabilities,
//! tmpfs paths, user namespace and network (the host's, as every
//! instance's), its volumes mounted **read-only**, and a command of the
//! caller's (`/bin/sh` by default). Its stdio is the caller's (a terminal
//! makes it interactive), it belongs to no service (never a replica, never
//! part of a rollout), and it is removed when it exits. The ledger names it
//! (`instance.debug`: the instance it mirrors, its command) besides its
//! start, exit and removal, all under the caller's actor.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use serde_json::json;

use super::{Exit, Instance, RunOptions, VolumeSpec, find, monitor, prepare};
use crate::error::{Error, Result};
use crate::ledger::NewEntry;
use crate::runtime;
use crate::store::Store;

/// The shell a debug session runs when not told otherwise.
pub const DEFAULT_SHELL: &str = "/bin/sh";

/// How a debug session ended.
#[derive(Debug)]
pub struct Session {
    /// The ephemeral instance (removed by now).
    pub id: String,
    /// The instance it mirrored.
    pub mirrors: String,
    pub exit: Exit,
}

/// The options that mirror `target`: see the module docs.
pub fn options(target: &Instance, command: Vec<String>) -> Result<RunOptions> {
    let launch = &target.launch;
    let volumes = if target.volumes.len() == launch.mounts.len() {
        target
            .volumes
            .iter()
            .zip(&launch.mounts)
            .map(|(held, m)| VolumeSpec::parse(&format!("{}:{}:ro", held.name, m.target)))
            .collect::<Result<Vec<_>>>()?
    } else {
        return Err(Error::Usage(format!(
            "instance {} was recorded before drover kept the names of its volumes; debug a \
             newer instance of it",
            target.id
        )));
    };
    Ok(RunOptions {
        name: None,
        logs: None,
        // PORT is given anew: the session must not take the instance's.
        env: launch
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k != "PORT")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        volumes,
        port: None,
        limits: launch.limits.clone(),
        cap_add: launch.capabilities.clone(),
        command: Some(command),
        driver: target.driver,
        service: None,
        release: None,
        tmpfs_bytes: launch.tmpfs_bytes,
        tmpfs: launch.tmpfs.clone(),
        userns: launch.userns.is_some(),
        slot: None,
        init: None,
    })
}

/// Run a debug session mirroring instance `key` (see the module docs):
/// `command`, or [`DEFAULT_SHELL`] if the image has one, with this
/// process's stdin, stdout and stderr. Returns when it has exited and is
/// removed. SIGINT, SIGTERM and SIGHUP sent to this process meanwhile go
/// to the session.
pub fn run(store: &mut Store, key: &str, command: Option<Vec<String>>) -> Result<Session> {
    let target = find(store.db(), key)?;
    if !target.state.is_live() {
        return Err(Error::Usage(format!(
            "instance {} is {}: a debug session mirrors a running instance; `drover run --wait \
             --rm {}` runs its image",
            target.id,
            target.state.as_str(),
            target.image
        )));
    }
    let command = match command {
        Some(c) if !c.is_empty() => c,
        _ => {
            let root = crate::store::unpack::materialize(store, &target.image)?;
            // Without following links: an absolute one would lead out of
            // the root (to the host's shell).
            let has = |p: &str| std::fs::symlink_metadata(root.path.join(p)).is_ok();
            let shell = match () {
                _ if has("bin/sh") => DEFAULT_SHELL,
                _ if has("usr/bin/sh") => "/usr/bin/sh",
                _ => {
                    return Err(Error::Usage(format!(
                        "image {} has no {DEFAULT_SHELL}; name a command: drover debug {} -- \
                         CMD …",
                        target.image, target.id
                    )));
                }
            };
            vec![shell.to_string()]
        }
    };
    let opts = options(&target, command.clone())?;
    // The image passes the deploy policy as any `run` of it would.
    crate::trust::admit::image(store, &target.image, crate::trust::policy::Operation::Run)?;
    super::monitor::adopt_orphans()?;
    let (inst, made) = prepare::create(store, &target.image, &target.image_ref, &opts)?;
    let recorded = store.db_mut().write(|tx| {
        tx.record(NewEntry::new(
            "instance.debug",
            [inst.id.clone(), target.image.to_string()],
            json!({"mirrors": target.id, "command": command}),
        ))
        .map(drop)
    });
    if let Err(e) = recorded {
        super::discard(store, &inst, &made);
        return Err(e);
    }
    let root = store.root().to_path_buf();
    let started = stdio().and_then(|s| monitor::launch_with(&root, store.db_mut(), &inst, s));
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            super::discard(store, &inst, &made);
            return Err(e);
        }
    };
    forward_signals(&root, &inst);
    let exit = monitor::wait_for(pid);
    super::record_exit(store.db_mut(), &inst.id, exit)?;
    super::remove(store, &inst.id, false)?;
    Ok(Session {
        id: inst.id,
        mirrors: target.id,
        exit,
    })
}

/// This process's stdin, stdout and stderr, duplicated for the container.
fn stdio() -> Result<runtime::Stdio> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| -> Result<File> {
        let owned: OwnedFd = fd.try_clone_to_owned().map_err(|e| {
            Error::Failed(format!(
                "debug session: duplicate this terminal's stdio: {e}"
            ))
        })?;
        Ok(File::from(owned))
    };
    Ok((
        dup(std::io::stdin().as_fd())?,
        dup(std::io::stdout().as_fd())?,
        dup(std::io::stderr().as_fd())?,
    ))
}

/// From now on, SIGINT, SIGTERM and SIGHUP to this process go to the
/// session's container (its init passes them to the command), so Ctrl-C
/// ends a command, not drover (which must remove the session). Blocked
/// only now: the container, created already, does not inherit the mask.
fn forward_signals(store_root: &std::path::Path, inst: &Instance) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    let (kind, root, id) = (
        inst.driver,
        super::runtime_root(store_root),
        inst.id.clone(),
    );
    std::thread::spawn(move || {
        let driver = runtime::driver(kind, &root);
        while let Ok(sig) = set.wait() {
            let _ = driver.kill(&id, sig as i32);
        }
    });
}

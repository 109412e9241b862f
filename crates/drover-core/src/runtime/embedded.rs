//! The default driver: youki's libcontainer, linked into drover. No runtime
//! binary to exec: the caller clones the container's init process itself,
//! which is why it starts faster than `runc`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;

use super::{ContainerState, Driver, DriverKind, Status};
use crate::error::{Error, IoContext, Result};

pub struct Embedded {
    /// libcontainer's state directory: one subdirectory per container.
    root: PathBuf,
}

/// How many times a container's state is read before its failure counts:
/// the first two at once, then every 25 ms (about a second in all).
const LOAD_TRIES: u32 = 42;

impl Embedded {
    pub fn new(root: PathBuf) -> Self {
        Embedded { root }
    }

    fn load(&self, id: &str) -> Result<Option<Container>> {
        let dir = self.root.join(id);
        if !dir.join("state.json").exists() {
            return Ok(None);
        }
        // Loading reads /proc/<pid>/stat; a process exiting in between makes
        // it fail once, after which it reads as stopped. And libcontainer
        // rewrites state.json in place (truncate, then many small writes),
        // so a read while the instance's monitor saves it sees a torn file:
        // look again a little later, for up to a second.
        let mut tries = 0;
        loop {
            match Container::load(dir.clone()) {
                Ok(c) => return Ok(Some(c)),
                Err(_) if tries < LOAD_TRIES => {
                    tries += 1;
                    if tries > 2 {
                        std::thread::sleep(Duration::from_millis(25));
                    }
                }
                Err(e) => return Err(failed(id, "load", e)),
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct ProcessUser {
    uid: u32,
    gid: u32,
    #[serde(default, rename = "additionalGids")]
    additional_gids: Vec<u32>,
}

impl Embedded {
    /// The user the container's process runs as, from its bundle's config.
    fn process_user(&self, id: &str) -> Result<ProcessUser> {
        let c = self
            .load(id)?
            .ok_or_else(|| Error::not_found(format!("container {id}")))?;
        let path = c.bundle().join("config.json");
        let config: serde_json::Value = serde_json::from_slice(
            &fs::read(&path).ctx("read runtime config", &path)?,
        )
        .map_err(|e| Error::corrupt(format!("runtime config {}", path.display()), e.to_string()))?;
        serde_json::from_value(config["process"]["user"].clone()).map_err(|e| {
            Error::corrupt(format!("runtime config {}", path.display()), e.to_string())
        })
    }
}

fn failed(id: &str, op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Runtime {
        id: id.to_string(),
        driver: "embedded",
        op,
        reason: e.to_string(),
    }
}

fn state(c: &Container) -> ContainerState {
    ContainerState {
        id: c.id().to_string(),
        status: match c.status() {
            ContainerStatus::Creating | ContainerStatus::Created => Status::Created,
            ContainerStatus::Running | ContainerStatus::Paused => Status::Running,
            ContainerStatus::Stopped => Status::Stopped,
        },
        pid: c.pid().map(|p| p.as_raw() as u32),
        bundle: c.bundle().clone(),
    }
}

impl Driver for Embedded {
    fn kind(&self) -> DriverKind {
        DriverKind::Embedded
    }

    fn create_with(&self, id: &str, bundle: &Path, stdio: super::Stdio) -> Result<u32> {
        fs::create_dir_all(&self.root).ctx("create runtime state directory", &self.root)?;
        let (null, out, err) = stdio;
        let container = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
            .with_root_path(&self.root)
            .map_err(|e| failed(id, "create", e))?
            .with_stdin(null)
            .with_stdout(out)
            .with_stderr(err)
            .with_executor(super::init::WithInit)
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| failed(id, "create", e))?;
        container
            .pid()
            .map(|p| p.as_raw() as u32)
            .ok_or_else(|| failed(id, "create", "no init process"))
    }

    fn start(&self, id: &str) -> Result<()> {
        let mut c = self
            .load(id)?
            .ok_or_else(|| Error::not_found(format!("container {id}")))?;
        c.start().map_err(|e| failed(id, "start", e))
    }

    fn kill(&self, id: &str, signal: i32) -> Result<()> {
        let signal = || Signal::try_from(signal).map_err(|e| failed(id, "signal", e));
        signal()?;
        // The process may exit between loading the state and signalling it
        // (libcontainer then reports a stopped container, or a vanished
        // /proc entry): look again, and a stopped container is done.
        let mut tries = 0;
        loop {
            let Some(mut c) = self.load(id)? else {
                return Ok(());
            };
            if c.status() == ContainerStatus::Stopped {
                return Ok(());
            }
            match c.kill(signal()?, false) {
                Ok(()) => return Ok(()),
                Err(_) if tries < 3 => tries += 1,
                Err(e) => return Err(failed(id, "signal", e)),
            }
        }
    }

    fn delete(&self, id: &str) -> Result<()> {
        let Some(mut c) = self.load(id)? else {
            // A create or delete killed halfway leaves the directory without
            // its state; nothing runs from it (callers never delete a
            // container whose monitor is still creating it).
            let dir = self.root.join(id);
            return match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(crate::error::Error::io("remove runtime state", dir, e))
                }
                _ => Ok(()),
            };
        };
        c.delete(true).map_err(|e| failed(id, "delete", e))
    }

    fn inspect(&self, id: &str) -> Result<Option<ContainerState>> {
        Ok(self.load(id)?.as_ref().map(state))
    }

    fn exec(&self, id: &str, args: &[String], timeout: Duration) -> Result<i32> {
        let null = || File::options().read(true).write(true).open("/dev/null");
        let (i, o, e) = (|| Ok::<_, std::io::Error>((null()?, null()?, null()?)))()
            .ctx("open", Path::new("/dev/null"))?;
        // As the container's own user: libcontainer's tenant defaults to root.
        let user = self.process_user(id)?;
        let pid = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
            .with_root_path(&self.root)
            .map_err(|e| failed(id, "exec in", e))?
            .with_stdin(i)
            .with_stdout(o)
            .with_stderr(e)
            .as_tenant()
            .with_container_args(args.to_vec())
            .with_user(Some(user.uid))
            .with_group(Some(user.gid))
            .with_additional_gids(user.additional_gids)
            .with_detach(true)
            .build()
            .map_err(|e| failed(id, "exec in", e))?;
        super::wait_child(pid.as_raw(), timeout, || {
            format!("instance {id}: {}", args.join(" "))
        })
    }

    fn list(&self) -> Result<Vec<ContainerState>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io("list runtime state", &self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.ctx("list runtime state", &self.root)?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Some(c) = self.load(&id)? {
                out.push(state(&c));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file caught mid-rewrite (empty, or cut short) is read again
    /// until the writer is done, not reported as a failed load.
    #[test]
    fn a_state_file_caught_mid_write_is_read_again() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c1");
        fs::create_dir_all(&dir).unwrap();
        let bundle = root.path().join("bundle");
        fs::create_dir_all(&bundle).unwrap();
        fs::write(dir.join("state.json"), b"{\"id\": \"c1\", \"sta").unwrap();
        let writer = {
            let (dir, bundle) = (dir.clone(), bundle.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(150));
                Container::new("c1", ContainerStatus::Stopped, None, &bundle, &dir)
                    .unwrap()
                    .save()
                    .unwrap();
            })
        };
        let e = Embedded::new(root.path().to_path_buf());
        let c = e.inspect("c1").unwrap().expect("the container");
        assert_eq!(c.status, Status::Stopped);
        writer.join().unwrap();
        // A file that stays torn is an error after about a second.
        fs::write(dir.join("state.json"), b"").unwrap();
        let t = std::time::Instant::now();
        assert!(e.inspect("c1").is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}

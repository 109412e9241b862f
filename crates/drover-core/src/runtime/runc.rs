//! The external driver: the `runc` binary (Debian's `runc` package), driven
//! through its CLI with its own state directory. Chosen with `--driver runc`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use super::{ContainerState, Driver, DriverKind, Status};
use crate::error::{Error, IoContext, Result};

pub struct Runc {
    /// `runc --root`: runc's state directory.
    root: PathBuf,
    binary: PathBuf,
}

impl Runc {
    pub fn new(root: PathBuf) -> Self {
        let binary = std::env::var_os("DROVER_RUNC").map_or_else(|| "runc".into(), PathBuf::from);
        Runc { root, binary }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c
    }

    /// Run runc with `args`; on failure, its own message becomes the error.
    fn run(&self, id: &str, op: &'static str, args: &[&str]) -> Result<Vec<u8>> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| failed(id, op, format!("cannot run {}: {e}", self.binary.display())))?;
        if !out.status.success() {
            return Err(failed(id, op, String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(out.stdout)
    }
}

fn failed(id: &str, op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Runtime {
        id: id.to_string(),
        driver: "runc",
        op,
        reason: e.to_string(),
    }
}

/// `runc state` / `runc list --format json` output.
#[derive(Deserialize)]
struct RuncState {
    id: String,
    pid: i64,
    status: String,
    bundle: PathBuf,
}

impl RuncState {
    fn into_state(self) -> ContainerState {
        ContainerState {
            status: match self.status.as_str() {
                "creating" | "created" => Status::Created,
                "running" | "paused" => Status::Running,
                _ => Status::Stopped,
            },
            pid: u32::try_from(self.pid).ok().filter(|p| *p > 0),
            id: self.id,
            bundle: self.bundle,
        }
    }
}

impl Driver for Runc {
    fn kind(&self) -> DriverKind {
        DriverKind::Runc
    }

    fn create_with(&self, id: &str, bundle: &Path, stdio: super::Stdio) -> Result<u32> {
        fs::create_dir_all(&self.root).ctx("create runtime state directory", &self.root)?;
        // Without a terminal, runc hands its own stdio to the container, so
        // runc's stdout and stderr are the log pipe; runc's own messages go to a
        // separate file, read back on failure.
        let (null, out, err) = stdio;
        let pid_file = bundle.join("runc.pid");
        let runc_log = bundle.join("runc.log");
        let status = self
            .command()
            .arg("--log")
            .arg(&runc_log)
            .args(["create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(null)
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(|e| {
                failed(
                    id,
                    "create",
                    format!("cannot run {}: {e}", self.binary.display()),
                )
            })?;
        if !status.success() {
            let text = fs::read_to_string(&runc_log).unwrap_or_default();
            let last = text
                .lines()
                .last()
                .unwrap_or("runc failed without a message");
            return Err(failed(id, "create", last));
        }
        let pid = fs::read_to_string(&pid_file).ctx("read runc pid file", &pid_file)?;
        pid.trim()
            .parse()
            .map_err(|_| failed(id, "create", format!("bad pid file {pid:?}")))
    }

    fn start(&self, id: &str) -> Result<()> {
        self.run(id, "start", &["start", id]).map(drop)
    }

    fn kill(&self, id: &str, signal: i32) -> Result<()> {
        match self.inspect(id)? {
            Some(s) if s.status != Status::Stopped => {
                match self.run(id, "signal", &["kill", id, &signal.to_string()]) {
                    Ok(_) => Ok(()),
                    // It exited between the look and the signal ("container
                    // not running"): stopped is what was asked for.
                    Err(_)
                        if self
                            .inspect(id)?
                            .is_none_or(|s| s.status == Status::Stopped) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Ok(()),
        }
    }

    fn delete(&self, id: &str) -> Result<()> {
        if self.inspect(id)?.is_none() {
            return Ok(());
        }
        self.run(id, "delete", &["delete", "--force", id]).map(drop)
    }

    fn inspect(&self, id: &str) -> Result<Option<ContainerState>> {
        if !self.root.join(id).join("state.json").exists() {
            return Ok(None);
        }
        let out = self.run(id, "inspect", &["state", id])?;
        let s: RuncState = serde_json::from_slice(&out)
            .map_err(|e| failed(id, "inspect", format!("unreadable `runc state`: {e}")))?;
        Ok(Some(s.into_state()))
    }

    fn exec(&self, id: &str, args: &[String], timeout: Duration) -> Result<i32> {
        // runc's pid file names the process inside, which a timeout must
        // kill too: killing the `runc exec` client leaves it running.
        let pid_file = std::env::temp_dir().join(format!(
            "drover-exec-{id}-{}-{:?}.pid",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_file(&pid_file);
        let child = self
            .command()
            .args(["exec", "--pid-file"])
            .arg(&pid_file)
            .arg(id)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                failed(
                    id,
                    "exec in",
                    format!("cannot run {}: {e}", self.binary.display()),
                )
            })?;
        let result = super::wait_child(child.id() as i32, timeout, || {
            format!("instance {id}: {}", args.join(" "))
        });
        if result.is_err()
            && let Some(pid) = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = fs::remove_file(&pid_file);
        result
    }

    fn list(&self) -> Result<Vec<ContainerState>> {
        if !self.root.exists() {
            return Ok(vec![]);
        }
        let out = self.run("*", "list", &["list", "--format", "json"])?;
        let list: Option<Vec<RuncState>> = serde_json::from_slice(&out)
            .map_err(|e| failed("*", "list", format!("unreadable `runc list`: {e}")))?;
        Ok(list
            .unwrap_or_default()
            .into_iter()
            .map(RuncState::into_state)
            .collect())
    }
}

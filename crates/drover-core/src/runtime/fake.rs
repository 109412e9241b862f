//! A driver for unit tests: no processes, no mounts, instant. Its state is
//! one small JSON file per container, so, like the real runtimes, any
//! process (or a fresh handle) sees what another did. It follows the OCI
//! lifecycle strictly (start only from created, …), so code that misuses
//! the verbs fails here first. Its "init pid" names no live process.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ContainerState, Driver, DriverKind, Status};
use crate::error::{Error, IoContext, Result};

/// A pid above the kernel's limit (2^22): never a live process.
const FAKE_PID: u32 = 1 << 23;

pub struct Fake {
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Record {
    status: String,
    bundle: PathBuf,
    /// Every signal sent, in order.
    signals: Vec<i32>,
}

fn failed(id: &str, op: &'static str, reason: &str) -> Error {
    Error::Runtime {
        id: id.to_string(),
        driver: "fake",
        op,
        reason: reason.to_string(),
    }
}

impl Fake {
    pub fn new(root: PathBuf) -> Self {
        Fake { root }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}.json"))
    }

    fn load(&self, id: &str) -> Result<Option<Record>> {
        let p = self.path(id);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::corrupt(format!("fake container {id}"), e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read fake container", p, e)),
        }
    }

    fn save(&self, id: &str, r: &Record) -> Result<()> {
        fs::create_dir_all(&self.root).ctx("create fake runtime state", &self.root)?;
        let p = self.path(id);
        fs::write(&p, serde_json::to_vec(r).expect("record serializes"))
            .ctx("write fake container", &p)
    }

    /// Signals sent to `id`, in order.
    pub fn signals(&self, id: &str) -> Vec<i32> {
        self.load(id)
            .ok()
            .flatten()
            .map(|r| r.signals)
            .unwrap_or_default()
    }

    /// Make the container's process exit, as if it had crashed.
    pub fn exit(&self, id: &str) -> Result<()> {
        let mut r = self
            .load(id)?
            .ok_or_else(|| failed(id, "exit", "no such container"))?;
        r.status = "stopped".into();
        self.save(id, &r)
    }
}

fn state(id: &str, r: Record) -> ContainerState {
    ContainerState {
        id: id.to_string(),
        status: match r.status.as_str() {
            "created" => Status::Created,
            "running" => Status::Running,
            _ => Status::Stopped,
        },
        pid: Some(FAKE_PID),
        bundle: r.bundle,
    }
}

impl Driver for Fake {
    fn kind(&self) -> DriverKind {
        DriverKind::Fake
    }

    fn create_with(&self, id: &str, bundle: &Path, _stdio: super::Stdio) -> Result<u32> {
        if self.load(id)?.is_some() {
            return Err(failed(id, "create", "already exists"));
        }
        if !bundle.join("config.json").is_file() {
            return Err(failed(id, "create", "bundle has no config.json"));
        }
        let r = Record {
            status: "created".into(),
            bundle: bundle.to_path_buf(),
            signals: vec![],
        };
        self.save(id, &r)?;
        Ok(FAKE_PID)
    }

    fn start(&self, id: &str) -> Result<()> {
        let mut r = self
            .load(id)?
            .ok_or_else(|| failed(id, "start", "no such container"))?;
        if r.status != "created" {
            return Err(failed(id, "start", "not in the created state"));
        }
        r.status = "running".into();
        self.save(id, &r)
    }

    fn kill(&self, id: &str, signal: i32) -> Result<()> {
        let Some(mut r) = self.load(id)? else {
            return Ok(());
        };
        r.signals.push(signal);
        r.status = "stopped".into();
        self.save(id, &r)
    }

    fn delete(&self, id: &str) -> Result<()> {
        match fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("delete fake container", self.path(id), e)),
        }
    }

    fn inspect(&self, id: &str) -> Result<Option<ContainerState>> {
        Ok(self.load(id)?.map(|r| state(id, r)))
    }

    /// Succeeds (exit 0) while the container runs.
    fn exec(&self, id: &str, _args: &[String], _timeout: Duration) -> Result<i32> {
        match self.load(id)? {
            Some(r) if r.status == "running" => Ok(0),
            _ => Err(failed(id, "exec in", "not running")),
        }
    }

    fn list(&self) -> Result<Vec<ContainerState>> {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return Ok(vec![]);
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json")
                && let Some(r) = self.load(id)?
            {
                out.push(state(id, r));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

//! One module per subcommand; each is a thin call into drover-core.

pub mod apply;
pub mod audit;
pub mod baseline;
pub mod build;
pub mod completion;
pub mod debug;
pub mod drift;
pub mod events;
pub mod exec;
pub mod fleet;
pub mod gc;
pub mod hosts;
pub mod images;
pub mod inspect;
pub mod install_service;
pub mod key;
pub mod lock;
pub mod logs;
pub mod man;
pub mod plan;
pub mod policy;
pub mod proxy;
pub mod ps;
pub mod pull;
pub mod push;
pub mod releases;
pub mod revoke;
pub mod rm;
pub mod rmi;
pub mod rollback;
pub mod rollout;
pub mod run;
pub mod serve;
pub mod service;
pub mod sign;
pub mod status;
pub mod stop;
pub mod store;
pub mod tag;
pub mod token;
pub mod trace;
pub mod upgrade;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::Context;
use drover_core::store::Store;

use crate::output::Format;

/// Refuse a store directory the user `named` (`--store`, `DROVER_STORE`)
/// that is not a store, unless `init` asks for one there and the directory
/// is missing or empty: a typo must not start an empty store. The default
/// directory is made when needed, as before.
pub fn check_store(dir: &Path, named: bool, init: bool) -> Result<(), drover_core::Error> {
    if !named || Store::exists_at(dir) {
        return Ok(());
    }
    let shown = dir.display();
    let entries: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if init {
                return Ok(());
            }
            return Err(drover_core::Error::NotFound {
                what: format!("store {shown}"),
                hint: Some(
                    "check the path; `drover --store DIR --init …` makes a new store there".into(),
                ),
            });
        }
        Err(e) => return Err(drover_core::Error::io("read the store directory", dir, e)),
    };
    // What a store holds (a cache seeded ahead, or a store another
    // process is making this moment, has only these).
    let store_shaped = entries
        .iter()
        .all(|name| STORE_ENTRIES.contains(&name.as_str()) || name.starts_with("drover.db"));
    match (entries.is_empty(), store_shaped && init) {
        (_, true) => Ok(()),
        (true, false) => Err(drover_core::Error::Usage(format!(
            "{shown} is an empty directory, not a drover store: pass --init to make a new \
             store there"
        ))),
        (false, false) => Err(drover_core::Error::Usage(format!(
            "{shown} is not a drover store (it has no oci-layout) and holds other files: \
             drover makes a new store only in a missing or empty directory (with --init); \
             check the path"
        ))),
    }
}

/// The top-level entries of a store's directory.
const STORE_ENTRIES: &[&str] = &[
    "blobs",
    "cache",
    "host.epoch",
    "index.json",
    "index.lock",
    "instances",
    "keys",
    "ledger.head",
    "ledger.head.lock",
    "leases",
    "logs",
    "oci-layout",
    "packages",
    "policy.toml",
    "reserve",
    "rootfs",
    "run",
    "serve.sock",
    "sign.lock",
    "state",
    "store.lock",
    "tmp",
    "volumes",
];

/// What every subcommand gets from the global options.
pub struct Ctx {
    pub store_dir: PathBuf,
    /// `-o`: how to print what the command produced.
    pub format: Format,
    /// Output is for programs (`-o json` or `-o yaml`, `--json`): print
    /// documents with [`Ctx::emit`], no sentences, no progress.
    pub json: bool,
}

impl Ctx {
    /// Print `value` as a versioned `kind` document (JSON or YAML, as `-o`
    /// says); a list becomes a `<kind>List`.
    pub fn emit<T: serde::Serialize>(&self, kind: &str, value: &T) -> anyhow::Result<()> {
        crate::output::emit(self.format, kind, value)
    }

    /// `-o wide`.
    pub fn wide(&self) -> bool {
        self.format == Format::Wide
    }

    pub fn store(&self) -> anyhow::Result<Store> {
        Store::open(&self.store_dir)
            .with_context(|| format!("opening the store at {}", self.store_dir.display()))
    }

    /// The store without a lease (see `store::lease`): for commands that
    /// only read and may run for long (`logs -f`), which `gc` must not wait
    /// for.
    pub fn store_unleased(&self) -> anyhow::Result<Store> {
        Store::open_unleased(&self.store_dir)
            .with_context(|| format!("opening the store at {}", self.store_dir.display()))
    }

    /// The public keys to trust: those named, else the policy's trusted keys
    /// and the fleet's (`drover policy trust`).
    pub fn trusted_keys(
        &self,
        files: &[std::path::PathBuf],
    ) -> anyhow::Result<Vec<drover_core::keys::PublicKey>> {
        if files.is_empty() {
            return Ok(
                drover_core::trust::policy::load_for(&self.store_unleased()?)?
                    .keys()
                    .to_vec(),
            );
        }
        Ok(files
            .iter()
            .map(|f| drover_core::keys::PublicKey::load(f))
            .collect::<Result<_, _>>()?)
    }

    /// The key to sign with: `file` when given, else the host key the
    /// store's state already holds (one load per process).
    pub fn signing_key(
        &self,
        store: &drover_core::store::Store,
        file: Option<&std::path::Path>,
    ) -> anyhow::Result<std::sync::Arc<drover_core::keys::SigningKey>> {
        Ok(match file {
            Some(f) => std::sync::Arc::new(drover_core::keys::SigningKey::load(f)?),
            None => store.db().signer()?.clone(),
        })
    }
}

//! One module per subcommand; each is a thin call into drover-core.

pub mod apply;
pub mod audit;
pub mod baseline;
pub mod build;
pub mod completion;
pub mod debug;
pub mod drift;
pub mod exec;
pub mod gc;
pub mod images;
pub mod inspect;
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
pub mod tag;
pub mod trace;
pub mod verify;

use std::path::PathBuf;

use anyhow::Context;
use drover_core::store::Store;

/// What every subcommand gets from the global options.
pub struct Ctx {
    pub store_dir: PathBuf,
    pub json: bool,
}

impl Ctx {
    pub fn store(&self) -> anyhow::Result<Store> {
        Store::open(&self.store_dir)
            .with_context(|| format!("opening the store at {}", self.store_dir.display()))
    }

    /// The public keys to trust: those named, else the policy's trusted keys.
    pub fn trusted_keys(
        &self,
        files: &[std::path::PathBuf],
    ) -> anyhow::Result<Vec<drover_core::keys::PublicKey>> {
        if files.is_empty() {
            return Ok(drover_core::trust::policy::load(&self.store_dir)?
                .keys()
                .to_vec());
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

//! One module per subcommand; each is a thin call into drover-core.

pub mod apply;
pub mod audit;
pub mod baseline;
pub mod build;
pub mod drift;
pub mod gc;
pub mod images;
pub mod inspect;
pub mod logs;
pub mod plan;
pub mod proxy;
pub mod ps;
pub mod pull;
pub mod push;
pub mod releases;
pub mod rm;
pub mod rmi;
pub mod rollback;
pub mod run;
pub mod serve;
pub mod status;
pub mod stop;
pub mod tag;
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
}

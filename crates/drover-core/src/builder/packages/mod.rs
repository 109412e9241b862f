//! Debian packages for `kind = "packages"` layers: a list of package
//! names in, a layer holding them and their dependencies out, resolved
//! under `drover.lock`.
//!
//! * the archive's metadata: `deb822` control data, `version` comparison,
//!   `relation` fields, `index` (Packages and Release files), the
//!   machine's apt `sources`;
//! * `resolve`: the dependency closure (pure: a universe and a request in,
//!   the chosen packages and why out), and `locking`, which runs it for
//!   each layer of a definition and writes the lock;
//! * the network: `repo` fetches a repository's signed indexes, `fetch`
//!   downloads `.deb` files in parallel, both into the store's
//!   content-addressed package `cache`;
//! * installing: `deb` reads one `.deb` into a staging directory, refusing
//!   anything hostile; `install` merges a locked layer's packages and
//!   `dpkg` writes the database dpkg and scanners read; `step` is the
//!   build's packages layer, cached by its lock entries.

pub mod cache;
pub mod deb;
pub mod deb822;
pub mod dpkg;
pub mod fetch;
mod http;
pub mod index;
pub mod install;
pub mod locking;
pub mod relation;
pub mod repo;
pub mod resolve;
pub(crate) mod scripts;
pub mod sources;
pub(crate) mod step;
#[cfg(test)]
mod test_server;
pub mod version;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One Debian repository drover reads a suite from: `url` (no trailing
/// `/`) + `dists/<suite>/` holds the signed `InRelease`, whose `components`
/// are indexed; `keyring` is the OpenPGP keyring that must have signed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Repository {
    pub url: String,
    pub suite: String,
    pub components: Vec<String>,
    pub keyring: PathBuf,
}

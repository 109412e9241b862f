//! Debian package layers: the archive's metadata (`deb822` control data,
//! `version` comparison, `relation` fields, `index`: Packages and Release
//! files), the dependency closure (`resolve`: pure, a universe and a request
//! in, the chosen packages and why out) and the machine's apt `sources`.

pub mod deb822;
pub mod index;
pub mod relation;
pub mod resolve;
pub mod sources;
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

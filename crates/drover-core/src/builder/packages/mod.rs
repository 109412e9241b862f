//! Debian packages for `kind = "packages"` layers: a list of package
//! names in, a layer holding them and their dependencies out, resolved
//! under `drover.lock`.
//!
//! `repo` fetches a repository's signed indexes, `fetch` downloads `.deb`
//! files in parallel, both into the store's content-addressed package
//! `cache`; `deb` reads one `.deb` into a staging directory, refusing
//! anything hostile; `dpkg` writes the database dpkg and scanners read.

pub mod cache;
pub mod deb;
pub mod dpkg;
pub mod fetch;
mod http;
pub mod install;
pub(crate) mod step;
pub mod repo;
#[cfg(test)]
mod test_server;

/// A Debian repository: where it is, which suite and components, and the
/// keyring its `InRelease` must be signed by.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Repository {
    /// No trailing '/'.
    pub url: String,
    pub suite: String,
    pub components: Vec<String>,
    pub keyring: std::path::PathBuf,
}

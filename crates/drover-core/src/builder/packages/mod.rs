//! Debian packages for `kind = "packages"` layers: the network and the
//! `.deb` bytes. `repo` fetches a repository's signed indexes, `fetch`
//! downloads `.deb` files in parallel, both into the store's content-addressed
//! package `cache`, and `deb` reads one `.deb` into a staging directory,
//! refusing anything hostile.

pub mod cache;
pub mod deb;
pub mod fetch;
mod http;
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

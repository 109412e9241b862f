//! Progress of long work (a build's phases, a push or pull): a trait the
//! library calls and the CLI draws (a bar on a terminal, plain lines in a
//! log). It imports nothing of drover, so every module may report.

use std::fmt;
use std::sync::Arc;

/// Receives progress.
pub trait Progress: Sync {
    /// A new phase begins with this much work (items — files, blobs — and
    /// bytes).
    fn phase(&self, _name: &str, _items: u64, _bytes: u64) {}
    /// This many more bytes of the current phase are done.
    fn advance(&self, _bytes: u64) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A progress receiver options can carry (shared, cloned with them); by
/// default [`NoProgress`].
#[derive(Clone)]
pub struct Shared(pub Arc<dyn Progress + Send>);

impl Default for Shared {
    fn default() -> Self {
        Shared(Arc::new(NoProgress))
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress")
    }
}

impl std::ops::Deref for Shared {
    type Target = dyn Progress + Send;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

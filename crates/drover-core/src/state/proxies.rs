//! Live proxies of `drover serve`: one heartbeat row per service, so a
//! deploy that drains an instance knows whether anyone will acknowledge it.

use super::sql::params;

use super::{DbContext, Reader, Tx};
use crate::clock;
use crate::error::Result;

impl Reader<'_> {
    /// Whether a proxy for `service` beat since `since_ms` (unix ms).
    pub fn proxy_alive(&self, service: &str, since_ms: i64) -> Result<bool> {
        self.sql()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM proxies WHERE service = ?1 AND heartbeat >= ?2)",
                params![service, since_ms],
                |r| r.get(0),
            )
            .db_ctx(self.path())
    }
}

impl Tx<'_> {
    /// `holder` proxies `service`, as of now.
    pub(crate) fn proxy_heartbeat(&self, service: &str, holder: &str) -> Result<()> {
        self.sql()
            .execute(
                "INSERT INTO proxies (service, holder, heartbeat) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (service) DO UPDATE SET holder = ?2, heartbeat = ?3",
                params![service, holder, clock::now_ms()],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// `holder` proxies nothing any more.
    pub(crate) fn remove_proxies(&self, holder: &str) -> Result<()> {
        self.sql()
            .execute("DELETE FROM proxies WHERE holder = ?1", [holder])
            .db_ctx(self.path())
            .map(drop)
    }
}

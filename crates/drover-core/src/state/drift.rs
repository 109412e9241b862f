//! Drift findings: what each scan of an instance found, and what was done.

use super::sql::{OptionalExtension, params};

use super::{DbContext, Reader, Tx};
use crate::clock;
use crate::digest::Digest;
use crate::error::Result;

impl Reader<'_> {
    /// The last scan of instance `id`: (time, findings as JSON, action).
    pub fn last_drift(&self, id: &str) -> Result<Option<(String, String, String)>> {
        self.sql()
            .query_row(
                "SELECT time, findings, action FROM drift_findings WHERE instance = ?1 \
                 ORDER BY seq DESC LIMIT 1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .db_ctx(self.path())
    }
}

impl Tx<'_> {
    /// Keep a scan's findings (JSON) of instance `id` of `image`, and the
    /// action taken.
    pub(crate) fn add_drift(
        &self,
        id: &str,
        image: &Digest,
        findings: &str,
        action: &str,
    ) -> Result<()> {
        self.sql()
            .execute(
                "INSERT INTO drift_findings (time, instance, image, findings, action) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    clock::now_rfc3339(),
                    id,
                    image.to_string(),
                    findings,
                    action
                ],
            )
            .db_ctx(self.path())
            .map(drop)
    }
}

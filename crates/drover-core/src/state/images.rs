//! The store's names in the database: tags, OCI referrers, the generation
//! `index.json` is written from, and what keeps an image from `gc`.

use super::sql::{OptionalExtension, params};
use serde::Serialize;

use super::{DbContext, Reader, Tx};
use crate::digest::Digest;
use crate::error::Result;

/// One tagged image, as `drover images` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Tag {
    pub name: String,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub created: String,
}

/// An artifact attached to an image (OCI 1.1 `subject`).
#[derive(Debug, Clone, Serialize)]
pub struct Referrer {
    pub digest: Digest,
    pub subject: Digest,
    pub artifact_type: String,
    pub media_type: String,
    pub size: u64,
}

impl Reader<'_> {
    /// All tags, sorted by name.
    pub fn tags(&self) -> Result<Vec<Tag>> {
        let mut stmt = self
            .sql()
            .prepare("SELECT name, digest, media_type, size, created FROM tags ORDER BY name")
            .db_ctx(self.path())?;
        let rows = stmt
            .query_map((), |r| {
                Ok(Tag {
                    name: r.get(0)?,
                    digest: r.get(1)?,
                    media_type: r.get(2)?,
                    size: r.get::<_, i64>(3)? as u64,
                    created: r.get(4)?,
                })
            })
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// Artifacts attached to `subject` (every artifact with `None`), by
    /// subject, artifact type and digest.
    pub fn referrers(&self, subject: Option<&Digest>) -> Result<Vec<Referrer>> {
        // Two statements, not `?1 IS NULL OR subject = ?1`: SQLite scans the
        // whole table for that, where `subject = ?1` searches its index.
        let sql = |filter: &str| {
            format!(
                "SELECT digest, subject, artifact_type, media_type, size FROM referrers {filter} \
                 ORDER BY subject, artifact_type, digest"
            )
        };
        let mut stmt = match subject {
            Some(_) => self.sql().prepare(&sql("WHERE subject = ?1")),
            None => self.sql().prepare(&sql("")),
        }
        .db_ctx(self.path())?;
        let row = |r: &super::sql::Row| {
            Ok(Referrer {
                digest: r.get(0)?,
                subject: r.get(1)?,
                artifact_type: r.get(2)?,
                media_type: r.get(3)?,
                size: r.get::<_, i64>(4)? as u64,
            })
        };
        let rows = match subject {
            Some(d) => stmt.query_map([d.to_string()], row),
            None => stmt.query_map((), row),
        }
        .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// The store generation: bumped by every change of tags or referrers.
    pub fn generation(&self) -> Result<u64> {
        let v: Option<String> = self
            .sql()
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'generation'",
                (),
                |r| r.get(0),
            )
            .optional()
            .db_ctx(self.path())?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// `(image digest, instance id)` of every instance not removed: an image
    /// stays as long as something may still run from it.
    pub fn live_instance_images(&self) -> Result<Vec<(Digest, String)>> {
        self.pairs("SELECT image, id FROM instances WHERE state != 'deleted' ORDER BY id")
    }

    /// `(image digest, "service#n")` of every release: a rollback may need any.
    pub fn release_images(&self) -> Result<Vec<(Digest, String)>> {
        self.pairs("SELECT image, service || '#' || number FROM releases ORDER BY service, number")
    }

    fn pairs(&self, sql: &str) -> Result<Vec<(Digest, String)>> {
        let mut stmt = self.sql().prepare(sql).db_ctx(self.path())?;
        let rows = stmt
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }
}

impl Tx<'_> {
    /// Point tag `name` at a manifest; returns the digest it pointed at before.
    pub(crate) fn set_tag(
        &self,
        name: &str,
        digest: &Digest,
        media_type: &str,
        size: u64,
    ) -> Result<Option<Digest>> {
        let previous: Option<Digest> = self
            .sql()
            .query_row("SELECT digest FROM tags WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .db_ctx(self.path())?;
        self.sql()
            .execute(
                "INSERT INTO tags(name, digest, media_type, size, created) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, media_type = excluded.media_type,
                   size = excluded.size, created = CASE WHEN tags.digest = excluded.digest THEN tags.created ELSE excluded.created END",
                params![name, digest.to_string(), media_type, size as i64, crate::clock::now_rfc3339()],
            )
            .db_ctx(self.path())?;
        Ok(previous)
    }

    pub(crate) fn remove_tag(&self, name: &str) -> Result<()> {
        self.sql()
            .execute("DELETE FROM tags WHERE name = ?1", [name])
            .db_ctx(self.path())
            .map(drop)
    }

    /// Attach artifact manifest `r.digest` to `r.subject`.
    pub(crate) fn add_referrer(&self, r: &Referrer) -> Result<()> {
        self.sql()
            .execute(
                "INSERT INTO referrers(digest, subject, artifact_type, media_type, size) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(digest) DO UPDATE SET subject = excluded.subject,
                     artifact_type = excluded.artifact_type, media_type = excluded.media_type,
                     size = excluded.size",
                params![r.digest.to_string(), r.subject.to_string(), r.artifact_type, r.media_type, r.size as i64],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    pub(crate) fn remove_referrer(&self, digest: &Digest) -> Result<()> {
        self.sql()
            .execute(
                "DELETE FROM referrers WHERE digest = ?1",
                [digest.to_string()],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Count one more change of tags or referrers.
    pub(crate) fn bump_generation(&self) -> Result<()> {
        self.sql()
            .execute(
                "INSERT INTO store_meta(key, value) VALUES ('generation', '1')
                 ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(store_meta.value AS INTEGER) + 1 AS TEXT)",
                (),
            )
            .db_ctx(self.path())
            .map(drop)
    }
}

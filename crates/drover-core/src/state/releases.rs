//! Services, their numbered releases, quarantined release contents and the
//! reconciler's record of each service (`service_health`).
//!
//! A service's rollout spec and a release's config are stored as JSON and
//! are generic here (`S`, `C`): their types belong to `deploy`, which sits
//! above this seam; `deploy::release` names the concrete ones.

use super::sql::{OptionalExtension, Row, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DbContext, Reader, Tx};
use crate::clock;
use crate::digest::Digest;
use crate::error::{Error, Result};

/// Where a release's rollout ended, once: pending → healthy | failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Being rolled out (or its rollout was interrupted).
    Pending,
    /// Its rollout finished with every instance healthy.
    Healthy,
    /// Its rollout failed and was rolled back.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Healthy => "healthy",
            Outcome::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        [Outcome::Pending, Outcome::Healthy, Outcome::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One release: immutable but for its outcome, which moves once.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseOf<C> {
    pub service: String,
    pub number: i64,
    pub image: Digest,
    pub image_ref: String,
    pub config: C,
    pub config_digest: Digest,
    pub author: String,
    pub message: String,
    pub created: String,
    pub parent: Option<i64>,
    pub rollback_of: Option<i64>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    /// Why this release, healthy once, was rolled back later (a crash loop
    /// under `serve`): it is no rollback target.
    pub unstable: Option<String>,
}

/// A service, as last applied.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceOf<S> {
    pub name: String,
    pub rollout: S,
    /// Digest of what the fleet file last asked for (image digest and
    /// config): `apply` makes a release only when this changes, so a manual
    /// rollback stands until the fleet file asks for something new.
    pub requested: Digest,
    pub desired: Option<i64>,
    /// The release whose content the fleet file last asked for: set by
    /// `apply`, kept across rollbacks (so `status` can tell a service out
    /// of sync with its fleet file). `None` before `apply` recorded it.
    pub fleet_release: Option<i64>,
    /// When the service was removed (`service rm`, `apply --prune`), if it
    /// was; applying it again revives it.
    pub removed: Option<String>,
    pub created: String,
    pub updated: String,
}

/// A quarantined release content.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    pub image: Digest,
    pub config_digest: Digest,
    pub release: i64,
    pub reason: String,
}

/// The reconciler's record of one service, as `drover status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceHealth {
    /// Instances found dead and replaced, ever.
    pub restarts: i64,
    /// Failed (or crash-looping) passes in a row.
    pub failures: i64,
    /// No pass before this (unix milliseconds).
    pub backoff_until: Option<i64>,
    pub last_error: Option<String>,
    /// The desired release when these counts were last written; a new one
    /// starts them afresh (but `restarts`, the total).
    pub release: Option<i64>,
    /// When instances of `release` were restarted lately (unix
    /// milliseconds, oldest first): what a crash loop is counted from.
    pub recent: Vec<i64>,
}

/// A release to append; its number, author and time are filled in.
pub struct NewReleaseRow<'a, C> {
    pub service: &'a str,
    pub image: &'a Digest,
    pub image_ref: &'a str,
    pub config: &'a C,
    pub config_digest: &'a Digest,
    pub author: &'a str,
    pub message: &'a str,
    pub parent: Option<i64>,
    pub rollback_of: Option<i64>,
}

const SERVICE_COLUMNS: &str =
    "name, spec, spec_digest, desired, created, updated, fleet_release, removed";
const RELEASE_COLUMNS: &str = "service, number, image, image_ref, config, config_digest, author, \
     message, created, parent, rollback_of, outcome, reason, unstable";

fn bad(i: usize, e: impl std::fmt::Display) -> super::sql::SqlError {
    super::sql::SqlError::column(i, e)
}

fn service_row<S: DeserializeOwned>(r: &Row) -> super::sql::Result<ServiceOf<S>> {
    let spec: String = r.get(1)?;
    Ok(ServiceOf {
        name: r.get(0)?,
        rollout: serde_json::from_str(&spec).map_err(|e| bad(1, e))?,
        requested: r.get(2)?,
        desired: r.get(3)?,
        created: r.get(4)?,
        updated: r.get(5)?,
        fleet_release: r.get(6)?,
        removed: r.get(7)?,
    })
}

fn release_row<C: DeserializeOwned>(r: &Row) -> super::sql::Result<ReleaseOf<C>> {
    let config: String = r.get(4)?;
    let outcome: String = r.get(11)?;
    Ok(ReleaseOf {
        service: r.get(0)?,
        number: r.get(1)?,
        image: r.get(2)?,
        image_ref: r.get(3)?,
        config: serde_json::from_str(&config).map_err(|e| bad(4, e))?,
        config_digest: r.get(5)?,
        author: r.get(6)?,
        message: r.get(7)?,
        created: r.get(8)?,
        parent: r.get(9)?,
        rollback_of: r.get(10)?,
        outcome: Outcome::parse(&outcome)
            .ok_or_else(|| bad(11, format!("unknown outcome {outcome:?}")))?,
        reason: r.get(12)?,
        unstable: r.get(13)?,
    })
}

impl Reader<'_> {
    /// Service `name`, removed or not.
    pub fn service<S: DeserializeOwned>(&self, name: &str) -> Result<Option<ServiceOf<S>>> {
        self.sql()
            .query_row(
                &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE name = ?1"),
                [name],
                service_row,
            )
            .optional()
            .db_ctx(self.path())
    }

    /// Every service not removed, by name.
    pub fn services<S: DeserializeOwned>(&self) -> Result<Vec<ServiceOf<S>>> {
        let mut stmt = self
            .sql()
            .prepare(&format!(
                "SELECT {SERVICE_COLUMNS} FROM services WHERE removed IS NULL ORDER BY name"
            ))
            .db_ctx(self.path())?;
        let rows = stmt.query_map((), service_row).db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// Release `number` of `service`; not found is an error naming both.
    pub fn release<C: DeserializeOwned>(&self, service: &str, number: i64) -> Result<ReleaseOf<C>> {
        self.sql()
            .query_row(
                &format!(
                    "SELECT {RELEASE_COLUMNS} FROM releases WHERE service = ?1 AND number = ?2"
                ),
                params![service, number],
                release_row,
            )
            .optional()
            .db_ctx(self.path())?
            .ok_or_else(|| Error::NotFound {
                what: format!("release {number} of service {service}"),
                hint: Some(format!("`drover releases {service}` lists them")),
            })
    }

    /// Every release of `service`, oldest first.
    pub fn releases<C: DeserializeOwned>(&self, service: &str) -> Result<Vec<ReleaseOf<C>>> {
        let mut stmt = self
            .sql()
            .prepare(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE service = ?1 ORDER BY number"
            ))
            .db_ctx(self.path())?;
        let rows = stmt.query_map([service], release_row).db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// The number the next release of `service` gets.
    pub fn next_release_number(&self, service: &str) -> Result<i64> {
        self.sql()
            .query_row(
                "SELECT coalesce(max(number), 0) + 1 FROM releases WHERE service = ?1",
                [service],
                |row| row.get(0),
            )
            .db_ctx(self.path())
    }

    /// Everything quarantined for `service`, oldest first.
    pub fn quarantine(&self, service: &str) -> Result<Vec<Quarantined>> {
        let mut stmt = self
            .sql()
            .prepare(
                "SELECT image, config, release, reason FROM quarantine WHERE service = ?1 ORDER BY created",
            )
            .db_ctx(self.path())?;
        let rows = stmt
            .query_map([service], |r| {
                Ok(Quarantined {
                    image: r.get(0)?,
                    config_digest: r.get(1)?,
                    release: r.get(2)?,
                    reason: r.get(3)?,
                })
            })
            .db_ctx(self.path())?;
        rows.collect::<super::sql::Result<_>>().db_ctx(self.path())
    }

    /// Why this release content is quarantined for `service`, if it is:
    /// (the release that failed, why).
    pub fn quarantined(
        &self,
        service: &str,
        image: &Digest,
        config: &Digest,
    ) -> Result<Option<(i64, String)>> {
        self.sql()
            .query_row(
                "SELECT release, reason FROM quarantine WHERE service = ?1 AND image = ?2 AND config = ?3",
                params![service, image.to_string(), config.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .db_ctx(self.path())
    }

    /// The recorded health of `service` (all zero if it never had a pass).
    pub fn service_health(&self, service: &str) -> Result<ServiceHealth> {
        let row = self
            .sql()
            .query_row(
                "SELECT restarts, failures, backoff_until, last_error, release, recent \
                 FROM service_health WHERE service = ?1",
                [service],
                |r| {
                    let recent: String = r.get(5)?;
                    Ok(ServiceHealth {
                        restarts: r.get(0)?,
                        failures: r.get(1)?,
                        backoff_until: r.get(2)?,
                        last_error: r.get(3)?,
                        release: r.get(4)?,
                        recent: serde_json::from_str(&recent).map_err(|e| bad(5, e))?,
                    })
                },
            )
            .optional()
            .db_ctx(self.path())?;
        Ok(row.unwrap_or_default())
    }
}

impl Tx<'_> {
    /// Record what the fleet asked for (and which release should run).
    pub(crate) fn save_service<S: Serialize>(
        &self,
        name: &str,
        rollout: &S,
        requested: &Digest,
        desired: Option<i64>,
    ) -> Result<()> {
        self.fresh_start(name, desired)?;
        let now = clock::now_rfc3339();
        let spec = serde_json::to_string(rollout).expect("rollout serializes");
        self.sql()
            .execute(
                "INSERT INTO services (name, spec, spec_digest, desired, created, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (name) DO UPDATE SET spec = ?2, spec_digest = ?3, desired = ?4, \
                 updated = ?5, removed = NULL",
                params![name, spec, requested.to_string(), desired, now],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Point `service` at release `desired`.
    pub(crate) fn set_desired(&self, service: &str, desired: Option<i64>) -> Result<()> {
        self.fresh_start(service, desired)?;
        self.sql()
            .execute(
                "UPDATE services SET desired = ?2, updated = ?3 WHERE name = ?1",
                params![service, desired, clock::now_rfc3339()],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// When `service` is pointed at another release, its back-off and crash
    /// count are the old release's: they start afresh (a manual rollback
    /// out of a crash loop is not "backing off" any more).
    fn fresh_start(&self, service: &str, desired: Option<i64>) -> Result<()> {
        let was: Option<Option<i64>> = self
            .sql()
            .query_row(
                "SELECT desired FROM services WHERE name = ?1",
                [service],
                |r| r.get(0),
            )
            .optional()
            .db_ctx(self.path())?;
        if was.is_some_and(|w| w == desired) {
            return Ok(());
        }
        self.sql()
            .execute(
                "UPDATE service_health SET failures = 0, backoff_until = NULL, release = ?2, \
                 recent = '[]' WHERE service = ?1",
                params![service, desired],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Record which release's content the fleet file asks for.
    pub(crate) fn set_fleet_release(&self, service: &str, release: Option<i64>) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE services SET fleet_release = ?2 WHERE name = ?1",
                params![service, release],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Record why release `number` of `service`, healthy once, was rolled
    /// back later; false if that was recorded before.
    pub(crate) fn mark_unstable(&self, service: &str, number: i64, why: &str) -> Result<bool> {
        let changed = self
            .sql()
            .execute(
                "UPDATE releases SET unstable = ?3
                 WHERE service = ?1 AND number = ?2 AND unstable IS NULL",
                params![service, number, why],
            )
            .db_ctx(self.path())?;
        Ok(changed == 1)
    }

    /// Mark `service` removed (its instances are gone): it no longer runs
    /// or listens, and what it asked for is forgotten, so applying it again
    /// makes a new release.
    pub(crate) fn mark_removed(&self, service: &str, empty: &Digest) -> Result<()> {
        self.fresh_start(service, None)?;
        let now = clock::now_rfc3339();
        self.sql()
            .execute(
                "UPDATE services SET removed = ?2, updated = ?2, desired = NULL, \
                 fleet_release = NULL, spec_digest = ?3 WHERE name = ?1",
                params![service, now, empty.to_string()],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Set what the fleet last asked for to `requested`.
    pub(crate) fn set_requested(&self, service: &str, requested: &Digest) -> Result<()> {
        self.sql()
            .execute(
                "UPDATE services SET spec_digest = ?2 WHERE name = ?1",
                params![service, requested.to_string()],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Append the next release of a service, pending; returns its number.
    pub(crate) fn insert_release<C: Serialize>(&self, r: NewReleaseRow<'_, C>) -> Result<i64> {
        let number = self.read().next_release_number(r.service)?;
        let config = serde_json::to_string(r.config).expect("config serializes");
        self.sql()
            .execute(
                &format!(
                    "INSERT INTO releases ({RELEASE_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', NULL, NULL)"
                ),
                params![
                    r.service,
                    number,
                    r.image.to_string(),
                    r.image_ref,
                    config,
                    r.config_digest.to_string(),
                    r.author,
                    r.message,
                    clock::now_rfc3339(),
                    r.parent,
                    r.rollback_of
                ],
            )
            .db_ctx(self.path())?;
        Ok(number)
    }

    /// Settle a pending release; false if it was not pending.
    pub(crate) fn settle_release(
        &self,
        service: &str,
        number: i64,
        outcome: Outcome,
        reason: Option<&str>,
    ) -> Result<bool> {
        let changed = self
            .sql()
            .execute(
                "UPDATE releases SET outcome = ?3, reason = ?4
                 WHERE service = ?1 AND number = ?2 AND outcome = 'pending'",
                params![service, number, outcome.as_str(), reason],
            )
            .db_ctx(self.path())?;
        Ok(changed == 1)
    }

    /// Quarantine release `number`'s content (`image` with `config`).
    pub(crate) fn quarantine(
        &self,
        service: &str,
        number: i64,
        image: &Digest,
        config: &Digest,
        reason: &str,
    ) -> Result<()> {
        self.sql()
            .execute(
                "INSERT INTO quarantine (service, image, config, release, reason, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(service, image, config) DO UPDATE SET release = excluded.release,
                     reason = excluded.reason, created = excluded.created",
                params![
                    service,
                    image.to_string(),
                    config.to_string(),
                    number,
                    reason,
                    clock::now_rfc3339()
                ],
            )
            .db_ctx(self.path())
            .map(drop)
    }

    /// Store the reconciler's record of `service`.
    pub(crate) fn save_service_health(&self, service: &str, h: &ServiceHealth) -> Result<()> {
        self.sql()
            .execute(
                "INSERT INTO service_health (service, restarts, failures, backoff_until, last_error, \
                 updated, release, recent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (service) DO UPDATE SET restarts = ?2, failures = ?3, \
                 backoff_until = ?4, last_error = ?5, updated = ?6, release = ?7, recent = ?8",
                params![
                    service,
                    h.restarts,
                    h.failures,
                    h.backoff_until,
                    h.last_error,
                    clock::now_rfc3339(),
                    h.release,
                    serde_json::to_string(&h.recent).expect("numbers serialize"),
                ],
            )
            .db_ctx(self.path())
            .map(drop)
    }
}

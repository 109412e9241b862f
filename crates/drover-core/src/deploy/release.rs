//! Services, releases and quarantine in the state database. Reads take a
//! connection; writes take the caller's transaction (in which the caller has
//! checked its deploy lease) and append their ledger entry there.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;
use serde_json::json;

use super::spec::{ReleaseConfig, Rollout};
use crate::clock;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::ledger::{self, NewEntry};
use crate::state::{DbContext, Reader, Tx};

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
}

#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub service: String,
    pub number: i64,
    pub image: Digest,
    pub image_ref: String,
    pub config: ReleaseConfig,
    pub config_digest: Digest,
    pub author: String,
    pub message: String,
    pub created: String,
    pub parent: Option<i64>,
    pub rollback_of: Option<i64>,
    pub outcome: Outcome,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Service {
    pub name: String,
    pub rollout: Rollout,
    /// Digest of what the fleet file last asked for (image digest and
    /// config): `apply` makes a release only when this changes, so a manual
    /// rollback stands until the fleet file asks for something new.
    pub requested: Digest,
    pub desired: Option<i64>,
    pub created: String,
    pub updated: String,
}

fn bad(i: usize, e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.to_string().into())
}

const SERVICE_COLUMNS: &str = "name, spec, spec_digest, desired, created, updated";

fn service_row(r: &Row<'_>) -> rusqlite::Result<Service> {
    let spec: String = r.get(1)?;
    Ok(Service {
        name: r.get(0)?,
        rollout: serde_json::from_str(&spec).map_err(|e| bad(1, e))?,
        requested: r.get(2)?,
        desired: r.get(3)?,
        created: r.get(4)?,
        updated: r.get(5)?,
    })
}

const RELEASE_COLUMNS: &str = "service, number, image, image_ref, config, config_digest, author, \
     message, created, parent, rollback_of, outcome, reason";

fn release_row(r: &Row<'_>) -> rusqlite::Result<Release> {
    let config: String = r.get(4)?;
    let outcome: String = r.get(11)?;
    Ok(Release {
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
        outcome: match outcome.as_str() {
            "pending" => Outcome::Pending,
            "healthy" => Outcome::Healthy,
            "failed" => Outcome::Failed,
            other => return Err(bad(11, format!("unknown outcome {other:?}"))),
        },
        reason: r.get(12)?,
    })
}

pub fn service(r: Reader<'_>, name: &str) -> Result<Option<Service>> {
    r.sql()
        .query_row(
            &format!("SELECT {SERVICE_COLUMNS} FROM services WHERE name = ?1"),
            [name],
            service_row,
        )
        .optional()
        .db_ctx(r.path())
}

pub fn services(r: Reader<'_>) -> Result<Vec<Service>> {
    let mut stmt = r
        .sql()
        .prepare(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services ORDER BY name"
        ))
        .db_ctx(r.path())?;
    let rows = stmt.query_map([], service_row).db_ctx(r.path())?;
    rows.collect::<rusqlite::Result<_>>().db_ctx(r.path())
}

pub fn release(r: Reader<'_>, service: &str, number: i64) -> Result<Release> {
    r.sql()
        .query_row(
            &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE service = ?1 AND number = ?2"),
            params![service, number],
            release_row,
        )
        .optional()
        .db_ctx(r.path())?
        .ok_or_else(|| Error::NotFound {
            what: format!("release {number} of service {service}"),
            hint: Some(format!("`drover releases {service}` lists them")),
        })
}

/// A quarantined release content.
#[derive(Debug, Clone, Serialize)]
pub struct Quarantined {
    pub image: Digest,
    pub config_digest: Digest,
    pub release: i64,
    pub reason: String,
}

/// Everything quarantined for `service`, oldest first.
pub fn quarantine_list(r: Reader<'_>, service: &str) -> Result<Vec<Quarantined>> {
    let mut stmt = r
        .sql().prepare(
            "SELECT image, config, release, reason FROM quarantine WHERE service = ?1 ORDER BY created",
        )
        .db_ctx(r.path())?;
    let rows = stmt
        .query_map([service], |r| {
            Ok(Quarantined {
                image: r.get(0)?,
                config_digest: r.get(1)?,
                release: r.get(2)?,
                reason: r.get(3)?,
            })
        })
        .db_ctx(r.path())?;
    rows.collect::<rusqlite::Result<_>>().db_ctx(r.path())
}

/// Every release of `service`, oldest first.
pub fn releases(r: Reader<'_>, service: &str) -> Result<Vec<Release>> {
    let mut stmt = r
        .sql()
        .prepare(&format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE service = ?1 ORDER BY number"
        ))
        .db_ctx(r.path())?;
    let rows = stmt.query_map([service], release_row).db_ctx(r.path())?;
    rows.collect::<rusqlite::Result<_>>().db_ctx(r.path())
}

/// Why this release content (image and config) is quarantined for
/// `service`, if it is: (the release that failed, why).
pub fn quarantined(
    r: Reader<'_>,
    service: &str,
    image: &Digest,
    config: &Digest,
) -> Result<Option<(i64, String)>> {
    r.sql().query_row(
        "SELECT release, reason FROM quarantine WHERE service = ?1 AND image = ?2 AND config = ?3",
        params![service, image.to_string(), config.to_string()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .db_ctx(r.path())
}

/// Record what the fleet asked for (and which release should run).
pub fn save_service(
    tx: &Tx<'_>,
    name: &str,
    rollout: &Rollout,
    requested: &Digest,
    desired: Option<i64>,
) -> Result<()> {
    let now = clock::now_rfc3339();
    let spec = serde_json::to_string(rollout).expect("rollout serializes");
    tx.sql()
        .execute(
            "INSERT INTO services (name, spec, spec_digest, desired, created, updated)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         ON CONFLICT (name) DO UPDATE SET spec = ?2, spec_digest = ?3, desired = ?4, updated = ?5",
            params![name, spec, requested.to_string(), desired, now],
        )
        .db_ctx(tx.path())
        .map(drop)
}

/// Point `service` at release `desired` (a rollback's target, say).
pub fn set_desired(tx: &Tx<'_>, service: &str, desired: Option<i64>) -> Result<()> {
    tx.sql()
        .execute(
            "UPDATE services SET desired = ?2, updated = ?3 WHERE name = ?1",
            params![service, desired, clock::now_rfc3339()],
        )
        .db_ctx(tx.path())
        .map(drop)
}

/// Forget what the fleet last asked for, so the next `apply` of the same
/// file is judged afresh (after a failed release: it meets the quarantine).
pub fn forget_request(tx: &Tx<'_>, service: &str) -> Result<()> {
    tx.sql()
        .execute(
            "UPDATE services SET spec_digest = ?2 WHERE name = ?1",
            params![service, Digest::of(b"").to_string()],
        )
        .db_ctx(tx.path())
        .map(drop)
}

/// What a new release is made of.
pub struct NewRelease<'a> {
    pub service: &'a str,
    pub image: Digest,
    pub image_ref: &'a str,
    pub config: &'a ReleaseConfig,
    pub message: &'a str,
    pub parent: Option<i64>,
    pub rollback_of: Option<i64>,
}

/// The number the next release of `service` gets.
pub fn next_number(r: Reader<'_>, service: &str) -> Result<i64> {
    r.sql()
        .query_row(
            "SELECT coalesce(max(number), 0) + 1 FROM releases WHERE service = ?1",
            [service],
            |row| row.get(0),
        )
        .db_ctx(r.path())
}

/// Append the next release of a service (`release.create`, or
/// `release.rollback` when it repeats an earlier one).
pub fn create(tx: &Tx<'_>, r: NewRelease<'_>) -> Result<Release> {
    let number = next_number(tx.read(), r.service)?;
    let config = serde_json::to_string(r.config).expect("config serializes");
    let config_digest = r.config.digest();
    let author = ledger::actor();
    tx.sql().execute(
        &format!("INSERT INTO releases ({RELEASE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', NULL)"),
        params![
            r.service,
            number,
            r.image.to_string(),
            r.image_ref,
            config,
            config_digest.to_string(),
            author,
            r.message,
            clock::now_rfc3339(),
            r.parent,
            r.rollback_of
        ],
    )
    .db_ctx(tx.path())?;
    let action = if r.rollback_of.is_some() {
        "release.rollback"
    } else {
        "release.create"
    };
    tx.record(NewEntry::new(
        action,
        [format!("{}#{number}", r.service), r.image.to_string()],
        json!({
            "service": r.service, "release": number, "image": r.image.to_string(),
            "image_ref": r.image_ref, "config_digest": config_digest.to_string(),
            "parent": r.parent, "rollback_of": r.rollback_of, "message": r.message,
        }),
    ))?;
    release(tx.read(), r.service, number)
}

/// Settle a pending release (`release.healthy` / `release.failed`).
pub fn settle(
    tx: &Tx<'_>,
    service: &str,
    number: i64,
    outcome: Outcome,
    reason: Option<&str>,
) -> Result<()> {
    let changed = tx
        .sql()
        .execute(
            "UPDATE releases SET outcome = ?3, reason = ?4
             WHERE service = ?1 AND number = ?2 AND outcome = 'pending'",
            params![service, number, outcome.as_str(), reason],
        )
        .db_ctx(tx.path())?;
    if changed == 1 {
        let r = release(tx.read(), service, number)?;
        tx.record(NewEntry::new(
            format!("release.{}", outcome.as_str()),
            [format!("{service}#{number}"), r.image.to_string()],
            json!({"service": service, "release": number, "reason": reason}),
        ))?;
    }
    Ok(())
}

/// Keep release `r`'s content (its image with its config) from being
/// deployed to its service again without `--force`.
pub fn quarantine(tx: &Tx<'_>, r: &Release, reason: &str) -> Result<()> {
    let (service, image, number) = (r.service.as_str(), &r.image, r.number);
    tx.sql()
        .execute(
            "INSERT OR REPLACE INTO quarantine (service, image, config, release, reason, created)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                service,
                image.to_string(),
                r.config_digest.to_string(),
                number,
                reason,
                clock::now_rfc3339()
            ],
        )
        .db_ctx(tx.path())?;
    tx.record(NewEntry::new(
        "release.quarantine",
        [format!("{service}#{number}"), image.to_string()],
        json!({"service": service, "release": number, "image": image.to_string(),
                   "config_digest": r.config_digest.to_string(), "reason": reason}),
    ))
    .map(drop)
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
}

/// The recorded health of `service` (all zero if it never had a pass).
pub fn health(r: Reader<'_>, service: &str) -> Result<ServiceHealth> {
    let row = r
        .sql()
        .query_row(
            "SELECT restarts, failures, backoff_until, last_error FROM service_health \
             WHERE service = ?1",
            [service],
            |r| {
                Ok(ServiceHealth {
                    restarts: r.get(0)?,
                    failures: r.get(1)?,
                    backoff_until: r.get(2)?,
                    last_error: r.get(3)?,
                })
            },
        )
        .optional()
        .db_ctx(r.path())?;
    Ok(row.unwrap_or_default())
}

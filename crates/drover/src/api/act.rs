//! The API's actions. Each runs as the caller's token (the ledger's actor
//! is `token:NAME`) through the same functions as the command named beside
//! it, so the policy, the locks and the ledger treat it as they treat the
//! CLI: a refusal is ledgered (`policy.refused`) and answered 422.
//!
//! Deploys are asynchronous by default, as `apply --detach`: the new
//! releases are recorded and `serve` rolls them out; the answer is a 202
//! with the reports, and `GET /api/v1/services/{name}` or the event stream
//! follow the rollout. `?wait=true` rolls out within the request, as the
//! CLI does without `--detach`.

use std::path::Path;

use drover_core::deploy::{self, Options, fleet};
use drover_core::trust::policy;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::{Call, Reply};
use crate::output;

/// `drover apply -f FILE [--prune] [--force] [-m MESSAGE]` with the fleet
/// document as the body (TOML, as the file); `?dry_run=true` is `drover
/// plan`.
pub fn apply(c: &Call) -> anyhow::Result<Reply> {
    let text = c.text()?;
    let fleet = fleet::parse(text, Path::new("request body"))?;
    let mut store = c.store()?;
    let prune = c.flag("prune")?;
    if c.flag("dry_run")? {
        return Reply::doc("Plan", &deploy::plan(&mut store, &fleet, prune)?);
    }
    let wait = c.flag("wait")?;
    let opts = Options {
        force: c.flag("force")?,
        // A rollout in progress holds the service's lock: a 409 at once,
        // unless the caller waits anyway.
        no_wait: !wait,
        message: c.query("message").map(str::to_string),
        detach: !wait,
        prune,
        ..Options::default()
    };
    let reports = deploy::apply(&mut store, &fleet, &opts)?;
    for s in reports.iter().filter_map(|r| r.pull_seconds) {
        c.api
            .metrics
            .image_pull(std::time::Duration::from_secs_f64(s));
    }
    deployed(&reports, wait)
}

/// The reports of a deploy: 200 when it rolled out within the request,
/// 202 when `serve` rolls it out; a failed one is an error document whose
/// `details` hold the reports.
fn deployed(reports: &[deploy::Report], waited: bool) -> anyhow::Result<Reply> {
    if let Err(e) = deploy::outcome(reports) {
        let e = anyhow::Error::from(e);
        let kind = e
            .downcast_ref::<drover_core::Error>()
            .map(drover_core::Error::kind);
        let mut doc = output::error_document(output::kind_name(kind), &output::message(&e), None);
        doc["error"]["details"] = output::document("DeployReport", serde_json::to_value(reports)?);
        return Ok(Reply::json(StatusCode::UNPROCESSABLE_ENTITY, &doc));
    }
    let status = if waited || reports.iter().all(|r| r.created.is_none()) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(Reply::doc("DeployReport", &reports)?.status(status))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Rollback {
    /// The release to go back to; else the last healthy one before the
    /// current.
    to: Option<i64>,
    /// Recorded with the new release (`-m`).
    message: Option<String>,
    /// Roll back to a quarantined release content anyway.
    force: bool,
}

/// `drover rollback NAME [--to N] [-m MESSAGE] [--force]`; body (optional)
/// `{"to": N, "message": "…", "force": false}`.
pub fn rollback(c: &Call) -> anyhow::Result<Reply> {
    let body: Rollback = c.json()?;
    let wait = c.flag("wait")?;
    let mut store = c.store()?;
    let opts = Options {
        force: body.force,
        no_wait: !wait,
        message: body.message,
        detach: !wait,
        ..Options::default()
    };
    let report = deploy::rollback(&mut store, c.param(0), body.to, &opts)?;
    deployed(std::slice::from_ref(&report), wait)
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Revoke {
    /// A digest or a reference the store resolves.
    image: String,
    reason: String,
}

/// `drover revoke IMAGE --reason WHY`; body `{"image": "…", "reason": "…"}`.
/// 201 when newly revoked, 200 when it already was.
pub fn revoke(c: &Call) -> anyhow::Result<Reply> {
    let body: Revoke = c.json()?;
    if body.image.is_empty() {
        return Err(super::usage("request body: \"image\" is required".into()));
    }
    let mut store = c.store()?;
    let (r, new) = policy::revoke(&mut store, &body.image, &body.reason)?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Reply::doc("Revocation", &r)?.status(status))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Lift {
    reason: String,
}

/// `drover revoke IMAGE --lift --reason WHY`; the reason as `?reason=` or
/// the body `{"reason": "…"}`.
pub fn unrevoke(c: &Call) -> anyhow::Result<Reply> {
    let reason = match c.query("reason") {
        Some(r) => r.to_string(),
        None => c.json::<Lift>()?.reason,
    };
    let mut store = c.store()?;
    let r = policy::unrevoke(&mut store, c.param(0), &reason)?;
    Reply::doc("Revocation", &json!(r))
}

//! The API's reads: each the document of the command named beside it.

use drover_core::drift::{Budget, Remedy};
use drover_core::instance::log::read::{self as log, Request};
use drover_core::ledger::Filter;
use hyper::StatusCode;
use serde_json::{Value, json};

use super::{Call, Reply};
use crate::cmd;
use crate::output;

/// The caller's token (`drover token list` shows the same).
pub fn whoami(c: &Call) -> anyhow::Result<Reply> {
    Reply::doc("Token", &c.token)
}

/// `drover status --json`.
pub fn services(c: &Call) -> anyhow::Result<Reply> {
    let mut store = c.store()?;
    Reply::doc("Service", &cmd::status::documents(&mut store)?)
}

/// `drover status NAME --json`.
pub fn service(c: &Call) -> anyhow::Result<Reply> {
    let mut store = c.store()?;
    let name = c.param(0);
    let doc = cmd::status::documents(&mut store)?
        .into_iter()
        .find(|s| s["name"] == name)
        .ok_or_else(|| not_found(name))?;
    Reply::doc("Service", &doc)
}

fn not_found(name: &str) -> anyhow::Error {
    drover_core::Error::NotFound {
        what: format!("service {name}"),
        hint: Some("GET /api/v1/services lists services".into()),
    }
    .into()
}

/// `drover releases NAME --json`.
pub fn service_releases(c: &Call) -> anyhow::Result<Reply> {
    let store = c.store()?;
    Reply::doc(
        "Release",
        &cmd::releases::releases(&store, Some(c.param(0)))?.0,
    )
}

/// `drover releases --json`.
pub fn releases(c: &Call) -> anyhow::Result<Reply> {
    let store = c.store()?;
    Reply::doc("Release", &cmd::releases::releases(&store, None)?.0)
}

/// `drover ps [-a] --json` (`?all=true`).
pub fn instances(c: &Call) -> anyhow::Result<Reply> {
    let mut store = c.store()?;
    Reply::doc("Instance", &cmd::ps::documents(&mut store, c.flag("all")?)?)
}

/// `drover trace ID --json`, trusting the policy's keys. A link that does
/// not hold is in the document (`ok: false`), not an error.
pub fn trace(c: &Call) -> anyhow::Result<Reply> {
    let store = c.store()?;
    let keys = drover_core::trust::policy::load_for(&store)?
        .keys()
        .to_vec();
    let root = cmd::trace::link(&store, c.param(0), keys)?;
    Reply::doc("Trace", &json!({ "root": root }))
}

/// `drover logs TARGET --json [--tail N] [--previous]`: JSON Lines, one
/// line each (`application/x-ndjson`), of an instance or a service.
pub fn logs(c: &Call) -> anyhow::Result<Reply> {
    let mut store = c.store()?;
    let req = Request {
        target: c.param(0).to_string(),
        previous: c.flag("previous")?,
        since_ns: None,
        until_ns: None,
        tail: Some(c.number("tail")?.unwrap_or(100)),
        follow: false,
        timestamps: false,
        json: true,
    };
    let mut out = Vec::new();
    log::show(&mut store, &req, &mut out)?;
    Ok(Reply {
        status: StatusCode::OK,
        content_type: "application/x-ndjson",
        body: out.into(),
    })
}

/// `drover drift [TARGET] --json` (`?target=`): a sweep now, reporting
/// only, with serve's scan budget (one thread); one at a time.
pub fn drift(c: &Call) -> anyhow::Result<Reply> {
    let _one = c.api.drift.lock().unwrap_or_else(|p| p.into_inner());
    let mut store = c.store()?;
    let target = cmd::drift::target(&store, c.query("target"))?;
    let budget = Budget {
        threads: 1,
        bytes_per_sec: None,
        low_priority: true,
    };
    let sweep = drover_core::drift::sweep(&mut store, &target, &budget, Remedy::Report)?;
    Reply::doc("DriftSweep", &sweep)
}

/// The most entries a ledger page holds.
const PAGE_MAX: usize = 1000;

/// A page of the ledger (`drover audit --json`'s entries) and the
/// verification of the whole chain (`drover audit verify --json`):
/// `?from=SEQ` pages forward from an entry, else the newest `limit`
/// (default 100); `action`, `actor`, `subject` filter as `audit`'s flags.
pub fn ledger(c: &Call) -> anyhow::Result<Reply> {
    let store = c.store()?;
    let limit = c
        .number::<usize>("limit")?
        .unwrap_or(100)
        .clamp(1, PAGE_MAX);
    let from = c.number::<u64>("from")?;
    let filter = Filter {
        action: c.query("action").map(str::to_string),
        subject: c.query("subject").map(str::to_string),
        actor: c.query("actor").map(str::to_string),
        since_seq: from,
        // Forward from `from`: one more than a page tells whether there is
        // a next one. Without: the newest page.
        limit: from.is_none().then_some(limit),
        ..Filter::default()
    };
    let db = store.db();
    let mut items = db.read().ledger(&filter)?;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| e.seq + 1)
    } else {
        None
    };
    let first = items.first().map(|e| e.seq);
    let head = db.read().ledger_head()?;
    let verification = verification(c, &store, head.clone())?;
    let mut doc = output::document("LedgerEntry", serde_json::to_value(&items)?);
    doc["kind"] = "LedgerPage".into();
    doc["next"] = json!(next);
    doc["previous"] = json!(
        first
            .filter(|f| *f > 1)
            .map(|f| f.saturating_sub(limit as u64).max(1))
    );
    doc["head"] = json!(head.map(|h| h.0));
    doc["verification"] = verification;
    Ok(Reply::json(StatusCode::OK, &doc))
}

/// The ledger's verification against the host key, as `audit verify
/// --json` says it; kept until the ledger grows.
fn verification(
    c: &Call,
    store: &drover_core::store::Store,
    head: Option<(i64, String)>,
) -> anyhow::Result<Value> {
    let mut cached = c.api.verified.lock().unwrap_or_else(|p| p.into_inner());
    if let (Some(h), Some((at, v))) = (&head, cached.as_ref())
        && h == at
    {
        return Ok(v.clone());
    }
    let keys = cmd::audit::host_keys(store.root())?;
    let report = store.db().read().verify_ledger(&keys)?;
    let mut v = serde_json::to_value(&report)?;
    v["valid"] = report.is_ok().into();
    if let Some(h) = head {
        *cached = Some((h, v.clone()));
    }
    Ok(v)
}

/// `drover policy show --json`.
pub fn policy(c: &Call) -> anyhow::Result<Reply> {
    let store = c.store()?;
    Reply::doc("Policy", &drover_core::trust::policy::load_for(&store)?)
}

/// `drover revoke --list --json`.
pub fn revocations(c: &Call) -> anyhow::Result<Reply> {
    let store = c.store()?;
    let db = store.db();
    Reply::doc("Revocation", &db.read().revocations()?)
}

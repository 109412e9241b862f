use std::process::ExitCode;

use drover_core::deploy;

use super::Ctx;
use crate::output::{Table, color};

#[derive(clap::Args)]
pub struct Args {
    /// Only this service.
    service: Option<String>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let mut services = deploy::status(&mut store)?;
    // Ready instances take traffic only through `serve`'s proxies.
    let served = drover_core::supervisor::running(&mut store)?;
    if let Some(name) = &a.service {
        services.retain(|s| s.name == *name);
        if services.is_empty() {
            return Err(drover_core::Error::NotFound {
                what: format!("service {name}"),
                hint: Some("`drover status` lists services".into()),
            }
            .into());
        }
        if ctx.json {
            let mut doc = with_served(&services[0], served)?;
            doc["state"] = state_doc(store.db().location());
            ctx.emit("Service", &doc)?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    if ctx.json {
        let docs = services
            .iter()
            .map(|s| with_served(s, served))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut doc = crate::output::document("Service", docs.into());
        doc["state"] = state_doc(store.db().location());
        crate::output::emit_document(ctx.format, &doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    let loc = store.db().location();
    outln!("state: {} {}", loc.backend(), loc.describe());
    if services.is_empty() {
        outln!("no services (deploy some with `drover apply -f fleet.toml`)");
    } else if !served {
        outln!(
            "{}: no `drover serve` runs on this store, so nothing proxies traffic to these \
             services and nothing heals them (`drover serve`)",
            color::paint_as("NOT SERVED", "out-of-sync")
        );
    }
    for s in &services {
        let image = s.image.map_or("-".into(), |d| d.to_string());
        let outcome = s.outcome.map_or("", |o| o.as_str());
        outln!(
            "{}  release {} ({})  {}/{} ready  {}  {image}",
            s.name,
            s.release.map_or("-".into(), |n| n.to_string()),
            color::state(outcome),
            s.ready,
            s.replicas,
            s.strategy
        );
        let h = &s.health;
        if let Some(until) = h
            .backoff_until
            .filter(|t| *t > drover_core::clock::now_ms())
        {
            outln!(
                "  backing off: next pass in {:.1} s after {} failure(s) in a row: {}",
                (until - drover_core::clock::now_ms()) as f64 / 1000.0,
                h.failures,
                h.last_error.as_deref().unwrap_or("")
            );
        } else if let Some(e) = &h.last_error
            && h.failures > 0
        {
            outln!("  last pass: {e}");
        }
        if h.restarts > 0 {
            outln!("  restarts: {} (crashed instances replaced)", h.restarts);
        }
        for p in &s.ports_held_elsewhere {
            outln!("  NO TRAFFIC: {p} (remove one: `drover service rm`)");
        }
        if let Some(why) = &s.revoked {
            outln!(
                "  {}: release image revoked: {why}",
                color::paint_as("REVOKED", "revoked")
            );
        }
        if let Some(why) = s.sync.reason.as_deref().filter(|_| !s.sync.in_sync()) {
            outln!("  {}: {why}", color::paint_as("OUT OF SYNC", "out-of-sync"));
            if !s.sync.differences.is_empty() {
                outln!("    what differs (running -> fleet file):");
            }
            for c in &s.sync.differences {
                outln!("      {c}");
            }
        }
        for q in &s.quarantined {
            outln!(
                "  quarantined: image {} with config {} (release {}: {})",
                q.image.short(),
                q.config_digest.short(),
                q.release,
                q.reason
            );
        }
        let mut t = Table::new(&[
            "ID", "RELEASE", "STATE", "HEALTH", "TRAFFIC", "PID", "PORT", "IMAGE",
        ])
        .indent(2)
        .without_headers();
        let mut notes = Vec::new();
        for i in &s.instances {
            let health = match i.healthy {
                Some(true) => "healthy",
                Some(false) => "unhealthy",
                None => "-",
            };
            let traffic = if i.draining {
                "draining"
            } else if i.ready && served {
                "in traffic"
            } else if i.ready {
                "ready, not served"
            } else {
                "-"
            };
            t.row(vec![
                i.id.clone(),
                format!(
                    "release {}",
                    i.release.map_or("-".into(), |n| n.to_string())
                ),
                color::state(if i.lost { "lost" } else { i.state.as_str() }),
                color::state(health),
                traffic.to_string(),
                format!("pid {}", i.pid.map_or("-".into(), |p| p.to_string())),
                format!("port {}", i.port.map_or("-".into(), |p| p.to_string())),
                i.image.to_string(),
            ]);
            let mut note = Vec::new();
            if let Some(why) = &i.condemned {
                note.push(format!("    being replaced: {why}"));
            }
            if let Some(why) = &i.revoked {
                note.push(format!("    REVOKED: {why}"));
            }
            notes.push(note);
        }
        // Each instance's notes right under its row.
        for (line, note) in t.render().into_iter().zip(notes) {
            outln!("{line}");
            for n in note {
                outln!("{n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A service's document with `served`: whether a `drover serve` runs on
/// the store (its proxies carry the ready instances' traffic).
/// Every service's `Service` document (`status --json`'s items, and the
/// HTTP API's `/api/v1/services`).
pub fn documents(store: &mut drover_core::store::Store) -> anyhow::Result<Vec<serde_json::Value>> {
    let services = deploy::status(store)?;
    let served = drover_core::supervisor::running(store)?;
    services.iter().map(|s| with_served(s, served)).collect()
}

/// Where the store's state lives, for documents: `{backend, location}`
/// (a PostgreSQL URL without its password).
pub fn state_doc(loc: &drover_core::state::Location) -> serde_json::Value {
    serde_json::json!({ "backend": loc.backend(), "location": loc.describe() })
}

fn with_served(s: &deploy::ServiceStatus, served: bool) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(s)?;
    v["served"] = served.into();
    Ok(v)
}

//! `drover hosts`: the hosts that joined the fleet (`serve --join`), with
//! their state, heartbeat, epoch and instances; `drover drain HOST` marks one
//! draining.

use std::process::ExitCode;

use drover_core::grammar;
use drover_core::state::HostRow;
use serde::Serialize;
use serde_json::Value;

use super::Ctx;
use crate::output::Table;

#[derive(clap::Args)]
pub struct Args {}

#[derive(clap::Args)]
pub struct DrainArgs {
    /// The host, as `drover hosts` names it.
    host: String,
    /// Mark it up again instead.
    #[arg(long)]
    undo: bool,
}

/// One host as `drover hosts -o json` prints it.
#[derive(Serialize)]
struct Host {
    name: String,
    state: String,
    labels: Value,
    capacity: Value,
    address: Option<String>,
    keyid: Option<String>,
    epoch: i64,
    /// Unix ms, by the server clock.
    heartbeat: Option<i64>,
    /// How long ago, by the same clock.
    heartbeat_age_ms: Option<i64>,
    /// Live instances on it, not counted lost.
    instances: i64,
    joined: String,
    updated: String,
    version: Option<String>,
    reason: Option<String>,
}

fn host(h: HostRow, now: i64, counts: &[(String, i64)]) -> Host {
    let json = |s: &str| serde_json::from_str(s).unwrap_or(Value::Null);
    let instances = counts
        .iter()
        .find(|(n, _)| *n == h.name)
        .map_or(0, |(_, c)| *c);
    // A draining host with nothing left on it is drained (`--undo` makes
    // it eligible again).
    let state = match (h.state.as_str(), instances) {
        ("draining", 0) => "drained".to_string(),
        _ => h.state,
    };
    Host {
        instances,
        labels: json(&h.labels),
        capacity: json(&h.capacity),
        heartbeat_age_ms: h.heartbeat.map(|b| (now - b).max(0)),
        name: h.name,
        state,
        address: h.address,
        keyid: h.keyid,
        epoch: h.epoch,
        heartbeat: h.heartbeat,
        joined: h.joined,
        updated: h.updated,
        version: h.version,
        reason: h.reason,
    }
}

pub fn run(ctx: &Ctx, _a: &Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store_unleased()?;
    let read = store.db().read();
    let now = read.now_ms()?;
    let counts = read.instances_per_host()?;
    let hosts: Vec<Host> = read
        .hosts()?
        .into_iter()
        .map(|h| host(h, now, &counts))
        .collect();
    if ctx.json {
        ctx.emit("Host", &hosts)?;
        return Ok(ExitCode::SUCCESS);
    }
    if hosts.is_empty() {
        outln!("no hosts (`drover serve --join` joins this store's host to the fleet)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "NAME",
        "STATE",
        "LABELS",
        "ADDRESS",
        "HEARTBEAT",
        "EPOCH",
        "INSTANCES",
    ]);
    for h in &hosts {
        let labels = match &h.labels {
            Value::Object(m) if !m.is_empty() => m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(","),
            _ => "-".into(),
        };
        let beat = h.heartbeat_age_ms.map_or("never".into(), |ms| {
            format!(
                "{} ago",
                grammar::format_duration((ms as u64 / 1000) * 1000)
            )
        });
        t.row(vec![
            h.name.clone(),
            h.state.clone(),
            labels,
            h.address.clone().unwrap_or_else(|| "-".into()),
            beat,
            h.epoch.to_string(),
            h.instances.to_string(),
        ]);
    }
    t.print();
    for h in hosts.iter().filter(|h| h.state == "down") {
        if let Some(r) = &h.reason {
            outln!("{} is down: {r}", h.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn drain(ctx: &Ctx, a: &DrainArgs) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let changed = store.db_mut().set_host_draining(&a.host, !a.undo)?;
    if !ctx.json {
        match (a.undo, changed) {
            (false, true) => outln!(
                "host {} marked draining: each service's instances on it are replaced on \
                 other hosts (within the service's surge and availability bounds), then \
                 drained and stopped; `drover hosts` shows it drained when none is left",
                a.host
            ),
            (false, false) => outln!("host {} was already draining", a.host),
            (true, true) => outln!("host {} is up again", a.host),
            (true, false) => outln!("host {} was not draining", a.host),
        }
    } else {
        let h = store.db().read().host(&a.host)?;
        ctx.emit("Host", &h)?;
    }
    Ok(ExitCode::SUCCESS)
}

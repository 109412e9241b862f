//! `drover ps`: the instances as a table (`-o wide` adds the full image,
//! command, volumes and creation time), ids alone (`-q`), or documents;
//! `--filter` narrows the list.

use std::process::ExitCode;

use drover_core::clock;
use drover_core::instance::{self, Exit, Instance, State};

use super::Ctx;
use crate::filter::{self, Filter};
use crate::output::{Table, color};

#[derive(clap::Args)]
pub struct Args {
    /// Include removed instances.
    #[arg(short, long)]
    all: bool,
    /// Only the instance ids, one per line.
    #[arg(short, long)]
    quiet: bool,
    /// Only instances matching KEY=VALUE (repeatable, all must match): id,
    /// name, service, release (N or SERVICE#N), state (running, exited, …),
    /// image (a digest, digest prefix or NAME:TAG).
    #[arg(long, value_name = "KEY=VALUE", value_parser = filter::parse)]
    filter: Vec<Filter>,
}

const FILTERS: [&str; 6] = ["id", "name", "service", "release", "state", "image"];

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    filter::check(&a.filter, "ps", &FILTERS)?;
    let mut store = ctx.store()?;
    // image=NAME:TAG means the digest the tag names now.
    let mut filters = a.filter.clone();
    for f in &mut filters {
        let is_hex = f.value.bytes().all(|b| b.is_ascii_hexdigit());
        if f.key == "image" && !is_hex && !f.value.starts_with("sha256:") {
            f.value = store.resolve(&f.value)?.digest.to_string();
        }
    }
    let mut list = instance::refresh(store.db_mut(), a.all)?;
    list.retain(|i| filters.iter().all(|f| matches(i, f)));
    if a.quiet {
        for i in &list {
            outln!("{}", i.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if ctx.json {
        masked(&store, &mut list)?;
        ctx.emit("Instance", &list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut headers = vec![
        "ID", "NAME", "IMAGE", "RELEASE", "STATE", "PID", "PORT", "DRIVER", "UPTIME",
    ];
    if ctx.wide() {
        headers.extend(["CREATED", "VOLUMES", "COMMAND"]);
    }
    let mut t = Table::new(&headers).right("PID").right("PORT");
    for i in &list {
        let image = i.image.to_string();
        let mut row = vec![
            i.id.clone(),
            i.name.clone().unwrap_or_else(|| "-".into()),
            if ctx.wide() {
                image
            } else {
                crate::output::short_digest(&image).to_string()
            },
            release(i),
            color::state(&state(i)),
            i.pid
                .filter(|_| i.state.is_live())
                .map_or("-".into(), |p| p.to_string()),
            i.port.map_or("-".into(), |p| p.to_string()),
            i.driver.as_str().to_string(),
            uptime(i),
        ];
        if ctx.wide() {
            let volumes: Vec<&str> = i.volumes.iter().map(|v| v.name.as_str()).collect();
            row.extend([
                i.created.clone(),
                if volumes.is_empty() {
                    "-".into()
                } else {
                    volumes.join(",")
                },
                i.launch.args.join(" "),
            ]);
        }
        t.row(row);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}

/// Instances (`all`: stopped ones too) as `ps --json` and the HTTP API
/// show them.
pub fn documents(
    store: &mut drover_core::store::Store,
    all: bool,
) -> anyhow::Result<Vec<Instance>> {
    let mut list = instance::refresh(store.db_mut(), all)?;
    masked(store, &mut list)?;
    Ok(list)
}

/// Secret env values of service instances are never shown.
fn masked(store: &drover_core::store::Store, list: &mut [Instance]) -> anyhow::Result<()> {
    drover_core::deploy::release::mask_secrets(store.db().read(), list)?;
    Ok(())
}

fn matches(i: &Instance, f: &Filter) -> bool {
    let v = f.value.as_str();
    match f.key.as_str() {
        "id" => i.id.starts_with(v),
        "name" => i.name.as_deref() == Some(v),
        "service" => i.service.as_deref() == Some(v),
        "release" => release(i) == v || i.release.is_some_and(|r| r.to_string() == v),
        "state" => i.state.as_str() == v,
        "image" => {
            let digest = i.image.to_string();
            let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
            let want = v.strip_prefix("sha256:").unwrap_or(v);
            !want.is_empty() && hex.starts_with(want)
        }
        _ => false,
    }
}

fn release(i: &Instance) -> String {
    match (&i.service, i.release) {
        (Some(s), Some(r)) => format!("{s}#{r}"),
        (_, Some(r)) => r.to_string(),
        _ => "-".into(),
    }
}

fn state(i: &Instance) -> String {
    match (i.state, i.exit) {
        // Nobody saw it end (its monitor died too, or it was recorded on
        // another host or boot): it is not running here, whatever its pid.
        (State::Exited, Some(Exit::Unknown)) => "lost (exit status unknown)".into(),
        (State::Exited | State::Deleted, Some(exit)) => format!("{} ({exit})", i.state.as_str()),
        (s, _) => s.as_str().to_string(),
    }
}

fn uptime(i: &Instance) -> String {
    let (Some(started), true) = (i.started.as_deref(), i.state.is_live()) else {
        return "-".into();
    };
    let (Some(start), Some(now)) = (
        clock::parse_rfc3339_secs(started),
        clock::parse_rfc3339_secs(&clock::now_rfc3339()),
    ) else {
        return "-".into();
    };
    let s = (now - start).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

use std::process::ExitCode;

use drover_core::clock;
use drover_core::instance::{self, Instance, State};

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Include removed instances.
    #[arg(short, long)]
    all: bool,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let mut list = instance::refresh(store.db_mut(), a.all)?;
    if ctx.json {
        // Secret env values of service instances are never shown.
        drover_core::deploy::release::mask_secrets(store.db().read(), &mut list)?;
        output::json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12}  {:<16} {:<14} {:>10}  {:<22} {:>7} {:>5}  {:<8} UPTIME",
        "ID", "NAME", "IMAGE", "RELEASE", "STATE", "PID", "PORT", "DRIVER"
    );
    for i in &list {
        let hex = i.image.to_string();
        let hex = hex.strip_prefix("sha256:").unwrap_or(&hex);
        println!(
            "{:<12}  {:<16} {:<14} {:>10}  {:<22} {:>7} {:>5}  {:<8} {}",
            i.id,
            i.name.as_deref().unwrap_or("-"),
            &hex[..12],
            match (&i.service, i.release) {
                (Some(s), Some(r)) => format!("{s}#{r}"),
                (_, Some(r)) => r.to_string(),
                _ => "-".into(),
            },
            state(i),
            i.pid
                .filter(|_| i.state.is_live())
                .map_or("-".into(), |p| p.to_string()),
            i.port.map_or("-".into(), |p| p.to_string()),
            i.driver.as_str(),
            uptime(i),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn state(i: &Instance) -> String {
    match (i.state, i.exit) {
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

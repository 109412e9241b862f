//! `drover events`: what happened to services, releases and instances, one
//! line each (`docker events`, `kubectl get events -w`), read from the
//! ledger by `drover_core::events`; `-f` follows new ones.

use std::process::ExitCode;
use std::time::Duration;

use drover_core::events::{self, Event, Query};

use super::Ctx;
use crate::output::Format;
use crate::timearg::{self, Time};

/// How often `-f` looks for new entries.
const POLL: Duration = Duration::from_millis(200);

#[derive(clap::Args)]
pub struct Args {
    /// Keep printing new events as they happen, until interrupted (or
    /// until --until passes).
    #[arg(short, long)]
    follow: bool,
    /// Only this service's events.
    #[arg(long, value_name = "SERVICE")]
    service: Option<String>,
    /// Only events since this time: a duration back from now ("10m", "2h",
    /// "1d") or a timestamp (RFC 3339, e.g. 2026-12-01T10:00Z).
    #[arg(long, value_name = "TIME", value_parser = timearg::parse)]
    since: Option<Time>,
    /// Only events before this time (as --since).
    #[arg(long, value_name = "TIME", value_parser = timearg::parse)]
    until: Option<Time>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    // Only reads, maybe for hours (-f): gc must not wait for it.
    let store = ctx.store_unleased()?;
    let q = Query {
        service: a.service.clone(),
        since: a.since.map(Time::rfc3339),
        until: a.until.map(Time::rfc3339),
    };
    let format = ctx.format;
    if a.follow {
        events::follow(store.db(), &q, POLL, &mut |e| {
            print(format, e);
            Ok(true)
        })?;
    } else {
        for e in events::read(store.db().read(), &q, 1)?.events {
            print(format, &e);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One event: a JSON object a line (`--json`), a YAML document (`-o
/// yaml`), or `TIME  TYPE  SUBJECT  REASON`.
fn print(format: Format, e: &Event) {
    match format {
        Format::Json => outln!("{}", serde_json::to_string(e).expect("events serialize")),
        Format::Yaml => {
            let v = serde_json::to_value(e).expect("events serialize");
            out!("---\n{}", crate::output::yaml::to_string(&v));
        }
        Format::Table | Format::Wide => {
            // Whole seconds, as people read them; --json keeps the milliseconds.
            let time = match e.time.split_once('.') {
                Some((secs, _)) => format!("{secs}Z"),
                None => e.time.clone(),
            };
            let by = if format == Format::Wide {
                format!("  by {}", e.actor)
            } else {
                String::new()
            };
            outln!(
                "{time}  {:<19}  {:<20}  {}{by}",
                e.kind.as_str(),
                e.subject(),
                e.reason
            );
        }
    }
}

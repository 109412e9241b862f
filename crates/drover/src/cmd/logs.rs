use std::process::ExitCode;

use drover_core::instance::log::read::{self, Request};

use super::Ctx;
use crate::timearg::{self, Time};

#[derive(clap::Args)]
pub struct Args {
    /// An instance (id, unique id prefix or name; a removed one by id), a
    /// service (all its instances, merged by time, each line prefixed with
    /// its instance) or SERVICE@RELEASE (that release's instances, removed
    /// ones included).
    #[arg(value_name = "TARGET")]
    target: String,
    /// Keep printing new output: until the instance exits; for a service or
    /// release, until interrupted (new instances included).
    #[arg(short, long)]
    follow: bool,
    /// Only output since this time: a duration back from now ("10m",
    /// "2h", "1d") or a timestamp (RFC 3339, e.g. 2026-12-01T10:00Z).
    #[arg(long, value_name = "TIME", value_parser = timearg::parse)]
    since: Option<Time>,
    /// Only output before this time (as --since).
    #[arg(long, value_name = "TIME", value_parser = timearg::parse)]
    until: Option<Time>,
    /// Only the last N lines of each instance.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// The instance this one replaced (same service and replica slot, the
    /// most recent before it), as `kubectl logs --previous`.
    #[arg(short, long)]
    previous: bool,
    /// Show each line's time (RFC 3339, UTC, nanoseconds).
    #[arg(short, long)]
    timestamps: bool,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    // Only reads, maybe for hours (-f): gc must not wait for it.
    let mut store = ctx.store_unleased()?;
    let ns = |t: Time| t.0.saturating_mul(1_000_000);
    let req = Request {
        target: a.target.clone(),
        previous: a.previous,
        since_ns: a.since.map(ns),
        until_ns: a.until.map(ns),
        tail: a.tail,
        follow: a.follow,
        timestamps: a.timestamps,
        json: ctx.json,
    };
    read::show(&mut store, &req, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

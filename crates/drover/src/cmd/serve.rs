use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use drover_core::drift::Budget;
use drover_core::grammar;
use drover_core::reconcile;

use super::Ctx;
use crate::serve;

#[derive(clap::Args)]
pub struct Args {
    /// Address the services' proxies listen on (use 0.0.0.0 for every
    /// interface).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// How often each service gets a pass when nothing changed; a change
    /// (an instance exiting, an `apply` elsewhere) is seen within 0.1 s.
    #[arg(long, default_value = "1s", value_parser = duration)]
    interval: Duration,
    /// The longest back-off of a failing or crash-looping service.
    #[arg(long, default_value = "60s", value_parser = duration)]
    max_backoff: Duration,
    /// How often instances are scanned for drift ("0" turns scans off).
    #[arg(long, default_value = "5m", value_parser = duration)]
    drift_interval: Duration,
    /// Threads a drift scan may use.
    #[arg(long, default_value_t = 1)]
    drift_threads: usize,
    /// Bytes per second a drift scan may read, e.g. "200m" ("0": unlimited).
    #[arg(long, default_value = "200m", value_name = "SIZE", value_parser = rate)]
    drift_rate: u64,
}

fn duration(s: &str) -> Result<Duration, String> {
    grammar::duration_ms(s).map(Duration::from_millis)
}

/// A size, or "0" for no limit.
fn rate(s: &str) -> Result<u64, String> {
    match s {
        "0" => Ok(0),
        s => grammar::size(s),
    }
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    serve::run(serve::Config {
        store: ctx.store_dir.clone(),
        bind: a.bind,
        reconcile: reconcile::Options {
            interval: a.interval,
            max_backoff: a.max_backoff,
        },
        drift_interval: (!a.drift_interval.is_zero()).then_some(a.drift_interval),
        drift_budget: Budget {
            threads: a.drift_threads.max(1),
            bytes_per_sec: (a.drift_rate > 0).then_some(a.drift_rate),
            low_priority: true,
        },
    })?;
    Ok(ExitCode::SUCCESS)
}

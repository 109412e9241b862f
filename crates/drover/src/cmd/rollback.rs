use std::process::ExitCode;

use drover_core::deploy::{self, Options};

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// The service.
    service: String,
    /// The release whose content to run again (default: the last healthy
    /// release before the current one).
    #[arg(long)]
    to: Option<i64>,
    /// Roll back to a quarantined image anyway.
    #[arg(long)]
    force: bool,
    /// Fail at once if another deploy holds the service's lock.
    #[arg(long)]
    no_wait: bool,
    /// Why: recorded with the new release.
    #[arg(short, long)]
    message: Option<String>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let opts = Options {
        force: a.force,
        no_wait: a.no_wait,
        message: a.message.clone(),
    };
    let r = deploy::rollback(&mut store, &a.service, a.to, &opts)?;
    if ctx.json {
        output::json(&r)?;
    } else {
        println!(
            "{}: rolled back; runs release {} ({} started, {} stopped, {:.1} s)",
            r.service,
            r.release.map_or("-".into(), |n| n.to_string()),
            r.started,
            r.stopped,
            r.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

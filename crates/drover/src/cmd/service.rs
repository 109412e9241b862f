use std::process::ExitCode;

use drover_core::deploy::{self, remove};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Remove a service: drain and stop its instances, free its ports, and
    /// mark it removed (its releases and ledger history stay; applying it
    /// again revives it).
    Rm(RmArgs),
}

#[derive(clap::Args)]
struct RmArgs {
    /// The service.
    service: String,
    /// Why: recorded in the `service.remove` ledger entry.
    #[arg(short, long)]
    message: Option<String>,
    /// Fail at once if a deploy holds the service's lock (default: wait).
    #[arg(long)]
    no_wait: bool,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let Command::Rm(a) = &a.command;
    let mut store = ctx.store()?;
    let opts = deploy::Options {
        no_wait: a.no_wait,
        ..deploy::Options::default()
    };
    let reason = a.message.as_deref().unwrap_or("drover service rm");
    let report = remove::remove(&mut store, &a.service, reason, &opts)?;
    if ctx.json {
        ctx.emit("ServiceRemoval", &report)?;
    } else {
        outln!(
            "{}: removed ({} stopped, {:.1} s)",
            report.service,
            report.stopped,
            report.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

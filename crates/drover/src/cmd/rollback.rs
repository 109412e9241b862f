use std::process::ExitCode;

use drover_core::deploy;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// The service.
    service: String,
    /// The release whose content to run again (default: the last healthy
    /// release before the current one).
    #[arg(long)]
    to: Option<i64>,
    #[command(flatten)]
    deploy: super::apply::DeployFlags,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let r = deploy::rollback(&mut store, &a.service, a.to, &a.deploy.options())?;
    if ctx.json {
        ctx.emit("DeployReport", &r)?;
    } else {
        outln!(
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

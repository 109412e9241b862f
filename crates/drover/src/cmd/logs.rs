use std::process::ExitCode;

use drover_core::instance;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// Instance id (or a unique prefix) or name.
    instance: String,
    /// Keep printing new output until the instance exits.
    #[arg(short, long)]
    follow: bool,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    // Only reads, maybe for hours (-f): gc must not wait for it.
    let mut store = ctx.store_unleased()?;
    instance::logs(
        &mut store,
        &a.instance,
        a.follow,
        &mut std::io::stdout().lock(),
    )?;
    Ok(ExitCode::SUCCESS)
}

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
    let mut store = ctx.store()?;
    instance::logs(
        &mut store,
        &a.instance,
        a.follow,
        &mut std::io::stdout().lock(),
    )?;
    Ok(ExitCode::SUCCESS)
}

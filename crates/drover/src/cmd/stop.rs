use std::process::ExitCode;
use std::time::Duration;

use drover_core::instance;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// Instance ids (or unique prefixes) or names.
    #[arg(required = true)]
    instances: Vec<String>,
    /// Seconds to wait after the stop signal before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    time: u64,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let ids = a
        .instances
        .iter()
        .map(|key| instance::find(store.db(), key).map(|i| i.id))
        .collect::<Result<Vec<_>, _>>()?;
    // All at once: one grace period for all of them.
    let done = instance::stop_many(&mut store, &ids, Duration::from_secs(a.time))?;
    if ctx.json {
        ctx.emit("Instance", &done)?;
    } else {
        for inst in &done {
            let exit = inst.exit.map(|e| format!(" ({e})")).unwrap_or_default();
            outln!("{} {}{exit}", inst.id, inst.state.as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}

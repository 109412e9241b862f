use std::process::ExitCode;

use drover_core::instance;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// Instance ids (or unique prefixes) or names.
    #[arg(required = true)]
    instances: Vec<String>,
    /// Kill running instances first.
    #[arg(short, long)]
    force: bool,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let mut done = Vec::new();
    for key in &a.instances {
        let inst = instance::remove(&mut store, key, a.force)?;
        if !ctx.json {
            outln!("{}", inst.id);
        }
        done.push(inst);
    }
    if ctx.json {
        ctx.emit("Instance", &done)?;
    }
    Ok(ExitCode::SUCCESS)
}

//! `drover install-service`: write the systemd unit of `drover serve` for
//! this store (or print it), from drover-core's `supervisor::systemd::unit`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use drover_core::supervisor::systemd;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// Print the unit instead of writing it.
    #[arg(long)]
    print: bool,
    /// Where to write it.
    #[arg(long, default_value = "/etc/systemd/system/drover.service")]
    path: PathBuf,
    /// The drover binary the unit runs (default: this one).
    #[arg(long, value_name = "PATH")]
    exe: Option<PathBuf>,
    /// Arguments for `serve` (e.g. "--bind 0.0.0.0").
    #[arg(long, default_value = "", value_name = "ARGS")]
    serve_args: String,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let exe = match &a.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe().context("finding the drover binary")?,
    };
    let store = std::path::absolute(&ctx.store_dir).context("resolving the store directory")?;
    let unit = systemd::unit(&exe, &store, &a.serve_args);
    if a.print {
        out!("{unit}");
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::write(&a.path, &unit).with_context(|| format!("writing {}", a.path.display()))?;
    outln!("wrote {}", a.path.display());
    outln!("next: systemctl daemon-reload && systemctl enable --now drover");
    Ok(ExitCode::SUCCESS)
}

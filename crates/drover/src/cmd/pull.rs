use std::process::ExitCode;

use drover_core::store::registry::{self, Remote};
use drover_core::trust::policy::{self, Operation};

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// What to pull: <registry>/<repository>[:tag|@sha256:…]; a tag is kept
    /// locally as <repository>:<tag>.
    remote: String,
    /// Plain HTTP instead of TLS; only for loopback registries.
    #[arg(long)]
    insecure: bool,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let remote = Remote::parse(&a.remote)?;
    let opts = registry::Options {
        insecure: a.insecure,
        credentials: registry::credentials(&remote.registry)?,
    };
    let mut store = ctx.store()?;
    policy::enforce_pull(&mut store, &a.remote, &remote.registry, Operation::Pull)?;
    let report = registry::pull(&mut store, &remote, &opts)?;
    if ctx.json {
        output::json(&report)?;
    } else {
        println!("{}", report.digest);
    }
    Ok(ExitCode::SUCCESS)
}

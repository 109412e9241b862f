use std::process::ExitCode;

use drover_core::store::registry::{self, Remote};

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// The image: name:tag, a digest, or a unique digest prefix.
    reference: String,
    /// Where to: [<registry>/]<repository>[:tag], e.g. registry.example.com/hello:1.0
    /// (no registry means docker.io, as for docker).
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
        platform: None,
    };
    let mut store = ctx.store()?;
    let report = registry::push(&mut store, &a.reference, &remote, &opts)?;
    if ctx.json {
        output::json(&report)?;
    } else {
        println!("{}", report.digest);
    }
    Ok(ExitCode::SUCCESS)
}

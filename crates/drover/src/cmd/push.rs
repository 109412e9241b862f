use std::process::ExitCode;
use std::sync::Arc;

use drover_core::progress::Shared;
use drover_core::store::registry::{self, Remote};

use super::Ctx;
use crate::progress;

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
    let bar = Arc::new(progress::Bar::new(ctx.json));
    let opts = registry::Options {
        insecure: a.insecure,
        credentials: registry::credentials(&remote.registry)?,
        platform: None,
        progress: Shared(bar.clone()),
    };
    let mut store = ctx.store()?;
    let report = registry::push(&mut store, &a.reference, &remote, &opts);
    bar.finish();
    let report = report?;
    if ctx.json {
        ctx.emit("PushReport", &report)?;
    } else {
        outln!("{}", report.digest);
    }
    Ok(ExitCode::SUCCESS)
}

use std::process::ExitCode;

use drover_core::store::registry::{self, Remote};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// The image: name:tag, a digest, or a unique digest prefix.
    reference: String,
    /// Where to: <registry>/<repository>[:tag], e.g. registry.example.com/hello:1.0.
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
        ctx.emit("PushReport", &report)?;
    } else {
        outln!("{}", report.digest);
    }
    Ok(ExitCode::SUCCESS)
}

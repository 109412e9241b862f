use std::process::ExitCode;
use std::sync::Arc;

use drover_core::progress::Shared;
use drover_core::store::registry::{self, Platform, Remote};
use drover_core::trust::policy::{self, Operation};

use super::Ctx;
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// What to pull: [<registry>/]<repository>[:tag|@sha256:…] (no registry
    /// means docker.io: busybox is docker.io/library/busybox:latest); a tag
    /// (latest if none) is kept locally as <repository>:<tag>.
    remote: String,
    /// Plain HTTP instead of TLS; only for loopback registries.
    #[arg(long)]
    insecure: bool,
    /// When the remote is an image index (a multi-platform image), pull the
    /// manifest for this platform (os/arch[/variant], e.g. linux/arm64)
    /// instead of the host's.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let remote = Remote::parse(&a.remote)?;
    let platform = a.platform.as_deref().map(Platform::parse).transpose()?;
    let bar = Arc::new(progress::Bar::new(ctx.json));
    let opts = registry::Options {
        insecure: a.insecure,
        credentials: registry::credentials(&remote.registry)?,
        platform,
        progress: Shared(bar.clone()),
    };
    let mut store = ctx.store()?;
    policy::enforce_pull(&mut store, &a.remote, &remote.registry, Operation::Pull)?;
    let report = registry::pull(&mut store, &remote, &opts);
    bar.finish();
    let report = report?;
    if ctx.json {
        ctx.emit("PullReport", &report)?;
    } else {
        if let (Some(index), Some(platform)) = (&report.index, &report.platform) {
            outln!(
                "{} is image index {index}: pulled its {platform} manifest",
                report.remote
            );
        }
        outln!("{}", report.digest);
    }
    Ok(ExitCode::SUCCESS)
}

use std::process::ExitCode;

use drover_core::builder::provenance;
use drover_core::keys::{HOST_PUB, PublicKey};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// name:tag, a digest, or a unique digest prefix.
    reference: String,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let desc = store.resolve(&a.reference)?;
    let manifest = store.manifest(&desc.digest)?;
    let config = store.image_config(&manifest)?;
    let tags: Vec<String> = store
        .tags()?
        .into_iter()
        .filter(|t| t.digest == desc.digest)
        .map(|t| t.name)
        .collect();
    let referrers = store.referrers(&desc.digest, None)?;
    // The newest provenance this store's host key signed (the SBOM and
    // every other attachment are among the referrers).
    let host_pub = ctx.store_dir.join(HOST_PUB);
    let provenance = match host_pub.exists() {
        true => provenance::read(&store, &desc.digest, &[PublicKey::load(&host_pub)?])?,
        false => None,
    };
    ctx.emit(
        "Image",
        &serde_json::json!({
            "digest": desc.digest,
            "tags": tags,
            "manifest": manifest,
            "config": config,
            "referrers": referrers,
            "provenance": provenance,
        }),
    )?;
    Ok(ExitCode::SUCCESS)
}

use std::process::ExitCode;

use super::Ctx;
use crate::output;

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
    output::json(&serde_json::json!({
        "digest": desc.digest,
        "tags": tags,
        "manifest": manifest,
        "config": config,
        "referrers": referrers,
    }))?;
    Ok(ExitCode::SUCCESS)
}

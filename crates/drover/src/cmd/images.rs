use std::process::ExitCode;

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Untagged images too: those instances and releases hold, and those
    /// pulled by digest (`apply` pulls a fleet's registry images so).
    #[arg(short, long)]
    all: bool,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let mut rows = Vec::new();
    let mut row = |digest: &drover_core::Digest, name: Option<&str>, tagged, held: &[String]| {
        let manifest = store.manifest(digest)?;
        let size: u64 = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        rows.push(serde_json::json!({
            "name": name, "digest": digest, "size": size, "layers": manifest.layers.len(),
            "tagged": tagged, "held_by": held,
        }));
        anyhow::Ok(())
    };
    for t in store.tags()? {
        row(&t.digest, Some(&t.name), Some(t.created.clone()), &[])?;
    }
    // Untagged images after the tagged ones, each one `<none>` row.
    if a.all {
        for i in store.images(true)?.iter().filter(|i| i.tags.is_empty()) {
            row(&i.digest, None, None, &i.held_by)?;
        }
    }
    if ctx.json {
        output::json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<32} {:<14} {:>7} {:>10}  TAGGED",
        "NAME", "DIGEST", "LAYERS", "SIZE"
    );
    for r in &rows {
        let digest = r["digest"].as_str().unwrap_or_default();
        println!(
            "{:<32} {:<14} {:>7} {:>10}  {}",
            r["name"].as_str().unwrap_or("<none>"),
            digest.strip_prefix("sha256:").map_or(digest, |h| &h[..12]),
            r["layers"],
            output::size(r["size"].as_u64().unwrap_or(0)),
            r["tagged"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

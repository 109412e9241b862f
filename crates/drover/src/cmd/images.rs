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
    for image in store.images(a.all)? {
        let manifest = store.manifest(&image.digest)?;
        let size: u64 = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let layers = manifest.layers.len();
        // One row per tag, as before; an untagged image is one `<none>` row.
        let names: Vec<Option<&String>> = match image.tags.is_empty() {
            true => vec![None],
            false => image.tags.iter().map(Some).collect(),
        };
        for name in names {
            rows.push(serde_json::json!({
                "name": name, "digest": image.digest, "size": size, "layers": layers,
                "tagged": image.created, "held_by": image.held_by,
            }));
        }
    }
    // By name as before, untagged images last.
    rows.sort_by_key(|r| (r["name"].is_null(), r["name"].as_str().map(str::to_string)));
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

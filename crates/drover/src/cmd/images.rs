use std::process::ExitCode;

use super::Ctx;
use crate::output;

pub fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let mut rows = Vec::new();
    for t in store.tags()? {
        let manifest = store.manifest(&t.digest)?;
        let size: u64 = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        rows.push(serde_json::json!({
            "name": t.name, "digest": t.digest, "size": size, "layers": manifest.layers.len(), "tagged": t.created,
        }));
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
            r["name"].as_str().unwrap_or_default(),
            digest.strip_prefix("sha256:").map_or(digest, |h| &h[..12]),
            r["layers"],
            output::size(r["size"].as_u64().unwrap_or(0)),
            r["tagged"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

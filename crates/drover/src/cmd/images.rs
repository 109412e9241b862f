use std::process::ExitCode;

use super::Ctx;
use crate::filter::{self, Filter};
use crate::output::{self, Table};

#[derive(clap::Args)]
pub struct Args {
    /// Untagged images too: those instances and releases hold, and those
    /// pulled by digest (`apply` pulls a fleet's registry images so).
    #[arg(short, long)]
    all: bool,
    /// Only the image digests, one per line (each image once).
    #[arg(short, long)]
    quiet: bool,
    /// Only images matching KEY=VALUE (repeatable, all must match):
    /// reference=GLOB (`hello:*`), dangling=true|false (untagged or not).
    #[arg(long, value_name = "KEY=VALUE", value_parser = filter::parse)]
    filter: Vec<Filter>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    filter::check(&a.filter, "images", &["reference", "dangling"])?;
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
    // Untagged images after the tagged ones, each one `<none>` row; a
    // `dangling=true` filter asks for them too.
    let dangling = a
        .filter
        .iter()
        .any(|f| f.key == "dangling" && f.value == "true");
    if a.all || dangling {
        for i in store.images(true)?.iter().filter(|i| i.tags.is_empty()) {
            row(&i.digest, None, None, &i.held_by)?;
        }
    }
    for f in &a.filter {
        let keep = |r: &serde_json::Value| -> anyhow::Result<bool> {
            let name = r["name"].as_str().unwrap_or_default();
            Ok(match f.key.as_str() {
                "reference" => filter::glob(&f.value, name),
                _ => filter::boolean(f)? == name.is_empty(),
            })
        };
        let mut kept = Vec::new();
        for r in rows {
            if keep(&r)? {
                kept.push(r);
            }
        }
        rows = kept;
    }
    if a.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in &rows {
            let digest = r["digest"].as_str().unwrap_or_default();
            if seen.insert(digest.to_string()) {
                outln!("{digest}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if ctx.json {
        ctx.emit("Image", &rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&["NAME", "DIGEST", "LAYERS", "SIZE", "TAGGED"])
        .right("LAYERS")
        .right("SIZE");
    for r in &rows {
        let digest = r["digest"].as_str().unwrap_or_default();
        t.row(vec![
            r["name"].as_str().unwrap_or("<none>").to_string(),
            if ctx.wide() {
                digest.to_string()
            } else {
                output::short_digest(digest).to_string()
            },
            r["layers"].to_string(),
            output::size(r["size"].as_u64().unwrap_or(0)),
            r["tagged"].as_str().unwrap_or_default().to_string(),
        ]);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}

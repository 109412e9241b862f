use std::process::ExitCode;

use anyhow::Context;
use drover_core::store::Store;

use super::Ctx;
use crate::output;

pub fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut store = Store::open_exclusive(&ctx.store_dir)
        .with_context(|| format!("opening the store at {} for gc", ctx.store_dir.display()))?;
    let views = drover_core::instance::collect_orphans(&mut store)?;
    let report = store.gc()?;
    if ctx.json {
        output::json(&report)?;
    } else {
        println!(
            "removed {} blobs ({}), {} artifacts, {} unpacked roots, {} temp files; kept {} blobs",
            report.removed_blobs,
            output::size(report.removed_bytes),
            report.removed_referrers.len(),
            report.removed_roots,
            report.removed_temp_files,
            report.kept_blobs
        );
        if views > 0 {
            println!("cleaned up after {views} instances whose run was cut short");
        }
    }
    Ok(ExitCode::SUCCESS)
}

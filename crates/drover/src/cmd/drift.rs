use std::process::ExitCode;
use std::time::Instant;

use drover_core::drift::{self, Budget};
use drover_core::store::unpack;

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Scan this image's unpacked root (unpacking it first if needed)
    /// against its baseline: name:tag, a digest, or a unique digest prefix.
    #[arg(long, value_name = "REF")]
    image: String,

    /// Scanning threads (default: one per CPU).
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    threads: Option<usize>,
}

/// Exit 0 when nothing drifted, 1 when something did.
pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let image = store.resolve(&a.image)?.digest;
    unpack::materialize(&store, &image)?;
    let mut budget = Budget::unlimited();
    if let Some(n) = a.threads {
        budget.threads = n;
    }
    let start = Instant::now();
    let report = drift::scan_image(&store, &image, &budget)?;
    if ctx.json {
        output::json(&report)?;
    } else {
        for f in &report.findings {
            println!("{f}");
        }
        println!(
            "checked {} files ({} hashed) of {} in {:.2} s: {}",
            report.files_checked,
            output::size(report.bytes_hashed),
            report.root.display(),
            start.elapsed().as_secs_f64(),
            match report.findings.len() {
                0 => "no drift".to_string(),
                n => format!("{n} difference(s) from the baseline"),
            }
        );
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

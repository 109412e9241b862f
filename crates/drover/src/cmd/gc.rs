use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use drover_core::builder::packages::cache::{self, PackageGcReport};
use drover_core::instance::log::keep::{self, LogGcReport};
use drover_core::store::{GcOptions, GcReport, Store, lease};

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Keep cached packages and indexes used within this age ("14d", "12h";
    /// "0" removes them all).
    #[arg(long, value_name = "AGE", default_value = "14d", value_parser = age)]
    keep_packages: Duration,
    /// Wait at most this long for builds, pulls and deploys using the store
    /// ("30s", "2m"); then give up, naming them, with exit status 5 (busy).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    wait: Duration,
    /// Per service, keep the unpacked roots of this many healthy releases
    /// before the current one (older ones are unpacked again on rollback).
    #[arg(long, value_name = "N", default_value_t = GcOptions::default().keep_roots)]
    keep_roots: usize,
}

fn duration(s: &str) -> Result<Duration, String> {
    drover_core::grammar::duration_ms(s).map(Duration::from_millis)
}

/// "14d" for whole days, else as durations are written.
fn days(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms > 0 && ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else {
        drover_core::grammar::format_duration(ms)
    }
}

fn age(s: &str) -> Result<Duration, String> {
    drover_core::grammar::age_ms(s).map(Duration::from_millis)
}

#[derive(serde::Serialize)]
struct Report {
    #[serde(flatten)]
    store: GcReport,
    packages: PackageGcReport,
    /// Kept logs of removed instances, past their service's retention.
    logs: LogGcReport,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = Store::open_exclusive_within(&ctx.store_dir, a.wait, &mut |holders, _| {
        eprintln!("drover gc: waiting for {}…", lease::describe(holders))
    })
    .with_context(|| format!("opening the store at {} for gc", ctx.store_dir.display()))?;
    let views = drover_core::instance::collect_orphans(&mut store)?;
    let mut report = store.gc(&GcOptions {
        keep_roots: a.keep_roots,
    })?;
    let packages = cache::collect(&store, a.keep_packages)?;
    let logs = keep::collect(store.root(), drover_core::clock::now_ms())?;
    // The exclusive window ends here: what follows deletes only what
    // nothing can reach any more.
    store.gc_finish(&mut report)?;
    if ctx.json {
        ctx.emit(
            "GcReport",
            &Report {
                store: report,
                packages,
                logs,
            },
        )?;
    } else {
        outln!(
            "removed {} blobs ({}), {} artifacts, {} unpacked roots, {} temp files; kept {} blobs",
            report.removed_blobs,
            output::size(report.removed_bytes),
            report.removed_referrers.len(),
            report.removed_roots,
            report.removed_temp_files,
            report.kept_blobs
        );
        outln!(
            "unpacked roots: kept {} (live instances and recent releases, --keep-roots {}); \
             shared files: removed {} ({}) no root uses",
            report.kept_roots,
            a.keep_roots,
            report.removed_shared_files,
            output::size(report.removed_shared_bytes),
        );
        if packages.removed_files + packages.kept_files > 0 {
            outln!(
                "package cache: removed {} files ({}) unused for {}; kept {} files ({})",
                packages.removed_files,
                output::size(packages.removed_bytes),
                days(a.keep_packages),
                packages.kept_files,
                output::size(packages.kept_bytes),
            );
        }
        if !logs.removed.is_empty() {
            outln!(
                "kept logs: removed those of {} instances ({}) past their retention; kept {}",
                logs.removed.len(),
                output::size(logs.removed_bytes),
                logs.kept
            );
        }
        if !logs.removed_old_layout.is_empty() {
            outln!(
                "kept logs: removed {} failed releases' logs of the old layout (logs/{})",
                logs.removed_old_layout.len(),
                logs.removed_old_layout.join(", logs/")
            );
        }
        if views > 0 {
            outln!("cleaned up after {views} instances whose run was cut short");
        }
    }
    Ok(ExitCode::SUCCESS)
}

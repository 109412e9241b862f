use std::process::ExitCode;
use std::time::Instant;

use drover_core::drift::{self, Budget, Remedy, Target};
use drover_core::store::unpack;

use super::Ctx;
use crate::output::{self, color};

#[derive(clap::Args)]
pub struct Args {
    /// A service or an instance (id, unique prefix or name); default: every
    /// running instance.
    #[arg(conflicts_with = "image")]
    target: Option<String>,

    /// Scan this image's unpacked root alone (unpacking it first if needed)
    /// against its baseline: name:tag, a digest, or a unique digest prefix.
    #[arg(long, value_name = "REF")]
    image: Option<String>,

    /// Scanning threads (default: one per CPU).
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    threads: Option<usize>,
}

/// Succeeds when nothing drifted; fails with a check failure (exit 3, as
/// `verify` on corrupt blobs) when something did, so drift cannot be
/// mistaken for an error (1).
pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let mut budget = Budget::unlimited();
    if let Some(n) = a.threads {
        budget.threads = n;
    }
    let start = Instant::now();
    let drifted = match &a.image {
        Some(image) => {
            let image = store.resolve(image)?.digest;
            unpack::materialize(&store, &image)?;
            let report = drift::scan_image(&store, &image, &budget)?;
            if ctx.json {
                ctx.emit("ImageDriftReport", &report)?;
            } else {
                for f in &report.findings {
                    outln!("{f}");
                }
                outln!(
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
            (!report.is_clean()).then(|| {
                format!(
                    "{} drifted from its baseline: {} difference(s)",
                    report.root.display(),
                    report.findings.len()
                )
            })
        }
        None => {
            let target = target(&store, a.target.as_deref())?;
            let sweep = drift::sweep(&mut store, &target, &budget, Remedy::Report)?;
            if ctx.json {
                ctx.emit("DriftSweep", &sweep)?;
            } else {
                for i in &sweep.instances {
                    let who = match (&i.service, i.release) {
                        (Some(s), Some(n)) => format!("{} ({s} release {n})", i.instance),
                        _ => i.instance.clone(),
                    };
                    if i.findings.is_empty() {
                        outln!("{who}: {}", color::paint_as("no drift", "ok"));
                        continue;
                    }
                    let n = format!("{} finding(s)", i.findings.len());
                    outln!("{who}: {}", color::paint_as(&n, "drifted"));
                    for f in &i.findings {
                        outln!("  {f}");
                    }
                }
                let files: u64 = sweep.roots.iter().map(|r| r.files_checked).sum();
                let bytes: u64 = sweep.roots.iter().map(|r| r.bytes_hashed).sum();
                outln!(
                    "checked {} instance(s), {} root(s), {files} files ({} hashed) in {:.2} s",
                    sweep.instances.len(),
                    sweep.roots.len(),
                    output::size(bytes),
                    start.elapsed().as_secs_f64()
                );
            }
            sweep.drifted().then(|| {
                let drifted = sweep
                    .instances
                    .iter()
                    .filter(|i| !i.findings.is_empty())
                    .count();
                format!("{drifted} instance(s) drifted from their release")
            })
        }
    };
    match drifted {
        Some(what) => Err(drover_core::Error::Check(what).into()),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// What `drift [TARGET]` sweeps: everything, a service by its name, else an
/// instance.
pub fn target(store: &drover_core::store::Store, name: Option<&str>) -> anyhow::Result<Target> {
    let Some(t) = name else {
        return Ok(Target::All);
    };
    let db = store.db();
    let services = drover_core::deploy::release::services(db.read())?;
    Ok(if services.iter().any(|s| s.name == t) {
        Target::Service(t.to_string())
    } else {
        Target::Instance(t.to_string())
    })
}

use std::path::PathBuf;
use std::process::ExitCode;

use drover_core::deploy::{self, ServicePlan, fleet, plan::Step};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// The fleet file.
    #[arg(short, long, default_value = "fleet.toml")]
    file: PathBuf,
    /// Plan the removal of recorded services the fleet file no longer
    /// declares (what `apply --prune` does).
    #[arg(long)]
    prune: bool,
    /// Exit 0 when apply would change nothing, 2 when it would change
    /// something, 1 on any error (a refused service included), as
    /// `terraform plan -detailed-exitcode` does.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let fleet = fleet::load(&a.file)?;
    let mut store = ctx.store()?;
    let plan = deploy::plan(&mut store, &fleet, a.prune)?;
    if ctx.json {
        ctx.emit("Plan", &plan)?;
    } else {
        for p in &plan.services {
            show(p);
        }
        for o in &plan.orphans {
            let runs = o
                .release
                .map_or("no release".into(), |n| format!("release {n}"));
            let what = if o.prune {
                "would be removed (its instances drained and stopped)"
            } else {
                "not in the fleet file (apply --prune removes it)"
            };
            outln!(
                "orphan: {}: {what}; runs {runs}, {} instance(s)",
                o.service,
                o.instances
            );
        }
    }
    if !a.detailed_exitcode {
        return Ok(ExitCode::SUCCESS);
    }
    if plan.refuses() {
        // Collapsed to exit 1 with the rest of the errors (see main).
        anyhow::bail!("apply would refuse a service (see above)");
    }
    Ok(ExitCode::from(if plan.changes_anything() { 2 } else { 0 }))
}

fn show(p: &ServicePlan) {
    match p.new_release {
        None if p.rollout_changes.is_empty() => {
            outln!("{}: no change ({})", p.service, p.image_ref)
        }
        None => outln!("{}: rollout settings change ({})", p.service, p.image_ref),
        Some(n) if p.new_service => outln!(
            "{}: new service, release {n}: {} = {}",
            p.service,
            p.image_ref,
            p.image
        ),
        Some(n) => outln!(
            "{}: new release {n}: {} = {}",
            p.service,
            p.image_ref,
            p.image
        ),
    }
    for c in p.changes.iter().chain(&p.rollout_changes) {
        outln!("  {c}");
    }
    if let Some(s) = &p.out_of_sync {
        outln!(
            "  OUT OF SYNC: {}",
            s.reason.as_deref().unwrap_or("runs another release")
        );
        if !s.differences.is_empty() {
            outln!("    what differs (running -> fleet file):");
        }
        for c in &s.differences {
            outln!("      {c}");
        }
    }
    if let Some(r) = &p.pull {
        outln!("  would pull {r} (the store lacks it)");
    }
    if let Some(b) = &p.refused {
        outln!("  refused: {b}");
        return;
    }
    if !p.steps.is_empty() {
        outln!("  {} rollout:", p.strategy);
    }
    for n in &p.notes {
        outln!("  note: {n}");
    }
    for (i, s) in p.steps.iter().enumerate() {
        let what = match s {
            Step::Start { count } => format!("start {count} new instance(s)"),
            Step::Wait => "wait for the new instances to pass their health checks".into(),
            Step::Stop { ids } => format!("stop and remove {}", ids.join(", ")),
            Step::Done => "done".into(),
        };
        outln!("  {:>2}. {what}", i + 1);
    }
}

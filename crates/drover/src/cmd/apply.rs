use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use drover_core::deploy::{self, Options, fleet};
use drover_core::progress::Shared;

use super::Ctx;
use crate::progress;

#[derive(clap::Args)]
pub struct Args {
    /// The fleet file.
    #[arg(short, long, default_value = "fleet.toml")]
    file: PathBuf,
    #[command(flatten)]
    deploy: DeployFlags,
    /// Record the new releases and return; a running `drover serve` rolls
    /// them out.
    #[arg(long)]
    detach: bool,
    /// Remove recorded services the fleet file no longer declares (their
    /// instances drained and stopped; `plan` lists them as orphans).
    #[arg(long)]
    prune: bool,
}

/// The flags every command that deploys takes (`apply`, `rollback`).
#[derive(clap::Args)]
pub struct DeployFlags {
    /// Deploy a quarantined release content (image with config) anyway.
    #[arg(long)]
    force: bool,
    /// Fail at once if another deploy holds a service's lock (default: wait).
    #[arg(long)]
    no_wait: bool,
    /// Why: recorded with each new release.
    #[arg(short, long)]
    message: Option<String>,
}

impl DeployFlags {
    pub fn options(&self) -> Options {
        Options {
            force: self.force,
            no_wait: self.no_wait,
            message: self.message.clone(),
            ..Options::default()
        }
    }
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let fleet = fleet::load(&a.file)?;
    let mut store = ctx.store()?;
    let bar = Arc::new(progress::Bar::new(ctx.json));
    let opts = Options {
        detach: a.detach,
        prune: a.prune,
        progress: Shared(bar.clone()),
        ..a.deploy.options()
    };
    let reports = deploy::apply(&mut store, &fleet, &opts);
    bar.finish();
    let reports = reports?;
    let serve_runs = !a.detach || drover_core::supervisor::running(&mut store)?;
    if ctx.json {
        ctx.emit("DeployReport", &reports)?;
    } else {
        for r in &reports {
            let release = r.release.map_or("-".into(), |n| format!("release {n}"));
            let what = match (r.created, r.failed) {
                _ if r.removed => "removed (no longer in the fleet file)".into(),
                (Some(n), None) if a.detach => format!(
                    "recorded release {n}; `drover serve` rolls it out (`drover rollout status \
                     {} --watch` follows it)",
                    r.service
                ),
                (_, Some(f)) => format!("release {f} failed, rolled back; runs {release}"),
                (_, None) if r.error.is_some() => "not deployed (see the error below)".into(),
                // On a fleet: this host did its part; each host's serve
                // carries out the rest.
                (Some(n), None) if r.waiting.is_some() => format!(
                    "release {n} rolling out across the fleet's hosts, {} (`drover rollout \
                     status {} --watch` follows it)",
                    r.waiting.as_deref().unwrap_or_default(),
                    r.service
                ),
                (Some(n), None) => format!("rolled out release {n}"),
                (None, None) => format!("unchanged, runs {release}"),
            };
            outln!(
                "{}: {what} ({} started, {} stopped, {:.1} s, of which {:.1} s waiting for health checks)",
                r.service,
                r.started,
                r.stopped,
                r.seconds,
                r.health_wait_seconds
            );
        }
    }
    for w in reports.iter().flat_map(|r| &r.warnings) {
        eprintln!("drover: warning: {w}");
    }
    if !serve_runs && reports.iter().any(|r| r.created.is_some()) {
        eprintln!(
            "drover: warning: no `drover serve` runs for this store: nothing rolls the new \
             releases out until one does"
        );
    }
    deploy::outcome(&reports)?;
    Ok(ExitCode::SUCCESS)
}

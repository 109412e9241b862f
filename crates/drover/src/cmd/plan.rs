use std::path::PathBuf;
use std::process::ExitCode;

use drover_core::deploy::{self, fleet, plan::Step};

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// The fleet file.
    #[arg(short, long, default_value = "fleet.toml")]
    file: PathBuf,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let fleet = fleet::load(&a.file)?;
    let mut store = ctx.store()?;
    let plans = deploy::plan(&mut store, &fleet)?;
    if ctx.json {
        output::json(&plans)?;
        return Ok(ExitCode::SUCCESS);
    }
    for p in &plans {
        match p.new_release {
            None => println!("{}: no change ({})", p.service, p.image_ref),
            Some(n) => println!(
                "{}: new release {n}: {} = {} ({})",
                p.service,
                p.image_ref,
                p.image,
                p.changes.join("; ")
            ),
        }
        if let Some(r) = &p.pull {
            println!("  would pull {r} (the store lacks it)");
        }
        if let Some(b) = &p.blocked {
            println!("  refused: {b}");
        }
        if !p.steps.is_empty() {
            println!("  {} rollout:", p.strategy);
        }
        for n in &p.notes {
            println!("  note: {n}");
        }
        for (i, s) in p.steps.iter().enumerate() {
            let what = match s {
                Step::Start { count } => format!("start {count} new instance(s)"),
                Step::Wait => "wait for the new instances to pass their health checks".into(),
                Step::Stop { ids } => format!("stop and remove {}", ids.join(", ")),
                Step::Done => "done".into(),
            };
            println!("  {:>2}. {what}", i + 1);
        }
    }
    Ok(ExitCode::SUCCESS)
}

use std::process::ExitCode;

use super::Ctx;
use crate::output;

pub fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let report = store.verify()?;
    if ctx.json {
        output::json(&report)?;
    } else {
        for p in &report.problems {
            println!(
                "{} {} ({})",
                p.problem.to_uppercase(),
                p.digest,
                p.path.display()
            );
            println!("    {}", p.detail);
            for r in &p.referenced_by {
                println!("    used by {r}");
            }
        }
        println!(
            "checked {} blobs ({}): {}",
            report.blobs_checked,
            output::size(report.bytes_checked),
            if report.ok() {
                "all intact".to_string()
            } else {
                format!("{} problem(s)", report.problems.len())
            }
        );
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

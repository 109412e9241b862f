use std::process::ExitCode;

use drover_core::ledger::{self, Filter};

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verify: Option<Sub>,
    /// Only entries with this action (`image.build`), or a prefix (`image.*`).
    #[arg(long)]
    action: Option<String>,
    /// Only entries naming this subject (substring of a digest or name).
    #[arg(long)]
    subject: Option<String>,
    /// Only entries by this actor.
    #[arg(long)]
    actor: Option<String>,
    /// Only entries from this sequence number on.
    #[arg(long)]
    since: Option<u64>,
    /// Only the newest N entries.
    #[arg(short = 'n', long)]
    limit: Option<usize>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Check the hash chain; name the first entry that was changed, removed, inserted or reordered.
    Verify,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let db = store.db();
    if let Some(Sub::Verify) = a.verify {
        let report = ledger::verify(db.conn(), db.path())?;
        if ctx.json {
            output::json(&report)?;
        } else if let Some(p) = &report.problem {
            println!("ledger NOT valid: {p}");
        } else {
            println!(
                "ledger valid: {} entries, hash chain intact",
                report.entries
            );
        }
        return Ok(if report.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(3)
        });
    }
    let filter = Filter {
        action: a.action.clone(),
        subject: a.subject.clone(),
        actor: a.actor.clone(),
        since_seq: a.since,
        limit: a.limit,
    };
    let entries = ledger::list(db.conn(), db.path(), &filter)?;
    if ctx.json {
        output::json(&entries)?;
        return Ok(ExitCode::SUCCESS);
    }
    for e in &entries {
        let subjects: Vec<&str> = e
            .subjects
            .iter()
            .map(|s| {
                s.strip_prefix("sha256:")
                    .map_or(s.as_str(), |h| &h[..12.min(h.len())])
            })
            .collect();
        println!(
            "{:>5} {} {:<14} {:<24} {} {}",
            e.seq,
            e.time,
            e.action,
            e.actor,
            subjects.join(","),
            e.details
        );
    }
    Ok(ExitCode::SUCCESS)
}

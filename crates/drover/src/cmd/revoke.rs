use std::process::ExitCode;

use drover_core::trust::policy;

use super::Ctx;
use crate::output::Table;

#[derive(clap::Args)]
pub struct Args {
    /// The image: a digest (need not be in the store), a tag or a digest
    /// prefix; the digest is what is recorded.
    #[arg(required_unless_present = "list", conflicts_with = "list")]
    reference: Option<String>,
    /// Why (recorded with the revocation and in the ledger).
    #[arg(long, required_unless_present = "list")]
    reason: Option<String>,
    /// List the revoked images instead.
    #[arg(long)]
    list: bool,
    /// Lift the image's revocation instead (a mistaken one); ledgered with
    /// the reason, like the revocation it lifts.
    #[arg(long, requires = "reference")]
    lift: bool,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let (Some(reference), Some(reason)) = (&a.reference, &a.reason) else {
        let db = store.db();
        let all = db.read().revocations()?;
        if ctx.json {
            ctx.emit("Revocation", &all)?;
        } else if all.is_empty() {
            outln!("no revoked images");
        } else {
            let mut t = Table::new(&["DIGEST", "REVOKED", "BY", "REASON"]);
            for r in &all {
                t.row(vec![
                    r.digest.to_string(),
                    r.time.clone(),
                    r.actor.clone(),
                    r.reason.clone(),
                ]);
            }
            t.print();
        }
        return Ok(ExitCode::SUCCESS);
    };
    if a.lift {
        let r = policy::unrevoke(&mut store, reference, reason)?;
        if ctx.json {
            ctx.emit("Revocation", &r)?;
        } else {
            eprintln!(
                "lifted the revocation of {} ({}: {})",
                r.digest, r.time, r.reason
            );
            outln!("{}", r.digest);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (r, new) = policy::revoke(&mut store, reference, reason)?;
    if ctx.json {
        ctx.emit("Revocation", &r)?;
    } else {
        if new {
            eprintln!(
                "revoked {}: it is refused by run, apply, rollback and build FROM it; \
                 `drover status` flags its instances",
                r.digest
            );
        } else {
            eprintln!(
                "{} was already revoked ({}): {}",
                r.digest, r.time, r.reason
            );
        }
        outln!("{}", r.digest);
    }
    Ok(ExitCode::SUCCESS)
}

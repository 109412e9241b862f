use std::path::PathBuf;
use std::process::ExitCode;

use drover_core::Error;
use drover_core::trust::signature;

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// Check this image's signatures instead of re-hashing the store.
    reference: Option<String>,
    /// Public key(s) to trust (repeatable); the policy's trusted keys when omitted.
    #[arg(long, value_name = "FILE", requires = "reference")]
    key: Vec<PathBuf>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    match &a.reference {
        Some(r) => image(ctx, r, &a.key),
        None => store(ctx),
    }
}

/// `drover verify REF --key PUB`: succeed when a trusted key signed the
/// image (signatures that fail to verify are listed, but only decide when
/// there is no good one), else fail with a check failure (exit 3).
fn image(ctx: &Ctx, reference: &str, keys: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let keys = ctx.trusted_keys(keys)?;
    let image = store.resolve(reference)?;
    let check = signature::check(&store, &image.digest, &keys)?;
    let problem = check.problem();
    if ctx.json {
        ctx.emit("SignatureCheck", &serde_json::json!({
            "image": image.digest,
            "verified": problem.is_none(),
            "valid": check.valid.iter().map(|(d, k)| serde_json::json!({"signature": d, "keyid": k.keyid()})).collect::<Vec<_>>(),
            "invalid": check.invalid.iter().map(|(d, f)| serde_json::json!({"signature": d, "problem": f.to_string()})).collect::<Vec<_>>(),
            "other_signatures": check.other,
            "problem": problem,
        }))?;
    } else {
        for (d, k) in &check.valid {
            outln!("signature {} by key {}: valid", d.short(), &k.keyid()[..12]);
        }
        for (d, f) in &check.invalid {
            outln!("signature {}: NOT valid: {f}", d.short());
        }
        match &problem {
            None => outln!("{}: verified", image.digest),
            Some(p) => outln!("{}: NOT verified: {p}", image.digest),
        }
    }
    match problem {
        None => Ok(ExitCode::SUCCESS),
        Some(p) => Err(Error::Check(format!("image {} is not verified: {p}", image.digest)).into()),
    }
}

fn store(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let report = store.verify()?;
    let tags = store.verify_tags()?;
    if ctx.json {
        let mut v = serde_json::to_value(&report)?;
        v["tag_problems"] = serde_json::to_value(&tags)?;
        ctx.emit("StoreVerification", &v)?;
    } else {
        for p in &report.problems {
            outln!(
                "{} {} ({})",
                p.problem.to_uppercase(),
                p.digest,
                p.path.display()
            );
            outln!("    {}", p.detail);
            for r in &p.referenced_by {
                outln!("    used by {r}");
            }
        }
        for t in &tags {
            outln!("TAG {t}");
        }
        outln!(
            "checked {} blobs ({}): {}",
            report.blobs_checked,
            output::size(report.bytes_checked),
            if report.ok() {
                "all intact".to_string()
            } else {
                format!("{} problem(s)", report.problems.len())
            }
        );
        if tags.is_empty() {
            outln!("tags: all as the ledger records them");
        }
    }
    if !report.ok() {
        return Err(Error::corrupt(
            "store",
            format!("{} problem(s) among its blobs", report.problems.len()),
        )
        .into());
    }
    if let Some(t) = tags.first() {
        return Err(Error::corrupt(
            format!("tag {}", t.tag),
            format!("{t}; {} tag(s) differ from the ledger", tags.len()),
        )
        .into());
    }
    Ok(ExitCode::SUCCESS)
}

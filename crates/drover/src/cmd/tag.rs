use std::process::ExitCode;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// The image: name:tag, a digest, or a unique digest prefix.
    reference: String,
    /// The new name:tag.
    name: String,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let desc = store.tag(&a.reference, &a.name)?;
    if ctx.json {
        ctx.emit(
            "Tag",
            &serde_json::json!({ "name": a.name, "digest": desc.digest }),
        )?;
    } else {
        outln!("{}", desc.digest);
    }
    Ok(ExitCode::SUCCESS)
}

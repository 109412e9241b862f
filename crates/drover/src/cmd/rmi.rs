use std::process::ExitCode;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// Tags to remove; a digest removes every tag of that image.
    #[arg(required = true)]
    references: Vec<String>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let mut untagged = Vec::new();
    for r in &a.references {
        for name in store.untag(r)? {
            if !ctx.json {
                outln!("untagged {name}");
            }
            untagged.push(serde_json::json!({ "name": name }));
        }
    }
    if ctx.json {
        ctx.emit("Untagged", &untagged)?;
    }
    Ok(ExitCode::SUCCESS)
}

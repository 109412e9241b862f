use std::process::ExitCode;

use drover_core::store::baseline::{self, FileKind};

use super::Ctx;
use crate::output::Table;

#[derive(clap::Args)]
pub struct Args {
    /// The image: name:tag, a digest, or a unique digest prefix.
    reference: String,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let desc = store.resolve(&a.reference)?;
    let b = baseline::of_image(&store, &desc.digest)?;
    if ctx.json {
        ctx.emit("Baseline", &b)?;
        return Ok(ExitCode::SUCCESS);
    }
    // `ls -l`-like: no header, columns as wide as the data.
    let mut t = Table::new(&["KIND", "MODE", "OWNER", "SIZE", "SHA256", "PATH"])
        .right("SIZE")
        .without_headers();
    for f in &b.files {
        let kind = match f.kind {
            FileKind::File => '-',
            FileKind::Dir => 'd',
            FileKind::Symlink => 'l',
            FileKind::Hardlink => 'h',
        };
        let hash = f
            .sha256
            .map(|d| d.hex()[..16].to_string())
            .unwrap_or_else(|| "-".repeat(16));
        let link = f
            .link
            .as_ref()
            .map(|l| format!(" -> {l}"))
            .unwrap_or_default();
        t.row(vec![
            kind.to_string(),
            format!("{:04o}", f.mode),
            format!("{}:{}", f.uid, f.gid),
            f.size.to_string(),
            hash,
            format!("{}{link}", f.path),
        ]);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}

use std::path::PathBuf;
use std::process::ExitCode;

use drover_core::builder::{self, lock::Lock, packages::locking::Update, packages::repo::Online};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// The image definition; the lock is written beside it.
    #[arg(short = 'f', long = "file", default_value = "drover.toml")]
    file: PathBuf,
    /// Resolve again: every package, or only those named (and what they
    /// newly need); the rest keep their locked versions.
    #[arg(long, value_name = "PKG", num_args = 0..)]
    update: Option<Vec<String>>,
    /// Use only the package cache: no network.
    #[arg(long)]
    offline: bool,
    /// Exit 1 if the lock is missing or would change, and write nothing (for CI).
    #[arg(long, conflicts_with = "update")]
    check: bool,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let def = builder::def::load(&a.file)?;
    let store = ctx.store()?;
    let path = builder::lock::path_for(&a.file);
    let previous = Lock::read(&path)?;
    let update = match &a.update {
        None => Update::Nothing,
        Some(names) if names.is_empty() => Update::All,
        Some(names) => Update::Only(names.clone()),
    };
    let online = if a.offline { Online::No } else { Online::Auto };
    let locked = builder::packages::locking::lock(
        &store,
        &def,
        builder::host_arch(),
        previous.as_ref(),
        &update,
        online,
    )?;
    let same = previous.as_ref() == Some(&locked.lock);
    if !a.check && !same {
        locked.lock.write(&path)?;
    }
    if ctx.json {
        ctx.emit("LockResult", &serde_json::json!({
            "lock": path.display().to_string(),
            "changed": !same,
            "written": !a.check && !same,
            "changes": locked.changes.iter().map(|(i, c)| serde_json::json!({"layer": i, "changes": c})).collect::<Vec<_>>(),
            "notes": locked.notes,
            "packages": locked.lock.layers.iter().map(|l| l.packages.len()).sum::<usize>(),
        }))?;
    } else {
        for n in &locked.notes {
            eprintln!("note: {n}");
        }
        for (i, changes) in &locked.changes {
            for c in changes {
                eprintln!("layer[{i}]: {c}");
            }
        }
        let count: usize = locked.lock.layers.iter().map(|l| l.packages.len()).sum();
        match (same, a.check) {
            (true, _) => eprintln!("{} is up to date ({count} packages)", path.display()),
            (false, true) => eprintln!("{} would change (run `drover lock`)", path.display()),
            (false, false) => eprintln!("wrote {} ({count} packages)", path.display()),
        }
    }
    Ok(if a.check && !same {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

//! `drover man --dir DIR`: man pages (drover.1 and one per subcommand,
//! drover-run.1, …), generated from the command line's own definition
//! (clap_mangen).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the pages (made if missing), e.g. /usr/local/share/man/man1.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("create the man page directory {}", a.dir.display()))?;
    clap_mangen::generate_to(crate::Cli::command(), &a.dir)
        .with_context(|| format!("write man pages to {}", a.dir.display()))?;
    let n = std::fs::read_dir(&a.dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
                .count()
        })
        .unwrap_or(0);
    eprintln!("drover: {n} man pages in {}", a.dir.display());
    Ok(ExitCode::SUCCESS)
}

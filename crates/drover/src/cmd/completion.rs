//! `drover completion SHELL`: the shell completion script, generated from
//! the command line's own definition (clap_complete).

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// bash, zsh, fish (also elvish, powershell).
    shell: Shell,
}

pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut visible(), "drover", &mut script);
    // `drover completion bash | head` is no error.
    match std::io::stdout().lock().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// drover's command line without its hidden subcommands (`__monitor`,
/// `__proxy`): nobody types those.
fn visible() -> clap::Command {
    let full = crate::Cli::command();
    let mut cmd = clap::Command::new("drover")
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    cmd.version(env!("CARGO_PKG_VERSION"))
}

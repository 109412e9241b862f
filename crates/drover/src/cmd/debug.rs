//! `drover debug`: an ephemeral instance mirroring a running one
//! (`instance::debug`), attached to this terminal, removed afterwards.

use std::io::IsTerminal;
use std::process::ExitCode;

use drover_core::instance::{Exit, debug};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// The instance to mirror: id, unique id prefix or name.
    instance: String,
    /// The command (default: /bin/sh, if the image has it).
    #[arg(last = true)]
    command: Vec<String>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let tty = std::io::stdin().is_terminal();
    if tty {
        eprintln!(
            "drover: debug session mirroring {} (volumes read-only; removed on exit)",
            a.instance
        );
    }
    let command = (!a.command.is_empty()).then(|| a.command.clone());
    let s = debug::run(&mut store, &a.instance, command)?;
    if tty {
        eprintln!("drover: debug session {} ended ({})", s.id, s.exit);
    }
    Ok(match s.exit {
        Exit::Code(c) => ExitCode::from(c.clamp(0, 255) as u8),
        Exit::Signal(n) => ExitCode::from((128 + n).clamp(0, 255) as u8),
        Exit::Unknown => ExitCode::FAILURE,
    })
}

//! `drover exec`: refused, with the reason and the alternative (`debug`).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// INSTANCE [CMD …], with any of docker's exec flags: refused all the same.
    #[arg(
        value_name = "INSTANCE [CMD]",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    let id = a
        .args
        .iter()
        .find(|s| !s.starts_with('-'))
        .map_or("INSTANCE", String::as_str);
    Err(drover_core::Error::Usage(format!(
        "drover has no exec: instances are immutable, and a shell inside {id} could change it \
         with nothing recording what changed (drift would then condemn and replace it). To \
         look inside, run `drover debug {id}` (a shell) or `drover debug {id} -- CMD …`: an \
         ephemeral instance of the same image, environment and network with its volumes \
         mounted read-only, ledgered, and removed when it exits"
    ))
    .into())
}

use std::process::ExitCode;
use std::time::Duration;

use drover_core::deploy::sync::{self, RolloutStatus};
use drover_core::grammar;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// How a service's rollout is doing: exit 0 when its release is
    /// healthy, 1 when it failed (as `apply` does), 5 while it still rolls.
    Status(StatusArgs),
}

#[derive(clap::Args)]
struct StatusArgs {
    /// The service.
    service: String,
    /// The release to follow (default: the service's newest, the rollout
    /// `apply --detach` or `rollback` started last).
    #[arg(long)]
    release: Option<i64>,
    /// Wait until it is healthy or failed, then exit as `apply` would.
    #[arg(long)]
    watch: bool,
    /// With --watch: give up after this long (exit 5), e.g. "5m".
    #[arg(long, value_parser = duration)]
    timeout: Option<Duration>,
}

fn duration(s: &str) -> Result<Duration, String> {
    grammar::duration_ms(s).map(Duration::from_millis)
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let Command::Status(a) = &a.command;
    let store = ctx.store()?;
    let show = |s: &RolloutStatus| {
        if !ctx.json {
            say(s)
        }
    };
    let status = if a.watch {
        sync::watch(store.db(), &a.service, a.release, a.timeout, show)?
    } else {
        let s = sync::rollout(store.db().read(), &a.service, a.release)?;
        show(&s);
        s
    };
    if ctx.json {
        ctx.emit("RolloutStatus", &status)?;
    }
    status.result()?;
    Ok(ExitCode::SUCCESS)
}

fn say(s: &RolloutStatus) {
    let state = serde_json::to_value(s.state).unwrap_or_default();
    let state = state.as_str().unwrap_or("");
    match &s.reason {
        Some(why) => outln!("{}: release {} {state}: {why}", s.service, s.release),
        None => outln!("{}: release {} {state}", s.service, s.release),
    }
}

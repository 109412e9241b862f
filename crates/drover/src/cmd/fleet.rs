//! `drover fleet`: settings every host of a fleet shares, kept in the state
//! database (`fleet registry set|show|unset`). The fleet's deploy policy is
//! `drover policy set`.

use std::process::ExitCode;

use drover_core::fleet;
use serde::Serialize;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    sub: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// The registry every host pulls a release's image from, by digest,
    /// when its own store does not have it (checked against the fleet's
    /// policy): `set`, `show` or `unset`.
    Registry {
        #[command(subcommand)]
        sub: RegistrySub,
    },
    /// Make sure this host's store holds an image: if not, pull it by
    /// digest from the fleet's registry (with its signatures and
    /// provenance) and check it against the policy, as a host does for a
    /// release it is to run. Exit 6 when the policy refuses it.
    Fetch {
        /// The image manifest's digest (sha256:…).
        digest: String,
    },
}

#[derive(clap::Subcommand)]
enum RegistrySub {
    /// Set it: [http://]<registry>/<repository>, e.g.
    /// registry.example.com/fleet (`http://` for a plain-HTTP loopback
    /// registry). Push images there (`drover push`) to make them
    /// available to the fleet. Recorded in the ledger (`fleet.registry`).
    Set { registry: String },
    /// Print it, with who set it and when (exit 1 when none is set).
    Show,
    /// Clear it: hosts then run only what their own stores hold.
    Unset,
}

#[derive(Serialize)]
struct Registry {
    registry: Option<String>,
    updated: Option<String>,
    actor: Option<String>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let sub = match &a.sub {
        Sub::Registry { sub } => sub,
        Sub::Fetch { digest } => return fetch(ctx, digest),
    };
    let mut store = ctx.store()?;
    match sub {
        RegistrySub::Set { registry } => {
            let changed = fleet::set_registry(&mut store, Some(registry))?;
            let now = fleet::registry(&store)?.expect("just set");
            if !ctx.json {
                match changed {
                    true => outln!("the fleet's registry is {now}"),
                    false => outln!("the fleet's registry was already {now}"),
                }
                return Ok(ExitCode::SUCCESS);
            }
        }
        RegistrySub::Unset => {
            let changed = fleet::set_registry(&mut store, None)?;
            if !ctx.json {
                match changed {
                    true => outln!("the fleet has no registry now"),
                    false => outln!("the fleet had no registry"),
                }
                return Ok(ExitCode::SUCCESS);
            }
        }
        RegistrySub::Show => {}
    }
    let set = store
        .db()
        .read()
        .fleet_setting(drover_core::state::fleet::REGISTRY)?;
    if ctx.json {
        ctx.emit(
            "FleetRegistry",
            &Registry {
                registry: set.as_ref().map(|s| s.value.clone()),
                updated: set.as_ref().map(|s| s.updated.clone()),
                actor: set.as_ref().map(|s| s.actor.clone()),
            },
        )?;
    }
    match set {
        Some(s) => {
            if !ctx.json {
                outln!("{} (set {} by {})", s.value, s.updated, s.actor);
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            if !ctx.json {
                outln!(
                    "no fleet registry is set (`drover fleet registry set <registry>/<repository>`)"
                );
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn fetch(ctx: &Ctx, digest: &str) -> anyhow::Result<ExitCode> {
    let digest: drover_core::Digest = digest.parse().map_err(|e| {
        drover_core::Error::Usage(format!("{digest:?} is not an image digest: {e}"))
    })?;
    let mut store = ctx.store()?;
    let had = store.has_blob(&digest);
    fleet::fetch_image(&mut store, &digest)?;
    if !ctx.json {
        match had {
            true => outln!("{digest} is already in this host's store"),
            false => outln!("{digest} pulled from the fleet's registry and admitted"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

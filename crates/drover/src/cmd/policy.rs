use std::process::ExitCode;

use drover_core::store::registry::Remote;
use drover_core::trust::policy::{self, Origin, Verdict};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    sub: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Print the effective policy (as a policy.toml) and where it came from.
    Show,
    /// Evaluate an image against the policy without deploying it: exit 0
    /// when allowed, 6 naming the rule that refuses it.
    Check {
        /// A tag, digest or digest prefix in the store, or
        /// <registry>/<repository>@sha256:… as a fleet file names it.
        reference: String,
    },
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let policy = policy::load(store.root())?;
    let reference = match &a.sub {
        Sub::Show => {
            if ctx.json {
                ctx.emit("Policy", &policy)?;
            } else {
                out!("{}", policy.to_toml());
            }
            return Ok(ExitCode::SUCCESS);
        }
        Sub::Check { reference } => reference,
    };
    let remote = Remote::is_remote(reference)
        .then(|| Remote::parse(reference))
        .transpose()?;
    let origin = match &remote {
        Some(r) => Origin::Registry(&r.registry),
        None => Origin::Local,
    };
    let verdict = match (&remote, policy.registry_problem(origin)) {
        // Refused before anything would be pulled.
        (Some(_), Some(reason)) => Verdict::Refused(policy::Refusal {
            image: reference.clone(),
            rule: "allowed_registries",
            reason,
        }),
        _ => {
            let image = store.resolve(reference)?.digest;
            policy.evaluate(&store, &image, origin)?
        }
    };
    if ctx.json {
        ctx.emit("PolicyVerdict", &verdict)?;
    }
    match verdict {
        Verdict::Allowed { passed } => {
            if !ctx.json {
                for (rule, how) in &passed {
                    outln!("{rule}: {how}");
                }
                outln!("allowed by {}", policy.source);
            }
            Ok(ExitCode::SUCCESS)
        }
        // Exit 6, from the error's kind, as for any refusal.
        Verdict::Refused(r) => Err(drover_core::Error::Refused {
            image: r.image,
            rule: r.rule.to_string(),
            reason: r.reason,
        }
        .into()),
    }
}

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use drover_core::keys::PublicKey;

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
    /// Trust a signing key (e.g. the CI builder's) for image signatures and
    /// provenance on every host of the fleet, in addition to policy.toml's
    /// trusted_keys. Recorded in the ledger (`key.trust`) with who did it.
    Trust {
        /// The public key file (PEM, as `drover key generate` writes).
        key: PathBuf,
        /// Whose key it is, shown by `policy show`.
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop trusting a key `policy trust` added (`key.untrust`).
    Untrust {
        /// Its key id, or a unique prefix of at least 8 hex digits.
        keyid: String,
    },
    /// Make FILE (a policy.toml) the fleet's policy: stored in the state
    /// database, it applies on every host sharing it and wins over a
    /// store's own policy.toml. Checked first; recorded (`policy.set`).
    Set {
        /// The policy file (`-` for standard input).
        file: PathBuf,
    },
    /// Drop the fleet's policy (`policy.unset`): each store goes by its
    /// own policy.toml (or the default) again.
    Unset,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    match &a.sub {
        Sub::Trust { key, name } => return trust(ctx, key, name.as_deref()),
        Sub::Untrust { keyid } => return untrust(ctx, keyid),
        Sub::Set { file } => return set(ctx, Some(file)),
        Sub::Unset => return set(ctx, None),
        _ => {}
    }
    let store = ctx.store()?;
    let policy = policy::load_for(&store)?;
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
        Sub::Trust { .. } | Sub::Untrust { .. } | Sub::Set { .. } | Sub::Unset => {
            unreachable!("handled above")
        }
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

fn trust(ctx: &Ctx, file: &Path, name: Option<&str>) -> anyhow::Result<ExitCode> {
    let key = PublicKey::load(file)?;
    let mut store = ctx.store()?;
    let added = store.db_mut().trust_key(&key, name)?;
    if ctx.json {
        let all = store.db().read().trusted_keys(false)?;
        ctx.emit("TrustedKey", &all.iter().find(|k| k.keyid == key.keyid()))?;
    } else if added {
        outln!(
            "trusted key {} for the whole fleet: images signed by it pass require_signature \
             (and require_provenance, for provenance it signs)",
            key.keyid()
        );
    } else {
        outln!("key {} was already trusted", key.keyid());
    }
    Ok(ExitCode::SUCCESS)
}

fn untrust(ctx: &Ctx, keyid: &str) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let full = store.db_mut().untrust_key(keyid)?;
    if ctx.json {
        let all = store.db().read().trusted_keys(true)?;
        ctx.emit("TrustedKey", &all.iter().find(|k| k.keyid == full))?;
    } else {
        outln!("key {full} is no longer trusted");
    }
    Ok(ExitCode::SUCCESS)
}

fn set(ctx: &Ctx, file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let text = match file {
        Some(f) if f == Path::new("-") => Some(std::io::read_to_string(std::io::stdin())?),
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read policy file {}: {e}", f.display()))?,
        ),
        None => None,
    };
    let mut store = ctx.store()?;
    let shown = file.unwrap_or(Path::new("-"));
    let changed = policy::set_fleet(&mut store, text.as_deref(), shown)?;
    let now = policy::load_for(&store)?;
    if ctx.json {
        ctx.emit("Policy", &now)?;
    } else if !changed {
        outln!("unchanged: the policy is {}", now.source);
    } else {
        outln!("the policy is now {}", now.source);
    }
    Ok(ExitCode::SUCCESS)
}

use std::path::PathBuf;
use std::process::ExitCode;

use drover_core::trace::{self, Link};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// An instance (id, prefix or name), a release (`service@N`) or an image (tag or digest).
    target: String,
    /// Public key(s) whose signatures count (repeatable); the policy's trusted keys when omitted.
    #[arg(long, value_name = "FILE")]
    key: Vec<PathBuf>,
}

/// Print the chain as a tree; fail with a check failure (exit 3) unless
/// every link holds.
pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let root = link(&store, &a.target, ctx.trusted_keys(&a.key)?)?;
    if ctx.json {
        // The chain's links have kinds of their own (`instance`, `image`):
        // the document holds the first link as `root`.
        ctx.emit("Trace", &serde_json::json!({ "root": root }))?;
    } else {
        print_link(&root, "", "");
        outln!(
            "{}",
            if root.all_ok() {
                "trace: every link verified"
            } else {
                "trace: NOT every link holds (see FAIL above)"
            }
        );
    }
    if !root.all_ok() {
        return Err(drover_core::Error::Check(format!(
            "trace of {}: not every link holds",
            a.target
        ))
        .into());
    }
    Ok(ExitCode::SUCCESS)
}

/// The trace of `target` (an instance, service, image…), checked against
/// `keys` and the policy's trusted builders: what `trace` prints and the
/// HTTP API returns.
pub fn link(
    store: &drover_core::store::Store,
    target: &str,
    keys: Vec<drover_core::keys::PublicKey>,
) -> anyhow::Result<Link> {
    let trust = trace::Trust {
        keys,
        builders: drover_core::trust::policy::load_for(store)?.trusted_builders,
    };
    Ok(trace::trace(store, target, &trust)?)
}

fn print_link(l: &Link, first: &str, rest: &str) {
    let mark = if l.ok { "ok" } else { "FAIL" };
    outln!("{first}{} {} [{mark}]", l.kind, l.name);
    let bar = if l.children.is_empty() { "  " } else { "│ " };
    for (k, v) in &l.facts {
        outln!("{rest}{bar}  {k}: {v}");
    }
    if let Some(p) = &l.problem {
        outln!("{rest}{bar}  problem: {p}");
    }
    for (i, c) in l.children.iter().enumerate() {
        let last = i + 1 == l.children.len();
        let (f, r) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        print_link(c, &format!("{rest}{f}"), &format!("{rest}{r}"));
    }
}

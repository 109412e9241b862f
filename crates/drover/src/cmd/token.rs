//! `drover token`: API tokens for the coming HTTP API — create (the secret
//! is printed once), list (never a secret), revoke. `drover_core::tokens`
//! keeps only each secret's hash and ledgers every change.

use std::process::ExitCode;

use drover_core::clock;
use drover_core::tokens::{self, Role};

use super::Ctx;
use crate::output::Table;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    sub: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Make a token and print its secret (shown this once; only its hash
    /// is kept).
    Create {
        /// Its name (letters, digits, '.', '_', '-'): who or what uses it,
        /// e.g. `ci` or `chatops`. Names are never reused.
        name: String,
        /// What it may do: read (everything shown), deploy (also apply and
        /// roll back), admin (also revoke and manage tokens).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// It stops working this long after now ("30d", "12h"); never,
        /// when not given.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires: Option<u64>,
    },
    /// List tokens: name, role, status, when made and by whom, expiry.
    /// Never the secrets.
    #[command(alias = "ls")]
    List,
    /// Revoke a token: refused from now on. Ledgered.
    Revoke { name: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: drover_core::Error| e.to_string())
}

/// A duration, days included (`30d`, `1d12h`, `2h`), in milliseconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    match crate::timearg::duration_ms(s.trim()) {
        Ok(ms) if ms > 0 => Ok(ms as u64),
        _ => Err(format!(
            "{s:?} is not a duration longer than zero (e.g. 30d, 12h, 1d12h)"
        )),
    }
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    match &a.sub {
        Sub::Create {
            name,
            role,
            expires,
        } => {
            let made = tokens::create(store.db_mut(), name, *role, *expires)?;
            if ctx.json {
                ctx.emit("Token", &made)?;
            } else {
                let until = made
                    .token
                    .expires
                    .as_deref()
                    .map_or(String::new(), |e| format!(", until {e}"));
                eprintln!(
                    "created token {} (role {}{until}); its secret follows, shown this once: \
                     keep it where its user can read it",
                    made.token.name, made.token.role
                );
                outln!("{}", made.secret);
            }
        }
        Sub::List => {
            let all = tokens::list(store.db().read())?;
            let now = clock::now_rfc3339();
            if ctx.json {
                ctx.emit("Token", &all)?;
            } else if all.is_empty() {
                outln!("no tokens (`drover token create NAME --role read` makes one)");
            } else {
                let mut t = Table::new(&["NAME", "ROLE", "STATUS", "CREATED", "BY", "EXPIRES"]);
                for tok in &all {
                    t.row(vec![
                        tok.name.clone(),
                        tok.role.to_string(),
                        tok.status(&now).to_string(),
                        tok.created.clone(),
                        tok.creator.clone(),
                        tok.expires.clone().unwrap_or_else(|| "never".into()),
                    ]);
                }
                t.print();
            }
        }
        Sub::Revoke { name } => {
            let tok = tokens::revoke(store.db_mut(), name)?;
            if ctx.json {
                ctx.emit("Token", &tok)?;
            } else {
                outln!(
                    "revoked token {} ({})",
                    tok.name,
                    tok.revoked.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

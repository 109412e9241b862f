use std::process::ExitCode;

use drover_core::deploy::release;

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    /// The service.
    service: String,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let store = ctx.store()?;
    let db = store.db();
    // Secret env values are never shown.
    let list: Vec<release::Release> = release::releases(db.read(), &a.service)?
        .into_iter()
        .map(|mut r| {
            r.config = r.config.masked();
            r
        })
        .collect();
    let current = release::service(db.read(), &a.service)?
        .ok_or_else(|| drover_core::Error::NotFound {
            what: format!("service {}", a.service),
            hint: Some("`drover status` lists services".into()),
        })?
        .desired;
    if ctx.json {
        output::json(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>3}  {:<8} {:<14} {:<14} {:<24} {:<18} MESSAGE",
        "#", "OUTCOME", "IMAGE", "CONFIG", "CREATED", "AUTHOR"
    );
    for r in &list {
        let mark = if Some(r.number) == current { "*" } else { " " };
        let mut message = r.message.clone();
        if let Some(n) = r.rollback_of {
            message = format!("{message} (content of release {n})");
        }
        if let Some(why) = &r.reason {
            message = format!("{message} — {why}");
        }
        let outcome = match &r.unstable {
            Some(why) => {
                message = format!("{message} — rolled back later: {why}");
                "unstable"
            }
            None => r.outcome.as_str(),
        };
        println!(
            "{:>3}{mark} {:<8} {:<14} {:<14} {:<24} {:<18} {message}",
            r.number,
            outcome,
            r.image.short(),
            r.config_digest.short(),
            r.created,
            r.author
        );
    }
    Ok(ExitCode::SUCCESS)
}

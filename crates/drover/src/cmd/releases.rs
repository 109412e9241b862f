//! `drover releases [SERVICE]`: a service's releases (every service's when
//! none is named), newest last; `-q` prints the numbers, `--filter` narrows.

use std::process::ExitCode;

use drover_core::deploy::release;

use super::Ctx;
use crate::filter::{self, Filter};
use crate::output::{Table, color};

#[derive(clap::Args)]
pub struct Args {
    /// The service (default: every service).
    service: Option<String>,
    /// Only the release numbers, one per line (SERVICE#N without a SERVICE).
    #[arg(short, long)]
    quiet: bool,
    /// Only releases matching KEY=VALUE (repeatable, all must match):
    /// outcome (succeeded, failed, unstable, …), service.
    #[arg(long, value_name = "KEY=VALUE", value_parser = filter::parse)]
    filter: Vec<Filter>,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    filter::check(&a.filter, "releases", &["outcome", "service"])?;
    let store = ctx.store()?;
    let (mut list, current) = releases(&store, a.service.as_deref())?;
    list.retain(|r| {
        a.filter.iter().all(|f| match f.key.as_str() {
            "outcome" => outcome(r) == f.value,
            _ => r.service == f.value,
        })
    });
    if a.quiet {
        for r in &list {
            match &a.service {
                Some(_) => outln!("{}", r.number),
                None => outln!("{}#{}", r.service, r.number),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if ctx.json {
        ctx.emit("Release", &list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut headers = vec![
        "#", "OUTCOME", "IMAGE", "CONFIG", "CREATED", "AUTHOR", "MESSAGE",
    ];
    if a.service.is_none() {
        headers.insert(0, "SERVICE");
    }
    let mut t = Table::new(&headers).right("#");
    for r in &list {
        let is_current = current.contains(&(r.service.clone(), Some(r.number)));
        let mut message = r.message.clone();
        if let Some(n) = r.rollback_of {
            message = format!("{message} (content of release {n})");
        }
        if let Some(why) = &r.reason {
            message = format!("{message} — {why}");
        }
        if let Some(why) = &r.unstable {
            message = format!("{message} — rolled back later: {why}");
        }
        let (image, config) = if ctx.wide() {
            (r.image.to_string(), r.config_digest.to_string())
        } else {
            (r.image.short(), r.config_digest.short())
        };
        let mut row = vec![
            format!("{}{}", r.number, if is_current { "*" } else { " " }),
            color::state(outcome(r)),
            image,
            config,
            r.created.clone(),
            r.author.clone(),
            message,
        ];
        if a.service.is_none() {
            row.insert(0, r.service.clone());
        }
        t.row(row);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}

/// The outcome as shown: `unstable` when a healthy release was rolled back
/// later.
/// The releases of `service` (or of every service), secret env values
/// masked, as `releases --json` and the HTTP API show them; and each
/// service's desired release.
#[allow(clippy::type_complexity)]
pub fn releases(
    store: &drover_core::store::Store,
    service: Option<&str>,
) -> anyhow::Result<(Vec<release::Release>, Vec<(String, Option<i64>)>)> {
    let db = store.db();
    let services = match service {
        Some(name) => vec![release::service(db.read(), name)?.ok_or_else(|| {
            drover_core::Error::NotFound {
                what: format!("service {name}"),
                hint: Some("`drover status` lists services".into()),
            }
        })?],
        None => release::services(db.read())?,
    };
    let mut list = Vec::new();
    let mut current = Vec::new();
    for s in &services {
        current.push((s.name.clone(), s.desired));
        // Secret env values are never shown.
        list.extend(
            release::releases(db.read(), &s.name)?
                .into_iter()
                .map(|mut r| {
                    r.config = r.config.masked();
                    r
                }),
        );
    }
    Ok((list, current))
}

fn outcome(r: &release::Release) -> &str {
    match &r.unstable {
        Some(_) => "unstable",
        None => r.outcome.as_str(),
    }
}

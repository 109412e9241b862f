use std::process::ExitCode;

use drover_core::deploy;

use super::Ctx;
use crate::output;

pub fn run(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut store = ctx.store()?;
    let services = deploy::status(&mut store)?;
    if ctx.json {
        output::json(&services)?;
        return Ok(ExitCode::SUCCESS);
    }
    if services.is_empty() {
        println!("no services (deploy some with `drover apply -f fleet.toml`)");
    }
    for s in &services {
        let image = s.image.map_or("-".into(), |d| d.to_string());
        let outcome = s.outcome.map_or("", |o| o.as_str());
        println!(
            "{}  release {} ({outcome})  {}/{} ready  {}  {image}",
            s.name,
            s.release.map_or("-".into(), |n| n.to_string()),
            s.ready,
            s.replicas,
            s.strategy
        );
        let h = &s.health;
        if let Some(until) = h
            .backoff_until
            .filter(|t| *t > drover_core::clock::now_ms())
        {
            println!(
                "  backing off: next pass in {:.1} s after {} failure(s) in a row: {}",
                (until - drover_core::clock::now_ms()) as f64 / 1000.0,
                h.failures,
                h.last_error.as_deref().unwrap_or("")
            );
        } else if let Some(e) = &h.last_error
            && h.failures > 0
        {
            println!("  last pass: {e}");
        }
        if h.restarts > 0 {
            println!("  restarts: {} (crashed instances replaced)", h.restarts);
        }
        for p in &s.ports_held_elsewhere {
            println!("  NO TRAFFIC: {p} (remove one: `drover service rm`)");
        }
        if let Some(why) = &s.revoked {
            println!("  REVOKED: release image revoked: {why}");
        }
        if let Some(why) = s.sync.reason.as_deref().filter(|_| !s.sync.in_sync()) {
            println!("  OUT OF SYNC: {why}");
            if !s.sync.differences.is_empty() {
                println!("    what differs (running -> fleet file):");
            }
            for c in &s.sync.differences {
                println!("      {c}");
            }
        }
        for q in &s.quarantined {
            println!(
                "  quarantined: image {} with config {} (release {}: {})",
                q.image.short(),
                q.config_digest.short(),
                q.release,
                q.reason
            );
        }
        for i in &s.instances {
            let health = match i.healthy {
                Some(true) => "healthy",
                Some(false) => "unhealthy",
                None => "-",
            };
            let traffic = if i.draining {
                "draining"
            } else if i.ready {
                "in traffic"
            } else {
                "-"
            };
            println!(
                "  {}  release {:<3} {:<9} {:<9} {:<10} pid {:<7} port {:<5} {}",
                i.id,
                i.release.map_or("-".into(), |n| n.to_string()),
                i.state.as_str(),
                health,
                traffic,
                i.pid.map_or("-".into(), |p| p.to_string()),
                i.port.map_or("-".into(), |p| p.to_string()),
                i.image
            );
            if let Some(why) = &i.condemned {
                println!("    being replaced: {why}");
            }
            if let Some(why) = &i.revoked {
                println!("    REVOKED: {why}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

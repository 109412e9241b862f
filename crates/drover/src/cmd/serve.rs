//! `drover serve`: parse the arguments, take the store's serve lock, start
//! drover-core's supervisor threads (reconcilers, traffic, drift) with the
//! proxies of drover-proxy on a tokio runtime, and print what they say until
//! SIGTERM or SIGINT. Stopping serve stops nothing that runs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use drover_core::deploy::spec::ProxyMode;
use drover_core::drift::Budget;
use drover_core::grammar;
use drover_core::reconcile;
use drover_core::store::Store;
use drover_core::supervisor::{self, Backend, Listen, Say};
use drover_proxy::Mode;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// Address the services' proxies listen on (use 0.0.0.0 for every
    /// interface).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// How often each service gets a pass when nothing changed; a change
    /// (an instance exiting, an `apply` elsewhere) is seen within 0.1 s.
    #[arg(long, default_value = "1s", value_parser = duration)]
    interval: Duration,
    /// The longest back-off of a failing or crash-looping service.
    #[arg(long, default_value = "60s", value_parser = duration)]
    max_backoff: Duration,
    /// How often instances are scanned for drift ("0" turns scans off).
    #[arg(long, default_value = "5m", value_parser = duration)]
    drift_interval: Duration,
    /// Threads a drift scan may use.
    #[arg(long, default_value_t = 1)]
    drift_threads: usize,
    /// Bytes per second a drift scan may read, e.g. "200m" ("0": unlimited).
    #[arg(long, default_value = "200m", value_name = "SIZE", value_parser = rate)]
    drift_rate: u64,
}

fn duration(s: &str) -> Result<Duration, String> {
    grammar::duration_ms(s).map(Duration::from_millis)
}

/// A size, or "0" for no limit.
fn rate(s: &str) -> Result<u64, String> {
    match s {
        "0" => Ok(0),
        s => grammar::size(s),
    }
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let opts = supervisor::Options {
        store: ctx.store_dir.clone(),
        reconcile: reconcile::Options {
            interval: a.interval,
            max_backoff: a.max_backoff,
        },
        drift_interval: (!a.drift_interval.is_zero()).then_some(a.drift_interval),
        drift_budget: Budget {
            threads: a.drift_threads.max(1),
            bytes_per_sec: (a.drift_rate > 0).then_some(a.drift_rate),
            low_priority: true,
        },
    };
    serve(opts, a.bind, sayer(ctx.json))?;
    Ok(ExitCode::SUCCESS)
}

/// How serve says what it did, on stderr: a line with a timestamp, or
/// under `-o json` (and `yaml`: a log is a stream) one JSON object per line.
fn sayer(json: bool) -> Say {
    Arc::new(move |what: fmt::Arguments<'_>| {
        let time = drover_core::clock::now_rfc3339();
        if json {
            eprintln!("{}", log_line(&time, &what.to_string()));
        } else {
            eprintln!("{time} {what}");
        }
    })
}

/// One log line as JSON: `{time, level, component, service, message}`.
/// Serve's lines start with their component (`serve:`, `traffic:`) or a
/// component and the service (`reconcile web:`, `proxy web:`); the level
/// is `warn` for lines that report something that did not work.
fn log_line(time: &str, text: &str) -> serde_json::Value {
    let (head, message) = text.split_once(": ").unwrap_or(("", text));
    let words: Vec<&str> = head.split(' ').collect();
    let (component, service) = match words.as_slice() {
        [c] if !c.is_empty() => (Some(*c), None),
        [c, s] => (Some(*c), Some(*s)),
        _ => (None, None),
    };
    let message = if component.is_none() { text } else { message };
    let bad = [
        "cannot",
        "failed",
        "error",
        "lost",
        "refused",
        "unhealthy",
        "no thread",
    ];
    let level = if bad.iter().any(|w| message.contains(w)) {
        "warn"
    } else {
        "info"
    };
    serde_json::json!({
        "time": time,
        "level": level,
        "component": component,
        "service": service,
        "message": message,
    })
}

fn serve(opts: supervisor::Options, bind: IpAddr, say: Say) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Fail early, in the foreground, if another serve runs for this store.
    let mut store =
        Store::open(&opts.store).with_context(|| format!("opening {}", opts.store.display()))?;
    let lease = supervisor::lock(&mut store, &opts.store)?;
    drop(store);
    say(format_args!(
        "serve: store {}, proxies on {}, drift scans {}",
        opts.store.display(),
        bind,
        opts.drift_interval
            .map_or("off".into(), |d| format!("every {} s", d.as_secs_f64()))
    ));

    let said = say.clone();
    let proxies = Proxies(drover_proxy::Proxies::new(
        rt.handle().clone(),
        bind,
        said.clone(),
    ));
    let running = supervisor::start(opts, lease, proxies, said)?;

    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let lost = async {
            while !running.stopping() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = term.recv() => say(format_args!("serve: SIGTERM, stopping (instances keep running)")),
            _ = int.recv() => say(format_args!("serve: SIGINT, stopping (instances keep running)")),
            _ = lost => {}
        }
        anyhow::Ok(())
    })?;
    running.stop();
    rt.shutdown_timeout(Duration::from_secs(1));
    say(format_args!("serve: stopped"));
    Ok(())
}

/// drover-proxy's proxies, as the supervisor's traffic thread drives them:
/// the same calls, drover-core's types mapped to the proxy's.
struct Proxies(drover_proxy::Proxies);

impl supervisor::Proxies for Proxies {
    fn listen(&mut self, wanted: &BTreeMap<String, Listen>) {
        let wanted = wanted
            .iter()
            .map(|(name, w)| {
                let mode = match w.mode {
                    ProxyMode::Http => Mode::Http,
                    ProxyMode::Tcp => Mode::Tcp,
                };
                let ports = w.ports.clone();
                (name.clone(), drover_proxy::Listen { ports, mode })
            })
            .collect();
        self.0.listen(&wanted);
    }

    fn route(&mut self, routes: BTreeMap<String, Vec<Backend>>) {
        let routes = routes
            .into_iter()
            .map(|(name, backends)| {
                let backends = backends
                    .into_iter()
                    .map(|b| drover_proxy::Backend {
                        id: b.id,
                        addr: b.addr,
                    })
                    .collect();
                (name, backends)
            })
            .collect();
        self.0.route(routes);
    }

    fn listening(&self) -> Vec<String> {
        self.0.listening()
    }

    fn in_flight(&self, service: &str, id: &str) -> usize {
        self.0.in_flight(service, id)
    }

    fn stop_accepting(&mut self) {
        self.0.stop_accepting();
    }

    fn busy(&self) -> bool {
        self.0.busy()
    }
}

#[cfg(test)]
mod tests {
    use super::log_line;

    #[test]
    fn log_lines_name_their_component_and_service() {
        let l = log_line("t", "reconcile web: rolled out release 2");
        assert_eq!(l["component"], "reconcile");
        assert_eq!(l["service"], "web");
        assert_eq!(l["message"], "rolled out release 2");
        assert_eq!(l["level"], "info");
        let l = log_line("t", "serve: store /x, proxies on 127.0.0.1");
        assert_eq!(l["component"], "serve");
        assert!(l["service"].is_null());
        let l = log_line("t", "proxy api: cannot listen on 1.2.3.4:80: in use");
        assert_eq!(
            (l["service"].as_str(), l["level"].as_str()),
            (Some("api"), Some("warn"))
        );
        let l = log_line("t", "something odd happened");
        assert_eq!(l["message"], "something odd happened");
        assert!(l["component"].is_null());
    }
}

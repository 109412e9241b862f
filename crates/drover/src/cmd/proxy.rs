//! `drover __proxy` (hidden): the reverse proxy of `drover serve` on its own,
//! with a fixed set of backends, until SIGTERM or SIGINT. For benchmarks and
//! for trying the proxy without a fleet.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use drover_proxy::{self as proxy, Backend, Config, Mode, Routes};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// A backend address; repeat for more. Its id is the address.
    #[arg(long = "backend", value_name = "ADDR", required = true)]
    backends: Vec<SocketAddr>,
    /// Proxy TCP connections instead of HTTP requests.
    #[arg(long)]
    tcp: bool,
    /// Seconds a request may wait for its response head (then 504).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// Seconds in-flight work gets after SIGTERM/SIGINT.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    grace: u64,
    /// Worker threads (default: one per CPU; 1 = tokio's current-thread
    /// scheduler).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    // One thread: tokio's current-thread scheduler, cheaper per task switch.
    let mut rt = match a.threads {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.worker_threads(n);
            rt
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = rt
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(a))
}

async fn serve(a: &Args) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    outln!("listening on {}", listener.local_addr()?);
    let routes = Routes::new();
    routes.set(
        a.backends
            .iter()
            .map(|&addr| Backend {
                id: addr.to_string(),
                addr,
                tier: 0,
            })
            .collect(),
    );
    let config = Config {
        request_timeout: Duration::from_secs(a.timeout),
        shutdown_grace: Duration::from_secs(a.grace),
        ..Config::default()
    };
    let mode = if a.tcp { Mode::Tcp } else { Mode::Http };

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.send_replace(true);
    });
    proxy::serve_with(listener, mode, routes.clone(), config, stopped)
        .await
        .context("accepting connections")?;

    let s = routes.stats();
    let served: Vec<String> = s
        .backends
        .iter()
        .map(|b| format!("{}={}", b.id, b.served))
        .collect();
    eprintln!(
        "drover proxy: {} requests, {} failed (502/504), {} unavailable (503), {} backend connect errors; served: {}",
        s.requests,
        s.failures,
        s.unavailable,
        s.connect_errors,
        served.join(" ")
    );
    Ok(ExitCode::SUCCESS)
}

//! Many services' proxies on one tokio runtime, driven from a plain thread:
//! each service's [`Routes`] and one listener per port, opened and closed as
//! the wanted set changes. Every method returns at once; the listeners run
//! on the runtime. `drover serve`'s traffic thread (drover-core's
//! `supervisor`) drives one of these, with the wanted set and the routes
//! it reads from the state database.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::{Backend, Mode, Routes};

/// Where the proxies tell what they did, one line at a time
/// ("proxy web: listening on 127.0.0.1:8080 (http/1.1, h2c)").
pub type Say = Arc<dyn Fn(fmt::Arguments<'_>) + Send + Sync>;

/// What one service wants: its ports, and what they speak.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    pub ports: Vec<u16>,
    pub mode: Mode,
}

/// The proxies of every service with ports.
pub struct Proxies {
    rt: Handle,
    /// The address every listener binds.
    bind: IpAddr,
    say: Say,
    proxied: BTreeMap<String, Proxied>,
    /// Ports that could not be bound, so that each is told once.
    failed_binds: BTreeSet<(String, u16)>,
}

/// One service's proxying: its routes and its listeners.
struct Proxied {
    routes: Routes,
    listeners: BTreeMap<u16, watch::Sender<bool>>,
    mode: Mode,
}

impl Proxies {
    pub fn new(rt: Handle, bind: IpAddr, say: Say) -> Self {
        Self {
            rt,
            bind,
            say,
            proxied: BTreeMap::new(),
            failed_binds: BTreeSet::new(),
        }
    }

    /// Open and close listeners as `wanted` says. A service missing from it,
    /// or whose mode changed, loses its listeners and its routes (the
    /// connections they carry finish); a port that cannot be bound is tried
    /// again at the next call.
    pub fn listen(&mut self, wanted: &BTreeMap<String, Listen>) {
        let say = &self.say;
        self.proxied.retain(|name, p| {
            let keep = wanted.get(name).is_some_and(|w| w.mode == p.mode);
            if !keep {
                for tx in p.listeners.values() {
                    let _ = tx.send(true);
                }
            }
            keep
        });
        for (name, Listen { ports, mode }) in wanted {
            let p = self.proxied.entry(name.clone()).or_insert_with(|| Proxied {
                routes: Routes::new(),
                listeners: BTreeMap::new(),
                mode: *mode,
            });
            p.listeners.retain(|port, tx| {
                let keep = ports.contains(port);
                if !keep {
                    let _ = tx.send(true);
                }
                keep
            });
            for port in ports {
                if p.listeners.contains_key(port) {
                    continue;
                }
                let addr = SocketAddr::new(self.bind, *port);
                match std::net::TcpListener::bind(addr).and_then(|l| {
                    l.set_nonblocking(true)?;
                    let _guard = self.rt.enter();
                    tokio::net::TcpListener::from_std(l)
                }) {
                    Ok(listener) => {
                        let (tx, rx) = watch::channel(false);
                        let mode = *mode;
                        let routes = p.routes.clone();
                        let label = format!("{name} {addr}");
                        let tell = Arc::clone(say);
                        self.rt.spawn(async move {
                            if let Err(e) = crate::serve(listener, mode, routes, rx).await {
                                tell(format_args!("proxy {label}: {e}"));
                            }
                        });
                        p.listeners.insert(*port, tx);
                        self.failed_binds.remove(&(name.clone(), *port));
                        say(format_args!(
                            "proxy {name}: listening on {addr} ({})",
                            match mode {
                                Mode::Http => "http/1.1, h2c",
                                Mode::Tcp => "tcp",
                            }
                        ));
                    }
                    Err(e) => {
                        if self.failed_binds.insert((name.clone(), *port)) {
                            say(format_args!("proxy {name}: cannot listen on {addr}: {e}"));
                        }
                    }
                }
            }
        }
    }

    /// Give each proxied service its routable backends ([`Routes::set`]);
    /// a service missing from `routes` gets none. Routes of services not
    /// proxied are ignored.
    pub fn route(&self, mut routes: BTreeMap<String, Vec<Backend>>) {
        for (name, p) in &self.proxied {
            p.routes.set(routes.remove(name).unwrap_or_default());
        }
    }

    /// The services with listeners, by name: open ones, or ones
    /// [`Proxies::stop_accepting`] closed that may still finish requests.
    pub fn listening(&self) -> Vec<String> {
        self.proxied
            .iter()
            .filter(|(_, p)| !p.listeners.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Requests (HTTP) or connections (TCP) of `service` in flight to
    /// backend `id`; 0 if either is unknown.
    pub fn in_flight(&self, service: &str, id: &str) -> usize {
        self.proxied
            .get(service)
            .map_or(0, |p| p.routes.in_flight(id))
    }

    /// Stop accepting, everywhere; what is in flight finishes (for at most
    /// [`Config::shutdown_grace`](crate::Config::shutdown_grace)) and
    /// [`Proxies::route`] still updates the routes meanwhile.
    pub fn stop_accepting(&self) {
        for p in self.proxied.values() {
            for tx in p.listeners.values() {
                let _ = tx.send(true);
            }
        }
    }

    /// Whether anything is in flight on any service's backends.
    pub fn busy(&self) -> bool {
        self.proxied
            .values()
            .any(|p| p.routes.stats().backends.iter().any(|b| b.in_flight > 0))
    }
}

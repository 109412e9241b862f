//! Many services' proxies on one tokio runtime, driven from a plain thread:
//! each service's [`Routes`] and one listener per port, opened and closed as
//! the wanted set changes. Every method returns at once; the listeners run
//! on the runtime. `drover serve`'s traffic thread (drover-core's
//! `supervisor`) drives one of these, with the wanted set and the routes
//! it reads from the state database. What they do (listeners opened, taken
//! over, failing) is logged as `tracing` events with the service and the
//! address as fields.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{Backend, Mode, Routes};

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
    proxied: BTreeMap<String, Proxied>,
    /// Ports that could not be bound, so that each is told once.
    failed_binds: BTreeSet<(String, u16)>,
    /// Listening sockets handed over by a predecessor (or systemd), by
    /// port: used instead of binding when a service wants the port.
    adopted: BTreeMap<u16, TcpListener>,
    sockets: Sockets,
    /// The last routes given, so a service's listener opened after them
    /// never accepts before it has somewhere to send requests.
    routed: BTreeMap<String, Vec<Backend>>,
    /// Given to each service's routes made from now on.
    observer: Option<Arc<dyn crate::Observe>>,
}

/// The open listening sockets, each a duplicate of the one a listener
/// accepts on, by port: what `serve` hands to its successor (and to
/// systemd's fd store). Shared: another thread may read it at any time.
#[derive(Clone, Default)]
pub struct Sockets(Arc<Mutex<BTreeMap<u16, (String, TcpListener)>>>);

impl Sockets {
    /// Duplicates of every open listening socket, with their service and port.
    pub fn list(&self) -> Vec<(String, u16, TcpListener)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter_map(|(port, (name, l))| Some((name.clone(), *port, l.try_clone().ok()?)))
            .collect()
    }

    fn insert(&self, name: &str, port: u16, l: TcpListener) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(port, (name.to_string(), l));
    }

    fn remove(&self, port: u16) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&port);
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// One service's proxying: its routes and its listeners.
struct Proxied {
    routes: Routes,
    listeners: BTreeMap<u16, watch::Sender<bool>>,
    mode: Mode,
}

impl Proxies {
    pub fn new(rt: Handle, bind: IpAddr) -> Self {
        Self {
            rt,
            bind,
            proxied: BTreeMap::new(),
            failed_binds: BTreeSet::new(),
            adopted: BTreeMap::new(),
            sockets: Sockets::default(),
            routed: BTreeMap::new(),
            observer: None,
        }
    }

    /// Tell `observer` of every HTTP request of the services proxied from
    /// now on (call before the first [`Proxies::listen`]).
    pub fn observe(&mut self, observer: Arc<dyn crate::Observe>) {
        self.observer = Some(observer);
    }

    /// Take listening sockets a predecessor bound (handed over, or kept by
    /// systemd): the next [`Proxies::listen`] accepts on them instead of
    /// binding, for the ports it wants; the others it closes. A socket not
    /// bound to this proxy's address, or not listening, is closed at once.
    pub fn adopt(&mut self, sockets: Vec<TcpListener>) {
        for l in sockets {
            match l.local_addr() {
                Ok(a) if a.ip() == self.bind => {
                    self.adopted.insert(a.port(), l);
                }
                Ok(a) => warn!(
                    addr = %a,
                    bind = %self.bind,
                    "not taking over {a}: this serve listens on {}",
                    self.bind
                ),
                Err(e) => warn!(error = %e, "not taking over a socket"),
            }
        }
    }

    /// The open listening sockets, as they come and go.
    pub fn sockets(&self) -> Sockets {
        self.sockets.clone()
    }

    /// Open and close listeners as `wanted` says. A service missing from it,
    /// or whose mode changed, loses its listeners and its routes (the
    /// connections they carry finish); a port that cannot be bound is tried
    /// again at the next call.
    pub fn listen(&mut self, wanted: &BTreeMap<String, Listen>) {
        let sockets = &self.sockets;
        self.proxied.retain(|name, p| {
            let keep = wanted.get(name).is_some_and(|w| w.mode == p.mode);
            if !keep {
                for (port, tx) in &p.listeners {
                    let _ = tx.send(true);
                    sockets.remove(*port);
                }
            }
            keep
        });
        for (name, Listen { ports, mode }) in wanted {
            let routed = &self.routed;
            let observer = &self.observer;
            let p = self.proxied.entry(name.clone()).or_insert_with(|| {
                let routes = match observer {
                    Some(o) => Routes::observed(name, Arc::clone(o)),
                    None => Routes::new(),
                };
                routes.set(routed.get(name).cloned().unwrap_or_default());
                Proxied {
                    routes,
                    listeners: BTreeMap::new(),
                    mode: *mode,
                }
            });
            p.listeners.retain(|port, tx| {
                let keep = ports.contains(port);
                if !keep {
                    let _ = tx.send(true);
                    sockets.remove(*port);
                }
                keep
            });
            for port in ports {
                if p.listeners.contains_key(port) {
                    continue;
                }
                let addr = SocketAddr::new(self.bind, *port);
                let (l, how) = match self.adopted.remove(port) {
                    Some(l) => (Ok(l), "taken over"),
                    None => (TcpListener::bind(addr), "listening"),
                };
                match l.and_then(|l| {
                    l.set_nonblocking(true)?;
                    self.sockets.insert(name, *port, l.try_clone()?);
                    let _guard = self.rt.enter();
                    tokio::net::TcpListener::from_std(l)
                }) {
                    Ok(listener) => {
                        let (tx, rx) = watch::channel(false);
                        let mode = *mode;
                        let routes = p.routes.clone();
                        let service = name.clone();
                        self.rt.spawn(async move {
                            if let Err(e) = crate::serve(listener, mode, routes, rx).await {
                                warn!(%service, %addr, error = %e, "the listener stopped");
                            }
                        });
                        p.listeners.insert(*port, tx);
                        self.failed_binds.remove(&(name.clone(), *port));
                        let speaks = match mode {
                            Mode::Http => "http/1.1, h2c",
                            Mode::Tcp => "tcp",
                        };
                        info!(service = %name, %addr, protocols = speaks, "{how}");
                    }
                    Err(e) => {
                        self.sockets.remove(*port);
                        if self.failed_binds.insert((name.clone(), *port)) {
                            warn!(service = %name, %addr, error = %e, "cannot listen on {addr}");
                        }
                    }
                }
            }
        }
        // Handed over for ports no service wants any more: close them.
        self.adopted.clear();
    }

    /// Give each proxied service its routable backends ([`Routes::set`]);
    /// a service missing from `routes` gets none. Routes of services not
    /// proxied yet are kept for when they are (see [`Proxies::listen`]).
    pub fn route(&mut self, routes: BTreeMap<String, Vec<Backend>>) {
        for (name, p) in &self.proxied {
            p.routes.set(routes.get(name).cloned().unwrap_or_default());
        }
        self.routed = routes;
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
        // A successor already holds its own duplicates of the sockets; with
        // none, the ports close now rather than at exit.
        self.sockets.clear();
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

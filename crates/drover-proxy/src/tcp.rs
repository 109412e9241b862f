//! TCP: each client connection joined to one backend connection, bytes
//! copied both ways; the next backend tried if one refuses.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::debug;

use crate::routes::{Routes, Target};

pub(crate) struct TcpProxy {
    pub(crate) routes: Routes,
    pub(crate) connect_timeout: Duration,
}

impl TcpProxy {
    /// Join one client connection to a backend until either side closes.
    pub(crate) async fn handle(&self, mut client: TcpStream) {
        let routes = &self.routes;
        routes.count(|s| &s.requests);
        let mut tried: Vec<Arc<Target>> = Vec::new();
        loop {
            let Some((guard, more)) = routes.pick(&tried) else {
                debug!(
                    service = %routes.service(),
                    tried = tried.len(),
                    "no instance to join a connection to; closing it"
                );
                if let Some((service, o)) = routes.observer() {
                    o.connection(service, false);
                }
                // Closing the connection is all TCP can say.
                routes.count(if tried.is_empty() {
                    |s| &s.unavailable
                } else {
                    |s| &s.failures
                });
                return;
            };
            let connect = TcpStream::connect(guard.0.addr);
            match tokio::time::timeout(self.connect_timeout, connect).await {
                Ok(Ok(mut backend)) => {
                    guard.0.served.fetch_add(1, Ordering::Relaxed);
                    if let Some((service, o)) = routes.observer() {
                        o.connection(service, true);
                    }
                    let _ = backend.set_nodelay(true);
                    // Errors are either side going away: debug at most.
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                        debug!(
                            service = %routes.service(), instance = %guard.0.id, error = %e,
                            "a joined connection ended in an error"
                        );
                    }
                    return;
                }
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("not accepted within {:?}", self.connect_timeout),
                    };
                    debug!(
                        service = %routes.service(),
                        instance = %guard.0.id,
                        addr = %guard.0.addr,
                        %error,
                        "cannot connect to the instance"
                    );
                    routes.cool_down(&guard.0);
                    if let Some((service, o)) = routes.observer() {
                        o.upstream_error(service, "connect");
                        if more {
                            o.retry(service);
                        }
                    }
                    tried.push(Arc::clone(&guard.0));
                }
            }
        }
    }
}

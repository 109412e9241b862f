//! TCP: each client connection joined to one backend connection, bytes
//! copied both ways; the next backend tried if one refuses.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpStream;

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
                    // Errors are either side going away: nothing to report.
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                    return;
                }
                Ok(Err(_)) | Err(_) => {
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

//! The GETs of package repositories: bounded like a registry's (see
//! `store::registry::http`): `registry_connect` to connect,
//! `registry_idle` without a byte, a total time-out scaled to the declared
//! size ([`Limits::registry_total`]), and never more bytes than the caller
//! allows. A failure to connect at all is told apart from every other, so
//! callers can fall back to the package cache.

use std::future::Future;
use std::time::Duration;

use reqwest::StatusCode;

use crate::error::Error;
use crate::limits::Limits;

/// Why a GET failed: the repository could not be reached at all (the
/// caller may fall back to the cache), or anything else.
#[derive(Debug)]
pub(super) struct NetError {
    pub unreachable: bool,
    pub error: Error,
}

impl From<Error> for NetError {
    fn from(error: Error) -> Self {
        NetError {
            unreachable: false,
            error,
        }
    }
}

pub(super) type NetResult<T> = std::result::Result<T, NetError>;

/// A client and the runtime that drives it (drover-core is synchronous
/// everywhere else; the runtime is private to one fetch).
pub(super) struct Http {
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
    limits: Limits,
}

impl Http {
    pub fn new(limits: &Limits) -> crate::Result<Http> {
        // reqwest is built without a crypto provider of its own (see Cargo.toml).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(limits.registry_connect)
            .read_timeout(limits.registry_idle)
            .user_agent(concat!("drover/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Failed(format!("start the package repository client: {e}")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Failed(format!("start the package repository client: {e}")))?;
        Ok(Http {
            client,
            rt,
            limits: limits.clone(),
        })
    }

    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// GET `url` whole, at most `max` bytes (more is refused, naming
    /// `limit`); `None` on a 404 or 410.
    pub async fn get(
        &self,
        url: &str,
        max: u64,
        limit: &'static str,
    ) -> NetResult<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let found = self
            .stream(url, max, |chunk| {
                if out.len() as u64 + chunk.len() as u64 > max {
                    return Err(Limits::exceeded(
                        limit,
                        format!("the answer to GET {url}"),
                        format!("more than {max} bytes"),
                    ));
                }
                out.extend_from_slice(chunk);
                Ok(())
            })
            .await?;
        Ok(found.then_some(out))
    }

    /// GET `url`, handing each chunk to `sink`, within the total time-out
    /// for `declared` bytes. False on a 404 or 410.
    pub async fn stream(
        &self,
        url: &str,
        declared: u64,
        mut sink: impl FnMut(&[u8]) -> crate::Result<()>,
    ) -> NetResult<bool> {
        let total = self.limits.registry_total(declared);
        let fut = async {
            let mut res = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| self.transport(url, &e))?;
            let status = res.status();
            if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
                return Ok(false);
            }
            if !status.is_success() {
                return Err(Error::Failed(format!("GET {url}: {status}")).into());
            }
            while let Some(chunk) = res.chunk().await.map_err(|e| self.transport(url, &e))? {
                sink(&chunk)?;
            }
            Ok(true)
        };
        match tokio::time::timeout(total, fut).await {
            Ok(r) => r,
            Err(_) => Err(Limits::exceeded(
                if total >= self.limits.registry_max {
                    "registry_max"
                } else {
                    "registry_floor"
                },
                format!("GET {url}"),
                format!(
                    "not done after {} (the total time-out for {declared} bytes)",
                    seconds(total)
                ),
            )
            .into()),
        }
    }

    fn transport(&self, url: &str, e: &reqwest::Error) -> NetError {
        let unreachable = e.is_connect();
        let error = if e.is_timeout() && !e.is_connect() {
            Limits::exceeded(
                "registry_idle",
                format!("the answer to GET {url}"),
                format!(
                    "the repository sent nothing for {}; given up",
                    seconds(self.limits.registry_idle)
                ),
            )
        } else {
            Error::Failed(format!("GET {url}: {}", chain(e)))
        };
        NetError { unreachable, error }
    }
}

/// An error with its causes, which reqwest keeps out of its own message.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

//! The registry requests whose answers drover reads itself: manifests,
//! indexes, referrer listings and blobs.
//!
//! oci-client reads a manifest's whole body into memory before anyone can
//! look at its size, so a registry that answers with an endless body could
//! take all of the host's memory. These GETs go through the same kind of
//! reqwest client, with the bearer token (or basic credentials) that
//! `Session::authenticate` obtained, and read at most a bound: a manifest
//! or listing stops at `manifest_bytes`, a blob at its declared size.
//!
//! A bearer token expires (often after five minutes): a request that meets
//! a 401 asks the token service again, once, and is retried.
//!
//! Every request, here and through oci-client, has three time-outs (see
//! [`Limits`]): `registry_connect` to connect, `registry_idle` without a
//! byte (reqwest's read time-out, which restarts with every read), and a
//! total one scaled to the size the request moves ([`Limits::registry_total`]).

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use reqwest::StatusCode;

use super::super::BlobWriter;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::Limits;

/// How much of an error answer's body is kept for the message.
const ERROR_BODY: u64 = 8 << 10;

/// A small document a registry answered with.
pub(super) struct Document {
    pub bytes: Vec<u8>,
    /// The `Content-Type` the registry gave.
    pub content_type: Option<String>,
}

/// GETs against one repository of one registry.
pub(super) struct Http {
    client: reqwest::Client,
    /// `<scheme>://<registry>/v2/<repository>`.
    base: String,
    registry: String,
    limits: Limits,
    /// oci-client, which asks the registry's token service.
    oci: Client,
    auth: RegistryAuth,
    /// The `Authorization` header value, and what it was granted for.
    authorization: Mutex<Option<Grant>>,
}

/// An `Authorization` header value and the request it was granted for.
type Grant = (String, Reference, RegistryOperation);

impl Http {
    pub fn new(
        scheme: &str,
        registry: &str,
        repository: &str,
        limits: &Limits,
        oci: &Client,
        auth: &RegistryAuth,
    ) -> Result<Http> {
        let client = client_builder(limits)
            .build()
            .map_err(|e| Error::Failed(format!("start the registry client: {e}")))?;
        Ok(Http {
            client,
            base: format!("{scheme}://{registry}/v2/{repository}"),
            registry: registry.to_string(),
            limits: limits.clone(),
            oci: oci.clone(),
            auth: auth.clone(),
            authorization: Mutex::new(None),
        })
    }

    /// Ask for what the registry grants for `op` on `reference` (a bearer
    /// token from its token service, or the basic credentials), for
    /// oci-client's requests and these GETs.
    pub async fn authenticate(
        &self,
        reference: &Reference,
        op: RegistryOperation,
    ) -> std::result::Result<(), OciDistributionError> {
        let token = self.oci.auth(reference, &self.auth, op).await?;
        let value = match (token, &self.auth) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, RegistryAuth::Basic(user, password)) => {
                use base64::Engine as _;
                let pair = format!("{user}:{password}");
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            (None, _) => None,
        };
        *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) =
            value.map(|v| (v, reference.clone(), op));
        Ok(())
    }

    pub fn manifest_url(&self, reference: &str) -> String {
        format!("{}/manifests/{reference}", self.base)
    }

    pub fn blob_url(&self, digest: &Digest) -> String {
        format!("{}/blobs/{digest}", self.base)
    }

    pub fn referrers_url(&self, digest: &Digest) -> String {
        format!("{}/referrers/{digest}", self.base)
    }

    /// GET a manifest, index or listing at `url`: `None` on a 404, else at
    /// most `manifest_bytes` of it (more is refused, naming the limit).
    pub async fn document(&self, url: &str, accept: &[&str]) -> Result<Option<Document>> {
        let cap = self.limits.manifest_bytes;
        self.timed(url, cap, async {
            let Some(mut res) = self.send(url, accept).await? else {
                return Ok(None);
            };
            let over = || {
                Limits::exceeded(
                    "manifest_bytes",
                    format!("the answer to GET {url}"),
                    format!("more than {cap} bytes; a manifest is far smaller"),
                )
            };
            if res.content_length().is_some_and(|n| n > cap) {
                return Err(over());
            }
            let content_type = res
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
            let mut bytes = Vec::new();
            while let Some(chunk) = res.chunk().await.map_err(|e| self.transport(url, e))? {
                if bytes.len() as u64 + chunk.len() as u64 > cap {
                    return Err(over());
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Some(Document {
                bytes,
                content_type,
            }))
        })
        .await
    }

    /// GET the blob `digest` of `size` bytes (as its descriptor declares)
    /// into `w`: refused the moment it passes that size, or if it ends
    /// short. The caller checks the digest when it commits `w`.
    pub async fn blob(&self, digest: &Digest, size: u64, w: &mut BlobWriter) -> Result<u64> {
        let url = self.blob_url(digest);
        let url = url.as_str();
        self.timed(url, size, async {
            let Some(mut res) = self.send(url, &["*/*"]).await? else {
                return Err(Error::NotFound {
                    what: format!("blob {digest}"),
                    hint: Some(format!(
                        "registry {} does not have it (GET {url}: 404)",
                        self.registry
                    )),
                });
            };
            let too_long = |n: u64| {
                Error::corrupt(
                    format!("blob {digest} from {url}"),
                    format!(
                        "the registry sent {n} bytes or more, but its manifest declares {size}; refused"
                    ),
                )
            };
            if let Some(n) = res.content_length().filter(|n| *n > size) {
                return Err(too_long(n));
            }
            let mut got = 0u64;
            while let Some(chunk) = res.chunk().await.map_err(|e| self.transport(url, e))? {
                got += chunk.len() as u64;
                if got > size {
                    return Err(too_long(got));
                }
                w.write_all(&chunk)?;
            }
            if got < size {
                return Err(Error::corrupt(
                    format!("blob {digest} from {url}"),
                    format!("it ended after {got} of the {size} bytes its manifest declares; refused"),
                ));
            }
            Ok(got)
        })
        .await
    }

    /// Send a GET; `None` on a 404, an error naming the URL and status on
    /// any other failure. A 401 with a grant in hand asks for a fresh one
    /// (a token expires) and tries once more.
    async fn send(&self, url: &str, accept: &[&str]) -> Result<Option<reqwest::Response>> {
        let mut refreshed = false;
        let mut res = loop {
            let mut req = self
                .client
                .get(url)
                .header(reqwest::header::ACCEPT, accept.join(", "));
            let grant = self
                .authorization
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some((value, _, _)) = &grant {
                req = req.header(reqwest::header::AUTHORIZATION, value);
            }
            let res = req.send().await.map_err(|e| self.transport(url, e))?;
            match grant {
                Some((_, reference, op))
                    if res.status() == StatusCode::UNAUTHORIZED && !refreshed =>
                {
                    refreshed = true;
                    self.authenticate(&reference, op)
                        .await
                        .map_err(|e| Error::Registry {
                            registry: self.registry.clone(),
                            reason: format!("authenticating again for {url}: {e}"),
                        })?;
                }
                _ => break res,
            }
        };
        let status = res.status();
        if status.is_success() {
            return Ok(Some(res));
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        // A little of the body, for the registry's own explanation.
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = res.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() as u64 >= ERROR_BODY {
                body.truncate(ERROR_BODY as usize);
                break;
            }
        }
        let body = String::from_utf8_lossy(&body);
        let hint = match status {
            StatusCode::UNAUTHORIZED => {
                " (the registry wants credentials, or refused these: set DROVER_REGISTRY_USER and DROVER_REGISTRY_PASSWORD, or log in so Docker's config.json has them)"
            }
            StatusCode::FORBIDDEN => " (access denied: these credentials may not do this)",
            _ => "",
        };
        Err(Error::Registry {
            registry: self.registry.clone(),
            reason: format!("GET {url}: {status}: {}{hint}", body.trim()),
        })
    }

    /// Run `fut`, one request that moves about `declared` bytes, within the
    /// total time-out.
    pub async fn timed<T>(
        &self,
        what: &str,
        declared: u64,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        timed(&self.limits, what, declared, fut).await
    }

    /// A transport failure of the request to `url`: a time-out names its limit.
    pub fn transport(&self, url: &str, e: reqwest::Error) -> Error {
        transport_error(&self.limits, &self.registry, url, &e)
    }
}

/// The reqwest client settings every registry request uses (oci-client's
/// client gets the same through its `ClientConfig`).
fn client_builder(limits: &Limits) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(limits.registry_connect)
        .read_timeout(limits.registry_idle)
}

/// Run `fut` within the total time-out of a request that moves `declared`
/// bytes (see [`Limits::registry_total`]); past it the request is dropped,
/// which closes its connection.
pub(super) async fn timed<T>(
    limits: &Limits,
    what: &str,
    declared: u64,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let total = limits.registry_total(declared);
    match tokio::time::timeout(total, fut).await {
        Ok(r) => r,
        Err(_) => Err(Limits::exceeded(
            "registry_floor",
            what.to_string(),
            format!(
                "not done after {} (the total time-out: registry_floor, plus {declared} bytes at registry_min_rate)",
                seconds(total)
            ),
        )),
    }
}

/// A reqwest failure as drover reports it: a time-out names the limit
/// (`registry_connect` or `registry_idle`) and the URL.
pub(super) fn transport_error(
    limits: &Limits,
    registry: &str,
    url: &str,
    e: &reqwest::Error,
) -> Error {
    if e.is_timeout() {
        return if e.is_connect() {
            Limits::exceeded(
                "registry_connect",
                format!("connecting to {registry} for {url}"),
                format!("no connection within {}", seconds(limits.registry_connect)),
            )
        } else {
            Limits::exceeded(
                "registry_idle",
                format!("the answer to GET {url}"),
                format!(
                    "the registry sent nothing for {}; given up",
                    seconds(limits.registry_idle)
                ),
            )
        };
    }
    Error::Registry {
        registry: registry.to_string(),
        reason: format!("{url}: {}", chain(e)),
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

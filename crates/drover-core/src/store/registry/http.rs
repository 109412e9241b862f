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
//! The token service's answer is read here too (at most `manifest_bytes`,
//! a token being a small JSON document like a manifest), and handed to
//! oci-client, which never asks a token service itself; a bearer token expires (often after five minutes): a request
//! that meets a 401 asks the token service again, once, and is retried.
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
use oci_client::token_cache::{RegistryToken, RegistryTokenType};
use oci_client::{Client, Reference, RegistryOperation};
use reqwest::StatusCode;

use super::super::BlobWriter;
use super::super::validate::DiffIdCheck;
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
    /// `<scheme>://<registry>`.
    root: String,
    /// `<scheme>://<registry>/v2/<repository>`.
    base: String,
    registry: String,
    limits: Limits,
    /// oci-client, handed what the registry's token service grants.
    oci: Client,
    auth: RegistryAuth,
    /// The `Authorization` header value, and what it was granted for.
    authorization: Mutex<Option<Grant>>,
    /// Told of every blob chunk that arrives.
    pub progress: crate::progress::Shared,
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
            root: format!("{scheme}://{registry}"),
            base: format!("{scheme}://{registry}/v2/{repository}"),
            registry: registry.to_string(),
            limits: limits.clone(),
            oci: oci.clone(),
            auth: auth.clone(),
            authorization: Mutex::new(None),
            progress: Default::default(),
        })
    }

    /// Ask for what the registry grants for `op` on `reference` (a bearer
    /// token from its token service, or the basic credentials), for
    /// oci-client's requests and these GETs.
    /// `err` explains a refusal of the credentials.
    pub async fn authenticate(
        &self,
        reference: &Reference,
        op: RegistryOperation,
        err: &dyn Fn(&OciDistributionError) -> Error,
    ) -> Result<()> {
        // oci-client never asks a token service itself: its token request
        // reads the answer whole (`text()`), so a registry that challenges
        // only oci-client's own probe of `/v2/` could stream a token without
        // end. Every challenge is answered here, bounded, and oci-client is
        // handed the finished grant: a bearer token it uses as it is, or the
        // basic credentials, cached for both operations without expiry so
        // its `_auth` (the probe and token request) is never reached.
        let registry = reference.resolve_registry();
        let token = match self.challenge().await? {
            Some((realm, service)) => {
                let token = self
                    .token(reference, op, &realm, service.as_deref(), err)
                    .await?;
                // On a cache miss oci-client falls back to the stored auth;
                // a bearer one is used as it is, no request.
                let bearer = RegistryAuth::Bearer(token.clone());
                self.oci.store_auth_if_needed(registry, &bearer).await;
                self.oci
                    .tokens
                    .insert(
                        reference,
                        op,
                        RegistryTokenType::Bearer(RegistryToken::Token {
                            token: token.clone(),
                        }),
                    )
                    .await;
                Some(token)
            }
            None => {
                if let RegistryAuth::Basic(user, password) = &self.auth {
                    self.oci.store_auth_if_needed(registry, &self.auth).await;
                    for op in [RegistryOperation::Pull, RegistryOperation::Push] {
                        self.oci
                            .tokens
                            .insert(
                                reference,
                                op,
                                RegistryTokenType::Basic(user.clone(), password.clone()),
                            )
                            .await;
                    }
                }
                // Anonymous: oci-client holds no auth for the registry, so
                // its requests go without and it never probes.
                None
            }
        };
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

    /// The bearer challenge of the registry's `/v2/` (its token service's
    /// realm and service), if it answers with one. Only the headers are read.
    async fn challenge(&self) -> Result<Option<(String, Option<String>)>> {
        let url = format!("{}/v2/", self.root);
        let res = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| self.transport(&url, e))?;
        let challenge = res
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(bearer_challenge);
        Ok(challenge)
    }

    /// A token for `op` on `reference`'s repository from the token service
    /// at `realm`, with the basic credentials if there are any. Its answer
    /// is read up to `manifest_bytes`; a refusal is oci-client's
    /// `AuthenticationFailure`, as its own token requests report it.
    async fn token(
        &self,
        reference: &Reference,
        op: RegistryOperation,
        realm: &str,
        service: Option<&str>,
        err: &dyn Fn(&OciDistributionError) -> Error,
    ) -> Result<String> {
        let scope = match op {
            RegistryOperation::Pull => format!("repository:{}:pull", reference.repository()),
            RegistryOperation::Push => {
                format!("repository:{}:pull,push", reference.repository())
            }
        };
        let mut params = vec![("scope", scope.as_str())];
        if let Some(s) = service {
            params.push(("service", s));
        }
        let url = reqwest::Url::parse_with_params(realm, &params).map_err(|e| Error::Registry {
            registry: self.registry.clone(),
            reason: format!("its token service's realm {realm:?} is not a URL: {e}"),
        })?;
        let mut req = self.client.get(url.clone());
        if let RegistryAuth::Basic(user, password) = &self.auth {
            req = req.basic_auth(user, Some(password));
        }
        let transport = |e| self.transport(url.as_str(), e);
        let mut res = req.send().await.map_err(transport)?;
        let status = res.status();
        let cap = self.limits.manifest_bytes;
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(transport)? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > cap {
                return Err(Limits::exceeded(
                    "manifest_bytes",
                    format!("the answer of the token service {realm}"),
                    format!("more than {cap} bytes; a token is far smaller"),
                ));
            }
        }
        if status != StatusCode::OK {
            let reason = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY as usize)]);
            return Err(err(&OciDistributionError::AuthenticationFailure(
                reason.into_owned(),
            )));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            Error::corrupt(
                format!("the answer of the token service {realm}"),
                e.to_string(),
            )
        })?;
        answer.token.or(answer.access_token).ok_or_else(|| {
            Error::corrupt(
                format!("the answer of the token service {realm}"),
                "it holds no token",
            )
        })
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
    /// short. The caller checks the digest when it commits `w`. Each chunk
    /// also goes to `check` (a layer's diff_id check), if there is one.
    pub async fn blob(
        &self,
        digest: &Digest,
        size: u64,
        w: &mut BlobWriter,
        mut check: Option<&mut DiffIdCheck>,
    ) -> Result<u64> {
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
                        "larger than its declared size {size}: the registry sent {n} bytes or more; refused"
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
                self.progress.advance(chunk.len() as u64);
                if let Some(c) = check.as_deref_mut() {
                    c.feed(&chunk).await?;
                }
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

    /// Whether the registry has the blob `digest` (a HEAD: no body read).
    pub async fn blob_exists(&self, digest: &Digest) -> Result<bool> {
        let url = self.blob_url(digest);
        self.timed(&url, 0, async {
            let res = self
                .request(reqwest::Method::HEAD, &url, &["*/*"], None)
                .await?;
            Ok(res.is_some())
        })
        .await
    }

    /// PUT a manifest or index as `reference` (a tag or digest). What the
    /// registry answers is read at most `ERROR_BODY` (oci-client would read
    /// an error answer whole).
    pub async fn put_manifest(
        &self,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<()> {
        let url = self.manifest_url(reference);
        self.timed(&url, bytes.len() as u64, async {
            match self
                .request(
                    reqwest::Method::PUT,
                    &url,
                    &[media_type],
                    Some((media_type, bytes)),
                )
                .await?
            {
                Some(_) => Ok(()),
                None => Err(Error::Registry {
                    registry: self.registry.clone(),
                    reason: format!("PUT {url}: 404 Not Found (does the repository exist?)"),
                }),
            }
        })
        .await
    }

    /// Send a GET; `None` on a 404, an error naming the URL and status on
    /// any other failure. A 401 with a grant in hand asks for a fresh one
    /// (a token expires) and tries once more.
    async fn send(&self, url: &str, accept: &[&str]) -> Result<Option<reqwest::Response>> {
        self.request(reqwest::Method::GET, url, accept, None).await
    }

    /// As [`Http::send`], for any method, with a body (and its type) if given.
    async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        accept: &[&str],
        body: Option<(&str, &[u8])>,
    ) -> Result<Option<reqwest::Response>> {
        let mut refreshed = false;
        let mut res = loop {
            let mut req = self
                .client
                .request(method.clone(), url)
                .header(reqwest::header::ACCEPT, accept.join(", "));
            if let Some((content_type, bytes)) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(bytes.to_vec());
            }
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
                    let err = |e: &OciDistributionError| Error::Registry {
                        registry: self.registry.clone(),
                        reason: format!("authenticating again for {url}: {e}"),
                    };
                    self.authenticate(&reference, op, &err).await?;
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
            reason: format!("{method} {url}: {status}: {}{hint}", body.trim()),
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
        Err(_) if total >= limits.registry_max => Err(Limits::exceeded(
            "registry_max",
            what.to_string(),
            format!(
                "not done after {} (the longest total time-out of any request; it declared {declared} bytes)",
                seconds(total)
            ),
        )),
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
    // A registry on this host that speaks plain HTTP answers a TLS hello
    // with garbage (or hangs up): the connection fails before any status.
    // A refused connection is nobody listening, and says so itself.
    let refused = {
        let mut cause: Option<&dyn std::error::Error> = Some(e);
        std::iter::from_fn(|| {
            let c = cause?;
            cause = c.source();
            Some(c)
        })
        .any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        })
    };
    let hint = if url.starts_with("https://")
        && (e.is_connect() || e.is_request())
        && !refused
        && super::is_loopback_registry(registry)
    {
        " (the registry may speak plain HTTP: pass --insecure, or set insecure_registry = true in the fleet file)"
    } else {
        ""
    };
    Error::Registry {
        registry: registry.to_string(),
        reason: format!("{url}: {}{hint}", chain(e)),
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

/// `Bearer realm="…",service="…",scope="…"` → (realm, service); `None` for
/// any other scheme, or a bearer challenge without a realm.
fn bearer_challenge(header: &str) -> Option<(String, Option<String>)> {
    let (scheme, params) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut found: Vec<(String, String)> = Vec::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (quoted[..end].to_string(), &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        found.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    let get = |k: &str| found.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    Some((get("realm")?, get("service")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_challenges() {
        assert_eq!(
            bearer_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some((
                "https://auth.example/token".into(),
                Some("registry.example".into())
            ))
        );
        assert_eq!(
            bearer_challenge("bearer realm=http://t/token"),
            Some(("http://t/token".into(), None))
        );
        assert_eq!(bearer_challenge(r#"Basic realm="x""#), None);
        assert_eq!(bearer_challenge(r#"Bearer service="x""#), None);
        assert_eq!(bearer_challenge(r#"Bearer realm="unterminated"#), None);
    }
}

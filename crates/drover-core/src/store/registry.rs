//! Moving images, and the artifacts attached to them, between the store and
//! OCI distribution registries.
//!
//! Push sends the exact manifest bytes the store holds, so an image's digest
//! is the same on both sides. Blobs the registry already has are skipped (a
//! HEAD each); the rest go up a few at a time. Referrers (artifacts whose
//! `subject` is the image, such as its baseline) travel with it: they are
//! pushed by digest and listed in the referrers tag schema
//! (`sha256-<hex>` tagging an image index), which every registry can hold;
//! pull asks the OCI 1.1 referrers API first and falls back to that tag.
//!
//! Pull checks the manifest bytes against the digest asked for (or records
//! the digest a tag named) and writes each blob through the store's blob
//! writer, which hashes while writing and refuses to name a blob whose bytes
//! do not match: a tampered blob leaves nothing behind, and the tag is only
//! set once everything has arrived.
//!
//! Credentials (see [`credentials`]) go as HTTP Basic auth, or to the
//! registry's token service for a bearer token where the registry asks for
//! one; each push or pull authenticates once up front (see
//! `Session::authenticate`), so a refused password is reported as such.
//! Failures are classified by oci-client's error variants and HTTP status
//! (`classify`), never by their text.
//!
//! Nothing a registry sends decides how much memory, disk or time a pull
//! takes (see `http`): manifests, indexes and referrer listings are read
//! by drover itself up to `manifest_bytes`, a config up to `config_bytes`,
//! a blob up to the size its descriptor declares (and refused if it ends
//! short or hashes wrong, leaving nothing behind); every request, the
//! authentication ones too, has connect, idle and total time-outs. A pulled
//! image is then validated as a whole (`store::validate`: sizes, media
//! types, each layer's diff_id) before anything names it.
//!
//! An image index (a multi-platform image) is resolved to the manifest for
//! the host's platform, or the one `--platform` asks for (see [`platform`]);
//! that manifest is what is stored, tagged and reported.
//!
//! The HTTP client (`oci-client`) is async; it runs on a private
//! current-thread runtime inside each call, so nothing async leaks out.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::IpAddr;

use futures_util::{StreamExt, stream};
use oci_client::RegistryOperation;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Serialize;

use super::oci::{self, Descriptor, Index, Manifest};
use super::{Layout, Store, normalize_tag};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::grammar;
use crate::ledger::NewEntry;
use crate::limits::Limits;

pub mod credentials;
mod http;
pub mod platform;

pub use credentials::credentials;

pub use platform::Platform;

/// Docker Hub, as references name it.
const DOCKER_HUB: &str = "docker.io";
/// Blobs in flight at once, each way.
const PARALLEL: usize = 4;
/// Blobs larger than this are streamed from disk when pushed.
const STREAM_ABOVE: u64 = 16 << 20;
/// The size of each read of a streamed blob.
const CHUNK: usize = 4 << 20;

/// Where an image lives in a registry: `<registry>/<repository>[:tag|@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Remote {
    /// Whether `s` names a registry rather than a local tag: its first
    /// `/`-separated component is a host (has a `.` or a port, or is
    /// `localhost`), as in Docker's references.
    pub fn is_remote(s: &str) -> bool {
        s.split_once('/').is_some_and(|(host, _)| {
            host.contains('.') || host.contains(':') || host == "localhost"
        })
    }

    /// Parse a registry reference by the distribution grammar
    /// (`oci_client::Reference`), normalised as Docker does: no registry
    /// means docker.io, and a docker.io repository of one component is in
    /// `library/` (`busybox` is `docker.io/library/busybox`). No tag and no
    /// digest means `:latest` to a pull.
    pub fn parse(s: &str) -> Result<Remote> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "{s:?} is not a registry reference ({why}); expected [<registry>/]<repository>[:tag|@sha256:…], e.g. 127.0.0.1:5000/hello:1.0 or busybox (docker.io/library/busybox)"
            ))
        };
        // The grammar's hosts have no brackets: an IPv6 literal stands in
        // for a placeholder host while the rest is parsed.
        let (v6, text) = match s.split_once('/') {
            Some((host, rest)) if host.starts_with('[') => {
                (Some(host), format!("ipv6.invalid/{rest}"))
            }
            _ => (None, s.to_string()),
        };
        let parsed = Reference::try_from(text.as_str()).map_err(|e| {
            // Say what the grammar says of the repository, when that is it.
            let name = text.split('@').next().unwrap_or(&text);
            let path = match name.split_once('/') {
                Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
                _ => name,
            };
            let repo = super::reference::split_tag(path).0;
            match grammar::repository(repo) {
                Err(why) => bad(&why),
                Ok(()) => bad(&e.to_string()),
            }
        })?;
        let digest = parsed
            .digest()
            .map(|d| d.parse::<Digest>().map_err(|e| bad(&e.to_string())))
            .transpose()?;
        // The Reference fills in `latest`; a tag counts only if written.
        let written = s.split('@').next().unwrap_or(s);
        let has_tag = written.rsplit('/').next().unwrap_or(written).contains(':');
        let tag = parsed.tag().filter(|_| has_tag).map(str::to_string);
        grammar::repository(parsed.repository()).map_err(|e| bad(&e))?;
        if let Some(t) = &tag {
            grammar::tag(t).map_err(|e| bad(&e))?;
        }
        Ok(Remote {
            registry: v6.unwrap_or(parsed.registry()).to_string(),
            repository: parsed.repository().to_string(),
            tag,
            digest,
        })
    }

    /// Where requests go: docker.io's registry is served at
    /// index.docker.io (as `Reference::resolve_registry` says).
    pub fn endpoint(&self) -> &str {
        match self.registry.as_str() {
            DOCKER_HUB => "index.docker.io",
            r => r,
        }
    }

    /// The repository a pull names locally: the repository, without
    /// docker.io's `library/` (`busybox:latest`, as Docker lists it).
    pub fn local_repository(&self) -> String {
        match (
            self.registry.as_str(),
            self.repository.strip_prefix("library/"),
        ) {
            (DOCKER_HUB, Some(official)) => official.to_string(),
            _ => self.repository.clone(),
        }
    }

    /// The host without its port.
    fn host(&self) -> &str {
        let r = self.registry.as_str();
        if let Some(rest) = r.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        r.rsplit_once(':').map_or(r, |(h, _)| h)
    }

    /// Plain HTTP (`--insecure`) is only allowed for these.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host())
    }

    fn with_tag(&self, tag: &str) -> Reference {
        Reference::with_tag(self.registry.clone(), self.repository.clone(), tag.into())
    }

    fn with_digest(&self, digest: &Digest) -> Reference {
        Reference::with_digest(
            self.registry.clone(),
            self.repository.clone(),
            digest.to_string(),
        )
    }
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `registry` (`host[:port]`, `[v6]:port`) is on this host.
pub(crate) fn is_loopback_registry(registry: &str) -> bool {
    Remote {
        registry: registry.to_string(),
        repository: String::new(),
        tag: None,
        digest: None,
    }
    .is_loopback()
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// How to talk to a registry.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Plain HTTP; only allowed for loopback registries.
    pub insecure: bool,
    /// Basic-auth credentials; `None` means anonymous (see [`credentials`]).
    pub credentials: Option<(String, String)>,
    /// Which image of an image index to pull; the host's platform if `None`.
    pub platform: Option<Platform>,
    /// Told of the bytes a push sends or a pull receives.
    pub progress: crate::progress::Shared,
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub digest: Digest,
    pub remote: String,
    pub blobs_sent: usize,
    pub blobs_skipped: usize,
    pub bytes_sent: u64,
    pub referrers: Vec<Digest>,
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub digest: Digest,
    pub remote: String,
    /// The local tag set, if the remote reference had one.
    pub tag: Option<String>,
    pub blobs_fetched: usize,
    pub blobs_present: usize,
    pub bytes_fetched: u64,
    pub referrers: Vec<Digest>,
    /// When the remote reference named an image index: the index's digest
    /// and the platform whose manifest (`digest`) was chosen from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// What went wrong with a registry request, as far as drover cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The token service of a bearer-token registry refused the credentials
    /// (or their absence).
    TokenRefused,
    /// 401: credentials missing, wrong, or not enough for the request.
    Unauthorized,
    /// 403, or the registry's `DENIED` code.
    Denied,
    /// 404, or one of the registry's "unknown" codes.
    NotFound,
    Other,
}

/// Classify an oci-client error by its variant and HTTP status. oci-client
/// keeps the status in every variant that comes from a response
/// (`UnauthorizedError` for 401, `ServerError::code`, the registry's error
/// envelope, or reqwest's status for `blob_exists`), so no error text needs
/// reading; anything else (connection, I/O, parse errors) is `Other`.
fn classify(e: &OciDistributionError) -> Failure {
    use OciDistributionError as E;
    let status = match e {
        E::AuthenticationFailure(_) => return Failure::TokenRefused,
        E::ImageManifestNotFoundError(_) => return Failure::NotFound,
        E::UnauthorizedError { .. } => 401,
        E::ServerError { code, .. } => *code,
        E::RequestError(r) => match r.status() {
            Some(s) => s.as_u16(),
            None => return Failure::Other,
        },
        E::RegistryError { envelope, .. } => {
            let codes = || envelope.errors.iter().map(|e| &e.code);
            return if codes().any(|c| *c == OciErrorCode::Unauthorized) {
                Failure::Unauthorized
            } else if codes().any(|c| *c == OciErrorCode::Denied) {
                Failure::Denied
            } else if codes().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Failure::NotFound
            } else {
                Failure::Other
            };
        }
        _ => return Failure::Other,
    };
    match status {
        401 => Failure::Unauthorized,
        403 => Failure::Denied,
        404 => Failure::NotFound,
        _ => Failure::Other,
    }
}

/// Where credentials come from, for the errors that want them.
const CREDENTIALS_HINT: &str = "DROVER_REGISTRY_USER and DROVER_REGISTRY_PASSWORD, or else Docker's config.json (credHelpers, credsStore, auths)";

/// One push or pull: the client, who it authenticates as, and the runtime
/// that drives it.
struct Session {
    client: Client,
    auth: RegistryAuth,
    rt: tokio::runtime::Runtime,
    remote: Remote,
    /// The GETs drover bounds itself.
    http: http::Http,
    limits: Limits,
}

impl Session {
    /// A registry error about `what`, explained when it is about credentials.
    fn err(&self, what: impl std::fmt::Display, e: &OciDistributionError) -> Error {
        let remote = &self.remote;
        if let OciDistributionError::RequestError(r) = e
            && (r.is_timeout() || r.is_connect())
        {
            let url = r.url().map_or_else(|| what.to_string(), |u| u.to_string());
            return http::transport_error(&self.limits, &remote.registry, &url, r);
        }
        let user = match &self.auth {
            RegistryAuth::Basic(user, _) => Some(user),
            _ => None,
        };
        let repo = &remote.repository;
        let reason = match (classify(e), user) {
            // Only `authenticate` meets this one, so `what` adds nothing.
            (Failure::TokenRefused, Some(user)) => format!(
                "authentication failed for user {user:?} in {repo}: the registry's token service refused the credentials: {e} (they come from {CREDENTIALS_HINT})"
            ),
            (Failure::TokenRefused, None) => format!(
                "authentication failed in {repo}: the registry's token service refused an anonymous request: {e} (the registry wants credentials: set DROVER_REGISTRY_USER and DROVER_REGISTRY_PASSWORD, or log in so Docker's config.json has them)"
            ),
            (Failure::Unauthorized, Some(user)) => format!(
                "authentication failed: {what} in {repo}: {e} (the registry refused the credentials of user {user:?}, or they do not allow this; they come from {CREDENTIALS_HINT})"
            ),
            (Failure::Unauthorized, None) => format!(
                "{what} in {repo}: {e} (the registry wants credentials: set DROVER_REGISTRY_USER and DROVER_REGISTRY_PASSWORD, or log in so Docker's config.json has them)"
            ),
            (Failure::Denied, _) => {
                format!("{what} in {repo}: {e} (access denied: these credentials may not do this)")
            }
            _ => format!("{what} in {repo}: {e}"),
        };
        Error::Registry {
            registry: remote.registry.clone(),
            reason,
        }
    }

    /// Authenticate for `op` on `reference`'s repository before anything
    /// else, and cache what the registry grants (a bearer token, or the
    /// basic credentials) for the requests that follow.
    ///
    /// oci-client would do this lazily on each request, but it drops the
    /// token service's refusal (`get_auth_token` turns the error into "no
    /// token") and sends the request anonymously: a wrong password then shows
    /// up as a bare 401 from the registry, with the token service asked again
    /// for every request. Asking once here keeps its answer.
    ///
    /// What it grants is also what drover's own GETs (`http`) send.
    async fn authenticate(&self, reference: &Reference, op: RegistryOperation) -> Result<()> {
        let what = format!("authenticating with {}", self.remote.registry);
        self.timed(&what, 0, async {
            self.http
                .authenticate(reference, op, &|e| self.err("authenticating", e))
                .await
        })
        .await
    }

    /// Run `fut`, a request moving about `declared` bytes, within the total
    /// time-out (see `http::timed`).
    async fn timed<T>(
        &self,
        what: &str,
        declared: u64,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        http::timed(&self.limits, what, declared, fut).await
    }
}

fn session(remote: &Remote, opts: &Options, limits: &Limits) -> Result<Session> {
    if opts.insecure && !remote.is_loopback() {
        return Err(Error::Usage(format!(
            "--insecure (plain HTTP) is only allowed for loopback registries, not {}; use TLS",
            remote.registry
        )));
    }
    // reqwest is built without a crypto provider of its own (see Cargo.toml);
    // installing one twice is harmless, so this just makes sure there is one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(ClientConfig {
        protocol: if opts.insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        // One streamed PUT per blob: chunked uploads cost a round trip and a
        // registry-side resume per 4 MiB, which made pushes slower than
        // skopeo's (bench/registry.sh).
        use_monolithic_push: true,
        connect_timeout: Some(limits.registry_connect),
        read_timeout: Some(limits.registry_idle),
        ..Default::default()
    });
    let scheme = if opts.insecure { "http" } else { "https" };
    let auth = match &opts.credentials {
        Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
        None => RegistryAuth::Anonymous,
    };
    let mut http = http::Http::new(
        scheme,
        remote.endpoint(),
        &remote.repository,
        limits,
        &client,
        &auth,
    )?;
    http.progress = opts.progress.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Failed(format!("start the registry client: {e}")))?;
    Ok(Session {
        client,
        auth,
        rt,
        remote: remote.clone(),
        http,
        limits: limits.clone(),
    })
}

/// The blobs a manifest needs: its config and layers.
fn blobs_of(m: &Manifest) -> impl Iterator<Item = &Descriptor> {
    std::iter::once(&m.config).chain(&m.layers)
}

/// Push `reference` (anything `Store::resolve` takes) and its referrers.
pub fn push(
    store: &mut Store,
    reference: &str,
    remote: &Remote,
    opts: &Options,
) -> Result<PushReport> {
    if remote.digest.is_some() {
        return Err(Error::Usage(format!(
            "push to {remote}: give a tag, not a digest (the digest is the image's own)"
        )));
    }
    let s = session(remote, opts, store.limits())?;
    let desc = store.resolve(reference)?;
    let bytes = store.read_blob(&desc.digest)?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(format!("manifest {}", desc.digest), e.to_string()))?;
    let mut referrers = Vec::new();
    for r in store.referrers(&desc.digest, None)? {
        let rbytes = store.read_blob(&r.digest)?;
        let rm: Manifest = serde_json::from_slice(&rbytes)
            .map_err(|e| Error::corrupt(format!("manifest {}", r.digest), e.to_string()))?;
        referrers.push((r, rbytes, rm));
    }
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen = BTreeSet::new();
    for d in blobs_of(&manifest).chain(referrers.iter().flat_map(|(_, _, m)| blobs_of(m))) {
        if seen.insert(d.digest) {
            blobs.push(d.clone());
        }
    }
    let layout = store.layout().clone();
    let image_ref = remote.with_digest(&desc.digest);

    s.http.progress.phase(
        "push",
        blobs.len() as u64,
        blobs.iter().map(|d| d.size).sum(),
    );
    let (sent, skipped, bytes_sent) = s.rt.block_on(async {
        // Push needs both: checking which blobs the registry has is a pull.
        // Asked here, before the parallel uploads would each ask at once.
        s.authenticate(&image_ref, RegistryOperation::Pull).await?;
        s.authenticate(&image_ref, RegistryOperation::Push).await?;
        let results: Vec<Result<Option<u64>>> = stream::iter(blobs.iter())
            .map(|d| push_blob(&s, &image_ref, &layout, d))
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let (mut sent, mut skipped, mut total) = (0, 0, 0);
        for r in results {
            match r? {
                Some(n) => {
                    sent += 1;
                    total += n;
                }
                None => skipped += 1,
            }
        }
        // Referrers first, then the image: a reader that finds the image
        // by its tag finds its attachments too.
        for (r, rbytes, _) in &referrers {
            push_manifest(&s, &remote.with_digest(&r.digest), rbytes, &r.media_type).await?;
        }
        let target = match &remote.tag {
            Some(t) => remote.with_tag(t),
            None => image_ref.clone(),
        };
        push_manifest(&s, &target, &bytes, &desc.media_type).await?;
        // Write the referrers tag schema only for referrers the registry does
        // not already list: through its referrers API if it has one (which
        // lists a manifest as soon as it is pushed), or the tag, if an
        // earlier push wrote it. oci-client asks the API and falls back to
        // the tag on a 404.
        if !referrers.is_empty() {
            let listed: BTreeSet<Digest> = list_referrers(&s, &desc.digest)
                .await
                .map(|l| l.into_iter().collect())
                .unwrap_or_default();
            let unlisted: Vec<_> = referrers
                .iter()
                .filter(|(r, _, _)| !listed.contains(&r.digest))
                .cloned()
                .collect();
            if !unlisted.is_empty() {
                update_referrers_tag(&s, &desc.digest, &unlisted).await?;
            }
        }
        Ok::<_, Error>((sent, skipped, total))
    })?;

    let report = PushReport {
        digest: desc.digest,
        remote: remote.to_string(),
        blobs_sent: sent,
        blobs_skipped: skipped,
        bytes_sent,
        referrers: referrers.iter().map(|(r, _, _)| r.digest).collect(),
    };
    store.mutate(|m| {
        m.record(NewEntry::new(
            "image.push",
            vec![desc.digest.to_string()],
            serde_json::json!({
                "remote": report.remote,
                "repository": remote.repository,
                "blobs_sent": report.blobs_sent,
                "blobs_skipped": report.blobs_skipped,
                "bytes_sent": report.bytes_sent,
                "referrers": report.referrers.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            }),
        ))
    })?;
    Ok(report)
}

/// Upload one blob unless the registry has it; `Some(bytes)` if sent.
async fn push_blob(
    s: &Session,
    image: &Reference,
    layout: &Layout,
    d: &Descriptor,
) -> Result<Option<u64>> {
    let digest = d.digest.to_string();
    // drover's own HEAD: bounded like its GETs.
    if s.http.blob_exists(&d.digest).await? {
        s.http.progress.advance(d.size);
        return Ok(None);
    }
    let what = format!("uploading blob {digest} to {}", s.remote);
    let mut r = super::VerifyingReader::open_path(&layout.blob_path(&d.digest), d.digest)?;
    if d.size > STREAM_ABOVE {
        // Large blobs stream from disk rather than sit in memory. The reader
        // fails at EOF if the local blob is corrupt, which aborts the upload
        // before it is committed (and the registry checks the digest too).
        let progress = s.http.progress.clone();
        let chunks = stream::try_unfold(r, move |mut r| {
            let progress = progress.clone();
            async move {
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                loop {
                    let n = r.read(&mut buf[filled..])?;
                    filled += n;
                    if n == 0 || filled == buf.len() {
                        break;
                    }
                }
                if filled == 0 {
                    return Ok(None);
                }
                buf.truncate(filled);
                progress.advance(filled as u64);
                Ok(Some((bytes::Bytes::from(buf), r)))
            }
        });
        s.timed(&what, d.size, async {
            s.client
                .push_blob_stream(image, chunks, &digest, Some(d.size))
                .await
                .map_err(|e| s.err(format_args!("uploading blob {digest}"), &e))
        })
        .await?;
        return Ok(Some(d.size));
    }
    // Read and verify before sending: a corrupt local blob must not leave.
    let mut data = Vec::with_capacity(d.size as usize);
    r.read_to_end(&mut data).map_err(|e| r.map_err(e))?;
    let n = data.len() as u64;
    s.timed(&what, n, async {
        s.client
            .push_blob(image, data, &digest)
            .await
            .map_err(|e| s.err(format_args!("uploading blob {digest}"), &e))
    })
    .await?;
    s.http.progress.advance(n);
    Ok(Some(n))
}

async fn push_manifest(
    s: &Session,
    target: &Reference,
    bytes: &[u8],
    media_type: &str,
) -> Result<()> {
    // drover's own PUT: oci-client reads an error answer whole.
    let reference = target.digest().or(target.tag()).unwrap_or("latest");
    s.http.put_manifest(reference, bytes, media_type).await
}

/// The referrers tag schema: `sha256-<hex>` tags an index listing the
/// subject's referrers. Merged with what is there, so referrers pushed by
/// others stay listed.
async fn update_referrers_tag(
    s: &Session,
    subject: &Digest,
    referrers: &[(super::Referrer, Vec<u8>, Manifest)],
) -> Result<()> {
    let tag = referrers_tag(subject);
    let tag_ref = s.remote.with_tag(&tag);
    // A 404 is the first push of a referrer: no index yet. Any other failure
    // (credentials, a server error) is not a reason to replace an index that
    // may list others' referrers.
    let url = s.http.manifest_url(&tag);
    let mut index = match s.http.document(&url, &[oci::MEDIA_INDEX]).await? {
        Some(doc) => serde_json::from_slice::<Index>(&doc.bytes)
            .map_err(|e| Error::corrupt(format!("referrers index {tag_ref}"), e.to_string()))?,
        None => Index {
            schema_version: 2,
            media_type: Some(oci::MEDIA_INDEX.into()),
            manifests: Vec::new(),
            annotations: Default::default(),
        },
    };
    let before = index.manifests.len();
    for (r, _, _) in referrers {
        if !index.manifests.iter().any(|d| d.digest == r.digest) {
            let mut d = Descriptor::new(&r.media_type, r.digest, r.size);
            d.artifact_type = Some(r.artifact_type.clone());
            index.manifests.push(d);
        }
    }
    if index.manifests.len() == before {
        return Ok(());
    }
    let bytes =
        serde_json::to_vec(&index).map_err(|e| Error::corrupt("referrers index", e.to_string()))?;
    push_manifest(s, &tag_ref, &bytes, oci::MEDIA_INDEX).await
}

fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// Pull `remote` and its referrers into the store; tag it `<repository>:<tag>`
/// if `remote` names a tag. An image index is resolved to one platform's
/// manifest first (`opts.platform`, else the host's), and that manifest is
/// what is stored and tagged. Nothing is named until the image has passed
/// `validate::image`.
pub fn pull(store: &mut Store, remote: &Remote, opts: &Options) -> Result<PullReport> {
    let s = session(remote, opts, store.limits())?;
    let first = match (&remote.digest, &remote.tag) {
        (Some(d), _) => remote.with_digest(d),
        (None, Some(t)) => remote.with_tag(t),
        (None, None) => remote.with_tag("latest"),
    };
    let want = opts.platform.clone().unwrap_or_else(Platform::host);
    let store_ref: &Store = store;
    let pulled = s.rt.block_on(async {
        s.authenticate(&first, RegistryOperation::Pull).await?;
        let top = fetch_top(&s, &first, remote.digest, &want).await?;
        check_declared(
            &s.limits,
            &format!("image {} from {remote}", top.digest),
            &top.manifest,
        )?;
        let mut counts = Counts::default();
        let checked = fetch_image_blobs(&s, store_ref, &top.manifest, &mut counts).await?;
        // An image whose manifest the store holds already passed this check
        // (or was built here); `drover verify` re-checks stored images.
        if !store_ref.has_blob(&top.digest) {
            let what = format!("image {} from {remote}", top.digest);
            let len = top.bytes.len() as u64;
            super::validate::image(store_ref, &what, &top.manifest, len, &checked)?;
        }
        // The manifest goes in after its blobs, so it never names a missing one.
        store_ref.put_blob(&top.bytes)?;
        let referrers =
            fetch_referrers(&s, store_ref, &top.digest, &BTreeSet::new(), &mut counts).await?;
        Ok::<_, Error>((top, counts, referrers))
    })?;
    let (top, counts, referrers) = pulled;

    // `pull hello` is `pull hello:latest`, and is named so, as by Docker.
    let tag = match (&remote.tag, &remote.digest) {
        (Some(t), _) => Some(t.as_str()),
        (None, None) => Some("latest"),
        (None, Some(_)) => None,
    }
    .map(|t| normalize_tag(&format!("{}:{t}", remote.local_repository())));
    let image = Descriptor::new(&top.media_type, top.digest, top.bytes.len() as u64);
    let mut report = record_pull(store, remote, &image, tag, counts, referrers, top.index)?;
    report.platform = top.index.map(|_| want.to_string());
    Ok(report)
}

pub fn pull_referrers(
    store: &mut Store,
    remote: &Remote,
    digest: &Digest,
    opts: &Options,
) -> Result<Option<PullReport>> {
    let bytes = store.read_blob(digest)?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(format!("manifest {digest}"), e.to_string()))?;
    let media_type = manifest
        .media_type
        .as_deref()
        .unwrap_or(oci::MEDIA_MANIFEST);
    let image = Descriptor::new(media_type, *digest, bytes.len() as u64);
    let have: BTreeSet<Digest> = store
        .referrers(digest, None)?
        .into_iter()
        .map(|r| r.digest)
        .collect();
    let s = session(remote, opts, store.limits())?;
    let image_ref = remote.with_digest(digest);
    let store_ref: &Store = store;
    let (counts, referrers) = s.rt.block_on(async {
        s.authenticate(&image_ref, RegistryOperation::Pull).await?;
        let mut counts = Counts::default();
        let referrers = fetch_referrers(&s, store_ref, digest, &have, &mut counts).await?;
        Ok::<_, Error>((counts, referrers))
    })?;
    if referrers.is_empty() {
        return Ok(None);
    }
    record_pull(store, remote, &image, None, counts, referrers, None).map(Some)
}

/// Register what a pull brought (referrers, the tag) and record it in the
/// ledger (with the index the image was chosen from, if any).
fn record_pull(
    store: &mut Store,
    remote: &Remote,
    image: &Descriptor,
    tag: Option<String>,
    counts: Counts,
    referrers: Vec<(Descriptor, String)>,
    index: Option<Digest>,
) -> Result<PullReport> {
    let digest = image.digest;
    let report = PullReport {
        digest,
        remote: remote.to_string(),
        tag: tag.clone(),
        blobs_fetched: counts.fetched,
        blobs_present: counts.present,
        bytes_fetched: counts.bytes,
        referrers: referrers.iter().map(|(d, _)| d.digest).collect(),
        index,
        platform: None,
    };
    store.mutate(|m| {
        for (d, artifact_type) in &referrers {
            m.add_referrer(d, &digest, artifact_type)?;
        }
        if let Some(t) = &tag {
            m.set_tag(t, image)?;
        }
        m.record(NewEntry::new(
            "image.pull",
            vec![digest.to_string()],
            serde_json::json!({
                "remote": report.remote,
                "repository": remote.repository,
                "tag": tag,
                "blobs_fetched": report.blobs_fetched,
                "blobs_present": report.blobs_present,
                "bytes_fetched": report.bytes_fetched,
                "referrers": report.referrers.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "index": index.map(|d| d.to_string()),
            }),
        ))
    })?;
    Ok(report)
}

/// Fetch the referrers the registry lists for `digest`, except those in
/// `skip`, with their blobs: through the OCI 1.1 referrers API, or the tag
/// schema where the registry lacks it (oci-client falls back on a 404).
/// Returns each one's descriptor and artifact type, for the caller to
/// register once all have arrived.
/// Fetch the referrers the registry lists for `digest`, except those in
/// `skip`, with their blobs. Returns each one's descriptor and artifact
/// type, for the caller to register once all have arrived.
async fn fetch_referrers(
    s: &Session,
    store: &Store,
    digest: &Digest,
    skip: &BTreeSet<Digest>,
    counts: &mut Counts,
) -> Result<Vec<(Descriptor, String)>> {
    let mut referrers = Vec::new();
    let listed = list_referrers(s, digest).await?;
    let cap = s.limits.referrers;
    if listed.len() as u64 > cap {
        return Err(Limits::exceeded(
            "referrers",
            format!("the referrers of {digest} in {}", s.remote),
            format!(
                "the registry lists {}, more than {cap}; refused before fetching any",
                listed.len()
            ),
        ));
    }
    for rd in listed {
        if skip.contains(&rd) {
            continue;
        }
        let rref = s.remote.with_digest(&rd);
        let (_, rbytes, rm, rmedia) = fetch_manifest(s, &rref, Some(rd)).await?;
        if rm.subject.as_ref().map(|d| d.digest) != Some(*digest) {
            continue;
        }
        let cap = s.limits.artifact_bytes;
        if let Some(big) = blobs_of(&rm).find(|b| b.size > cap) {
            return Err(Limits::exceeded(
                "artifact_bytes",
                format!("blob {} of referrer {rd} in {}", big.digest, s.remote),
                format!(
                    "it declares {} bytes, more than {cap}; refused before fetching it",
                    big.size
                ),
            ));
        }
        fetch_blobs(s, store, &rm, counts).await?;
        store.put_blob(&rbytes)?;
        let rsize = rbytes.len() as u64;
        let artifact_type = rm
            .artifact_type
            .clone()
            .unwrap_or_else(|| rm.config.media_type.clone());
        referrers.push((Descriptor::new(&rmedia, rd, rsize), artifact_type));
    }
    Ok(referrers)
}

/// The digests the registry lists as referrers of `digest`: through the
/// OCI 1.1 referrers API, or the referrers tag schema where the registry
/// lacks it (a 404). Each listing is bounded like a manifest.
async fn list_referrers(s: &Session, digest: &Digest) -> Result<Vec<Digest>> {
    let api = s.http.referrers_url(digest);
    let tag = s.http.manifest_url(&referrers_tag(digest));
    let doc = match s.http.document(&api, &[oci::MEDIA_INDEX]).await? {
        Some(doc) => Some((doc, api)),
        None => s
            .http
            .document(&tag, &[oci::MEDIA_INDEX])
            .await?
            .map(|d| (d, tag)),
    };
    let Some((doc, url)) = doc else {
        return Ok(Vec::new());
    };
    let index: Index = serde_json::from_slice(&doc.bytes)
        .map_err(|e| Error::corrupt(format!("referrers listing {url}"), e.to_string()))?;
    Ok(index.manifests.into_iter().map(|d| d.digest).collect())
}

#[derive(Default)]
struct Counts {
    fetched: usize,
    present: usize,
    bytes: u64,
}

/// The image a pull fetches: its manifest, and the index it was chosen
/// from if the reference named one.
struct Top {
    digest: Digest,
    bytes: Vec<u8>,
    manifest: Manifest,
    media_type: String,
    index: Option<Digest>,
}

/// Fetch what `reference` names (checked against `expected` if given); if
/// it is an image index, choose `want`'s manifest from it and fetch that.
async fn fetch_top(
    s: &Session,
    reference: &Reference,
    expected: Option<Digest>,
    want: &Platform,
) -> Result<Top> {
    let accept = [
        oci::MEDIA_MANIFEST,
        oci::DOCKER_MANIFEST,
        oci::MEDIA_INDEX,
        oci::DOCKER_MANIFEST_LIST,
    ];
    let (digest, bytes, media_type) = fetch_document(s, reference, expected, &accept).await?;
    if !oci::is_index(&media_type) {
        let (manifest, media_type) = parse_manifest(s, &digest, &bytes, media_type)?;
        return Ok(Top {
            digest,
            bytes,
            manifest,
            media_type,
            index: None,
        });
    }
    let what = format!("image index {digest} of {reference}");
    let index: platform::Index =
        serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&what, e.to_string()))?;
    let entry = platform::choose(&index, want, &what)?;
    let child = s.remote.with_digest(&entry.digest);
    let (cdigest, cbytes, manifest, cmedia) = fetch_manifest(s, &child, Some(entry.digest)).await?;
    if cbytes.len() as u64 != entry.size {
        return Err(Error::corrupt(
            format!("manifest {cdigest} in {what}"),
            format!(
                "it is {} bytes, the index declares {}; refused",
                cbytes.len(),
                entry.size
            ),
        ));
    }
    Ok(Top {
        digest: cdigest,
        bytes: cbytes,
        manifest,
        media_type: cmedia,
        index: Some(digest),
    })
}

/// Fetch a manifest's bytes, check them against `expected` if given, and
/// parse them. Returns (digest, bytes, manifest, media type); the caller
/// stores the bytes once the blobs are in.
async fn fetch_manifest(
    s: &Session,
    reference: &Reference,
    expected: Option<Digest>,
) -> Result<(Digest, Vec<u8>, Manifest, String)> {
    let accept = [oci::MEDIA_MANIFEST, oci::DOCKER_MANIFEST];
    let (digest, bytes, media_type) = fetch_document(s, reference, expected, &accept).await?;
    if oci::is_index(&media_type) {
        return Err(Error::corrupt(
            format!("manifest {digest} from {reference}"),
            format!("it is an image index ({media_type}) where an image manifest was expected"),
        ));
    }
    let (manifest, media_type) = parse_manifest(s, &digest, &bytes, media_type)?;
    Ok((digest, bytes, manifest, media_type))
}

/// GET a manifest or index (at most `manifest_bytes`), check it against
/// `expected`, and say what it is: its `mediaType` field, else the
/// registry's `Content-Type`, else (Docker's schema 2 omits neither, OCI
/// may omit both) an index if it lists `manifests`.
async fn fetch_document(
    s: &Session,
    reference: &Reference,
    expected: Option<Digest>,
    accept: &[&str],
) -> Result<(Digest, Vec<u8>, String)> {
    let remote = &s.remote;
    let tag_or_digest = reference
        .digest()
        .or(reference.tag())
        .unwrap_or("latest")
        .to_string();
    let url = s.http.manifest_url(&tag_or_digest);
    let doc = s
        .http
        .document(&url, accept)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: format!("{reference}"),
            hint: Some(format!("registry {} has no such image", remote.registry)),
        })?;
    let digest = Digest::of(&doc.bytes);
    if let Some(want) = expected
        && want != digest
    {
        return Err(Error::corrupt(
            format!("manifest {want} from {remote}"),
            format!("its bytes hash to {digest}; refused"),
        ));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_slice(&doc.bytes)
        .map_err(|e| Error::corrupt(format!("manifest {digest} from {remote}"), e.to_string()))?;
    let media_type = probe
        .media_type
        .or(doc
            .content_type
            .filter(|t| oci::is_index(t) || oci::is_manifest(t)))
        .unwrap_or_else(|| {
            if probe.manifests.is_some() {
                oci::MEDIA_INDEX.into()
            } else {
                oci::MEDIA_MANIFEST.into()
            }
        });
    Ok((digest, doc.bytes, media_type))
}

/// Parse an image manifest and refuse, before any blob is fetched, what no
/// image may be: another kind of document, a config past `config_bytes`.
fn parse_manifest(
    s: &Session,
    digest: &Digest,
    bytes: &[u8],
    media_type: String,
) -> Result<(Manifest, String)> {
    let remote = &s.remote;
    let what = format!("manifest {digest} from {remote}");
    if !oci::is_manifest(&media_type) {
        return Err(Error::corrupt(
            what,
            format!("it is a {media_type}, not an image manifest"),
        ));
    }
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| Error::corrupt(&what, e.to_string()))?;
    let cap = s.limits.config_bytes;
    if manifest.config.size > cap {
        return Err(Limits::exceeded(
            "config_bytes",
            format!("config {} of {what}", manifest.config.digest),
            format!(
                "it declares {} bytes, more than {cap}",
                manifest.config.size
            ),
        ));
    }
    Ok((manifest, media_type))
}

/// Refuse, before any blob is fetched, an image whose manifest declares a
/// layer past `layer_bytes` (compressed, it is at least that large
/// unpacked, or near enough) or blobs past `image_bytes` in all: a declared
/// size sets a fetch's total time-out, so it must not be trusted unbounded.
fn check_declared(limits: &Limits, what: &str, manifest: &Manifest) -> Result<()> {
    let cap = limits.layer_bytes;
    if let Some(big) = manifest.layers.iter().find(|l| l.size > cap) {
        return Err(Limits::exceeded(
            "layer_bytes",
            format!("layer {} of {what}", big.digest),
            format!(
                "its manifest declares {} bytes, more than {cap}; refused before fetching any blob",
                big.size
            ),
        ));
    }
    let total = blobs_of(manifest).fold(0u64, |sum, d| sum.saturating_add(d.size));
    let cap = limits.image_bytes;
    if total > cap {
        return Err(Limits::exceeded(
            "image_bytes",
            what.to_string(),
            format!(
                "its manifest declares {total} bytes of config and layers, more than {cap}; refused before fetching any blob"
            ),
        ));
    }
    Ok(())
}

/// Fetch the blobs of `manifest` the store lacks, verifying each as it is
/// written; the caller stores the manifest itself afterwards.
async fn fetch_blobs(
    s: &Session,
    store: &Store,
    manifest: &Manifest,
    counts: &mut Counts,
) -> Result<()> {
    let missing: Vec<&Descriptor> = blobs_of(manifest)
        .filter(|d| !store.has_blob(&d.digest))
        .collect();
    counts.present += blobs_of(manifest).count() - missing.len();
    let results: Vec<Result<u64>> = stream::iter(missing)
        .map(|d| fetch_blob(s, store, d, None))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    for r in results {
        counts.bytes += r?;
        counts.fetched += 1;
    }
    Ok(())
}

/// Fetch an image's config, then the layers the store lacks, each layer's
/// diff_id checked as it arrives (`validate::DiffIdCheck`, on a thread of
/// its own). Returns the layers so checked; `validate::image` reads back
/// the others.
async fn fetch_image_blobs(
    s: &Session,
    store: &Store,
    manifest: &Manifest,
    counts: &mut Counts,
) -> Result<BTreeSet<Digest>> {
    let config = &manifest.config;
    if store.has_blob(&config.digest) {
        counts.present += 1;
    } else {
        counts.bytes += fetch_blob(s, store, config, None).await?;
        counts.fetched += 1;
    }
    let diff_ids = store.image_config(manifest)?.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        // Refused before any layer is fetched: without a diff_id a layer's
        // unpacked size would go unchecked until it is unpacked.
        return Err(Error::corrupt(
            format!("image config {} from {}", config.digest, s.remote),
            format!(
                "it lists {} diff_ids for the manifest's {} layers; refused before fetching any layer",
                diff_ids.len(),
                manifest.layers.len()
            ),
        ));
    }
    let missing: Vec<(&Descriptor, &Digest)> = manifest
        .layers
        .iter()
        .zip(&diff_ids)
        .filter(|(d, _)| !store.has_blob(&d.digest))
        .collect();
    counts.present += manifest.layers.len() - missing.len();
    s.http.progress.phase(
        "pull",
        missing.len() as u64,
        missing.iter().map(|(d, _)| d.size).sum(),
    );
    let results: Vec<Result<(Digest, u64)>> = stream::iter(missing)
        .map(|(d, diff_id)| async move {
            let n = fetch_blob(s, store, d, Some(diff_id)).await?;
            Ok((d.digest, n))
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut checked = BTreeSet::new();
    for r in results {
        let (digest, n) = r?;
        counts.bytes += n;
        counts.fetched += 1;
        checked.insert(digest);
    }
    Ok(checked)
}

/// Fetch one blob: at most its declared size, which must match; the store's
/// writer names it only if it hashes to its digest, and removes its temp
/// file otherwise. A layer given its `diff_id` has that checked too.
async fn fetch_blob(
    s: &Session,
    store: &Store,
    d: &Descriptor,
    diff_id: Option<&Digest>,
) -> Result<u64> {
    let mut w = store.blob_writer()?;
    let what = format!("layer {} from {}", d.digest, s.remote);
    let mut check = diff_id
        .map(|_| super::validate::DiffIdCheck::start(d, s.limits.layer_bytes, what))
        .transpose()?;
    s.http
        .blob(&d.digest, d.size, &mut w, check.as_mut())
        .await?;
    let n = w.commit_expecting(&d.digest).map_err(|e| match e {
        Error::CorruptBlob { actual, .. } => Error::corrupt(
            format!("blob {} from {}", d.digest, s.remote),
            format!("its bytes hash to {actual}; refused"),
        ),
        e => e,
    })?;
    if let (Some(check), Some(diff_id)) = (check, diff_id) {
        check.finish(diff_id)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_remotes() {
        let r = Remote::parse("127.0.0.1:5000/team/hello:1.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/hello");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert!(r.is_loopback());
        let d = Digest::of(b"x");
        let r = Remote::parse(&format!("registry.example.com/hello@{d}")).unwrap();
        assert_eq!(r.digest, Some(d));
        assert_eq!(r.tag, None);
        assert!(!r.is_loopback());
        assert!(Remote::parse("[::1]:5000/a").unwrap().is_loopback());
        assert!(Remote::parse("localhost/a").unwrap().is_loopback());
        assert!(Remote::parse("r.io/hello:").is_err());
        assert!(Remote::parse("r.io/hello@sha256:abc").is_err());
        assert!(Remote::parse("r.io/Hello").is_err());
        assert!(Remote::parse("r.io/hello:-x").is_err());
        assert!(Remote::parse("r.io/hello:a$b").is_err());
    }

    /// Regression (issue 19): `drover pull busybox` said "not a registry
    /// reference (no registry)"; references are normalised as Docker does.
    #[test]
    fn normalises_docker_hub_references() {
        let r = Remote::parse("busybox").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/busybox", None)
        );
        assert_eq!(r.endpoint(), "index.docker.io");
        assert_eq!(r.local_repository(), "busybox");
        let r = Remote::parse("hello:1.0").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/hello:1.0");
        let r = Remote::parse("team/web").unwrap();
        assert_eq!(r.to_string(), "docker.io/team/web");
        assert_eq!(r.local_repository(), "team/web");
        let r = Remote::parse("index.docker.io/library/busybox:1").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:1");
        let r = Remote::parse("127.0.0.1:5000/hello").unwrap();
        assert_eq!(
            (r.endpoint(), r.local_repository().as_str()),
            ("127.0.0.1:5000", "hello")
        );
        assert!(Remote::parse("[::1]:5000/a:1").unwrap().tag.is_some());
        assert!(Remote::parse("Busybox").is_err());
    }

    #[test]
    fn classifies_errors_by_variant_and_status() {
        use OciDistributionError as E;
        use oci_client::errors::{OciEnvelope, OciError};
        let url = || "http://r/v2/x".to_string();
        let envelope = |code: OciErrorCode| E::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: String::new(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: url(),
        };
        let server = |code: u16| E::ServerError {
            code,
            url: url(),
            message: String::new(),
        };
        let cases = [
            (E::AuthenticationFailure("no".into()), Failure::TokenRefused),
            (E::UnauthorizedError { url: url() }, Failure::Unauthorized),
            (server(401), Failure::Unauthorized),
            (server(403), Failure::Denied),
            (server(404), Failure::NotFound),
            (server(500), Failure::Other),
            (E::ImageManifestNotFoundError("x".into()), Failure::NotFound),
            (envelope(OciErrorCode::ManifestUnknown), Failure::NotFound),
            (envelope(OciErrorCode::NameUnknown), Failure::NotFound),
            (envelope(OciErrorCode::Unauthorized), Failure::Unauthorized),
            (envelope(OciErrorCode::Denied), Failure::Denied),
            (envelope(OciErrorCode::SizeInvalid), Failure::Other),
            (E::GenericError(Some("401".into())), Failure::Other),
        ];
        for (e, want) in cases {
            assert_eq!(classify(&e), want, "{e}");
        }
    }

    #[test]
    fn credential_errors_say_what_to_do() {
        let r = Remote::parse("127.0.0.1:5000/hello:1").unwrap();
        let anonymous = session(&r, &Options::default(), &Limits::default())
            .ok()
            .unwrap();
        let msg = anonymous
            .err(
                "fetching manifest",
                &OciDistributionError::UnauthorizedError { url: "u".into() },
            )
            .to_string();
        assert!(
            msg.contains("127.0.0.1:5000") && msg.contains("DROVER_REGISTRY_USER"),
            "{msg}"
        );
        let opts = Options {
            insecure: false,
            credentials: Some(("me".into(), "pw".into())),
            ..Options::default()
        };
        let me = session(&r, &opts, &Limits::default()).ok().unwrap();
        let msg = me
            .err(
                "authenticating",
                &OciDistributionError::AuthenticationFailure("bad password".into()),
            )
            .to_string();
        assert!(
            msg.contains("authentication failed")
                && msg.contains(r#"user "me""#)
                && msg.contains("bad password"),
            "{msg}"
        );
        assert!(!msg.contains("pw"), "the password stays out: {msg}");
    }

    #[test]
    fn insecure_is_refused_off_loopback() {
        let r = Remote::parse("registry.example.com:5000/hello:1").unwrap();
        let err = session(
            &r,
            &Options {
                insecure: true,
                ..Options::default()
            },
            &Limits::default(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}

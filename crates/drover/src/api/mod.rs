//! The HTTP API under `/api/v1/` on `serve`'s admin listener.
//!
//! **One table.** [`ROUTES`] lists every endpoint: method, path pattern,
//! the token role it needs and its handler. The router, the OpenAPI
//! document's test and the 405s' `Allow` all read it, so an endpoint cannot
//! exist without being described, nor be described without existing.
//!
//! **Same documents as the CLI.** Handlers call the functions the commands'
//! `--json` output comes from (`cmd::status::documents`,
//! `cmd::releases::releases`, `cmd::ps::documents`, …) and wrap them in the
//! same envelope ([`crate::output::document`]): `GET /api/v1/services` is
//! `drover status --json`.
//!
//! **Who may.** Every endpoint but the OpenAPI document needs a bearer
//! token (`drover token create NAME --role read|deploy|admin`): read for
//! every GET, deploy for apply and rollback, admin for revocations. No
//! token or a bad one is a 401 that says only "invalid token"; a token whose
//! role is too low is a 403, and ledgered (`api.denied`). Actions are
//! ledgered as the token's (`token:NAME`): the handler runs inside
//! [`drover_core::ledger::acting_for`].
//!
//! **Bounds.** Bodies over [`MAX_BODY`] are refused (413) before they are
//! read; handlers run on tokio's blocking pool (they read the state and may
//! start instances), one drift sweep at a time.

mod act;
mod events;
mod read;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use drover_core::ErrorKind;
use drover_core::ledger::{self, NewEntry};
use drover_core::store::Store;
use drover_core::tokens::{self, Role, Token};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as HttpBody, Bytes};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};

use crate::output;

/// The OpenAPI 3.1 document describing [`ROUTES`], served at
/// `/api/v1/openapi.json` (without a token: it says nothing of the fleet).
pub const OPENAPI: &str = include_str!("openapi.json");

/// The largest request body taken: a fleet document of hundreds of
/// services is a few hundred KiB.
pub const MAX_BODY: usize = 1 << 20;

/// A response body: whole, or a stream (the event stream).
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// How long a request's body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the handlers share.
pub struct Api {
    store: PathBuf,
    /// Serve's metrics: the pulls the API's deploys make are counted.
    metrics: Arc<drover_core::metrics::Metrics>,
    /// The last ledger verification, by the head it verified up to: a
    /// ledger page verifies only when the ledger has grown.
    verified: Mutex<Option<((i64, String), Value)>>,
    /// One drift sweep at a time: each reads every file of the roots.
    drift: Mutex<()>,
}

impl Api {
    pub fn new(store: PathBuf, metrics: Arc<drover_core::metrics::Metrics>) -> Api {
        Api {
            store,
            metrics,
            verified: Mutex::new(None),
            drift: Mutex::new(()),
        }
    }
}

/// One endpoint.
pub struct Route {
    pub method: Method,
    /// `/api/v1/services/{name}/rollback`: `{…}` segments are parameters.
    pub path: &'static str,
    /// The least role that may call it; `None`: no token needed.
    pub role: Option<Role>,
    handler: Handler,
}

#[derive(Clone, Copy)]
enum Handler {
    /// Runs on the blocking pool.
    Blocking(fn(&Call) -> anyhow::Result<Reply>),
    /// The event stream (`text/event-stream`), or a JSON list of events.
    Events,
    OpenApi,
}

const fn route(
    method: Method,
    path: &'static str,
    role: Role,
    f: fn(&Call) -> anyhow::Result<Reply>,
) -> Route {
    Route {
        method,
        path,
        role: Some(role),
        handler: Handler::Blocking(f),
    }
}

/// Every endpoint of the API.
pub const ROUTES: &[Route] = &[
    Route {
        method: Method::GET,
        path: "/api/v1/openapi.json",
        role: None,
        handler: Handler::OpenApi,
    },
    route(Method::GET, "/api/v1/whoami", Role::Read, read::whoami),
    route(Method::GET, "/api/v1/services", Role::Read, read::services),
    route(
        Method::GET,
        "/api/v1/services/{name}",
        Role::Read,
        read::service,
    ),
    route(
        Method::GET,
        "/api/v1/services/{name}/releases",
        Role::Read,
        read::service_releases,
    ),
    route(
        Method::GET,
        "/api/v1/services/{name}/logs",
        Role::Read,
        read::logs,
    ),
    route(
        Method::POST,
        "/api/v1/services/{name}/rollback",
        Role::Deploy,
        act::rollback,
    ),
    route(Method::GET, "/api/v1/releases", Role::Read, read::releases),
    route(
        Method::GET,
        "/api/v1/instances",
        Role::Read,
        read::instances,
    ),
    route(
        Method::GET,
        "/api/v1/instances/{id}/trace",
        Role::Read,
        read::trace,
    ),
    route(
        Method::GET,
        "/api/v1/instances/{id}/logs",
        Role::Read,
        read::logs,
    ),
    route(Method::GET, "/api/v1/drift", Role::Read, read::drift),
    route(Method::GET, "/api/v1/ledger", Role::Read, read::ledger),
    Route {
        method: Method::GET,
        path: "/api/v1/events",
        role: Some(Role::Read),
        handler: Handler::Events,
    },
    route(Method::GET, "/api/v1/policy", Role::Read, read::policy),
    route(
        Method::GET,
        "/api/v1/revocations",
        Role::Read,
        read::revocations,
    ),
    route(
        Method::POST,
        "/api/v1/revocations",
        Role::Admin,
        act::revoke,
    ),
    route(
        Method::DELETE,
        "/api/v1/revocations/{image}",
        Role::Admin,
        act::unrevoke,
    ),
    route(Method::POST, "/api/v1/apply", Role::Deploy, act::apply),
];

/// A request, as a handler sees it.
pub struct Call {
    api: Arc<Api>,
    /// The path's `{…}` parameters, in order, percent-decoded.
    params: Vec<String>,
    query: Vec<(String, String)>,
    body: Bytes,
    token: Token,
}

impl Call {
    fn param(&self, i: usize) -> &str {
        &self.params[i]
    }

    fn query(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A `true`/`false` query parameter (absent: `false`; bare `?wait`: `true`).
    fn flag(&self, key: &str) -> anyhow::Result<bool> {
        match self.query(key) {
            None | Some("false" | "0") => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some(v) => Err(usage(format!(
                "query parameter {key}={v:?}: say true or false"
            ))),
        }
    }

    /// A number query parameter.
    fn number<T: std::str::FromStr>(&self, key: &str) -> anyhow::Result<Option<T>> {
        self.query(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| usage(format!("query parameter {key}={v:?}: not a number")))
            })
            .transpose()
    }

    /// The store, leased for the request (as a command holds it).
    fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(&self.api.store)?)
    }

    /// The body as JSON (empty: `null`).
    fn json<T: serde::de::DeserializeOwned + Default>(&self) -> anyhow::Result<T> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            usage(format!(
                "request body: line {} column {}: {e}",
                e.line(),
                e.column()
            ))
        })
    }

    fn text(&self) -> anyhow::Result<&str> {
        std::str::from_utf8(&self.body)
            .map_err(|e| usage(format!("request body: not UTF-8 text ({e})")))
    }
}

fn usage(message: String) -> anyhow::Error {
    drover_core::Error::Usage(message).into()
}

/// A handler's answer: a status and a JSON document (or other bytes).
pub struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
}

impl Reply {
    /// `value` as a `kind` document, exactly as `--json` prints it.
    fn doc<T: Serialize>(kind: &str, value: &T) -> anyhow::Result<Reply> {
        let doc = output::document(kind, serde_json::to_value(value)?);
        Ok(Reply::json(StatusCode::OK, &doc))
    }

    fn json(status: StatusCode, v: &Value) -> Reply {
        let mut body = serde_json::to_vec_pretty(v).expect("a Value serializes");
        body.push(b'\n');
        Reply {
            status,
            content_type: "application/json",
            body: body.into(),
        }
    }

    fn status(mut self, status: StatusCode) -> Reply {
        self.status = status;
        self
    }
}

/// Where a path leads.
enum Found {
    Route(&'static Route, Vec<String>),
    /// The path exists, not with this method: the methods it has.
    Method(Vec<&'static str>),
    None,
}

/// The pattern of the route `path` falls under (whatever the method), for
/// the metrics' label; `other` for none.
pub fn pattern(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| matches(r.path, path).is_some())
        .map_or("other", |r| r.path)
}

fn find(method: &Method, path: &str) -> Found {
    let mut allowed = Vec::new();
    for r in ROUTES {
        let Some(params) = matches(r.path, path) else {
            continue;
        };
        if r.method == *method || (*method == Method::HEAD && r.method == Method::GET) {
            return Found::Route(r, params);
        }
        allowed.push(r.method.as_str());
    }
    if allowed.is_empty() {
        Found::None
    } else {
        Found::Method(allowed)
    }
}

/// The parameters of `path` if it matches `pattern`.
fn matches(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut want = pattern.split('/');
    let mut have = path.split('/');
    let mut params = Vec::new();
    loop {
        match (want.next(), have.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(h)) if w.starts_with('{') => {
                let v = percent_decode(h)?;
                if v.is_empty() {
                    return None;
                }
                params.push(v);
            }
            (Some(w), Some(h)) if w == h => {}
            _ => return None,
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn parse_query(q: Option<&str>) -> Option<Vec<(String, String)>> {
    let Some(q) = q else {
        return Some(Vec::new());
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// Answer a request under `/api/v1/`.
pub async fn handle<B>(req: Request<B>, api: Arc<Api>) -> Response<Body>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (route, params) = match find(req.method(), req.uri().path()) {
        Found::Route(r, p) => (r, p),
        Found::Method(allowed) => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid",
                &format!("{} is not allowed here", req.method()),
                Some(&format!("allowed: {}", allowed.join(", "))),
            );
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return r;
        }
        Found::None => {
            return error(
                StatusCode::NOT_FOUND,
                "not-found",
                &format!("no endpoint {}", req.uri().path()),
                Some("/api/v1/openapi.json describes the API"),
            );
        }
    };
    let Some(query) = parse_query(req.uri().query()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "malformed query string",
            None,
        );
    };
    let token = match route.role {
        None => None,
        Some(needed) => match authorize(&api, &req, needed, route).await {
            Ok(t) => Some(t),
            Err(r) => return r,
        },
    };
    let accepts_events = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let last_event = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let token = match (route.handler, token) {
        (Handler::OpenApi, _) => {
            return respond(Reply {
                status: StatusCode::OK,
                content_type: "application/json",
                body: Bytes::from_static(OPENAPI.as_bytes()),
            });
        }
        (_, Some(t)) => t,
        (_, None) => unreachable!("only the OpenAPI document needs no token"),
    };
    let call = Call {
        api,
        params,
        query,
        body,
        token,
    };
    match route.handler {
        Handler::Events if accepts_events => match events::stream(&call, last_event) {
            Ok(r) => r,
            Err(e) => failure(&e),
        },
        Handler::Events => blocking(call, events::list).await,
        Handler::Blocking(f) => blocking(call, f).await,
        Handler::OpenApi => unreachable!("answered above"),
    }
}

/// Run `f` on the blocking pool, as the caller's token.
async fn blocking(call: Call, f: fn(&Call) -> anyhow::Result<Reply>) -> Response<Body> {
    let result = tokio::task::spawn_blocking(move || {
        let actor = format!("token:{}", call.token.name);
        ledger::acting_for(&actor, || f(&call))
    })
    .await;
    match result {
        Ok(Ok(reply)) => respond(reply),
        Ok(Err(e)) => failure(&e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("the handler failed: {e}"),
            None,
        ),
    }
}

/// The caller's token, if it has one with at least `needed`; else the 401
/// or 403 to answer. A 403 is ledgered: the token is known, and so is what
/// it tried.
async fn authorize<B>(
    api: &Arc<Api>,
    req: &Request<B>,
    needed: Role,
    route: &'static Route,
) -> Result<Token, Response<Body>> {
    let secret = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        });
    let Some(secret) = secret else {
        return Err(unauthorized(
            "this endpoint needs a token: Authorization: Bearer drv_… (drover token create)",
        ));
    };
    let store = api.store.clone();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let found = tokio::task::spawn_blocking(move || -> anyhow::Result<Result<Token, String>> {
        let mut store = Store::open_unleased(&store)?;
        let token = match tokens::authenticate(store.db().read(), &secret) {
            Ok(t) => t,
            Err(drover_core::Error::Unauthenticated(_)) => return Ok(Err(String::new())),
            Err(e) => return Err(e.into()),
        };
        if token.role.allows(needed) {
            return Ok(Ok(token));
        }
        let why = format!(
            "token {} has role {}; {method} {path} needs {}",
            token.name,
            token.role.as_str(),
            needed.as_str()
        );
        let actor = format!("token:{}", token.name);
        ledger::acting_for(&actor, || {
            store.db_mut().write(|tx| {
                tx.record(NewEntry::new(
                    "api.denied",
                    [token.name.clone()],
                    json!({
                        "token": token.name,
                        "role": token.role.as_str(),
                        "needed": needed.as_str(),
                        "method": method,
                        "path": path,
                        "route": route.path,
                    }),
                ))
                .map(drop)
            })
        })?;
        Ok(Err(why))
    })
    .await;
    match found {
        Ok(Ok(Ok(token))) => Ok(token),
        Ok(Ok(Err(why))) if why.is_empty() => Err(unauthorized("invalid token")),
        Ok(Ok(Err(why))) => Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            &why,
            Some("a token with a higher role can (drover token create NAME --role …)"),
        )),
        Ok(Err(e)) => Err(failure(&e)),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &format!("checking the token failed: {e}"),
            None,
        )),
    }
}

fn unauthorized(message: &str) -> Response<Body> {
    let mut r = error(StatusCode::UNAUTHORIZED, "unauthenticated", message, None);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"drover\""),
    );
    r
}

/// The request's body, at most [`MAX_BODY`] bytes (else a 413, said as
/// soon as the declared length or the bytes read pass it).
async fn read_body<B>(body: B) -> Result<Bytes, Response<Body>>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid",
            &format!("request body larger than {} bytes", MAX_BODY),
            None,
        )
    };
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(too_large());
    }
    // A client that trickles its body must not hold the request forever.
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect());
    let Ok(read) = read.await else {
        return Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "invalid",
            &format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
            None,
        ));
    };
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("reading the request body: {e}"),
            None,
        )),
    }
}

fn respond(reply: Reply) -> Response<Body> {
    let mut r = Response::new(Full::new(reply.body).map_err(|e| match e {}).boxed());
    *r.status_mut() = reply.status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An error document (`{apiVersion, kind: Error, error: {kind, message,
/// hint}}`, as the CLI's `--json` errors) with `status`.
fn error(status: StatusCode, kind: &str, message: &str, hint: Option<&str>) -> Response<Body> {
    respond(Reply::json(
        status,
        &output::error_document(kind, message, hint),
    ))
}

/// A handler's error as a response: the status from its kind; a malformed
/// definition also names its line, column and key.
fn failure(e: &anyhow::Error) -> Response<Body> {
    let core = e
        .chain()
        .find_map(|c| c.downcast_ref::<drover_core::Error>());
    let kind = core.map(|c| c.kind());
    let status = match kind {
        Some(ErrorKind::Invalid) => StatusCode::BAD_REQUEST,
        Some(ErrorKind::NotFound) => StatusCode::NOT_FOUND,
        Some(ErrorKind::Busy) => StatusCode::CONFLICT,
        Some(ErrorKind::Refused) => StatusCode::UNPROCESSABLE_ENTITY,
        Some(ErrorKind::CheckFailed) => StatusCode::CONFLICT,
        Some(ErrorKind::Unauthenticated) => return unauthorized("invalid token"),
        Some(ErrorKind::Corrupt | ErrorKind::Internal) | None => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut doc = output::error_document(output::kind_name(kind), &output::message(e), None);
    if let Some(drover_core::Error::Definition {
        line, column, key, ..
    }) = core
    {
        doc["error"]["line"] = (*line).into();
        doc["error"]["column"] = (*column).into();
        doc["error"]["key"] = key.clone().into();
    }
    respond(Reply::json(status, &doc))
}

#[cfg(test)]
mod tests;

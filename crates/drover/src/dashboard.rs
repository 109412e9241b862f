//! The web dashboard's assets: a small single-page app (plain HTML, CSS
//! and JavaScript, no build step) embedded in the binary and served by
//! `serve`'s admin listener at `/` and `/ui/…`. It reads and acts through
//! `/api/v1` with the bearer token a person pastes into it; the assets
//! themselves are public (they hold nothing but code).

/// The Content-Security-Policy every asset is served with: scripts, styles,
/// images and API calls from this origin only; no inline script or style,
/// no frames, no form posts anywhere else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};

const INDEX: &[u8] = include_bytes!("dashboard/index.html");
const APP: &[u8] = include_bytes!("dashboard/app.js");
const STYLE: &[u8] = include_bytes!("dashboard/style.css");
const ICON: &[u8] = include_bytes!("dashboard/favicon.svg");

/// The asset at `path` (`/`, `/index.html`, `/app.js`, … with or without a
/// leading `/ui`): its content type and bytes; `None` for anything else.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = match path.strip_prefix("/ui") {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    };
    Some(match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/app.js" => ("text/javascript; charset=utf-8", APP),
        "/style.css" => ("text/css; charset=utf-8", STYLE),
        "/favicon.svg" => ("image/svg+xml", ICON),
        _ => return None,
    })
}

/// The answer to `method path` for a dashboard path: the asset with its
/// security headers, a 404 for an unknown one, a 405 for a method other
/// than GET or HEAD.
pub fn response(method: &Method, path: &str) -> Response<Full<Bytes>> {
    let (status, kind, body): (_, _, &'static [u8]) = match (method, asset(path)) {
        (&Method::GET | &Method::HEAD, Some((kind, body))) => (StatusCode::OK, kind, body),
        (&Method::GET | &Method::HEAD, None) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            b"not found: the dashboard is at /\n",
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            b"only GET is allowed here\n",
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The assets change with the binary (`drover upgrade`): ask each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_served_with_a_strict_policy_and_nosniff() {
        let r = response(&Method::GET, "/ui/app.js");
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(
            response(&Method::GET, "/ui/nothing").status(),
            StatusCode::NOT_FOUND
        );
        let r = response(&Method::POST, "/");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn assets_are_found_at_the_root_and_under_ui() {
        for path in ["/", "/index.html", "/ui", "/ui/", "/ui/index.html"] {
            let (kind, body) = asset(path).unwrap_or_else(|| panic!("{path}"));
            assert!(kind.starts_with("text/html"), "{path}: {kind}");
            assert!(body.starts_with(b"<!doctype html>"), "{path}");
        }
        assert_eq!(
            asset("/ui/app.js").unwrap().0,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(asset("/style.css").unwrap().0, "text/css; charset=utf-8");
        for path in [
            "/app.jsx",
            "/uiapp.js",
            "/ui/../app.js",
            "/api/v1/services",
            "/ui/ui/app.js",
        ] {
            assert!(asset(path).is_none(), "{path}");
        }
    }

    /// The page loads its script and style from files (the policy allows
    /// no inline ones) and puts no markup from data into the page.
    #[test]
    fn the_page_has_no_inline_script_or_style_and_the_app_no_inner_html() {
        let index = std::str::from_utf8(INDEX).unwrap();
        assert!(
            !index.contains("<script>") && !index.contains("style="),
            "{index}"
        );
        for (at, _) in index.match_indices(" on") {
            let name: String = index[at + 1..]
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            assert!(
                !index[at + 1 + name.len()..].starts_with('='),
                "inline handler {name} in index.html"
            );
        }
        let app = std::str::from_utf8(APP).unwrap();
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!app.contains(sink), "app.js uses {sink}");
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}

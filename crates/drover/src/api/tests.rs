use serde_json::Value;

use super::*;

fn openapi() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
}

#[test]
fn the_openapi_document_describes_every_route_and_nothing_else() {
    let doc = openapi();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for r in ROUTES {
        let method = r.method.as_str().to_ascii_lowercase();
        let op = &paths
            .get(r.path)
            .unwrap_or_else(|| panic!("{} is not in openapi.json", r.path))[&method];
        assert!(
            op.is_object(),
            "{} {} is not in openapi.json",
            r.method,
            r.path
        );
        let role = r.role.map(Role::as_str);
        assert_eq!(
            op["x-drover-role"].as_str(),
            role,
            "{} {}: the document's role differs from the route's",
            r.method,
            r.path
        );
    }
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            assert!(
                ROUTES
                    .iter()
                    .any(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(method)),
                "openapi.json describes {method} {path}, which no route serves"
            );
        }
    }
}

#[test]
fn every_reference_in_the_openapi_document_resolves() {
    let doc = openapi();
    fn walk(v: &Value, doc: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    let ptr = r.strip_prefix('#').expect("a local reference");
                    assert!(doc.pointer(ptr).is_some(), "{r} does not resolve");
                }
                m.values().for_each(|v| walk(v, doc));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, doc)),
            _ => {}
        }
    }
    walk(&doc, &doc);
}

#[test]
fn paths_match_patterns_with_decoded_parameters() {
    assert_eq!(
        matches(
            "/api/v1/services/{name}/rollback",
            "/api/v1/services/web/rollback"
        ),
        Some(vec!["web".to_string()])
    );
    assert_eq!(
        matches(
            "/api/v1/revocations/{image}",
            "/api/v1/revocations/sha256%3Aab"
        ),
        Some(vec!["sha256:ab".to_string()])
    );
    assert_eq!(
        matches("/api/v1/services/{name}", "/api/v1/services/"),
        None
    );
    assert_eq!(
        matches("/api/v1/services/{name}", "/api/v1/services/a/b"),
        None
    );
    assert_eq!(matches("/api/v1/services", "/api/v1/services/x"), None);
    // Malformed escapes and non-UTF-8 are not a match, not a panic.
    assert_eq!(
        matches("/api/v1/services/{name}", "/api/v1/services/%zz"),
        None
    );
    assert_eq!(
        matches("/api/v1/services/{name}", "/api/v1/services/%ff"),
        None
    );
    assert_eq!(
        matches("/api/v1/services/{name}", "/api/v1/services/%f"),
        None
    );
    assert_eq!(
        parse_query(Some("tail=5&previous&x=a%20b")).unwrap(),
        vec![
            ("tail".into(), "5".into()),
            ("previous".into(), String::new()),
            ("x".into(), "a b".into())
        ]
    );
    assert!(parse_query(Some("x=%zz")).is_none());
}

#[test]
fn a_known_path_with_another_method_says_which_are_allowed() {
    assert!(matches!(
        find(&Method::GET, "/api/v1/services/web/rollback"),
        Found::Method(m) if m == ["POST"]
    ));
    assert!(matches!(
        find(&Method::PUT, "/api/v1/revocations"),
        Found::Method(m) if m == ["GET", "POST"]
    ));
    assert!(matches!(
        find(&Method::HEAD, "/api/v1/services"),
        Found::Route(..)
    ));
    assert!(matches!(find(&Method::GET, "/api/v1/nothing"), Found::None));
}

#[test]
fn every_write_needs_more_than_a_read_token_and_only_the_document_is_anonymous() {
    for r in ROUTES {
        match r.role {
            None => assert_eq!(r.path, "/api/v1/openapi.json"),
            Some(role) if r.method != Method::GET => {
                assert!(
                    role != Role::Read,
                    "{} {} is a write a read token may do",
                    r.method,
                    r.path
                )
            }
            Some(_) => {}
        }
    }
}

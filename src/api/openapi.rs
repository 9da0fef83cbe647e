//! The OpenAPI 3.1 document of the API, written by hand in `openapi.json` beside this file
//! and served at `GET /openapi.json`.
//!
//! The document is data, not generated: generating it would mean deriving schemas on types
//! that several modules own. Drift is caught instead by tests: the ones below hold its paths,
//! methods and credentials to the route table, and `tests/api/openapi.rs` checks real answers
//! against its schemas.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as served.
pub(super) const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /openapi.json`.
pub(super) async fn get_openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::super::limits::UNLIMITED;
    use super::super::{Access, Need, ROUTES, Role, Verb};
    use super::DOCUMENT;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    fn method_name(verb: Verb) -> &'static str {
        match verb {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }

    fn credential(access: Access) -> &'static str {
        match access {
            Access::Public => "none",
            Access::Needs(Need::Role(Role::Lobby)) => "lobby",
            Access::Needs(Need::Role(Role::Admin)) => "admin",
            Access::Needs(Need::Either) => "either",
        }
    }

    /// Every (method, path) the document describes, with its operation.
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let paths = doc["paths"].as_object().expect("paths");
        let mut found = Vec::new();
        for (path, item) in paths {
            for (key, operation) in item.as_object().expect("path item") {
                if METHODS.contains(&key.as_str()) {
                    found.push((key.clone(), path.clone(), operation.clone()));
                }
            }
        }
        found
    }

    /// The document describes exactly the routes of the route table, in both directions.
    #[test]
    fn paths_and_methods_match_the_route_table() {
        let doc = document();
        let documented: BTreeSet<(String, String)> = operations(&doc)
            .into_iter()
            .map(|(method, path, _)| (method, path))
            .collect();
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (method_name(r.verb).to_owned(), r.path.to_owned()))
            .collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.json: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "documented but not routed: {unrouted:?}"
        );
        assert_eq!(routed.len(), ROUTES.len(), "a route is listed twice");
    }

    /// Each operation asks for the credential its route checks, and lists 401 and 403 when
    /// the route can answer them.
    #[test]
    fn security_matches_the_route_table() {
        let doc = document();
        for (method, path, operation) in operations(&doc) {
            let route = ROUTES
                .iter()
                .find(|r| r.path == path && method_name(r.verb) == method)
                .expect("matched by the test above");
            let wanted = credential(route.access);
            assert_eq!(operation["x-credential"], wanted, "{method} {path}");
            let security = operation["security"].as_array().expect("security listed");
            let responses = &operation["responses"];
            let (has_401, has_403) = (responses.get("401"), responses.get("403"));
            if wanted == "none" {
                assert!(security.is_empty(), "{method} {path} is public");
                assert!(has_401.is_none() && has_403.is_none(), "{method} {path}");
            } else {
                assert_eq!(
                    security,
                    &[serde_json::json!({"bearer": []})],
                    "{method} {path}"
                );
                assert!(has_401.is_some(), "{method} {path} lacks 401");
                assert_eq!(has_403.is_some(), wanted != "either", "{method} {path} 403");
            }
        }
    }

    /// Every operation with a body lists the answers the body extractor can give, and every
    /// 4xx and 5xx answer is the error envelope (but `/readyz`, whose 503 is a state).
    #[test]
    fn errors_use_the_envelope() {
        let doc = document();
        let named = &doc["components"]["responses"];
        for (method, path, operation) in operations(&doc) {
            let responses = operation["responses"].as_object().expect("responses");
            if operation.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} lacks {status}"
                    );
                }
            }
            let errors = responses.iter().filter(|(s, _)| s.as_str() >= "400");
            for (status, response) in errors.filter(|_| path != "/readyz") {
                let response = match response["$ref"].as_str() {
                    Some(target) => &named[target.rsplit('/').next().expect("a name")],
                    None => response,
                };
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    schema, "#/components/schemas/Error",
                    "{method} {path} {status}"
                );
            }
        }
    }

    /// Every operation lists the 503 of the in-flight cap and request timeout and the 413 of
    /// an oversized declared body unless its route is exempt, and the 400 of an undecodable
    /// path parameter when it has one.
    #[test]
    fn limits_and_path_errors_are_listed() {
        let doc = document();
        for (method, path, operation) in operations(&doc) {
            let responses = &operation["responses"];
            let capped = !UNLIMITED.contains(&path.as_str());
            let retry = responses.get("503").is_some_and(|r| {
                r["$ref"] == "#/components/responses/Unavailable"
                    || r["headers"].get("Retry-After").is_some()
            });
            assert_eq!(retry, capped, "{method} {path}: 503 with Retry-After");
            let too_large = responses.get("413").is_some();
            assert!(
                too_large || !capped,
                "{method} {path}: 413 of a declared body"
            );
            if path.contains('{') {
                assert!(responses.get("400").is_some(), "{method} {path} lacks 400");
            }
        }
    }

    /// Every `$ref` in the document points at something that exists.
    #[test]
    fn references_resolve() {
        fn walk(doc: &Value, value: &Value, missing: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        let pointer = target.trim_start_matches('#');
                        if doc.pointer(pointer).is_none() {
                            missing.push(target.clone());
                        }
                    }
                    map.values().for_each(|v| walk(doc, v, missing));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(doc, v, missing)),
                _ => {}
            }
        }
        let doc = document();
        let mut missing = Vec::new();
        walk(&doc, &doc, &mut missing);
        assert!(missing.is_empty(), "unresolved: {missing:?}");
        assert_eq!(doc["openapi"], "3.1.0");
    }
}

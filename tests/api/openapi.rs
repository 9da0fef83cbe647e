//! `/openapi.json` describes what the server really answers: every operation is called,
//! each answer's status must be documented and its body must fit the documented schema.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{App, FakeBridge, Options, repo_path, spawn_app};
use crate::schema;

const LOBBY: &str = "lobby-credential-openapi-0123";
const ADMIN: &str = "admin-credential-openapi-0123";
const CWM_KEY_FILE: &str = "8791edb7d806447dd0aaa98a2b568ad792696ed4d885f23b89f6beb7f7c4f44e.pem";

/// Calls one route and checks the answer against the document.
struct Checker<'a> {
    app: &'a App,
    doc: Value,
    called: BTreeSet<(String, String)>,
}

/// One call: method, path template as documented, concrete path, credential, body.
struct Call<'a> {
    method: Method,
    template: &'a str,
    path: &'a str,
    who: &'a str,
    body: Option<Body>,
}

enum Body {
    Json(Value),
    Raw(&'static str, &'static str),
}

fn call<'a>(method: Method, template: &'a str, path: &'a str, who: &'a str) -> Call<'a> {
    Call {
        method,
        template,
        path,
        who,
        body: None,
    }
}

impl Call<'_> {
    fn json(mut self, body: Value) -> Self {
        self.body = Some(Body::Json(body));
        self
    }

    fn raw(mut self, content_type: &'static str, text: &'static str) -> Self {
        self.body = Some(Body::Raw(content_type, text));
        self
    }
}

impl Checker<'_> {
    /// Sends `call`, asserts `status`, and checks the answer against the document.
    async fn expect(&mut self, call: Call<'_>, status: u16) -> Value {
        let method_name = call.method.as_str().to_lowercase();
        let mut request = self.app.authed(call.method, call.path, call.who);
        request = match call.body {
            Some(Body::Json(body)) => request.json(&body),
            Some(Body::Raw(kind, text)) => request.header("content-type", kind).body(text),
            None => request,
        };
        let response = request.send().await.expect("request sent");
        let got = response.status().as_u16();
        let content_type = response.headers().get("content-type").cloned();
        let text = response.text().await.expect("body");
        let what = format!("{method_name} {} -> {got}: {text}", call.path);
        assert_eq!(got, status, "{what}");
        let operation = &self.doc["paths"][call.template][&method_name];
        assert!(operation.is_object(), "{what}: operation not documented");
        self.called.insert((method_name, call.template.to_owned()));
        let mut documented = &operation["responses"][got.to_string()];
        if let Some(target) = documented["$ref"].as_str() {
            documented = self.doc.pointer(&target[1..]).expect("response $ref");
        }
        assert!(documented.is_object(), "{what}: status not documented");
        let Some(content) = documented["content"].as_object() else {
            assert!(text.is_empty(), "{what}: a body where none is documented");
            return Value::Null;
        };
        let (media, spec) = content.iter().next().expect("one media type");
        let content_type = content_type.expect("content-type sent");
        let content_type = content_type.to_str().expect("ascii");
        assert!(
            content_type.starts_with(media.as_str()),
            "{what}: {content_type}"
        );
        if !media.ends_with("json") {
            return Value::String(text);
        }
        let value: Value = serde_json::from_str(&text).expect("JSON body");
        let errors = schema::check(&self.doc, &spec["schema"], &value);
        assert!(
            errors.is_empty(),
            "{what}\ndoes not fit the schema: {errors:#?}"
        );
        value
    }
}

/// The served document is the one in the repository, uses only keywords the checker knows,
/// and every operation's real answers (successes and errors) fit their documented schemas.
#[tokio::test]
async fn answers_fit_the_document() {
    let bridge = FakeBridge::start().await;
    let options = Options::default()
        .env("GEOBRIDGE_LOBBY_CREDENTIALS", LOBBY)
        .env("GEOBRIDGE_ADMIN_CREDENTIALS", ADMIN);
    let app = spawn_app(options).await;
    let file = std::fs::read_to_string(repo_path("src/api/openapi.json")).expect("document");
    let doc: Value = serde_json::from_str(&file).expect("JSON");
    let unknown: Vec<String> = schema::keywords_used(&doc)
        .into_iter()
        .filter(|k| !schema::KEYWORDS.contains(&k.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "keywords the checker ignores: {unknown:?}"
    );
    let mut checker = Checker {
        app: &app,
        doc,
        called: BTreeSet::new(),
    };
    let served = checker
        .expect(call(Method::GET, "/openapi.json", "/openapi.json", ""), 200)
        .await;
    assert_eq!(
        served, checker.doc,
        "served document differs from src/api/openapi.json"
    );

    rooms(&mut checker).await;
    registry(&mut checker, &bridge.url).await;
    public(&mut checker).await;

    let all: BTreeSet<(String, String)> = operations(&checker.doc);
    let missed: Vec<_> = all.difference(&checker.called).collect();
    assert!(
        missed.is_empty(),
        "operations this test did not call: {missed:?}"
    );
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if method != "parameters" {
                all.insert((method.clone(), path.clone()));
            }
        }
    }
    all
}

async fn rooms(c: &mut Checker<'_>) {
    let (post, get) = (Method::POST, Method::GET);
    let rooms = "/v1/rooms";
    let host = json!({"user": {"id": "u-1", "name": "Ada"}, "client_ip": "81.2.69.142"});
    let created = c
        .expect(call(post.clone(), rooms, rooms, LOBBY).json(host), 201)
        .await;
    let bad_ip = json!({"user": {"id": "u-1", "name": "Ada"}, "client_ip": "999.1.1.1"});
    c.expect(call(post.clone(), rooms, rooms, LOBBY).json(bad_ip), 422)
        .await;
    c.expect(
        call(post.clone(), rooms, rooms, LOBBY).raw("application/json", "{"),
        400,
    )
    .await;
    c.expect(
        call(post.clone(), rooms, rooms, LOBBY).raw("text/plain", "{}"),
        415,
    )
    .await;
    c.expect(call(post.clone(), rooms, rooms, ""), 401).await;
    c.expect(call(post.clone(), rooms, rooms, ADMIN), 403).await;

    let template = "/v1/rooms/{room}/participants";
    let room = created["room"].as_str().expect("room name");
    let path = format!("/v1/rooms/{room}/participants");
    let guest = json!({"user": {"id": "u-2", "name": "Grace"}, "client_ip": "8.8.8.8"});
    let joined = call(post.clone(), template, &path, LOBBY).json(guest.clone());
    c.expect(joined, 201).await;
    let gone = call(
        post.clone(),
        template,
        "/v1/rooms/no-such-room/participants",
        LOBBY,
    );
    c.expect(gone.json(guest.clone()), 404).await;
    let invalid = call(post, template, "/v1/rooms/Not_A_Room/participants", LOBBY);
    c.expect(invalid.json(guest), 422).await;

    let select = "/v1/regions/select";
    c.expect(
        call(get.clone(), select, "/v1/regions/select?ip=8.8.8.8", LOBBY),
        200,
    )
    .await;
    c.expect(
        call(get.clone(), select, "/v1/regions/select?ip=x", LOBBY),
        422,
    )
    .await;
    c.expect(
        call(get, select, "/v1/regions/select?color=red", LOBBY),
        400,
    )
    .await;
}

async fn registry(c: &mut Checker<'_>, bridge_url: &str) {
    let (get, put, delete) = (Method::GET, Method::PUT, Method::DELETE);
    let region = "/v1/regions/{id}";
    let body = json!({"name": "Test", "latitude": 53.35, "longitude": -6.26});
    c.expect(
        call(put.clone(), region, "/v1/regions/test", ADMIN).json(body.clone()),
        201,
    )
    .await;
    c.expect(
        call(put.clone(), region, "/v1/regions/test", ADMIN).json(body.clone()),
        200,
    )
    .await;
    let config_region = call(put.clone(), region, "/v1/regions/eu-central", ADMIN);
    c.expect(config_region.json(body.clone()), 409).await;
    let mismatch = json!({"id": "other", "latitude": 1.0, "longitude": 1.0});
    c.expect(
        call(put.clone(), region, "/v1/regions/test", ADMIN).json(mismatch),
        422,
    )
    .await;
    c.expect(
        call(put.clone(), region, "/v1/regions/test", LOBBY).json(body),
        403,
    )
    .await;

    let bridge = "/v1/bridges/{id}";
    let path = "/v1/bridges/test-1";
    let input = json!({"region": "test", "url": bridge_url});
    c.expect(call(put.clone(), bridge, path, ADMIN).json(input), 201)
        .await;
    let unknown = json!({"region": "nowhere", "url": bridge_url});
    c.expect(call(put, bridge, path, ADMIN).json(unknown), 422)
        .await;
    let drain = json!({"admin_state": "drain"});
    c.expect(call(Method::PATCH, bridge, path, ADMIN).json(drain), 200)
        .await;
    let bad_state = json!({"admin_state": "asleep"});
    c.expect(
        call(Method::PATCH, bridge, path, ADMIN).json(bad_state),
        422,
    )
    .await;
    let app = c.app;
    let stats = || async { app.bridge_health("test-1").await["stats"].is_object() };
    app.wait_until(20, "the bridge's stats", stats).await;
    c.expect(call(get.clone(), bridge, path, LOBBY), 200).await;
    c.expect(call(get.clone(), bridge, "/v1/bridges/nope", ADMIN), 404)
        .await;
    c.expect(call(get.clone(), "/v1/bridges", "/v1/bridges", ADMIN), 200)
        .await;
    c.expect(call(get.clone(), "/v1/regions", "/v1/regions", LOBBY), 200)
        .await;
    c.expect(
        call(get.clone(), "/v1/regions", "/v1/regions", "wrong"),
        401,
    )
    .await;
    c.expect(call(get.clone(), region, "/v1/regions/test", ADMIN), 200)
        .await;
    c.expect(call(get, region, "/v1/regions/nope", ADMIN), 404)
        .await;

    c.expect(call(delete.clone(), region, "/v1/regions/test", ADMIN), 409)
        .await;
    c.expect(call(delete.clone(), bridge, path, ADMIN), 204)
        .await;
    c.expect(call(delete.clone(), bridge, path, ADMIN), 404)
        .await;
    c.expect(call(delete.clone(), region, "/v1/regions/test", ADMIN), 204)
        .await;
    c.expect(call(delete.clone(), region, "/v1/regions/-bad", ADMIN), 422)
        .await;
    c.expect(call(delete, bridge, "/v1/bridges/-bad", ADMIN), 422)
        .await;
}

async fn public(c: &mut Checker<'_>) {
    let get = Method::GET;
    let key = format!("/asap/{CWM_KEY_FILE}");
    let pem = c
        .expect(call(get.clone(), "/asap/{file}", &key, ""), 200)
        .await;
    assert!(
        pem.as_str()
            .is_some_and(|p| p.starts_with("-----BEGIN PUBLIC KEY-----"))
    );
    let jwks = "/.well-known/jwks.json";
    let keys = c.expect(call(get.clone(), jwks, jwks, ""), 200).await;
    assert_eq!(keys["keys"][0]["kid"], "CWMKey", "{keys}");
    c.expect(call(get.clone(), "/asap/{file}", "/asap/nope.pem", ""), 404)
        .await;
    c.expect(call(get.clone(), "/healthz", "/healthz", ""), 200)
        .await;
    let app = c.app;
    let ready = || async { app.get("/readyz").await.status == 200 };
    app.wait_until(20, "readiness", ready).await;
    c.expect(call(get.clone(), "/readyz", "/readyz", ""), 200)
        .await;
    let metrics = c.expect(call(get, "/metrics", "/metrics", ""), 200).await;
    assert!(metrics.as_str().is_some_and(|m| m.contains("geobridge_")));
}

//! The whole router in process: arbitrary methods, paths, query strings, credentials,
//! forwarding headers and bodies. No request gets a 500, and every error answer is the JSON
//! envelope `{"error": {"code", "message"}}`.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use geobridge::config::Settings;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const LOBBY: &str = "lobby-credential-fuzz-0123456789";
const ADMIN: &str = "admin-credential-fuzz-0123456789";

const BRIDGES: &str = r#"
[[bridges]]
id = "jvb-fra-1"
region = "eu-central"
url = "http://127.0.0.1:9"
"#;

struct World {
    runtime: tokio::runtime::Runtime,
    router: Router,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/geobridge.example.toml");
        let text = std::fs::read_to_string(example).expect("example config") + BRIDGES;
        let env: HashMap<String, String> = [
            ("GEOBRIDGE_STATE_DIR", dir.path().to_str().expect("utf-8 path")),
            ("GEOBRIDGE_JITSI_AUTH", "hs256"),
            ("GEOBRIDGE_JITSI_APP_SECRET", "fuzz-app-secret-0123456789abcdef"),
            ("GEOBRIDGE_LOBBY_CREDENTIALS", LOBBY),
            ("GEOBRIDGE_ADMIN_CREDENTIALS", ADMIN),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = Settings::parse("fuzz".into(), &text, &env).expect("settings");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let state = runtime
            .block_on(geobridge::app::prepare(&settings))
            .expect("state");
        let router = geobridge::api::router(state);
        World { runtime, router, _dir: dir }
    })
}

#[derive(Arbitrary, Debug)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
}

#[derive(Arbitrary, Debug)]
enum Target<'a> {
    Rooms,
    Participants(&'a str),
    Select(&'a str),
    Regions,
    Region(&'a str),
    Bridges,
    Bridge(&'a str),
    Asap(&'a str),
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Raw(&'a str),
}

#[derive(Arbitrary, Debug)]
enum Bearer<'a> {
    None,
    Lobby,
    Admin,
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    verb: Verb,
    target: Target<'a>,
    bearer: Bearer<'a>,
    json: bool,
    forwarded: Option<&'a [u8]>,
    body: &'a [u8],
}

fn path(target: &Target<'_>) -> String {
    match target {
        Target::Rooms => "/v1/rooms".into(),
        Target::Participants(room) => format!("/v1/rooms/{room}/participants"),
        Target::Select(query) => format!("/v1/regions/select?{query}"),
        Target::Regions => "/v1/regions".into(),
        Target::Region(id) => format!("/v1/regions/{id}"),
        Target::Bridges => "/v1/bridges".into(),
        Target::Bridge(id) => format!("/v1/bridges/{id}"),
        Target::Asap(file) => format!("/asap/{file}"),
        Target::Healthz => "/healthz".into(),
        Target::Readyz => "/readyz".into(),
        Target::Metrics => "/metrics".into(),
        Target::OpenApi => "/openapi.json".into(),
        Target::Raw(text) => (*text).to_owned(),
    }
}

fn request(input: &Input<'_>) -> Option<Request<Body>> {
    let method = match input.verb {
        Verb::Get => Method::GET,
        Verb::Post => Method::POST,
        Verb::Put => Method::PUT,
        Verb::Patch => Method::PATCH,
        Verb::Delete => Method::DELETE,
        Verb::Head => Method::HEAD,
        Verb::Options => Method::OPTIONS,
    };
    let mut builder = Request::builder().method(method).uri(path(&input.target));
    let bearer = match input.bearer {
        Bearer::None => None,
        Bearer::Lobby => Some(HeaderValue::from_str(&format!("Bearer {LOBBY}")).ok()?),
        Bearer::Admin => Some(HeaderValue::from_str(&format!("Bearer {ADMIN}")).ok()?),
        Bearer::Raw(bytes) => Some(HeaderValue::from_bytes(bytes).ok()?),
    };
    if let Some(value) = bearer {
        builder = builder.header("authorization", value);
    }
    if input.json {
        builder = builder.header("content-type", "application/json");
    }
    if let Some(hops) = input.forwarded {
        builder = builder.header("x-forwarded-for", HeaderValue::from_bytes(hops).ok()?);
    }
    let mut request = builder.body(Body::from(input.body.to_vec())).ok()?;
    let peer: SocketAddr = "10.1.2.3:40000".parse().expect("an address");
    request.extensions_mut().insert(ConnectInfo(peer));
    Some(request)
}

fuzz_target!(|input: Input<'_>| {
    let Some(request) = request(&input) else { return };
    let world = world();
    let (status, body) = world.runtime.block_on(async {
        let response = world.router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        (status, body.expect("body reads"))
    });
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{input:?}: {body:?}");
    let readiness = matches!(input.target, Target::Readyz);
    let head = matches!(input.verb, Verb::Head);
    if status.as_u16() >= 400 && !readiness && !head {
        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON error body");
        assert!(value["error"]["code"].is_string(), "{value}");
        assert!(value["error"]["message"].is_string(), "{value}");
    }
});

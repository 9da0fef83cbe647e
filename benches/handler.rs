//! The selection endpoint in-process, without sockets. Run with `cargo bench --bench handler`.
//!
//! `select_endpoint` is the path every plain selection takes: the request head parsed,
//! credentials and the in-flight cap checked, GeoIP lookup, selection, the JSON answer and
//! the response head written, counters updated. `select_router` is the same request through
//! the router and its middleware, the path of every other request; `healthz_endpoint` is
//! what routing and middleware cost alone.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use geobridge::config::Settings;
use geobridge::{api, app};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// A runtime and the state on the example settings, with a throwaway state dir.
fn setup() -> (Runtime, api::Shared, tempfile::TempDir) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = runtime.expect("runtime");
    let state_dir = tempfile::tempdir().expect("dir");
    let mut env = HashMap::new();
    let dir = state_dir.path().display().to_string();
    env.insert("GEOBRIDGE_STATE_DIR".to_owned(), dir);
    env.insert("GEOBRIDGE_JITSI_AUTH".to_owned(), "none".to_owned());
    let settings = Settings::load(None, &env).expect("example settings");
    let state = runtime.block_on(app::prepare(&settings)).expect("prepared");
    (runtime, state, state_dir)
}

/// A different public IPv4 address each call (first octet 11..=99 avoids special ranges).
fn next_ip(n: &mut u32) -> Ipv4Addr {
    *n = n.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
    Ipv4Addr::from((*n % (89 << 24)) + (11 << 24))
}

/// Sends one request through the router and reads the whole body.
fn call(runtime: &Runtime, router: &Router, request: Request<Body>) -> axum::body::Bytes {
    runtime.block_on(async {
        let response = router.clone().oneshot(request).await.expect("infallible");
        axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body")
    })
}

fn select_endpoint(c: &mut Criterion) {
    let (_runtime, state, _state_dir) = setup();
    let mut n: u32 = 0x1234_5678;
    let (mut input, mut output) = (Vec::new(), app::plain::Outgoing::default());
    c.bench_function("select_endpoint", |b| {
        b.iter(|| {
            input.clear();
            let ip = next_ip(&mut n);
            let head = format!("GET /v1/regions/select?ip={ip} HTTP/1.1\r\nhost: bench\r\n\r\n");
            input.extend_from_slice(head.as_bytes());
            output.clear();
            let step = app::plain::step(&state, &input, &mut output);
            assert_eq!(step, app::plain::Step::Answered(input.len()));
            black_box(output.as_slice().len())
        })
    });
}

fn select_router(c: &mut Criterion) {
    let (runtime, state, _state_dir) = setup();
    let router = api::router(state);
    let peer = ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000)));
    let mut n: u32 = 0x1234_5678;
    c.bench_function("select_router", |b| {
        b.iter(|| {
            let ip = next_ip(&mut n);
            let uri = format!("/v1/regions/select?ip={ip}");
            let mut request = Request::get(uri).body(Body::empty()).expect("request");
            request.extensions_mut().insert(peer);
            black_box(call(&runtime, &router, request))
        })
    });
}

/// The same stack answering `/healthz`: what routing and middleware cost alone.
fn healthz_endpoint(c: &mut Criterion) {
    let (runtime, state, _state_dir) = setup();
    let router = api::router(state);
    c.bench_function("healthz_endpoint", |b| {
        b.iter(|| {
            let request = Request::get("/healthz")
                .body(Body::empty())
                .expect("request");
            black_box(call(&runtime, &router, request))
        })
    });
}

criterion_group!(handler, select_endpoint, select_router, healthz_endpoint);
criterion_main!(handler);

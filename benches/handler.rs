//! The selection endpoint in-process: request parsing, routing and middleware, GeoIP lookup,
//! selection and JSON, without sockets. Run with `cargo bench --bench handler`.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use geobridge::config::Settings;
use geobridge::{api, app};
use tower::ServiceExt;

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let state_dir = tempfile::tempdir().expect("dir");
    let mut env = HashMap::new();
    env.insert(
        "GEOBRIDGE_STATE_DIR".to_owned(),
        state_dir.path().display().to_string(),
    );
    env.insert("GEOBRIDGE_JITSI_AUTH".to_owned(), "none".to_owned());
    let settings = Settings::load(None, &env).expect("example settings");
    let state = runtime.block_on(app::prepare(&settings)).expect("prepared");
    let router = api::router(state);
    let peer = ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000)));
    let mut n: u32 = 0x1234_5678;
    c.bench_function("select_endpoint", |b| {
        b.iter(|| {
            // A different public address each time (first octet 11..=99 avoids special ranges).
            n = n.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let ip = Ipv4Addr::from((n % (89 << 24)) + (11 << 24));
            let mut request = Request::get(format!("/v1/regions/select?ip={ip}"))
                .body(Body::empty())
                .expect("request");
            request.extensions_mut().insert(peer);
            let response = runtime.block_on(async {
                let response = router.clone().oneshot(request).await.expect("infallible");
                axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("body")
            });
            black_box(response)
        })
    });
}

fn baseline(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let state_dir = tempfile::tempdir().expect("dir");
    let mut env = HashMap::new();
    env.insert(
        "GEOBRIDGE_STATE_DIR".to_owned(),
        state_dir.path().display().to_string(),
    );
    env.insert("GEOBRIDGE_JITSI_AUTH".to_owned(), "none".to_owned());
    let settings = Settings::load(None, &env).expect("example settings");
    let state = runtime.block_on(app::prepare(&settings)).expect("prepared");
    let router = api::router(state);
    c.bench_function("healthz_endpoint", |b| {
        b.iter(|| {
            let request = Request::get("/healthz")
                .body(Body::empty())
                .expect("request");
            let response = runtime.block_on(async {
                let response = router.clone().oneshot(request).await.expect("infallible");
                axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("body")
            });
            black_box(response)
        })
    });
}

criterion_group!(handler, benches, baseline);
criterion_main!(handler);

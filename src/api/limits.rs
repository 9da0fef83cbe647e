//! Middleware every request passes: counting and timing by route, the in-flight cap, the
//! per-request deadline and the body's own deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, MAX_BODY_BYTES, Shared};

/// Counts and times every request by its route template.
pub(super) async fn track(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status();
    let m = &state.metrics;
    m.http_requests
        .with_label_values(&[&route, method_label(&method), status.as_str()])
        .inc();
    m.http_duration
        .with_label_values(&[&route])
        .observe(took.as_secs_f64());
    let (status, duration_ms) = (status.as_u16(), took.as_millis() as u64);
    tracing::debug!(%method, route, status, duration_ms, "request");
    response
}

/// The method as a bounded label: extension methods are all `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// A 503 that tells the client to come back in a second.
fn retry_later(code: &'static str, message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).into_response();
    let again = header::HeaderValue::from_static("1");
    response.headers_mut().insert(header::RETRY_AFTER, again);
    response
}

/// Routes the in-flight cap and the request timeout leave alone, so that an overloaded
/// instance can still be observed.
pub(super) const UNLIMITED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Caps requests in flight and their duration; health and metrics routes are exempt so an
/// overloaded instance can still be observed.
pub(super) async fn limit(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if UNLIMITED.contains(&path) {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok());
    if declared
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        let message = format!("request body is larger than {MAX_BODY_BYTES} bytes");
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
            .into_response();
    }
    let Some(slot) = state.in_flight.try_take() else {
        state.metrics.overloaded.inc();
        return retry_later(
            "overloaded",
            "too many requests in flight; retry after a second",
        );
    };
    let timeout = std::time::Duration::from_millis(state.settings.server.request_timeout_ms);
    // Dropped with the request, so a client that disconnects mid-request is not left counted.
    let _counted = Counted::new(&state.metrics.in_flight);
    let (request, received) = track_body(request);
    let response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        // The client was still sending: its delay, so a 4xx.
        Err(_) if !received.load(Ordering::Acquire) => {
            let timeout_ms = timeout.as_millis() as u64;
            let message =
                format!("the request body did not arrive within {timeout_ms} ms; send it at once");
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", message).into_response()
        }
        Err(_) => {
            tracing::warn!(timeout_ms = timeout.as_millis() as u64, "request timed out");
            retry_later("timeout", "the request took too long; retry")
        }
    };
    drop(slot);
    response
}

/// `request` with a body that raises the flag once it has been received whole (at once
/// for a request without one).
fn track_body(request: Request) -> (Request, Arc<AtomicBool>) {
    let (parts, body) = request.into_parts();
    let received = Arc::new(AtomicBool::new(http_body::Body::is_end_stream(&body)));
    let body = axum::body::Body::new(Tracked {
        inner: body,
        received: received.clone(),
    });
    (Request::from_parts(parts, body), received)
}

/// A request body that says when it has been read to its end.
struct Tracked {
    inner: axum::body::Body,
    received: Arc<AtomicBool>,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.received.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// One request in the in-flight gauge, for as long as this lives.
pub(crate) struct Counted<'a>(&'a prometheus::IntGauge);

impl<'a> Counted<'a> {
    pub(crate) fn new(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Counted(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Requests in flight under a cap; taking a slot never waits.
#[derive(Debug)]
pub struct InFlight {
    taken: std::sync::atomic::AtomicUsize,
    cap: usize,
}

impl InFlight {
    /// At most `cap` requests at once.
    pub fn new(cap: usize) -> InFlight {
        InFlight {
            taken: std::sync::atomic::AtomicUsize::new(0),
            cap,
        }
    }

    /// A slot until the guard is dropped, or `None` when all are taken.
    pub fn try_take(&self) -> Option<Slot<'_>> {
        let taken = self.taken.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self);
        (taken < self.cap).then_some(slot)
    }
}

/// One request's place in [`InFlight`].
#[derive(Debug)]
pub struct Slot<'a>(&'a InFlight);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

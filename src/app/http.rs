//! The accept loop: every connection starts on the plain HTTP/1.1 loop of [`plain`] and moves
//! to hyper and the router at the first request that loop does not take.
//!
//! Both sides give a request head a deadline and cap its size, so a slow or hostile client
//! cannot hold a connection open forever. On shutdown the listener is closed first (new
//! connections are refused), then connections finish the requests they are serving, for at
//! most the grace period.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, Response, header};
use futures_util::future::{Either, ready};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use super::plain;
use crate::api::{Shared, fast};

/// Connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to receive a request head; an idle connection is closed after as long.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Time in-flight requests get after shutdown starts.
    pub grace: Duration,
    /// Time a client gets to take an answer the socket could not take at once.
    pub write_timeout: Duration,
    /// A connection hyper serves is closed after this long without reading or writing a
    /// byte (HTTP/2 has no head deadline to do it).
    pub idle_timeout: Duration,
}

/// What every connection needs.
pub struct Server {
    pub(super) state: Shared,
    router: Router,
    builder: Builder<TokioExecutor>,
    pub(super) limits: Limits,
}

/// Serves on `listener` until `stop` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    state: Shared,
    router: Router,
    limits: Limits,
    stop: impl std::future::Future<Output = ()>,
) {
    let server = Arc::new(Server {
        state,
        router,
        builder: builder(&limits),
        limits,
    });
    // Each connection holds a receiver: the send asks them to finish, the sender's
    // `closed` tells when the last one has.
    let (stopping, watch) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Answers are written whole; waiting to coalesce them only adds latency.
        let _ = stream.set_nodelay(true);
        let connection = plain::Connection::new(server.clone(), peer, watch.clone());
        tokio::spawn(connection.run(stream));
    }
    drop((listener, watch));
    let grace = limits.grace;
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "listener closed; draining"
    );
    let _ = stopping.send(true);
    tokio::select! {
        () = stopping.closed() => tracing::info!("all connections finished"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over; closing the connections still open");
        }
    }
}

fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        // A client that sends its request and then shuts its side still gets the answer,
        // as on the plain loop.
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    builder
}

impl Server {
    /// Serves the rest of a connection with hyper and the router; `io` replays what the
    /// plain loop read but did not answer.
    pub(super) async fn hand_over<I>(
        &self,
        io: I,
        peer: SocketAddr,
        mut stop: watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (router, state) = (self.router.clone(), self.state.clone());
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            if let Some(response) = answer_fast(&state, &request) {
                return Either::Left(ready(Ok::<_, Infallible>(response)));
            }
            request.extensions_mut().insert(ConnectInfo(peer));
            Either::Right(router.clone().oneshot(request))
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        let finished = if *stop.borrow_and_update() {
            connection.as_mut().graceful_shutdown();
            connection.await
        } else {
            tokio::select! {
                finished = connection.as_mut() => finished,
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        };
        if let Err(error) = finished {
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
    }
}

/// The hot path's answer to `request` on a hyper connection, when it takes it.
pub fn answer_fast<B>(state: &Shared, request: &Request<B>) -> Option<Response<Body>> {
    let headers = request.headers();
    let head = fast::Head {
        method: request.method().as_str(),
        target: request.uri().path_and_query()?.as_str(),
        authorization: headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
        has_body: declares_body(headers),
    };
    let mut body = Vec::with_capacity(2048);
    let status = fast::answer(state, &head, &mut body)?.status;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let json = header::HeaderValue::from_static("application/json");
    response.headers_mut().insert(header::CONTENT_TYPE, json);
    Some(response)
}

fn declares_body(headers: &HeaderMap) -> bool {
    let length = headers.get(header::CONTENT_LENGTH);
    headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|v| v != "0")
}

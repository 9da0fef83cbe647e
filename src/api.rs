//! The HTTP API: one route table, request and response types, the error envelope, auth.
//!
//! Every error a client can cause is a 4xx with `{"error": {"code", "message"}}` where the
//! message says what to fix. A 5xx body is generic; its cause goes to the log.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Path, Request, State,
};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub mod fast;
mod forwarded;
pub(crate) mod json;
mod openapi;
pub mod registry;

pub use forwarded::client_address;

use crate::catalog::{Catalog, Shard};
use crate::config::{self, Secret, Settings};
use crate::geo::{Geo, Location, Lookup};
use crate::metrics::Metrics;
use crate::probe::HealthSnapshot;
use crate::room::{self, RoomName, User};
use crate::select::{self, Client, Decision, Ledger, Policy, Refusal, Survey};
use crate::store::{self, RoomRecord, Store};
use crate::token::{self, Grant, Issued, Signer};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Everything a handler may read.
pub struct AppState {
    /// The GeoIP database in service.
    pub geo: Arc<Geo>,
    /// The registry of regions and bridges.
    pub catalog: Arc<ArcSwap<Catalog>>,
    /// The latest bridge health, written by the prober only.
    pub health: Arc<ArcSwap<HealthSnapshot>>,
    /// How tokens are signed; replaced whole on reload, requests in flight keep theirs.
    pub signer: Arc<ArcSwap<Signer>>,
    /// Every series.
    pub metrics: Arc<Metrics>,
    /// True once the first probe round is done.
    pub ready: Arc<AtomicBool>,
    /// True once shutdown has begun: readiness turns false.
    pub shutting_down: AtomicBool,
    /// Requests in flight, capped by `server.max_concurrent_requests`.
    pub in_flight: InFlight,
    /// Bearer credentials per role, replaced on reload.
    pub credentials: ArcSwap<Credentials>,
    /// Token claims and the Jitsi URL.
    pub jitsi: config::Jitsi,
    /// Selection policy.
    pub policy: Policy,
    /// Catalog and health digested for selection, once per snapshot.
    pub survey: select::Cache,
    /// Participants of recent rooms, reserved on the bridges that will take them.
    pub reservations: Mutex<Ledger>,
    /// Durable regions, bridges and rooms.
    pub store: Store,
    /// Series the selection touches on every request, resolved once.
    pub series: fast::Series,
    /// The settings the process started with (pins, shards, room lifetime).
    pub settings: Arc<Settings>,
}

impl AppState {
    /// The catalog `registry` makes with the config's pins, default region and shards.
    pub fn catalog_from(&self, registry: &store::Registry) -> Result<Catalog, Vec<String>> {
        let regions = registry.regions.iter().map(|r| r.item.clone()).collect();
        let bridges = registry.bridges.iter().map(|b| b.item.clone()).collect();
        Catalog::build(self.settings.spec_with(regions, bridges))
    }

    /// Reads the registry and puts its catalog in service; keeps the old one on failure.
    pub async fn refresh_catalog(&self) {
        let registry = match self.store.registry().await {
            Ok(registry) => registry,
            Err(error) => {
                tracing::error!(%error, "registry could not be read; keeping the catalog");
                return;
            }
        };
        match self.catalog_from(&registry) {
            Ok(catalog) => self.catalog.store(Arc::new(catalog)),
            Err(problems) => {
                let problems = problems.join("; ");
                tracing::error!(
                    problems,
                    "stored registry is not a valid catalog; keeping the old"
                );
            }
        }
    }
}

/// The state handlers share.
pub type Shared = Arc<AppState>;

/// Who a credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The lobby: rooms and region choice.
    Lobby,
    /// Operators: the registry.
    Admin,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Lobby => "lobby",
            Role::Admin => "admin",
        }
    }
}

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Role(Role),
    /// Read-only registry routes: either role.
    Either,
}

/// Bearer credentials per role.
#[derive(Debug, Default)]
pub struct Credentials {
    lobby: Vec<Secret>,
    admin: Vec<Secret>,
}

impl Credentials {
    /// The configured credentials plus those in the credential files, one per line.
    pub fn load(server: &config::Server) -> Result<Credentials, Vec<String>> {
        let mut problems = Vec::new();
        let mut read = |list: &[Secret], file: &Option<std::path::PathBuf>| {
            let mut all = list.to_vec();
            if let Some(path) = file {
                let shown = path.display();
                match std::fs::read_to_string(path) {
                    Ok(text) => {
                        let read: Vec<Secret> = credential_lines(&text).collect();
                        if read.is_empty() {
                            problems.push(format!("credential file '{shown}' holds no credential"));
                        }
                        if let Some(why) = read
                            .iter()
                            .find_map(|c| config::credential_problem(c.expose()))
                        {
                            problems.push(format!("credential file '{shown}': {why}"));
                        }
                        all.extend(read);
                    }
                    Err(e) => problems.push(format!("credential file '{shown}': {e}")),
                }
            }
            all
        };
        let lobby = read(&server.lobby_credentials, &server.lobby_credentials_file);
        let admin = read(&server.admin_credentials, &server.admin_credentials_file);
        if problems.is_empty() {
            Ok(Credentials { lobby, admin })
        } else {
            Err(problems)
        }
    }

    fn role_of(&self, presented: &str) -> Option<Role> {
        let holds = |list: &[Secret]| list.iter().any(|c| same_secret(c.expose(), presented));
        if holds(&self.admin) {
            Some(Role::Admin)
        } else if holds(&self.lobby) {
            Some(Role::Lobby)
        } else {
            None
        }
    }

    fn open_for(&self, need: Need) -> bool {
        match need {
            Need::Role(Role::Lobby) => self.lobby.is_empty(),
            Need::Role(Role::Admin) => self.admin.is_empty(),
            Need::Either => self.lobby.is_empty() && self.admin.is_empty(),
        }
    }
}

fn credential_lines(text: &str) -> impl Iterator<Item = Secret> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| Secret::new(l.to_owned()))
}

/// An HTTP method a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone: health, metrics, public keys, the API document.
    Public,
    /// A credential of this kind.
    Needs(Need),
}

/// One route: method, path template, who may call it and its handler.
struct Route {
    verb: Verb,
    path: &'static str,
    access: Access,
    handler: fn(MethodFilter) -> MethodRouter<Shared>,
}

const fn route(
    verb: Verb,
    path: &'static str,
    access: Access,
    handler: fn(MethodFilter) -> MethodRouter<Shared>,
) -> Route {
    Route {
        verb,
        path,
        access,
        handler,
    }
}

const LOBBY: Access = Access::Needs(Need::Role(Role::Lobby));
const ADMIN: Access = Access::Needs(Need::Role(Role::Admin));
const READER: Access = Access::Needs(Need::Either);
const PUBLIC: Access = Access::Public;

/// The route table: the router is built from it, and a test holds the OpenAPI document
/// (`src/api/openapi.json`) to exactly these paths, methods and credentials.
const ROUTES: &[Route] = &[
    route(Verb::Post, "/v1/rooms", LOBBY, |m| on(m, create_room)),
    route(Verb::Post, "/v1/rooms/{room}/participants", LOBBY, |m| {
        on(m, add_participant)
    }),
    route(Verb::Get, "/v1/regions/select", LOBBY, |m| {
        on(m, select_region)
    }),
    route(Verb::Get, "/v1/regions", READER, |m| {
        on(m, registry::list_regions)
    }),
    route(Verb::Get, "/v1/regions/{id}", READER, |m| {
        on(m, registry::get_region)
    }),
    route(Verb::Put, "/v1/regions/{id}", ADMIN, |m| {
        on(m, registry::put_region)
    }),
    route(Verb::Delete, "/v1/regions/{id}", ADMIN, |m| {
        on(m, registry::delete_region)
    }),
    route(Verb::Get, "/v1/bridges", READER, |m| {
        on(m, registry::list_bridges)
    }),
    route(Verb::Get, "/v1/bridges/{id}", READER, |m| {
        on(m, registry::get_bridge)
    }),
    route(Verb::Put, "/v1/bridges/{id}", ADMIN, |m| {
        on(m, registry::put_bridge)
    }),
    route(Verb::Patch, "/v1/bridges/{id}", ADMIN, |m| {
        on(m, registry::patch_bridge)
    }),
    route(Verb::Delete, "/v1/bridges/{id}", ADMIN, |m| {
        on(m, registry::delete_bridge)
    }),
    route(Verb::Get, "/asap/{file}", PUBLIC, |m| on(m, get_public_key)),
    route(Verb::Get, "/.well-known/jwks.json", PUBLIC, |m| {
        on(m, get_jwks)
    }),
    route(Verb::Get, "/healthz", PUBLIC, |m| on(m, get_healthz)),
    route(Verb::Get, "/readyz", PUBLIC, |m| on(m, get_readyz)),
    route(Verb::Get, "/metrics", PUBLIC, |m| on(m, get_metrics)),
    route(Verb::Get, "/openapi.json", PUBLIC, |m| {
        on(m, openapi::get_openapi)
    }),
];

/// The router: every route of [`ROUTES`], each group behind its credential check.
pub fn router(state: Shared) -> Router {
    let mut app = Router::new();
    for access in [LOBBY, READER, ADMIN, PUBLIC] {
        app = app.merge(routes_for(access, &state));
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), limit))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// The routes of one access group, with the credential check for that group.
fn routes_for(access: Access, state: &Shared) -> Router<Shared> {
    let mut group = Router::new();
    let mut any = false;
    for entry in ROUTES.iter().filter(|r| r.access == access) {
        group = group.route(entry.path, (entry.handler)(entry.verb.filter()));
        any = true;
    }
    match access {
        // axum refuses a route layer on a router without routes.
        Access::Needs(need) if any => group.route_layer(middleware::from_fn_with_state(
            (state.clone(), need),
            require,
        )),
        _ => group,
    }
}

/// An error answer: status, a stable code and a message saying what to fix.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// A server fault: the cause is logged here, the client gets a generic message.
    fn internal(cause: &str) -> ApiError {
        tracing::error!(cause, "request failed inside geobridge");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the log",
        )
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// The error envelope, `{"error": {"code", "message"}}`, as the client gets it.
    pub(crate) fn body(&self) -> impl Serialize + '_ {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        let code = match &rejection {
            JsonRejection::JsonDataError(_) => "invalid_body",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            _ => "unreadable_body",
        };
        let message = match code {
            "body_too_large" => format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            "unsupported_media_type" => "send the body with Content-Type: application/json".into(),
            _ => rejection.body_text(),
        };
        ApiError::new(rejection.status(), code, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        if rejection.status().is_server_error() {
            return ApiError::internal(&rejection.body_text());
        }
        let message = format!(
            "{}; percent-encode the path as UTF-8",
            rejection.body_text()
        );
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", message)
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_region",
            refusal.to_string(),
        )
    }
}

/// `Json` whose rejections use the error envelope.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T> FromRequest<S> for JsonBody<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(JsonBody(value))
    }
}

/// `Query` whose rejections use the error envelope.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(QueryParams(value))
    }
}

/// `Path` whose rejections (such as a parameter that is not UTF-8) use the error envelope.
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T> FromRequestParts<S> for PathParam<T>
where
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(PathParam(value))
    }
}

/// Counts and times every request by its route template.
async fn track(State(state): State<Shared>, request: Request, next: Next) -> Response {
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
const UNLIMITED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Caps requests in flight and their duration; health and metrics routes are exempt so an
/// overloaded instance can still be observed.
async fn limit(State(state): State<Shared>, request: Request, next: Next) -> Response {
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

/// Lets a request through only with a bearer credential of the role the route needs.
async fn require(
    State((state, need)): State<(Shared, Need)>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let credentials = state.credentials.load();
    if credentials.open_for(need) {
        return Ok(next.run(request).await);
    }
    let unauthorized =
        |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("send a credential as 'Authorization: Bearer <credential>'"))?;
    let role = credentials
        .role_of(presented.trim())
        .ok_or_else(|| unauthorized("the bearer credential is not valid (unknown or revoked)"))?;
    match need {
        Need::Either => {}
        Need::Role(wanted) if wanted == role => {}
        Need::Role(wanted) => {
            let (wanted, role) = (wanted.label(), role.label());
            let message = format!("this route takes {wanted} credentials; this one is for {role}");
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", message));
        }
    }
    Ok(next.run(request).await)
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `POST /v1/rooms` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// Who hosts the room.
    pub user: User,
    /// The user's address; the connection's peer address when absent.
    #[serde(default)]
    pub client_ip: Option<String>,
    /// How many participants the room expects.
    #[serde(default)]
    pub participants: Option<u32>,
}

/// `POST /v1/rooms` answer.
#[derive(Debug, Serialize)]
pub struct RoomCreated {
    /// The room name, as the client joins it.
    pub room: RoomName,
    /// The chosen region.
    pub region: String,
    /// The link to open.
    pub link: String,
    /// The token (absent in no-token mode).
    pub token: Option<String>,
    /// When the token expires, seconds since 1970.
    pub expires_at: u64,
    /// What the database says of the address.
    pub location: Option<Location>,
    /// Why this region.
    pub decision: Decision,
}

/// `GET /v1/regions/select` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectQuery {
    /// The address to choose for; the peer address when absent.
    pub ip: Option<String>,
}

/// `GET /v1/regions/select` answer.
#[derive(Debug, Serialize)]
pub struct Selected {
    /// The chosen region.
    pub region: String,
    /// What the database says of the address.
    pub location: Option<Location>,
    /// Why this region.
    pub decision: Decision,
}

/// Reads the address a client sent in `field`; a 422 naming the text when it is none.
pub fn parse_ip(field: &str, text: &str) -> Result<IpAddr, ApiError> {
    text.trim().parse().map_err(|_| {
        let shown: String = text.chars().take(64).collect();
        ApiError::invalid(
            "invalid_ip",
            format!("{field} '{shown}' is not an IP address; send e.g. 203.0.113.7 or 2001:db8::7"),
        )
    })
}

/// Locates `ip` and chooses its region among `catalog`'s at `now`, counting both;
/// `reserve` participants are reserved on the bridge the decision names.
fn decide(
    state: &AppState,
    ip: IpAddr,
    catalog: &Arc<Catalog>,
    reserve: Option<u32>,
    now: tokio::time::Instant,
) -> Result<(Option<Location>, Decision), ApiError> {
    let lookup = state.geo.current().lookup(ip);
    // Positions in `fast::LOOKUP_OUTCOMES`.
    let (mut outcome, location) = match lookup {
        Lookup::Located(l) if l.coarse => (1, Some(l)),
        Lookup::Located(l) => (0, Some(l)),
        Lookup::NoData => (2, None),
        Lookup::Special(_) => (3, None),
    };
    let client = Client {
        ip: Some(ip),
        location: location.as_ref(),
    };
    let chosen = choose(state, client, catalog, reserve, now);
    if chosen
        .as_ref()
        .is_ok_and(|d| d.reason == select::Reason::NetworkPin)
    {
        outcome = 4;
    }
    state.series.lookup(outcome);
    match chosen {
        Ok(decision) => {
            let series = &state.series.decisions;
            series.count(&state.metrics, catalog, &decision);
            if decision.degraded {
                let labels = [decision.region.as_str(), decision.tier.label()];
                let degraded = &state.metrics.degraded_decisions;
                degraded.with_label_values(&labels).inc();
            }
            Ok((location, decision))
        }
        Err(refusal) => {
            let cause = match refusal {
                Refusal::NothingLeft => "nothing_left",
                Refusal::AllDown => "all_down",
            };
            state.metrics.observe_refusal(cause);
            tracing::warn!(%refusal, "no region could be chosen");
            Err(refusal.into())
        }
    }
}

/// Selects under the reservations lock, so that concurrent rooms see each other's
/// reservations; the clock is read by the caller, not in `select`.
fn choose(
    state: &AppState,
    client: Client<'_>,
    catalog: &Arc<Catalog>,
    reserve: Option<u32>,
    now: tokio::time::Instant,
) -> Result<Decision, Refusal> {
    let health = state.health.load_full();
    let survey = if Arc::ptr_eq(catalog, &state.catalog.load()) {
        state.survey.get(catalog, &health, &state.policy)
    } else {
        // Known limit: a guest's choice within its room's shard digests that shard's
        // bridges on every request instead of once per health snapshot.
        Arc::new(Survey::build(catalog.clone(), &health, &state.policy))
    };
    let mut ledger = state
        .reservations
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    ledger.expire(now);
    let decision = select::select_in(client, &survey, ledger.load_for(&survey), &state.policy)?;
    if let (Some(bridge), Some(participants)) = (&decision.bridge, reserve) {
        ledger.reserve(bridge.clone(), participants, now);
    }
    Ok(decision)
}

async fn create_room(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateRoom>,
) -> Result<(StatusCode, Json<RoomCreated>), ApiError> {
    check_user(&body.user)?;
    if body.participants.is_some_and(|n| !(1..=1000).contains(&n)) {
        return Err(ApiError::invalid(
            "invalid_participants",
            "participants must be 1 to 1000",
        ));
    }
    let ip = client_ip(&state, body.client_ip.as_deref(), peer, &headers)?;
    let catalog = state.catalog.load_full();
    let participants = body.participants.unwrap_or(1);
    let (location, decision) = decide(
        &state,
        ip,
        &catalog,
        Some(participants),
        tokio::time::Instant::now(),
    )?;
    let shard = shard_of(&catalog, &decision)?;
    let room = RoomName::generate(&state.jitsi.room_prefix);
    let now = store::now_seconds();
    let record = RoomRecord {
        name: room.to_string(),
        shard: shard.id.to_string(),
        region: decision.region.to_string(),
        host_id: body.user.id.clone(),
        created_at: now,
        expires_at: now.saturating_add(seconds(state.settings.rooms.lifetime_seconds)),
    };
    state
        .store
        .insert_room(&record)
        .await
        .map_err(|e| ApiError::internal(&e.to_string()))?;
    let host = (&body.user, token::Role::Host);
    let created = issue(&state, host, room, shard, (location, decision), now).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `POST /v1/rooms/{room}/participants` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddParticipant {
    /// Who joins.
    pub user: User,
    /// The guest's address; the connection's peer address when absent.
    #[serde(default)]
    pub client_ip: Option<String>,
}

/// A guest joins an existing room: same shard, the guest's own region within it.
async fn add_participant(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    PathParam(room): PathParam<String>,
    JsonBody(body): JsonBody<AddParticipant>,
) -> Result<(StatusCode, Json<RoomCreated>), ApiError> {
    let room = RoomName::parse(&room).map_err(|why| ApiError::invalid("invalid_room", why))?;
    check_user(&body.user)?;
    let ip = client_ip(&state, body.client_ip.as_deref(), peer, &headers)?;
    let now = store::now_seconds();
    let record = state.store.live_room(room.as_str(), now).await;
    let record = record
        .map_err(|e| ApiError::internal(&e.to_string()))?
        .ok_or_else(|| {
            let message = format!("no room '{room}', or it has expired; create a new room");
            ApiError::new(StatusCode::NOT_FOUND, "unknown_room", message)
        })?;
    let catalog = state.catalog.load_full();
    let on_shard = catalog.within_shard(&record.shard).ok_or_else(|| {
        let message = format!(
            "room '{room}' is on shard '{}', which has no regions now",
            record.shard
        );
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shard_gone", message)
    })?;
    // The host's reservation covers the room's own region; a guest elsewhere adds one
    // participant on the bridge of the guest's region.
    let on_shard = Arc::new(on_shard);
    let (location, decision) = decide(&state, ip, &on_shard, None, tokio::time::Instant::now())?;
    if let Some(bridge) = decision
        .bridge
        .as_ref()
        .filter(|_| decision.region.as_str() != record.region)
    {
        reserve_one(&state, bridge);
    }
    let shard = shard_of(&on_shard, &decision)?;
    let guest = (&body.user, token::Role::Guest);
    let joined = issue(&state, guest, room, shard, (location, decision), now).await?;
    Ok((StatusCode::CREATED, Json(joined)))
}

/// Reserves one participant on `bridge` now.
fn reserve_one(state: &AppState, bridge: &crate::catalog::BridgeId) {
    let now = tokio::time::Instant::now();
    let mut ledger = state
        .reservations
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    ledger.reserve(bridge.clone(), 1, now);
}

fn check_user(user: &User) -> Result<(), ApiError> {
    let problems = user.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("invalid_user", problems.join("; ")))
    }
}

/// The address to locate: the one the lobby sent, else the peer (behind trusted proxies).
fn client_ip(
    state: &AppState,
    given: Option<&str>,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<IpAddr, ApiError> {
    match given {
        Some(text) => parse_ip("client_ip", text),
        None => Ok(client_address(
            peer.ip(),
            headers,
            &state.settings.server.trusted_proxies,
        )),
    }
}

fn seconds(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn shard_of(catalog: &Catalog, decision: &Decision) -> Result<Shard, ApiError> {
    let position = catalog.position(decision.region.as_str());
    let position = position.ok_or_else(|| ApiError::internal("decided region not in catalog"))?;
    Ok(catalog.shard_of(position).clone())
}

/// Signs a token for the user (host or guest) in `room` on `shard` and builds the answer.
async fn issue(
    state: &Shared,
    (user, role): (&User, token::Role),
    room: RoomName,
    shard: Shard,
    (location, decision): (Option<Location>, Decision),
    now: i64,
) -> Result<RoomCreated, ApiError> {
    let now = u64::try_from(now).unwrap_or(0);
    let profile = shard_profile(&state.jitsi, &shard);
    let region = decision.region.to_string();
    let issued = issue_token(state, profile, user, role, &room, &region, now).await?;
    let token = issued.as_ref().map(|i| i.token.clone());
    let expires_at = issued
        .as_ref()
        .map_or(now + state.jitsi.token_lifetime_seconds, |i| i.expires_at);
    let link = room::link(&shard.url, &room, token.as_deref());
    Ok(RoomCreated {
        room,
        region,
        link,
        token,
        expires_at,
        location,
        decision,
    })
}

/// The deployment's claims, with the shard's own `iss` and `sub` where it has them.
fn shard_profile(jitsi: &config::Jitsi, shard: &Shard) -> token::Profile {
    let mut profile = jitsi.token_profile();
    if let Some(issuer) = &shard.issuer {
        profile.issuer.clone_from(issuer);
    }
    if let Some(subject) = &shard.subject {
        profile.subject.clone_from(subject);
    }
    profile
}

/// Limits signatures running at once to the number of cores: each keeps a core busy for
/// milliseconds, and more signing threads than cores would only take CPU time from the async
/// workers that answer health checks and run the prober.
fn signing_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        tokio::sync::Semaphore::new(cores)
    })
}

/// Signs a token for `user` in `room` on a blocking thread (an RSA signature takes
/// milliseconds) and counts it; `None` in no-token mode. `profile` carries `iss`, `aud` and
/// `sub`, so a caller can pass a shard's own.
async fn issue_token(
    state: &Shared,
    profile: token::Profile,
    user: &User,
    role: token::Role,
    room: &RoomName,
    region: &str,
    now: u64,
) -> Result<Option<Issued>, ApiError> {
    let signer = state.signer.load_full();
    let (user, room, owned_region) = (user.clone(), room.clone(), region.to_owned());
    let started = Instant::now();
    // Waiting for a slot happens here, on the async side, not on a thread.
    let slot = signing_slots().acquire().await;
    let signed = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let grant = Grant {
            user: &user,
            role,
            room: room.as_str(),
            region: &owned_region,
        };
        signer.issue(&profile, &grant, now)
    })
    .await;
    let issued = match signed {
        Ok(Ok(issued)) => issued,
        Ok(Err(error)) => return Err(ApiError::internal(&error.to_string())),
        Err(join) => return Err(ApiError::internal(&join.to_string())),
    };
    if let Some(issued) = &issued {
        let took = started.elapsed().as_secs_f64();
        state.metrics.signing_duration.observe(took);
        let kid = issued.kid.as_ref().map_or("", |k| k.as_str());
        state.metrics.tokens.with_label_values(&[region, kid]).inc();
    }
    Ok(issued)
}

async fn select_region(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<SelectQuery>,
) -> Result<Json<Selected>, ApiError> {
    let trusted = &state.settings.server.trusted_proxies;
    let ip = match &query.ip {
        Some(text) => parse_ip("ip", text)?,
        None => client_address(peer.ip(), &headers, trusted),
    };
    let (location, decision) = decide(
        &state,
        ip,
        &state.catalog.load_full(),
        None,
        tokio::time::Instant::now(),
    )?;
    Ok(Json(Selected {
        region: decision.region.to_string(),
        location,
        decision,
    }))
}

async fn get_public_key(
    State(state): State<Shared>,
    PathParam(file): PathParam<String>,
) -> Result<Response, ApiError> {
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_key",
            format!("no public key at /asap/{file}"),
        )
    };
    let hash = file.strip_suffix(".pem").ok_or_else(unknown)?;
    let signer = state.signer.load();
    let pem = signer.public_pem(hash).ok_or_else(unknown)?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        pem.to_owned(),
    )
        .into_response())
}

/// Every published key as a JWKS (RFC 7517), for Prosody versions that read one.
async fn get_jwks(State(state): State<Shared>) -> Result<Response, ApiError> {
    let signer = state.signer.load();
    let keys = signer.keyring().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_public_keys",
            "no public keys: tokens are not RS256 (jitsi.auth is hs256 or none)",
        )
    })?;
    Ok((
        [(header::CONTENT_TYPE, "application/jwk-set+json")],
        Json(keys.jwks()),
    )
        .into_response())
}

async fn get_healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn get_readyz(State(state): State<Shared>) -> Response {
    if state.shutting_down.load(Ordering::Acquire) {
        let body = serde_json::json!({"status": "stopping"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if state.ready.load(Ordering::Acquire) {
        let info = state.geo.current().info().clone();
        Json(serde_json::json!({"status": "ready", "geo": info})).into_response()
    } else {
        let body = serde_json::json!({"status": "starting", "waiting_for": "first probe round"});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn get_metrics(State(state): State<Shared>) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see README.md for the API",
    )
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    let message =
        format!("this route does not take {method}; the Allow header lists the methods it takes");
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal secrets match; different ones, including prefixes, do not.
    #[test]
    fn secrets_compare() {
        assert!(same_secret("abcdefghijklmnop", "abcdefghijklmnop"));
        assert!(!same_secret("abcdefghijklmnop", "abcdefghijklmno"));
        assert!(!same_secret("abcdefghijklmnop", "Abcdefghijklmnop"));
    }
}

//! The HTTP API: one route table, request and response types, the error envelope, auth.
//!
//! Every error a client can cause is a 4xx with `{"error": {"code", "message"}}` where the
//! message says what to fix. A 5xx body is generic; its cause goes to the log.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Path, Request, State,
};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::config::{self, Secret};
use crate::geo::{Geo, Location, Lookup};
use crate::metrics::Metrics;
use crate::probe::{Health, HealthSnapshot};
use crate::room::{self, RoomName, User};
use crate::select::{self, Client, Decision, Ledger, Policy, Refusal};
use crate::token::{Claims, Context, Signer};

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
    /// How tokens are signed.
    pub signer: Arc<Signer>,
    /// Every series.
    pub metrics: Arc<Metrics>,
    /// True once the first probe round is done.
    pub ready: Arc<AtomicBool>,
    /// Credentials the lobby may present; empty means no check (loopback only).
    pub lobby_credentials: Vec<Secret>,
    /// Token claims and the Jitsi URL.
    pub jitsi: config::Jitsi,
    /// Selection policy.
    pub policy: Policy,
    /// Catalog and health digested for selection, once per snapshot.
    pub survey: select::Cache,
    /// Participants of recent rooms, reserved on the bridges that will take them.
    pub reservations: Mutex<Ledger>,
}

type Shared = Arc<AppState>;

/// The route table.
pub fn router(state: Shared) -> Router {
    let lobby = Router::new()
        .route("/v1/rooms", post(create_room))
        .route("/v1/regions/select", get(select_region))
        .route("/v1/regions", get(list_regions))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_lobby));
    Router::new()
        .merge(lobby)
        .route("/asap/{file}", get(get_public_key))
        .route("/healthz", get(get_healthz))
        .route("/readyz", get(get_readyz))
        .route("/metrics", get(get_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("ascii"));
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
        .with_label_values(&[&route, method.as_str(), status.as_str()])
        .inc();
    m.http_duration
        .with_label_values(&[&route])
        .observe(took.as_secs_f64());
    let (status, duration_ms) = (status.as_u16(), took.as_millis() as u64);
    tracing::debug!(%method, route, status, duration_ms, "request");
    response
}

/// Lets a request through only with one of the lobby's bearer credentials.
async fn require_lobby(
    State(state): State<Shared>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.lobby_credentials.is_empty() {
        return Ok(next.run(request).await);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send the lobby credential as 'Authorization: Bearer <credential>'",
            )
        })?;
    let known = state
        .lobby_credentials
        .iter()
        .any(|c| same_secret(c.expose(), presented));
    if !known {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer credential is not a valid lobby credential",
        ));
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

fn parse_ip(field: &str, text: &str) -> Result<IpAddr, ApiError> {
    text.trim().parse().map_err(|_| {
        let shown: String = text.chars().take(64).collect();
        ApiError::invalid(
            "invalid_ip",
            format!("{field} '{shown}' is not an IP address; send e.g. 203.0.113.7 or 2001:db8::7"),
        )
    })
}

/// Locates `ip` and chooses its region, counting both; `reserve` participants are reserved
/// on the bridge the decision names.
fn decide(
    state: &AppState,
    ip: IpAddr,
    reserve: Option<u32>,
) -> Result<(Option<Location>, Decision), ApiError> {
    let lookup = state.geo.current().lookup(ip);
    let (outcome, location) = match lookup {
        Lookup::Located(l) if l.coarse => ("coarse", Some(l)),
        Lookup::Located(l) => ("located", Some(l)),
        Lookup::NoData => ("no_data", None),
        Lookup::Special(_) => ("special", None),
    };
    state
        .metrics
        .geo_lookups
        .with_label_values(&[outcome])
        .inc();
    let client = Client {
        ip: Some(ip),
        location: location.as_ref(),
    };
    match choose(state, client, reserve) {
        Ok(decision) => {
            let labels = [
                decision.region.as_str(),
                decision.reason.label(),
                tier_label(&decision),
            ];
            state.metrics.decisions.with_label_values(&labels).inc();
            if decision.degraded {
                let labels = [decision.region.as_str(), tier_label(&decision)];
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
            state.metrics.refusals.with_label_values(&[cause]).inc();
            tracing::warn!(%refusal, "no region could be chosen");
            Err(refusal.into())
        }
    }
}

/// Selects under the reservations lock, so that concurrent rooms see each other's
/// reservations; the clock is read here, not in `select`.
fn choose(state: &AppState, client: Client<'_>, reserve: Option<u32>) -> Result<Decision, Refusal> {
    let (catalog, health) = (state.catalog.load_full(), state.health.load_full());
    let survey = state.survey.get(&catalog, &health, &state.policy);
    let now = tokio::time::Instant::now();
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

fn tier_label(decision: &Decision) -> &'static str {
    match decision.tier {
        select::Tier::Eligible => "eligible",
        select::Tier::Overloaded => "overloaded",
        select::Tier::Draining => "draining",
        select::Tier::Panic => "panic",
        select::Tier::Unusable => "unusable",
    }
}

async fn create_room(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody<CreateRoom>,
) -> Result<(StatusCode, Json<RoomCreated>), ApiError> {
    let problems = body.user.problems();
    if !problems.is_empty() {
        return Err(ApiError::invalid("invalid_user", problems.join("; ")));
    }
    if body.participants.is_some_and(|n| !(1..=1000).contains(&n)) {
        return Err(ApiError::invalid(
            "invalid_participants",
            "participants must be 1 to 1000",
        ));
    }
    let ip = match &body.client_ip {
        Some(text) => parse_ip("client_ip", text)?,
        None => peer.ip(),
    };
    let participants = body.participants.unwrap_or(1);
    let (location, decision) = decide(&state, ip, Some(participants))?;
    let room = RoomName::generate(&state.jitsi.room_prefix);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expires_at = now + state.jitsi.token_lifetime_seconds;
    let token = sign(&state, &body.user, &room, decision.region.as_str(), now).await?;
    if token.is_some() {
        let kid = state.signer.kid().map_or("", |k| k.as_str());
        state
            .metrics
            .tokens
            .with_label_values(&[decision.region.as_str(), kid])
            .inc();
    }
    let link = room::link(&state.jitsi.url, &room, token.as_deref());
    let region = decision.region.to_string();
    let created = RoomCreated {
        room,
        region,
        link,
        token,
        expires_at,
        location,
        decision,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// Signs on a blocking thread: an RSA signature takes milliseconds.
async fn sign(
    state: &Shared,
    user: &User,
    room: &RoomName,
    region: &str,
    now: u64,
) -> Result<Option<String>, ApiError> {
    let (state, user, room, region) =
        (state.clone(), user.clone(), room.clone(), region.to_owned());
    let signed = tokio::task::spawn_blocking(move || {
        let jitsi = &state.jitsi;
        let claims = Claims {
            iss: &jitsi.issuer,
            aud: &jitsi.audience,
            sub: &jitsi.subject,
            room: room.as_str(),
            exp: now + jitsi.token_lifetime_seconds,
            nbf: now.saturating_sub(jitsi.nbf_margin_seconds),
            iat: now,
            context: Context {
                user: &user,
                region: &region,
            },
        };
        state.signer.sign(&claims)
    })
    .await;
    match signed {
        Ok(Ok(token)) => Ok(token),
        Ok(Err(error)) => Err(ApiError::internal(&error.to_string())),
        Err(join) => Err(ApiError::internal(&join.to_string())),
    }
}

async fn select_region(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    QueryParams(query): QueryParams<SelectQuery>,
) -> Result<Json<Selected>, ApiError> {
    let ip = match &query.ip {
        Some(text) => parse_ip("ip", text)?,
        None => peer.ip(),
    };
    let (location, decision) = decide(&state, ip, None)?;
    Ok(Json(Selected {
        region: decision.region.to_string(),
        location,
        decision,
    }))
}

/// One region in `GET /v1/regions`.
#[derive(Debug, Serialize)]
pub struct RegionView {
    /// Settings of the region.
    #[serde(flatten)]
    pub region: crate::catalog::Region,
    /// How usable it is now.
    pub tier: select::Tier,
    /// True when no bridges are registered.
    pub unwatched: bool,
    /// Its bridges with their health.
    pub bridges: Vec<BridgeView>,
}

/// One bridge with its health.
#[derive(Debug, Serialize)]
pub struct BridgeView {
    /// Settings of the bridge.
    #[serde(flatten)]
    pub bridge: crate::catalog::Bridge,
    /// Its latest health.
    pub health: Health,
}

async fn list_regions(State(state): State<Shared>) -> Json<Vec<RegionView>> {
    let (catalog, health) = (state.catalog.load(), state.health.load());
    let survey = select::survey(&catalog, &health, &state.policy);
    let views = catalog
        .regions()
        .iter()
        .zip(survey)
        .enumerate()
        .map(|(i, (region, considered))| RegionView {
            region: region.clone(),
            tier: considered.tier,
            unwatched: considered.unwatched,
            bridges: catalog
                .bridges_of(i)
                .iter()
                .map(|&b| {
                    let bridge = catalog.bridges()[b].clone();
                    let health = health.get(&bridge.id).cloned().unwrap_or_default();
                    BridgeView { bridge, health }
                })
                .collect(),
        })
        .collect();
    Json(views)
}

async fn get_public_key(
    State(state): State<Shared>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_key",
            format!("no public key at /asap/{file}"),
        )
    };
    let hash = file.strip_suffix(".pem").ok_or_else(unknown)?;
    let pem = state.signer.public_pem(hash).ok_or_else(unknown)?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        pem.to_owned(),
    )
        .into_response())
}

async fn get_healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn get_readyz(State(state): State<Shared>) -> Response {
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

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed here",
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

//! The HTTP API: the shared state, one route table, region selection and the small
//! read-only routes. The error envelope (`error`), credentials (`auth`), the middleware every
//! request passes (`limits`), rooms (`rooms`) and the registry (`registry`) live beside it.
//!
//! Every error a client can cause is a 4xx with `{"error": {"code", "message"}}` where the
//! message says what to fix. A 5xx body is generic; its cause goes to the log.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

mod auth;
mod error;
pub mod fast;
mod forwarded;
pub(crate) mod json;
mod limits;
mod openapi;
pub mod registry;
mod rooms;

pub use auth::{Credentials, Role};
use auth::{Need, require};
pub use error::{ApiError, JsonBody, PathParam, QueryParams};
pub use forwarded::client_address;
pub(crate) use limits::Counted;
pub use limits::{InFlight, Slot};
use limits::{limit, track};
pub use rooms::{AddParticipant, CreateRoom, RoomCreated};
use rooms::{add_participant, create_room};

use crate::catalog::Catalog;
use crate::config::{self, Settings};
use crate::geo::{Geo, Location, Lookup};
use crate::metrics::Metrics;
use crate::probe::HealthSnapshot;
use crate::select::{self, Client, Decision, Ledger, Policy, Refusal, Survey};
use crate::store::{self, Store};
use crate::token::Signer;

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

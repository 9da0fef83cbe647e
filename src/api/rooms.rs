//! Rooms: a host creates one (region chosen, room named, token signed), guests join it on
//! its shard.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, JsonBody, PathParam, Shared, client_address, decide, parse_ip};
use crate::catalog::{Catalog, Shard};
use crate::config;
use crate::geo::Location;
use crate::room::{self, RoomName, User};
use crate::select::Decision;
use crate::store::{self, RoomRecord};
use crate::token::{self, Grant, Issued};

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

pub(super) async fn create_room(
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
    state.store.insert_room(&record).await?;
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
pub(super) async fn add_participant(
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
    let record = record?.ok_or_else(|| {
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

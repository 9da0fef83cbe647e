//! The admin API for the registry: regions and bridges, read, created, replaced, deleted.
//!
//! Every change is checked twice before it is stored: the entry itself (ids, URLs,
//! coordinates) and the whole catalog it would produce with the config file's pins, default
//! region and shards. After a change is stored, this instance's catalog is refreshed at once;
//! other instances notice within their store poll interval.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, JsonBody, PathParam, Shared};
use crate::catalog::{self, AdminState, Bridge, BridgeId, Region, RegionId, ShardId};
use crate::geo::Point;
use crate::probe::Health;
use crate::select::{self, Tier};
use crate::store::{self, Put, Registry, Stored};

/// A region with its live state.
#[derive(Debug, Serialize)]
pub struct RegionView {
    /// The stored region.
    #[serde(flatten)]
    pub stored: Stored<Region>,
    /// How usable it is now.
    pub tier: Tier,
    /// True when no bridges are registered.
    pub unwatched: bool,
    /// Its bridges with their health.
    pub bridges: Vec<BridgeView>,
}

/// A bridge with its live health.
#[derive(Debug, Serialize)]
pub struct BridgeView {
    /// The stored bridge.
    #[serde(flatten)]
    pub stored: Stored<Bridge>,
    /// Its latest health.
    pub health: Health,
}

/// `PUT /v1/regions/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionInput {
    /// Must equal the path's id when given.
    #[serde(default)]
    pub id: Option<String>,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
    /// Region group.
    #[serde(default)]
    pub group: Option<String>,
    /// Distance bias.
    #[serde(default)]
    pub bias_km: f64,
    /// Jitsi shard.
    #[serde(default)]
    pub shard: Option<String>,
}

impl RegionInput {
    /// The region this body describes at path id `id`, or what is wrong with it.
    pub fn check(self, id: &str) -> Result<Region, ApiError> {
        let id = parse_id(RegionId::parse, id)?;
        check_body_id(self.id.as_deref(), id.as_str())?;
        let point = Point {
            latitude: self.latitude,
            longitude: self.longitude,
        };
        point
            .check()
            .map_err(|why| ApiError::invalid("invalid_region", why))?;
        if !self.bias_km.is_finite() || self.bias_km.abs() > 40_000.0 {
            return Err(ApiError::invalid(
                "invalid_region",
                "bias_km must be within ±40000",
            ));
        }
        let shard = self
            .shard
            .as_deref()
            .map(|s| parse_id(ShardId::parse, s))
            .transpose()?;
        let region = Region {
            id,
            name: self.name,
            point,
            group: self.group,
            bias_km: self.bias_km,
            shard,
        };
        let problems = region.problems();
        if !problems.is_empty() {
            return Err(ApiError::invalid("invalid_region", problems.join("; ")));
        }
        Ok(region)
    }
}

/// `PUT /v1/bridges/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeInput {
    /// Must equal the path's id when given.
    #[serde(default)]
    pub id: Option<String>,
    /// The region it serves.
    pub region: String,
    /// Base URL of its private REST API.
    pub url: String,
    /// Relative share of rooms.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Whether to read `/colibri/stats`.
    #[serde(default)]
    pub stats: Option<bool>,
    /// Initial admin state.
    #[serde(default)]
    pub admin_state: Option<AdminState>,
}

impl BridgeInput {
    /// The bridge this body describes at path id `id`, or what is wrong with it; whether its
    /// region exists is checked against the registry later.
    pub fn check(self, id: &str) -> Result<Bridge, ApiError> {
        let id = parse_id(BridgeId::parse, id)?;
        check_body_id(self.id.as_deref(), id.as_str())?;
        let region = parse_id(RegionId::parse, &self.region)?;
        catalog::check_new_bridge_url(&self.url)
            .map_err(|why| ApiError::invalid("invalid_url", why))?;
        if self.weight == Some(0) {
            return Err(ApiError::invalid(
                "invalid_bridge",
                "weight must be at least 1",
            ));
        }
        Ok(Bridge {
            id,
            region,
            url: self.url.trim_end_matches('/').to_owned(),
            weight: self.weight.unwrap_or(1),
            stats: self.stats.unwrap_or(true),
            admin_state: self.admin_state.unwrap_or_default(),
        })
    }
}

/// `PATCH /v1/bridges/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminStateInput {
    /// The new admin state.
    pub admin_state: AdminState,
}

fn parse_id<T>(
    parse: fn(&str) -> Result<T, catalog::InvalidId>,
    text: &str,
) -> Result<T, ApiError> {
    parse(text).map_err(|e| ApiError::invalid("invalid_id", e.to_string()))
}

fn check_body_id(body: Option<&str>, path: &str) -> Result<(), ApiError> {
    match body {
        Some(id) if id != path => Err(ApiError::invalid(
            "id_mismatch",
            format!("body id '{id}' differs from the path's '{path}'; drop it or make them equal"),
        )),
        _ => Ok(()),
    }
}

/// Refuses changes to entries the config file owns; the store would refuse them too.
fn refuse_config<T>(
    entries: &[Stored<T>],
    id: impl Fn(&T) -> &str,
    what: &str,
    wanted: &str,
) -> Result<(), ApiError> {
    let owned = entries
        .iter()
        .any(|e| id(&e.item) == wanted && e.managed_by == store::ManagedBy::Config);
    if owned {
        let message = store::managed_by_config(what, wanted);
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "managed_by_config",
            message,
        ));
    }
    Ok(())
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no {what} '{id}'"),
    )
}

async fn registry(state: &Shared) -> Result<Registry, ApiError> {
    state.store.registry().await.map_err(ApiError::from)
}

/// Checks that `registry` would make a valid catalog with the config's pins and shards.
fn check_catalog(state: &Shared, registry: &Registry) -> Result<(), ApiError> {
    match state.catalog_from(registry) {
        Ok(_) => Ok(()),
        Err(problems) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            problems.join("; "),
        )),
    }
}

fn views(state: &Shared, registry: Registry) -> Vec<RegionView> {
    let health = state.health.load();
    let catalog = state.catalog.load();
    let survey = select::survey(&catalog, &health, &state.policy);
    let Registry {
        regions, bridges, ..
    } = registry;
    regions
        .into_iter()
        .map(|stored| {
            let live = catalog
                .position(stored.item.id.as_str())
                .map(|i| &survey[i]);
            let (tier, unwatched) = live.map_or((Tier::Unusable, false), |c| (c.tier, c.unwatched));
            let bridges = bridges
                .iter()
                .filter(|b| b.item.region == stored.item.id)
                .map(|b| bridge_view(state, b.clone()))
                .collect();
            RegionView {
                stored,
                tier,
                unwatched,
                bridges,
            }
        })
        .collect()
}

fn bridge_view(state: &Shared, stored: Stored<Bridge>) -> BridgeView {
    let health = state
        .health
        .load()
        .get(&stored.item.id)
        .cloned()
        .unwrap_or_default();
    BridgeView { stored, health }
}

/// `GET /v1/regions`.
pub async fn list_regions(State(state): State<Shared>) -> Result<Json<Vec<RegionView>>, ApiError> {
    Ok(Json(views(&state, registry(&state).await?)))
}

/// `GET /v1/regions/{id}`.
pub async fn get_region(
    State(state): State<Shared>,
    PathParam(id): PathParam<String>,
) -> Result<Json<RegionView>, ApiError> {
    let views = views(&state, registry(&state).await?);
    let view = views.into_iter().find(|v| v.stored.item.id.as_str() == id);
    view.map(Json).ok_or_else(|| not_found("region", &id))
}

/// `PUT /v1/regions/{id}`: create or replace.
pub async fn put_region(
    State(state): State<Shared>,
    PathParam(id): PathParam<String>,
    JsonBody(input): JsonBody<RegionInput>,
) -> Result<Response, ApiError> {
    let region = RegionInput::check(input, &id)?;
    let mut proposed = registry(&state).await?;
    refuse_config(
        &proposed.regions,
        |r| r.id.as_str(),
        "region",
        region.id.as_str(),
    )?;
    proposed.regions.retain(|r| r.item.id != region.id);
    proposed.regions.push(Stored {
        item: region.clone(),
        managed_by: store::ManagedBy::Api,
        updated_at: 0,
    });
    check_catalog(&state, &proposed)?;
    let put = state
        .store
        .put_region(&region)
        .await
        .map_err(ApiError::from)?;
    state.refresh_catalog().await;
    let view = views(&state, registry(&state).await?)
        .into_iter()
        .find(|v| v.stored.item.id == region.id);
    match view {
        Some(view) => Ok((put_status(put), Json(view)).into_response()),
        // Deleted by another request between our write and this read: ours was applied first.
        None => Ok((put_status(put), Json(region)).into_response()),
    }
}

/// `DELETE /v1/regions/{id}`: refused while bridges are in it.
pub async fn delete_region(
    State(state): State<Shared>,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(RegionId::parse, &id)?;
    let mut proposed = registry(&state).await?;
    if !proposed.regions.iter().any(|r| r.item.id == id) {
        return Err(not_found("region", id.as_str()));
    }
    refuse_config(&proposed.regions, |r| r.id.as_str(), "region", id.as_str())?;
    let bridges: Vec<&str> = proposed
        .bridges
        .iter()
        .filter(|b| b.item.region == id)
        .map(|b| b.item.id.as_str())
        .collect();
    if !bridges.is_empty() {
        let message = format!(
            "region '{id}' still has bridges: {}; delete them first",
            bridges.join(", ")
        );
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "region_has_bridges",
            message,
        ));
    }
    proposed.regions.retain(|r| r.item.id != id);
    check_catalog(&state, &proposed)?;
    let deleted = state
        .store
        .delete_region(&id)
        .await
        .map_err(ApiError::from)?;
    state.refresh_catalog().await;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("region", id.as_str()))
    }
}

/// `GET /v1/bridges`.
pub async fn list_bridges(State(state): State<Shared>) -> Result<Json<Vec<BridgeView>>, ApiError> {
    let bridges = registry(&state).await?.bridges;
    Ok(Json(
        bridges
            .into_iter()
            .map(|b| bridge_view(&state, b))
            .collect(),
    ))
}

/// `GET /v1/bridges/{id}`.
pub async fn get_bridge(
    State(state): State<Shared>,
    PathParam(id): PathParam<String>,
) -> Result<Json<BridgeView>, ApiError> {
    let bridges = registry(&state).await?.bridges;
    let found = bridges.into_iter().find(|b| b.item.id.as_str() == id);
    found
        .map(|b| Json(bridge_view(&state, b)))
        .ok_or_else(|| not_found("bridge", &id))
}

/// `PUT /v1/bridges/{id}`: create or replace; the region must exist.
pub async fn put_bridge(
    State(state): State<Shared>,
    PathParam(id): PathParam<String>,
    JsonBody(input): JsonBody<BridgeInput>,
) -> Result<Response, ApiError> {
    let bridge = input.check(&id)?;
    let mut proposed = registry(&state).await?;
    let id = bridge.id.as_str();
    refuse_config(&proposed.bridges, |b| b.id.as_str(), "bridge", id)?;
    if !proposed.regions.iter().any(|r| r.item.id == bridge.region) {
        let known: Vec<&str> = proposed
            .regions
            .iter()
            .map(|r| r.item.id.as_str())
            .collect();
        let message = format!(
            "unknown region '{}'; known: {}",
            bridge.region,
            known.join(", ")
        );
        return Err(ApiError::invalid("unknown_region", message));
    }
    proposed.bridges.retain(|b| b.item.id != bridge.id);
    proposed.bridges.push(Stored {
        item: bridge.clone(),
        managed_by: store::ManagedBy::Api,
        updated_at: 0,
    });
    check_catalog(&state, &proposed)?;
    let put = state
        .store
        .put_bridge(&bridge)
        .await
        .map_err(ApiError::from)?;
    state.refresh_catalog().await;
    Ok((
        put_status(put),
        Json(read_bridge(&state, &bridge.id).await?),
    )
        .into_response())
}

/// `PATCH /v1/bridges/{id}`: change the admin state only.
pub async fn patch_bridge(
    State(state): State<Shared>,
    PathParam(id): PathParam<String>,
    JsonBody(input): JsonBody<AdminStateInput>,
) -> Result<Json<BridgeView>, ApiError> {
    let id = parse_id(BridgeId::parse, &id)?;
    let changed = state
        .store
        .set_admin_state(&id, input.admin_state)
        .await
        .map_err(ApiError::from)?;
    if !changed {
        return Err(not_found("bridge", id.as_str()));
    }
    state.refresh_catalog().await;
    tracing::info!(bridge.id = %id, admin_state = ?input.admin_state, "bridge admin state changed");
    Ok(Json(read_bridge(&state, &id).await?))
}

/// `DELETE /v1/bridges/{id}`.
pub async fn delete_bridge(
    State(state): State<Shared>,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(BridgeId::parse, &id)?;
    let deleted = state
        .store
        .delete_bridge(&id)
        .await
        .map_err(ApiError::from)?;
    state.refresh_catalog().await;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("bridge", id.as_str()))
    }
}

async fn read_bridge(state: &Shared, id: &BridgeId) -> Result<BridgeView, ApiError> {
    let bridges = registry(state).await?.bridges;
    let found = bridges.into_iter().find(|b| &b.item.id == id);
    found
        .map(|b| bridge_view(state, b))
        .ok_or_else(|| not_found("bridge", id.as_str()))
}

fn put_status(put: Put) -> StatusCode {
    match put {
        Put::Created => StatusCode::CREATED,
        Put::Replaced => StatusCode::OK,
    }
}

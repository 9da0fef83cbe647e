//! Follows the catalog and the health snapshot and turns them into what operators watch:
//! per-region gauges, one log line per region state change, the count of live rooms, and
//! the removal of series of bridges that left the catalog.
//!
//! The prober and the registry only publish new snapshots; this task notices a new one by
//! pointer within [`EVERY`], so neither writer needs to know about metrics or region logs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::AppState;
use crate::catalog::Catalog;
use crate::probe::HealthSnapshot;
use crate::select::{self, Considered, Tier};
use crate::store;

/// How often the snapshots are compared with the ones seen last.
const EVERY: Duration = Duration::from_millis(100);

/// How often live rooms are counted in the store.
const COUNT_ROOMS_EVERY: Duration = Duration::from_secs(2);

/// A region's state as the alerts and logs name it.
pub fn region_state(region: &Considered) -> &'static str {
    match region.tier {
        Tier::Eligible => "eligible",
        Tier::Overloaded | Tier::Draining => "degraded",
        Tier::Panic | Tier::Unusable => "none",
    }
}

/// Publishes region series and logs region changes until `stop` turns true.
pub async fn follow(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut seen: Option<(Arc<Catalog>, Arc<HealthSnapshot>)> = None;
    let mut regions = Regions::default();
    let mut counted_at: Option<tokio::time::Instant> = None;
    loop {
        let (catalog, health) = (state.catalog.load_full(), state.health.load_full());
        let same = seen
            .as_ref()
            .is_some_and(|(c, h)| Arc::ptr_eq(c, &catalog) && Arc::ptr_eq(h, &health));
        if !same {
            regions.publish(&state, &catalog, &health);
            state.metrics.keep_bridges(&catalog);
            seen = Some((catalog, health));
        }
        if counted_at.is_none_or(|at| at.elapsed() >= COUNT_ROOMS_EVERY) {
            counted_at = Some(tokio::time::Instant::now());
            count_rooms(&state).await;
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => break,
        }
    }
}

/// The last state published per region.
#[derive(Default)]
struct Regions {
    states: HashMap<String, &'static str>,
}

impl Regions {
    /// Sets every region's gauges; logs each state change once the first probe round is in.
    fn publish(&mut self, state: &AppState, catalog: &Catalog, health: &HealthSnapshot) {
        let survey = select::survey(catalog, health, &state.policy);
        // Every bridge has had a first probe result.
        let probed = state.ready.load(std::sync::atomic::Ordering::Acquire);
        let mut current = HashMap::new();
        for (i, (region, considered)) in catalog.regions().iter().zip(&survey).enumerate() {
            let id = region.id.as_str();
            let now = region_state(considered);
            let bridges = catalog.bridges_of(i).len();
            let eligible = considered.eligible_bridges;
            state.metrics.set_region(id, bridges, eligible, now);
            if probed {
                self.log_change(id, now, bridges, eligible);
                current.insert(id.to_owned(), now);
            }
        }
        for gone in self.states.keys().filter(|id| !current.contains_key(*id)) {
            state.metrics.forget_region(gone);
        }
        if probed {
            self.states = current;
        }
    }

    /// One info line when a region's state differs from the last one seen; a region seen
    /// for the first time is logged only when it is not eligible.
    fn log_change(&self, region: &str, to: &'static str, bridges: usize, eligible: usize) {
        let from = self.states.get(region).copied();
        if from == Some(to) || (from.is_none() && to == "eligible") {
            return;
        }
        let from = from.unwrap_or("unknown");
        tracing::info!(region, from, to, bridges, eligible, "region state changed");
    }
}

/// Sets the live rooms gauge from the store; a failed count keeps the last value. While
/// the store is known to be out of reach (`store_up` 0, said once by the sync task), a
/// failed count is logged at debug only.
async fn count_rooms(state: &AppState) {
    match state.store.count_live_rooms(store::now_seconds()).await {
        Ok(rooms) => state.metrics.rooms_alive.set(rooms),
        Err(error) if state.metrics.store_up.get() == 0 => {
            tracing::debug!(%error, "live rooms could not be counted");
        }
        Err(error) => tracing::warn!(%error, "live rooms could not be counted"),
    }
}

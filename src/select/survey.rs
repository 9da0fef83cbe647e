//! What selection needs from the catalog and a health snapshot, computed once per snapshot.
//!
//! A [`Survey`] gives each region its unit vector on the sphere, its eligible bridges sorted
//! by stress and its best degraded tier, so that a request walks regions, never bridges.
//! It is a pure function of catalog, health and policy; [`Cache`] keeps the latest one.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::{Policy, Tier};
use crate::catalog::{AdminState, Bridge, BridgeId, Catalog};
use crate::geo::Point;
use crate::probe::{Health, HealthSnapshot, State, Stats};

/// Mean Earth radius, as `geo` uses it.
const EARTH_RADIUS_KM: f64 = 6371.0;

/// Catalog and health, digested for selection.
#[derive(Debug, Clone)]
pub struct Survey {
    pub(super) catalog: Arc<Catalog>,
    pub(super) regions: Vec<Summary>,
    /// The regions' unit vectors as three columns, so distances are computed in bulk.
    columns: [Vec<f64>; 3],
    /// Bridge id to (region position, bridge position), for reservations.
    pub(super) bridges: HashMap<BridgeId, (usize, usize), FnvBuild>,
}

/// One region as a request needs it.
#[derive(Debug, Clone)]
pub(super) struct Summary {
    pub unit: [f64; 3],
    pub bias_km: f64,
    pub group: Option<u32>,
    pub unwatched: bool,
    /// Eligible bridges before reservations, least stress first: (stress, bridge position).
    pub eligible: Vec<(f64, usize)>,
    /// Best tier among the bridges that are not eligible.
    pub rest: Tier,
    /// The least stressed bridge of the `rest` tier, with its stress.
    pub rest_bridge: Option<(f64, usize)>,
}

impl Survey {
    /// Digests `catalog` and `health` under `policy`.
    pub fn build(catalog: Arc<Catalog>, health: &HealthSnapshot, policy: &Policy) -> Survey {
        let unknown = Health::default();
        let mut groups: HashMap<&str, u32> = HashMap::new();
        let mut bridges =
            HashMap::with_capacity_and_hasher(catalog.bridges().len(), FnvBuild::default());
        let mut regions = Vec::with_capacity(catalog.regions().len());
        for (r, region) in catalog.regions().iter().enumerate() {
            let next_group = u32::try_from(groups.len()).unwrap_or(u32::MAX);
            let group = region
                .group
                .as_deref()
                .map(|g| *groups.entry(g).or_insert(next_group));
            let mut summary = Summary {
                unit: unit(&region.point),
                bias_km: region.bias_km,
                group,
                unwatched: catalog.bridges_of(r).is_empty(),
                eligible: Vec::new(),
                rest: Tier::Unusable,
                rest_bridge: None,
            };
            for &b in catalog.bridges_of(r) {
                let bridge = &catalog.bridges()[b];
                bridges.insert(bridge.id.clone(), (r, b));
                let h = health.get(&bridge.id).unwrap_or(&unknown);
                summary.add(b, bridge_tier(bridge, h, policy), h.stress());
            }
            summary.eligible.sort_by(|a, b| a.0.total_cmp(&b.0));
            regions.push(summary);
        }
        let columns = [0, 1, 2].map(|axis| regions.iter().map(|r| r.unit[axis]).collect());
        Survey {
            catalog,
            columns,
            regions,
            bridges,
        }
    }

    /// Great-circle distance from `from` to every region, in catalog order. One branch-free
    /// loop over columns, which the compiler turns into vector instructions.
    pub(super) fn distances_km(&self, from: &[f64; 3]) -> Vec<f64> {
        let [xs, ys, zs] = &self.columns;
        xs.iter()
            .zip(ys)
            .zip(zs)
            .map(|((x, y), z)| {
                let (dx, dy, dz) = (x - from[0], y - from[1], z - from[2]);
                let half_chord = ((dx * dx + dy * dy + dz * dz).sqrt() * 0.5).min(1.0);
                2.0 * EARTH_RADIUS_KM * arcsine(half_chord)
            })
            .collect()
    }

    /// The catalog this survey was built from.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }
}

impl Summary {
    fn add(&mut self, bridge: usize, tier: Tier, stress: f64) {
        if tier == Tier::Eligible {
            self.eligible.push((stress, bridge));
            return;
        }
        let better = tier < self.rest
            || (tier == self.rest && self.rest_bridge.is_some_and(|(s, _)| stress < s));
        if better {
            self.rest = tier;
            self.rest_bridge = (tier != Tier::Unusable).then_some((stress, bridge));
        }
    }
}

/// How usable one bridge is, before reservations.
pub fn bridge_tier(bridge: &Bridge, health: &Health, policy: &Policy) -> Tier {
    let stats = health.stats.as_ref();
    let flag = |f: fn(&Stats) -> bool| stats.is_some_and(f);
    if bridge.admin_state == AdminState::Maintenance || flag(|s| s.shutting_down) {
        return Tier::Unusable;
    }
    if health.state != State::Up {
        return Tier::Panic;
    }
    if bridge.admin_state == AdminState::Drain || flag(|s| s.drain || s.graceful_shutdown) {
        return Tier::Draining;
    }
    if health.stress() >= policy.stress_threshold {
        return Tier::Overloaded;
    }
    Tier::Eligible
}

/// The point as a unit vector, so that distances need one square root and one arcsine.
pub(super) fn unit(point: &Point) -> [f64; 3] {
    let (lat, lon) = (point.latitude.to_radians(), point.longitude.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// Great-circle distance between two unit vectors, from their chord.
pub(super) fn distance_km(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let d = [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    let chord = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
    2.0 * EARTH_RADIUS_KM * arcsine((chord / 2.0).min(1.0))
}

/// Arcsine of `x` in `0..=1` by the polynomial of Abramowitz and Stegun (4.4.46), within
/// 2e-8 radians (under a metre on Earth) and several times faster than `f64::asin`.
fn arcsine(x: f64) -> f64 {
    const A: [f64; 8] = [
        1.570_796_305_0,
        -0.214_598_801_6,
        0.088_978_987_4,
        -0.050_174_304_6,
        0.030_891_881_0,
        -0.017_088_125_6,
        0.006_670_090_1,
        -0.001_262_491_1,
    ];
    let poly = A.iter().rev().fold(0.0, |acc, &a| acc * x + a);
    std::f64::consts::FRAC_PI_2 - (1.0 - x).sqrt() * poly
}

/// FNV-1a: bridge ids are short, trusted strings, and SipHash would dominate a request.
#[derive(Default)]
pub(super) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

/// Builds [`Fnv`] hashers.
pub(super) type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

/// The latest survey, rebuilt by whichever request first sees a new catalog or snapshot.
#[derive(Default)]
pub struct Cache {
    latest: ArcSwapOption<Cached>,
}

struct Cached {
    health: Arc<HealthSnapshot>,
    survey: Arc<Survey>,
}

impl Cache {
    /// The survey of `catalog` and `health`, built now if the latest one is of others.
    // Known limit: requests that see a new snapshot at the same moment each build it once;
    // with 5,000 bridges that is about two thirds of a millisecond per such request.
    pub fn get(
        &self,
        catalog: &Arc<Catalog>,
        health: &Arc<HealthSnapshot>,
        policy: &Policy,
    ) -> Arc<Survey> {
        if let Some(cached) = self.latest.load().as_ref() {
            let same =
                Arc::ptr_eq(&cached.health, health) && Arc::ptr_eq(&cached.survey.catalog, catalog);
            if same {
                return cached.survey.clone();
            }
        }
        let survey = Arc::new(Survey::build(catalog.clone(), health, policy));
        self.latest.store(Some(Arc::new(Cached {
            health: health.clone(),
            survey: survey.clone(),
        })));
        survey
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chord distances agree with the haversine formula of `geo` to well under a kilometre.
    #[test]
    fn chord_distance_matches_haversine() {
        let points = [
            (51.51, -0.13),
            (50.11, 8.68),
            (-33.87, 151.21),
            (39.04, -77.49),
        ];
        for &(a_lat, a_lon) in &points {
            for &(b_lat, b_lon) in &points {
                let (a, b) = (
                    Point {
                        latitude: a_lat,
                        longitude: a_lon,
                    },
                    Point {
                        latitude: b_lat,
                        longitude: b_lon,
                    },
                );
                let chord = distance_km(&unit(&a), &unit(&b));
                assert!((chord - a.distance_km(&b)).abs() < 0.01, "{a:?} {b:?}");
            }
        }
    }

    /// The arcsine polynomial agrees with `f64::asin` over its whole range.
    #[test]
    fn arcsine_is_accurate() {
        for i in 0..=10_000 {
            let x = f64::from(i) / 10_000.0;
            assert!((arcsine(x) - x.asin()).abs() < 3e-8, "{x}");
        }
    }
}

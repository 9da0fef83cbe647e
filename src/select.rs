//! The choice of a region: a pure function of location, catalog, health, reservations and
//! policy.
//!
//! Every region gets a [`Tier`] from its bridges: eligible first, then the degraded steps
//! (overloaded, draining, panic). A bridge's stress is corrected by the participants of rooms
//! placed on it in the last seconds ([`Load`]), so a burst cannot overfill a region before its
//! next stats arrive. The preferred region comes from a network pin, a country pin, the
//! nearest region (distance plus bias; from the country's centroid when the location is
//! coarse) or the default region. The best tier present anywhere is then taken from, in this
//! order: the preferred region, the nearest region of its group, the nearest region anywhere.
//! The decision says, for every region, its distance, tier and why it was or was not taken.
//!
//! Catalog and health are digested once per snapshot into a [`Survey`], so a request walks
//! regions, not bridges. Nothing here does I/O, reads a clock or logs.

mod decision;
mod reserve;
mod survey;

#[cfg(test)]
mod examples;
#[cfg(test)]
mod properties;

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use decision::{Considered, Decision, Reason, Refusal, Regions, Step, Tier, Why};
pub use reserve::{Ledger, Load};
pub use survey::{Cache, Survey, bridge_tier};

use crate::catalog::Catalog;
use crate::geo::{self, CountryCode, Location};
use crate::probe::HealthSnapshot;
use survey::{distance_km, unit};

/// What the operator allows when choosing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// A bridge at or above this corrected stress takes no new rooms while others can.
    #[serde(default = "default_stress_threshold")]
    pub stress_threshold: f64,
    /// What to do when every bridge is down or unknown.
    #[serde(default)]
    pub when_all_down: WhenAllDown,
    /// Stress added per participant reserved on a bridge.
    #[serde(default = "default_participant_stress")]
    pub participant_stress: f64,
    /// How long a reservation counts.
    #[serde(default = "default_reservation_seconds")]
    pub reservation_seconds: u64,
}

fn default_stress_threshold() -> f64 {
    0.8
}

fn default_participant_stress() -> f64 {
    0.01
}

fn default_reservation_seconds() -> u64 {
    20
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            stress_threshold: default_stress_threshold(),
            when_all_down: WhenAllDown::Panic,
            participant_stress: default_participant_stress(),
            reservation_seconds: default_reservation_seconds(),
        }
    }
}

/// The last resort when no bridge anywhere passes its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenAllDown {
    /// Trust the health checks less than the users: take the nearest region that has a
    /// bridge not shutting down.
    #[default]
    Panic,
    /// Answer 503.
    Refuse,
}

/// Who is asking: the address (for network pins) and what the database says of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client<'a> {
    /// The client's address, when known.
    pub ip: Option<IpAddr>,
    /// The client's location, when known.
    pub location: Option<&'a Location>,
}

/// Chooses a region for `client` with no reservations; digests catalog and health first.
pub fn select(
    client: Client<'_>,
    catalog: &Catalog,
    health: &HealthSnapshot,
    policy: &Policy,
) -> Result<Decision, Refusal> {
    let survey = Survey::build(Arc::new(catalog.clone()), health, policy);
    select_in(client, &survey, &Load::default(), policy)
}

/// Every region's tier and bridge counts, in catalog order, with no client distance.
pub fn survey(catalog: &Catalog, health: &HealthSnapshot, policy: &Policy) -> Vec<Considered> {
    let survey = Survey::build(Arc::new(catalog.clone()), health, policy);
    assess(&survey, &Load::default(), policy, None)
}

/// Where distances are measured from.
#[derive(Debug, Clone, Copy)]
struct Origin {
    unit: [f64; 3],
    /// Set when the location was coarse and its country's centroid is used.
    centroid: Option<CountryCode>,
}

fn origin(location: Option<&Location>) -> Option<Origin> {
    let location = location?;
    let centroid = location
        .country
        .filter(|_| location.coarse)
        .and_then(|c| Some((c, geo::country_centroid(c)?)));
    if let Some((country, point)) = centroid {
        return Some(Origin {
            unit: unit(&point),
            centroid: Some(country),
        });
    }
    location.point.map(|p| Origin {
        unit: unit(&p),
        centroid: None,
    })
}

/// Chooses a region for `client` from a survey, with `load` reserved on bridges.
pub fn select_in(
    client: Client<'_>,
    survey: &Survey,
    load: &Load,
    policy: &Policy,
) -> Result<Decision, Refusal> {
    let from = origin(client.location);
    let km = from.map(|o| survey.distances_km(&o.unit));
    let mut entries = assess(survey, load, policy, km.as_deref());
    let mut steps = Vec::with_capacity(4);
    let best = entries
        .iter()
        .map(|r| r.tier)
        .min()
        .unwrap_or(Tier::Unusable);
    match best {
        Tier::Unusable => return Err(Refusal::NothingLeft),
        Tier::Panic if policy.when_all_down == WhenAllDown::Refuse => return Err(Refusal::AllDown),
        Tier::Eligible => {}
        degraded => steps.push(Step::Degraded(degraded)),
    }
    let (preferred, reason) = prefer(client, survey, &entries, from, &mut steps);
    let (chosen, reason) = take(survey, &entries, preferred, best, reason, &mut steps);
    judge(survey, &mut entries, chosen, best, reason);
    let catalog = &survey.catalog;
    let taken = &entries[chosen];
    if taken.unwatched {
        steps.push(Step::Unwatched(catalog.regions()[chosen].id.clone()));
    }
    let decision = Decision {
        region: catalog.regions()[chosen].id.clone(),
        reason,
        tier: best,
        degraded: best != Tier::Eligible,
        unwatched: taken.unwatched,
        distance_km: taken.distance_km,
        bridge: taken.bridge.map(|b| catalog.bridges()[b].id.clone()),
        steps,
        regions: Regions {
            catalog: catalog.clone(),
            order: nearest_first(km.as_deref(), entries.len()),
            entries,
        },
    };
    Ok(decision)
}

/// Gives every region its distance, tier and the bridge that would take a room, in catalog
/// order.
fn assess(survey: &Survey, load: &Load, policy: &Policy, km: Option<&[f64]>) -> Vec<Considered> {
    let resolved;
    let reserved = match load.placed_for(survey) {
        Some(placed) => placed,
        None => {
            resolved = reserved_by_region(survey, load);
            &resolved
        }
    };
    let mut cursor = 0;
    let mut entries = Vec::with_capacity(survey.regions.len());
    for (i, region) in survey.regions.iter().enumerate() {
        let start = cursor;
        while cursor < reserved.len() && reserved[cursor].0 == i {
            cursor += 1;
        }
        let (tier, stress, bridge) = standing(region, &reserved[start..cursor], policy);
        entries.push(Considered {
            index: i,
            distance_km: km.map(|km| km[i]),
            tier,
            unwatched: region.unwatched,
            eligible_bridges: region.eligible.len(),
            stress,
            bridge,
            why: Why::WorseTier,
        });
    }
    entries
}

/// Reservations as (region, bridge, participants), by region.
// Known limit: every bridge holding reservations is looked up by id on every request, about
// 20 ns each; a deployment with thousands of bridges reserved at once pays that per request.
pub(crate) fn reserved_by_region(survey: &Survey, load: &Load) -> Vec<(usize, usize, u32)> {
    let mut reserved: Vec<(usize, usize, u32)> = load
        .iter()
        .filter_map(|(id, n)| survey.bridges.get(id).map(|&(r, b)| (r, b, n)))
        .collect();
    reserved.sort_unstable();
    reserved
}

/// A region's tier, with the corrected stress and position of the bridge Jicofo would pick.
fn standing(
    region: &survey::Summary,
    reserved: &[(usize, usize, u32)],
    policy: &Policy,
) -> (Tier, Option<f64>, Option<usize>) {
    if region.unwatched {
        return (Tier::Eligible, None, None);
    }
    if region.eligible.is_empty() {
        let (stress, bridge) = region.rest_bridge.unzip();
        return (region.rest, stress, bridge);
    }
    let mut best = (f64::INFINITY, 0);
    // Sorted by stress: past the first bridge without reservations none can do better.
    for &(stress, bridge) in &region.eligible {
        let n = reserved.iter().find(|r| r.1 == bridge).map_or(0, |r| r.2);
        let corrected = stress + policy.participant_stress * f64::from(n);
        if corrected < best.0 {
            best = (corrected, bridge);
        }
        if n == 0 {
            break;
        }
    }
    let tier = if best.0 < policy.stress_threshold {
        Tier::Eligible
    } else {
        Tier::Overloaded
    };
    (tier, Some(best.0), Some(best.1))
}

/// The region the client should get if everything were usable.
fn prefer(
    client: Client<'_>,
    survey: &Survey,
    entries: &[Considered],
    from: Option<Origin>,
    steps: &mut Vec<Step>,
) -> (usize, Reason) {
    let catalog = &survey.catalog;
    let name = |r: usize| catalog.regions()[r].id.clone();
    if let Some(r) = client.ip.and_then(|ip| catalog.network_pin(ip)) {
        steps.push(Step::NetworkPin(name(r)));
        return (r, Reason::NetworkPin);
    }
    let country = client.location.and_then(|l| l.country);
    if let Some((country, r)) = country.and_then(|c| Some((c, catalog.country_pin(c)?))) {
        steps.push(Step::CountryPin(country, name(r)));
        return (r, Reason::CountryPin);
    }
    if let Some(from) = from {
        let r = nearest(survey, entries, None, |_| true).expect("a catalog has a region");
        let km = entries[r].distance_km.unwrap_or(0.0);
        let reason = match from.centroid {
            Some(country) => {
                steps.push(Step::Coarse(country));
                Reason::CountryCentroid
            }
            None => Reason::Nearest,
        };
        steps.push(Step::Nearest(name(r), km));
        return (r, reason);
    }
    let r = catalog.default_region();
    steps.push(Step::NoLocation(name(r)));
    (r, Reason::Default)
}

/// Takes the preferred region if it has `tier`, else the nearest of its group, else any.
fn take(
    survey: &Survey,
    entries: &[Considered],
    preferred: usize,
    tier: Tier,
    reason: Reason,
    steps: &mut Vec<Step>,
) -> (usize, Reason) {
    if entries[preferred].tier == tier {
        return (preferred, reason);
    }
    let name = |r: usize| survey.catalog.regions()[r].id.clone();
    steps.push(Step::NotUsable {
        region: name(preferred),
        wanted: tier,
        has: entries[preferred].tier,
    });
    let group = survey.regions[preferred].group;
    let same_group = |i: usize| group.is_some() && survey.regions[i].group == group;
    let has_tier = |i: usize| entries[i].tier == tier;
    let from = Some(preferred);
    if let Some(i) = nearest(survey, entries, from, |i| has_tier(i) && same_group(i)) {
        steps.push(Step::GroupFallback(name(i)));
        return (i, Reason::GroupFallback);
    }
    let i = nearest(survey, entries, from, has_tier).expect("some region has the best tier");
    steps.push(Step::Fallback(name(i)));
    (i, Reason::Fallback)
}

/// The nearest region passing `keep`, by distance plus bias: from the client when located,
/// else from the region at `fallback_from`.
fn nearest(
    survey: &Survey,
    entries: &[Considered],
    fallback_from: Option<usize>,
    keep: impl Fn(usize) -> bool,
) -> Option<usize> {
    let from = fallback_from.map(|p| survey.regions[p].unit);
    let score = |i: usize| {
        let region = &survey.regions[i];
        let km = match (entries[i].distance_km, from) {
            (Some(km), _) => km,
            (None, Some(from)) => distance_km(&from, &region.unit),
            (None, None) => 0.0,
        };
        km + region.bias_km
    };
    (0..entries.len())
        .filter(|&i| keep(i))
        .map(|i| (score(i), i))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map(|(_, i)| i)
}

/// Says for every region why it was or was not taken.
fn judge(survey: &Survey, entries: &mut [Considered], chosen: usize, best: Tier, reason: Reason) {
    let group = survey.regions[chosen].group;
    for (i, entry) in entries.iter_mut().enumerate() {
        entry.why = if i == chosen {
            Why::Taken
        } else if entry.tier != best {
            Why::WorseTier
        } else {
            match reason {
                Reason::NetworkPin | Reason::CountryPin | Reason::Default => Why::NotPreferred,
                Reason::GroupFallback if survey.regions[i].group != group => Why::OutsideGroup,
                _ => Why::Farther,
            }
        };
    }
}

/// Positions of `len` regions, nearest first by `km` when located (ties by catalog
/// position), else in catalog order.
///
/// Up to 32 regions are insertion-sorted directly. More are first dealt into buckets of
/// distance, then an insertion sort puts each bucket in order: about linear for regions
/// spread over the globe, and without the mispredicted branches of a comparison sort, which
/// would otherwise be a quarter of a request.
fn nearest_first(km: Option<&[f64]>, len: usize) -> Vec<u32> {
    const BUCKETS: usize = 256;
    const HALF_CIRCUMFERENCE_KM: f64 = 20_016.0;
    let count = u32::try_from(len).unwrap_or(u32::MAX);
    let Some(km) = km else {
        return (0..count).collect();
    };
    let before = |a: u32, b: u32| km[a as usize].total_cmp(&km[b as usize]).then(a.cmp(&b));
    if len <= 32 {
        // A few regions: sorting them directly beats clearing and summing the buckets.
        let mut order: Vec<u32> = (0..count).collect();
        insertion_sort(&mut order, before);
        return order;
    }
    // Computed twice rather than kept: cheaper than a vector per request.
    let bucket = |d: f64| (d * (BUCKETS as f64 / HALF_CIRCUMFERENCE_KM)).min(255.0) as usize;
    let mut starts = [0u32; BUCKETS + 1];
    for &d in km {
        starts[bucket(d) + 1] += 1;
    }
    for b in 0..BUCKETS {
        starts[b + 1] += starts[b];
    }
    let mut order = vec![0u32; len];
    for (i, &d) in (0..count).zip(km) {
        let slot = &mut starts[bucket(d)];
        order[*slot as usize] = i;
        *slot += 1;
    }
    insertion_sort(&mut order, before);
    order
}

/// Sorts `order` by `before`; near-linear when it is almost in order already.
fn insertion_sort(order: &mut [u32], before: impl Fn(u32, u32) -> std::cmp::Ordering) {
    for i in 1..order.len() {
        let mut j = i;
        while j > 0 && before(order[j], order[j - 1]).is_lt() {
            order.swap(j, j - 1);
            j -= 1;
        }
    }
}

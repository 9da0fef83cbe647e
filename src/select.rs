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

mod reserve;
mod survey;

#[cfg(test)]
mod properties;

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use reserve::{Ledger, Load};
pub use survey::{Cache, Survey, bridge_tier};

use crate::catalog::{BridgeId, Catalog, RegionId};
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

/// How usable a region is, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Has an eligible bridge, or has no bridges at all (unwatched).
    Eligible,
    /// Its usable bridges are all at or above the stress threshold, reservations included.
    Overloaded,
    /// Its usable bridges are all draining or in graceful shutdown.
    Draining,
    /// Its bridges are down or unknown, but not shutting down.
    Panic,
    /// Nothing usable: bridges shutting down or in maintenance.
    Unusable,
}

impl Tier {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Tier::Eligible => "eligible",
            Tier::Overloaded => "overloaded",
            Tier::Draining => "draining",
            Tier::Panic => "panic",
            Tier::Unusable => "unusable",
        }
    }
}

/// Why the region was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A network pin covers the client's address.
    NetworkPin,
    /// The client's country is pinned to the region.
    CountryPin,
    /// The nearest region after bias.
    Nearest,
    /// The location is coarse: the region nearest the country's centroid, after bias.
    CountryCentroid,
    /// The client has no location.
    Default,
    /// The preferred region was not usable; the nearest usable one of its group.
    GroupFallback,
    /// The preferred region and its group were not usable; the nearest usable one anywhere.
    Fallback,
}

impl Reason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::NetworkPin => "network_pin",
            Reason::CountryPin => "country_pin",
            Reason::Nearest => "nearest",
            Reason::CountryCentroid => "country_centroid",
            Reason::Default => "default",
            Reason::GroupFallback => "group_fallback",
            Reason::Fallback => "fallback",
        }
    }
}

/// Why a region was or was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// It was taken.
    Taken,
    /// Its tier is worse than the best tier some region has.
    WorseTier,
    /// As usable as the one taken, but farther after bias.
    Farther,
    /// As usable and nearer, but the preferred region's group was kept to.
    OutsideGroup,
    /// As usable, but a pin or the default region sent the client elsewhere.
    NotPreferred,
}

/// One region as the decision saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Considered {
    /// Position of the region in the catalog.
    pub index: usize,
    /// Great-circle distance from the client (or its country's centroid), when located.
    pub distance_km: Option<f64>,
    /// How usable it was.
    pub tier: Tier,
    /// True when it has no bridges registered (its health is Jicofo's business).
    pub unwatched: bool,
    /// Bridges eligible by their health, before reservations.
    pub eligible_bridges: usize,
    /// Corrected stress of the bridge that would take a room here.
    pub stress: Option<f64>,
    /// Position of that bridge in the catalog.
    pub bridge: Option<usize>,
    /// Why it was or was not taken.
    pub why: Why,
}

/// Every region considered, nearest first when the client is located.
#[derive(Debug, Clone)]
pub struct Regions {
    catalog: Arc<Catalog>,
    /// In catalog order.
    entries: Vec<Considered>,
    /// Positions in `entries`, nearest first (catalog order when not located).
    order: Vec<u32>,
}

impl Regions {
    /// Each region's id with how it was considered, nearest first.
    pub fn iter(&self) -> impl Iterator<Item = (&RegionId, &Considered)> {
        let regions = self.catalog.regions();
        self.order.iter().map(move |&i| {
            let c = &self.entries[i as usize];
            (&regions[c.index].id, c)
        })
    }

    /// How the region with this id was considered.
    pub fn get(&self, id: &str) -> Option<&Considered> {
        self.iter().find(|(r, _)| r.as_str() == id).map(|(_, c)| c)
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl PartialEq for Regions {
    fn eq(&self, other: &Regions) -> bool {
        Arc::ptr_eq(&self.catalog, &other.catalog)
            && self.entries == other.entries
            && self.order == other.order
    }
}

/// One entry of [`Regions`] as it is serialised.
#[derive(Serialize)]
struct View<'a> {
    region: &'a RegionId,
    distance_km: Option<f64>,
    tier: Tier,
    unwatched: bool,
    eligible_bridges: usize,
    stress: Option<f64>,
    bridge: Option<&'a BridgeId>,
    why: Why,
}

impl Serialize for Regions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bridges = self.catalog.bridges();
        s.collect_seq(self.iter().map(|(region, c)| View {
            region,
            distance_km: c.distance_km.map(f64::round),
            tier: c.tier,
            unwatched: c.unwatched,
            eligible_bridges: c.eligible_bridges,
            stress: c.stress.map(|x| (x * 1000.0).round() / 1000.0),
            bridge: c.bridge.map(|b| &bridges[b].id),
            why: c.why,
        }))
    }
}

/// The choice, with everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The chosen region.
    pub region: RegionId,
    /// Why it was chosen.
    pub reason: Reason,
    /// The tier taken; anything but `eligible` is a degraded choice.
    pub tier: Tier,
    /// True when the tier taken is not `eligible`.
    pub degraded: bool,
    /// True when the chosen region has no bridges registered.
    pub unwatched: bool,
    /// Distance from the client to the chosen region, when located.
    #[serde(serialize_with = "rounded_km")]
    pub distance_km: Option<f64>,
    /// The bridge Jicofo would pick there (least corrected stress): the room's participants
    /// are reserved on it. None for an unwatched region.
    pub bridge: Option<BridgeId>,
    /// Each step taken, in words.
    pub steps: Vec<String>,
    /// Every region, nearest first when located.
    pub regions: Regions,
}

fn rounded_km<S: serde::Serializer>(km: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    km.map(f64::round).serialize(s)
}

impl Decision {
    /// True when the region was taken below the eligible tier.
    pub fn degraded(&self) -> bool {
        self.tier != Tier::Eligible
    }
}

/// Why no region could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Every bridge is shutting down or in maintenance.
    #[error("no region has a usable bridge: every bridge is shutting down or in maintenance")]
    NothingLeft,
    /// Every bridge is down or unknown and the policy refuses to guess.
    #[error("every bridge is down or unknown, and the policy is to refuse")]
    AllDown,
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
    let mut steps = Vec::new();
    let best = entries
        .iter()
        .map(|r| r.tier)
        .min()
        .unwrap_or(Tier::Unusable);
    match best {
        Tier::Unusable => return Err(Refusal::NothingLeft),
        Tier::Panic if policy.when_all_down == WhenAllDown::Refuse => return Err(Refusal::AllDown),
        Tier::Eligible => {}
        degraded => steps.push(format!(
            "no region is eligible; degraded to the {} tier",
            degraded.label()
        )),
    }
    let (preferred, reason) = prefer(client, survey, &entries, from, &mut steps);
    let (chosen, reason) = take(survey, &entries, preferred, best, reason, &mut steps);
    judge(survey, &mut entries, chosen, best, reason);
    let catalog = &survey.catalog;
    let taken = &entries[chosen];
    if taken.unwatched {
        steps.push(format!(
            "{} has no bridges registered: its health is not watched",
            catalog.regions()[chosen].id
        ));
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
    steps: &mut Vec<String>,
) -> (usize, Reason) {
    let catalog = &survey.catalog;
    let name = |r: usize| &catalog.regions()[r].id;
    if let Some(r) = client.ip.and_then(|ip| catalog.network_pin(ip)) {
        steps.push(format!("a network pin sends this address to {}", name(r)));
        return (r, Reason::NetworkPin);
    }
    let country = client.location.and_then(|l| l.country);
    if let Some((country, r)) = country.and_then(|c| Some((c, catalog.country_pin(c)?))) {
        steps.push(format!("country {country} is pinned to {}", name(r)));
        return (r, Reason::CountryPin);
    }
    if let Some(from) = from {
        let r = nearest(survey, entries, None, |_| true).expect("a catalog has a region");
        let km = entries[r].distance_km.unwrap_or(0.0);
        let reason = match from.centroid {
            Some(country) => {
                steps.push(format!(
                    "the location is coarse; measuring from the centroid of {country}"
                ));
                Reason::CountryCentroid
            }
            None => Reason::Nearest,
        };
        steps.push(format!("nearest region is {} at {km:.0} km", name(r)));
        return (r, reason);
    }
    let r = catalog.default_region();
    steps.push(format!(
        "the client has no location; default region is {}",
        name(r)
    ));
    (r, Reason::Default)
}

/// Takes the preferred region if it has `tier`, else the nearest of its group, else any.
fn take(
    survey: &Survey,
    entries: &[Considered],
    preferred: usize,
    tier: Tier,
    reason: Reason,
    steps: &mut Vec<String>,
) -> (usize, Reason) {
    if entries[preferred].tier == tier {
        return (preferred, reason);
    }
    let name = |r: usize| &survey.catalog.regions()[r].id;
    let wanted = &entries[preferred];
    steps.push(format!(
        "{} is not usable at the {} tier (it is {})",
        name(preferred),
        tier.label(),
        wanted.tier.label()
    ));
    let group = survey.regions[preferred].group;
    let same_group = |i: usize| group.is_some() && survey.regions[i].group == group;
    let has_tier = |i: usize| entries[i].tier == tier;
    let from = Some(preferred);
    if let Some(i) = nearest(survey, entries, from, |i| has_tier(i) && same_group(i)) {
        steps.push(format!("group fallback to {}", name(i)));
        return (i, Reason::GroupFallback);
    }
    let i = nearest(survey, entries, from, has_tier).expect("some region has the best tier");
    steps.push(format!(
        "fallback to the nearest usable region, {}",
        name(i)
    ));
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
/// Regions are dealt into buckets of distance, then an insertion sort puts each bucket in
/// order: about linear for regions spread over the globe, and without the mispredicted
/// branches of a comparison sort, which would otherwise be a quarter of a request.
fn nearest_first(km: Option<&[f64]>, len: usize) -> Vec<u32> {
    const BUCKETS: usize = 256;
    const HALF_CIRCUMFERENCE_KM: f64 = 20_016.0;
    let count = u32::try_from(len).unwrap_or(u32::MAX);
    let Some(km) = km else {
        return (0..count).collect();
    };
    let buckets: Vec<u8> = km
        .iter()
        .map(|d| (d * (BUCKETS as f64 / HALF_CIRCUMFERENCE_KM)).min(255.0) as u8)
        .collect();
    let mut starts = [0u32; BUCKETS + 1];
    for &b in &buckets {
        starts[usize::from(b) + 1] += 1;
    }
    for b in 0..BUCKETS {
        starts[b + 1] += starts[b];
    }
    let mut order = vec![0u32; len];
    for (i, &b) in (0..count).zip(&buckets) {
        let slot = &mut starts[usize::from(b)];
        order[*slot as usize] = i;
        *slot += 1;
    }
    let before = |a: u32, b: u32| km[a as usize].total_cmp(&km[b as usize]).then(a.cmp(&b));
    for i in 1..order.len() {
        let mut j = i;
        while j > 0 && before(order[j], order[j - 1]).is_lt() {
            order.swap(j, j - 1);
            j -= 1;
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{AdminState, Bridge, Region, Shard, ShardId, Spec};
    use crate::geo::Point;
    use crate::probe::{Health, State, Stats};

    fn region(id: &str, latitude: f64, longitude: f64, group: &str) -> Region {
        Region {
            id: RegionId::parse(id).expect("id"),
            name: String::new(),
            point: Point {
                latitude,
                longitude,
            },
            group: Some(group.to_owned()),
            bias_km: 0.0,
            shard: None,
        }
    }

    /// One Jitsi shard for catalogs built in tests and benchmarks.
    fn one_shard() -> Vec<Shard> {
        vec![Shard {
            id: ShardId::parse("default").expect("id"),
            url: "https://meet.test".to_owned(),
            subject: None,
            issuer: None,
        }]
    }

    fn bridge(id: &str, region: &str) -> Bridge {
        Bridge {
            id: BridgeId::parse(id).expect("id"),
            region: RegionId::parse(region).expect("id"),
            url: "http://127.0.0.1:1".to_owned(),
            weight: 1,
            stats: true,
            admin_state: AdminState::Active,
        }
    }

    fn catalog() -> Catalog {
        Catalog::build(Spec {
            regions: vec![
                region("eu-west", 51.5, -0.1, "europe"),
                region("eu-central", 50.1, 8.7, "europe"),
                region("us-east", 39.0, -77.5, "americas"),
            ],
            bridges: vec![
                bridge("lon", "eu-west"),
                bridge("lon-2", "eu-west"),
                bridge("fra", "eu-central"),
            ],
            default_region: Some(RegionId::parse("us-east").expect("id")),
            shards: one_shard(),
            ..Spec::default()
        })
        .expect("valid catalog")
    }

    fn with_stats(state: State, stats: Stats) -> Health {
        Health {
            state,
            stats: Some(stats),
            ..Health::default()
        }
    }

    fn stress(state: State, stress_level: f64) -> Health {
        let stats = Stats {
            stress_level,
            ..Stats::default()
        };
        with_stats(state, stats)
    }

    fn health(entries: &[(&str, Health)]) -> HealthSnapshot {
        let mut snapshot = HealthSnapshot::default();
        for (id, h) in entries {
            snapshot.insert(BridgeId::parse(id).expect("id"), h.clone());
        }
        snapshot
    }

    fn located(latitude: f64, longitude: f64) -> Location {
        Location {
            country: None,
            continent: None,
            subdivision: Some("somewhere".to_owned()),
            point: Some(Point {
                latitude,
                longitude,
            }),
            accuracy_km: None,
            coarse: false,
        }
    }

    fn dublin() -> Location {
        located(53.3, -6.3)
    }

    fn pick(location: Option<&Location>, health: &HealthSnapshot) -> Result<Decision, Refusal> {
        let client = Client { ip: None, location };
        select(client, &catalog(), health, &Policy::default())
    }

    /// Dublin goes to London while London's bridge is up; every region says why.
    #[test]
    fn nearest_eligible_region() {
        let h = health(&[
            ("lon", stress(State::Up, 0.1)),
            ("fra", stress(State::Up, 0.1)),
        ]);
        let d = pick(Some(&dublin()), &h).expect("chosen");
        assert_eq!((d.region.as_str(), d.reason), ("eu-west", Reason::Nearest));
        assert_eq!(d.bridge.as_ref().map(BridgeId::as_str), Some("lon"));
        let whys: Vec<(&str, Why)> = d.regions.iter().map(|(r, c)| (r.as_str(), c.why)).collect();
        assert_eq!(
            whys,
            [
                ("eu-west", Why::Taken),
                ("eu-central", Why::Farther),
                ("us-east", Why::Farther)
            ]
        );
    }

    /// An overloaded London sends Dublin to Frankfurt, its group neighbour, not to the US.
    #[test]
    fn group_fallback() {
        let h = health(&[
            ("lon", stress(State::Up, 0.9)),
            ("fra", stress(State::Up, 0.1)),
        ]);
        let d = pick(Some(&dublin()), &h).expect("chosen");
        assert_eq!(
            (d.region.as_str(), d.reason),
            ("eu-central", Reason::GroupFallback)
        );
        assert_eq!(d.tier, Tier::Eligible);
        assert_eq!(
            d.regions.get("eu-west").map(|c| c.why),
            Some(Why::WorseTier)
        );
    }

    /// With Europe all down, the unwatched US region is eligible and is taken.
    #[test]
    fn unwatched_region_counts_as_eligible() {
        let h = health(&[
            ("lon", stress(State::Down, 0.0)),
            ("fra", stress(State::Down, 0.0)),
        ]);
        let d = pick(Some(&dublin()), &h).expect("chosen");
        assert_eq!((d.region.as_str(), d.reason), ("us-east", Reason::Fallback));
        assert!(d.unwatched);
        assert_eq!(d.bridge, None);
    }

    /// No location means the default region.
    #[test]
    fn default_region_without_location() {
        let d = pick(None, &HealthSnapshot::default()).expect("chosen");
        assert_eq!((d.region.as_str(), d.reason), ("us-east", Reason::Default));
    }

    /// Reservations move a region over the threshold: with London at 0.69 and five
    /// participants per room, three rooms fit (0.69, 0.74, 0.79) and the fourth goes to
    /// Frankfurt; the room is reserved on the least stressed bridge.
    #[test]
    fn reservations_correct_stress() {
        let h = health(&[
            ("lon", stress(State::Up, 0.69)),
            ("lon-2", stress(State::Down, 0.0)),
            ("fra", stress(State::Up, 0.1)),
        ]);
        let policy = Policy::default();
        let survey = Survey::build(Arc::new(catalog()), &h, &policy);
        let mut load = Load::default();
        let client = Client {
            ip: None,
            location: Some(&dublin()),
        };
        let mut regions = Vec::new();
        for _ in 0..5 {
            let d = select_in(client, &survey, &load, &policy).expect("chosen");
            load.add(d.bridge.clone().expect("a watched region"), 5);
            regions.push(d.region.to_string());
        }
        assert_eq!(
            regions,
            ["eu-west", "eu-west", "eu-west", "eu-central", "eu-central"]
        );
        let d = select_in(client, &survey, &load, &policy).expect("chosen");
        let west = d.regions.get("eu-west").expect("listed");
        assert_eq!(west.tier, Tier::Overloaded);
        assert!((west.stress.expect("stress") - 0.84).abs() < 1e-9);
    }

    /// Regions come out nearest first, ties in catalog order, whatever their spread.
    #[test]
    fn regions_sorted_nearest_first() {
        let kms = [900.0, 12.5, 20_015.0, 12.4, 900.0, 0.0, 19_999.9, 78.0];
        assert_eq!(nearest_first(Some(&kms), 8), [5, 3, 1, 7, 0, 4, 6, 2]);
        assert_eq!(nearest_first(None, 8), [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    /// Reservations kept as positions by the ledger choose exactly as looking each bridge up.
    #[test]
    fn placed_reservations_match_lookups() {
        let h = health(&[
            ("lon", stress(State::Up, 0.5)),
            ("lon-2", stress(State::Up, 0.52)),
            ("fra", stress(State::Up, 0.1)),
        ]);
        let policy = Policy::default();
        let survey = Survey::build(Arc::new(catalog()), &h, &policy);
        let start = tokio::time::Instant::now();
        let mut ledger = Ledger::new(std::time::Duration::from_secs(20));
        ledger.load_for(&survey);
        let client = Client {
            ip: None,
            location: Some(&dublin()),
        };
        for step in 0..30u64 {
            let now = start + std::time::Duration::from_secs(step);
            ledger.expire(now);
            let placed = select_in(client, &survey, ledger.load_for(&survey), &policy);
            let mut plain = Load::default();
            for (id, n) in ledger.load().iter() {
                plain.add(id.clone(), n);
            }
            let looked_up = select_in(client, &survey, &plain, &policy);
            let placed = placed.expect("chosen");
            assert_eq!(
                placed.regions.entries,
                looked_up.expect("chosen").regions.entries
            );
            if let Some(bridge) = placed.bridge {
                ledger.reserve(bridge, 3, now);
            }
        }
    }

    /// Of two eligible bridges Jicofo would pick the least stressed after reservations.
    #[test]
    fn reservation_goes_to_least_corrected_stress() {
        let h = health(&[
            ("lon", stress(State::Up, 0.30)),
            ("lon-2", stress(State::Up, 0.33)),
        ]);
        let policy = Policy::default();
        let survey = Survey::build(Arc::new(catalog()), &h, &policy);
        let client = Client {
            ip: None,
            location: Some(&dublin()),
        };
        let mut load = Load::default();
        let first = select_in(client, &survey, &load, &policy).expect("chosen");
        assert_eq!(first.bridge.as_ref().map(BridgeId::as_str), Some("lon"));
        load.add(BridgeId::parse("lon").expect("id"), 5);
        let second = select_in(client, &survey, &load, &policy).expect("chosen");
        assert_eq!(second.bridge.as_ref().map(BridgeId::as_str), Some("lon-2"));
    }

    /// Draining is taken only when nothing is eligible; graceful counts as draining; a
    /// shutting-down bridge is never taken, even when it is all that is left.
    #[test]
    fn degrade_order_and_shutting_down() {
        let flags = |drain, graceful, closing| Stats {
            drain,
            graceful_shutdown: graceful,
            shutting_down: closing,
            ..Stats::default()
        };
        let catalog = Catalog::build(Spec {
            regions: vec![
                region("eu-west", 51.5, -0.1, "europe"),
                region("eu-central", 50.1, 8.7, "europe"),
            ],
            bridges: vec![bridge("lon", "eu-west"), bridge("fra", "eu-central")],
            shards: one_shard(),
            ..Spec::default()
        })
        .expect("valid");
        let run = |lon: Stats, fra: Health| {
            let h = health(&[("lon", with_stats(State::Up, lon)), ("fra", fra)]);
            let client = Client {
                ip: None,
                location: Some(&dublin()),
            };
            select(client, &catalog, &h, &Policy::default()).map(|d| (d.region.to_string(), d.tier))
        };
        let fra_down = stress(State::Down, 0.1);
        let eligible = (String::from("eu-central"), Tier::Eligible);
        let ok = stress(State::Up, 0.5);
        assert_eq!(
            run(flags(false, true, false), ok.clone()),
            Ok(eligible.clone())
        );
        assert_eq!(run(flags(true, false, false), ok.clone()), Ok(eligible));
        let west_draining = (String::from("eu-west"), Tier::Draining);
        assert_eq!(
            run(flags(true, false, false), fra_down.clone()),
            Ok(west_draining)
        );
        let central_panic = (String::from("eu-central"), Tier::Panic);
        assert_eq!(run(flags(false, false, true), fra_down), Ok(central_panic));
        let fra_closing = with_stats(State::Up, flags(false, false, true));
        assert_eq!(
            run(flags(false, false, true), fra_closing),
            Err(Refusal::NothingLeft)
        );
    }

    /// A coarse location measures from its country's centroid: a German address known only
    /// to country level, placed by the database in London, goes to Frankfurt.
    #[test]
    fn coarse_location_uses_country_centroid() {
        let h = health(&[
            ("lon", stress(State::Up, 0.1)),
            ("fra", stress(State::Up, 0.1)),
        ]);
        let mut coarse = located(51.5, -0.1);
        coarse.country = Some(CountryCode::parse("DE").expect("code"));
        coarse.subdivision = None;
        coarse.coarse = true;
        let d = pick(Some(&coarse), &h).expect("chosen");
        assert_eq!(
            (d.region.as_str(), d.reason),
            ("eu-central", Reason::CountryCentroid)
        );
        coarse.coarse = false;
        let d = pick(Some(&coarse), &h).expect("chosen");
        assert_eq!((d.region.as_str(), d.reason), ("eu-west", Reason::Nearest));
    }

    /// The `refuse` policy answers with a refusal when every bridge is down.
    #[test]
    fn refuse_policy() {
        let catalog = Catalog::build(Spec {
            regions: vec![region("eu-west", 51.5, -0.1, "europe")],
            bridges: vec![bridge("lon", "eu-west")],
            shards: one_shard(),
            ..Spec::default()
        })
        .expect("valid");
        let h = health(&[("lon", stress(State::Down, 0.1))]);
        let refuse = Policy {
            when_all_down: WhenAllDown::Refuse,
            ..Policy::default()
        };
        let client = Client::default();
        assert_eq!(select(client, &catalog, &h, &refuse), Err(Refusal::AllDown));
        let d = select(client, &catalog, &h, &Policy::default()).expect("panic mode");
        assert_eq!((d.tier, d.degraded), (Tier::Panic, true));
    }
}

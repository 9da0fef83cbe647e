//! The choice of a region: a pure function of location, catalog, health and policy.
//!
//! Every region gets a [`Tier`] from its bridges: eligible first, then the degraded steps
//! (overloaded, draining, panic). The preferred region comes from a network pin, a country
//! pin, the nearest region (distance plus bias) or the default region. The best tier present
//! anywhere is then taken from, in this order: the preferred region, the nearest region of its
//! group, the nearest region anywhere. Nothing here does I/O, reads a clock or logs.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::catalog::{AdminState, Bridge, Catalog, RegionId};
use crate::geo::{Location, Point};
use crate::probe::{Health, HealthSnapshot, State};

/// What the operator allows when choosing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// A bridge at or above this stress takes no new rooms while others can.
    #[serde(default = "default_stress_threshold")]
    pub stress_threshold: f64,
    /// What to do when every bridge is down or unknown.
    #[serde(default)]
    pub when_all_down: WhenAllDown,
}

fn default_stress_threshold() -> f64 {
    0.8
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            stress_threshold: default_stress_threshold(),
            when_all_down: WhenAllDown::Panic,
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
    /// Its usable bridges are all at or above the stress threshold.
    Overloaded,
    /// Its usable bridges are all draining or in graceful shutdown.
    Draining,
    /// Its bridges are down or unknown, but not shutting down.
    Panic,
    /// Nothing usable: bridges shutting down or in maintenance.
    Unusable,
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
            Reason::Default => "default",
            Reason::GroupFallback => "group_fallback",
            Reason::Fallback => "fallback",
        }
    }
}

/// One region as the decision saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Considered {
    /// The region.
    pub region: RegionId,
    /// Great-circle distance from the client, when located.
    pub distance_km: Option<f64>,
    /// How usable it was.
    pub tier: Tier,
    /// True when it has no bridges registered (its health is Jicofo's business).
    pub unwatched: bool,
    /// Bridges eligible now.
    pub eligible_bridges: usize,
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
    /// True when the chosen region has no bridges registered.
    pub unwatched: bool,
    /// Distance from the client to the chosen region, when located.
    pub distance_km: Option<f64>,
    /// Each step taken, in words.
    pub steps: Vec<String>,
    /// Every region, nearest first when located.
    pub regions: Vec<Considered>,
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

/// Chooses a region for `client`.
pub fn select(
    client: Client<'_>,
    catalog: &Catalog,
    health: &HealthSnapshot,
    policy: &Policy,
) -> Result<Decision, Refusal> {
    let regions = consider(client, catalog, health, policy);
    let mut steps = Vec::new();
    let (preferred, reason) = prefer(client, catalog, &regions, &mut steps);
    let best = regions
        .iter()
        .map(|r| r.tier)
        .min()
        .unwrap_or(Tier::Unusable);
    match best {
        Tier::Unusable => return Err(Refusal::NothingLeft),
        Tier::Panic if policy.when_all_down == WhenAllDown::Refuse => return Err(Refusal::AllDown),
        Tier::Eligible => {}
        degraded => steps.push(format!(
            "no region is eligible; degraded to {degraded:?} bridges"
        )),
    }
    let (chosen, reason) = take(catalog, &regions, preferred, best, reason, &mut steps);
    let taken = &regions[chosen];
    if taken.unwatched {
        steps.push(format!(
            "{} has no bridges registered: its health is not watched",
            taken.region
        ));
    }
    Ok(Decision {
        region: taken.region.clone(),
        reason,
        tier: best,
        unwatched: taken.unwatched,
        distance_km: taken.distance_km,
        steps,
        regions: sorted(regions),
    })
}

/// Every region's tier and bridge counts, in catalog order, with no client distance.
pub fn survey(catalog: &Catalog, health: &HealthSnapshot, policy: &Policy) -> Vec<Considered> {
    consider(Client::default(), catalog, health, policy)
}

/// Gives every region its distance and tier, in catalog order.
fn consider(
    client: Client<'_>,
    catalog: &Catalog,
    health: &HealthSnapshot,
    policy: &Policy,
) -> Vec<Considered> {
    let origin = client.location.and_then(|l| l.point);
    let unknown = Health::default();
    catalog
        .regions()
        .iter()
        .enumerate()
        .map(|(i, region)| {
            let bridges = catalog.bridges_of(i);
            let tiers = bridges.iter().map(|&b| {
                let bridge = &catalog.bridges()[b];
                bridge_tier(bridge, health.get(&bridge.id).unwrap_or(&unknown), policy)
            });
            let (tier, eligible) = tiers.fold((Tier::Unusable, 0), |(best, n), t| {
                (best.min(t), n + usize::from(t == Tier::Eligible))
            });
            Considered {
                region: region.id.clone(),
                distance_km: origin.map(|o| round_km(o.distance_km(&region.point))),
                tier: if bridges.is_empty() {
                    Tier::Eligible
                } else {
                    tier
                },
                unwatched: bridges.is_empty(),
                eligible_bridges: eligible,
            }
        })
        .collect()
}

/// How usable one bridge is.
pub fn bridge_tier(bridge: &Bridge, health: &Health, policy: &Policy) -> Tier {
    let stats = health.stats.as_ref();
    let flag = |f: fn(&crate::probe::Stats) -> bool| stats.is_some_and(f);
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

/// The region the client should get if everything were healthy.
fn prefer(
    client: Client<'_>,
    catalog: &Catalog,
    regions: &[Considered],
    steps: &mut Vec<String>,
) -> (usize, Reason) {
    if let Some(r) = client.ip.and_then(|ip| catalog.network_pin(ip)) {
        steps.push(format!(
            "a network pin sends this address to {}",
            regions[r].region
        ));
        return (r, Reason::NetworkPin);
    }
    let location = client.location;
    let country = location.and_then(|l| l.country);
    if let Some((country, r)) = country.and_then(|c| Some((c, catalog.country_pin(c)?))) {
        steps.push(format!(
            "country {country} is pinned to {}",
            regions[r].region
        ));
        return (r, Reason::CountryPin);
    }
    if location.and_then(|l| l.point).is_some() {
        let nearest = nearest(catalog, regions, |_| true).expect("a catalog has a region");
        let r = &regions[nearest];
        steps.push(format!(
            "nearest region is {} at {} km",
            r.region,
            km(r.distance_km)
        ));
        return (nearest, Reason::Nearest);
    }
    let r = catalog.default_region();
    steps.push(format!(
        "the client has no location; default region is {}",
        regions[r].region
    ));
    (r, Reason::Default)
}

/// Takes the preferred region if it has `tier`, else the nearest of its group, else any.
fn take(
    catalog: &Catalog,
    regions: &[Considered],
    preferred: usize,
    tier: Tier,
    reason: Reason,
    steps: &mut Vec<String>,
) -> (usize, Reason) {
    if regions[preferred].tier == tier {
        return (preferred, reason);
    }
    let wanted = &regions[preferred];
    steps.push(format!(
        "{} is not usable ({:?})",
        wanted.region, wanted.tier
    ));
    let group = catalog.regions()[preferred].group.as_deref();
    let same_group = |i: usize| group.is_some() && catalog.regions()[i].group.as_deref() == group;
    let has_tier = |i: usize| regions[i].tier == tier;
    if let Some(i) = nearest_from(catalog, regions, preferred, |i| {
        has_tier(i) && same_group(i)
    }) {
        steps.push(format!("group fallback to {}", regions[i].region));
        return (i, Reason::GroupFallback);
    }
    let i = nearest_from(catalog, regions, preferred, has_tier).expect("some region has tier");
    steps.push(format!(
        "fallback to the nearest usable region, {}",
        regions[i].region
    ));
    (i, Reason::Fallback)
}

/// The nearest region passing `keep`, by client distance plus bias.
fn nearest(
    catalog: &Catalog,
    regions: &[Considered],
    keep: impl Fn(usize) -> bool,
) -> Option<usize> {
    let score = |i: usize| regions[i].distance_km.unwrap_or(0.0) + catalog.regions()[i].bias_km;
    (0..regions.len())
        .filter(|&i| keep(i))
        .min_by(|&a, &b| score(a).total_cmp(&score(b)))
}

/// Like [`nearest`], but measures from the preferred region when the client has no location.
fn nearest_from(
    catalog: &Catalog,
    regions: &[Considered],
    preferred: usize,
    keep: impl Fn(usize) -> bool,
) -> Option<usize> {
    if regions[preferred].distance_km.is_some() {
        return nearest(catalog, regions, keep);
    }
    let from: Point = catalog.regions()[preferred].point;
    let score = |i: usize| {
        let region = &catalog.regions()[i];
        from.distance_km(&region.point) + region.bias_km
    };
    (0..regions.len())
        .filter(|&i| keep(i))
        .min_by(|&a, &b| score(a).total_cmp(&score(b)))
}

fn sorted(mut regions: Vec<Considered>) -> Vec<Considered> {
    regions.sort_by(|a, b| {
        let (a, b) = (a.distance_km.unwrap_or(0.0), b.distance_km.unwrap_or(0.0));
        a.total_cmp(&b)
    });
    regions
}

fn round_km(km: f64) -> f64 {
    km.round()
}

fn km(distance: Option<f64>) -> String {
    distance.map_or_else(|| "?".to_owned(), |d| format!("{d:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Bridge, BridgeId, Region, Spec};
    use crate::probe::Stats;

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
            bridges: vec![bridge("lon", "eu-west"), bridge("fra", "eu-central")],
            default_region: Some(RegionId::parse("us-east").expect("id")),
            shards: vec![crate::catalog::Shard {
                id: crate::catalog::ShardId::parse("default").expect("id"),
                url: "https://meet.test".to_owned(),
                subject: None,
                issuer: None,
            }],
            ..Spec::default()
        })
        .expect("valid catalog")
    }

    fn health(entries: &[(&str, State, f64)]) -> HealthSnapshot {
        let mut snapshot = HealthSnapshot::default();
        for &(id, state, stress) in entries {
            let stats = Stats {
                stress_level: stress,
                ..Stats::default()
            };
            let h = Health {
                state,
                stats: Some(stats),
                ..Health::default()
            };
            snapshot.insert(BridgeId::parse(id).expect("id"), h);
        }
        snapshot
    }

    fn dublin() -> Location {
        Location {
            country: None,
            continent: None,
            subdivision: None,
            point: Some(Point {
                latitude: 53.3,
                longitude: -6.3,
            }),
            accuracy_km: None,
            coarse: false,
        }
    }

    fn pick(location: Option<&Location>, health: &HealthSnapshot) -> Result<Decision, Refusal> {
        let client = Client { ip: None, location };
        select(client, &catalog(), health, &Policy::default())
    }

    /// Dublin goes to London while London's bridge is up.
    #[test]
    fn nearest_eligible_region() {
        let h = health(&[("lon", State::Up, 0.1), ("fra", State::Up, 0.1)]);
        let d = pick(Some(&dublin()), &h).expect("chosen");
        assert_eq!((d.region.as_str(), d.reason), ("eu-west", Reason::Nearest));
    }

    /// An overloaded London sends Dublin to Frankfurt, its group neighbour, not to the US.
    #[test]
    fn group_fallback() {
        let h = health(&[("lon", State::Up, 0.9), ("fra", State::Up, 0.1)]);
        let d = pick(Some(&dublin()), &h).expect("chosen");
        assert_eq!(
            (d.region.as_str(), d.reason),
            ("eu-central", Reason::GroupFallback)
        );
        assert_eq!(d.tier, Tier::Eligible);
    }

    /// With Europe all down, the unwatched US region is eligible and is taken.
    #[test]
    fn unwatched_region_counts_as_eligible() {
        let h = health(&[("lon", State::Down, 0.0), ("fra", State::Down, 0.0)]);
        let d = pick(Some(&dublin()), &h).expect("chosen");
        assert_eq!((d.region.as_str(), d.reason), ("us-east", Reason::Fallback));
        assert!(d.unwatched);
    }

    /// No location means the default region.
    #[test]
    fn default_region_without_location() {
        let d = pick(None, &HealthSnapshot::default()).expect("chosen");
        assert_eq!((d.region.as_str(), d.reason), ("us-east", Reason::Default));
    }
}

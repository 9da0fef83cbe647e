//! What a selection answers: the decision, every region as it saw it, and refusals.
//!
//! A [`Decision`] shares the catalog it was made from, so listing 200 regions costs one
//! reference count, not 200 copies of their ids; ids are read when it is serialised.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::catalog::{BridgeId, Catalog, RegionId};
use crate::geo::CountryCode;

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
    pub(super) catalog: Arc<Catalog>,
    /// In catalog order.
    pub(super) entries: Vec<Considered>,
    /// Positions in `entries`, nearest first (catalog order when not located).
    pub(super) order: Vec<u32>,
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

    /// The catalog the decision was made from.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Catalog position of the region taken.
    pub fn taken(&self) -> Option<usize> {
        self.entries
            .iter()
            .find(|c| c.why == Why::Taken)
            .map(|c| c.index)
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
    /// Each step taken, serialised in words.
    pub steps: Vec<Step>,
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

/// One step of a decision; it is put in words only when the decision is written out.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// No region is eligible; the best tier present is taken.
    Degraded(Tier),
    /// A network pin covers the address.
    NetworkPin(RegionId),
    /// The country is pinned to a region.
    CountryPin(CountryCode, RegionId),
    /// The location is coarse; distances are measured from the country's centroid.
    Coarse(CountryCode),
    /// The nearest region and its distance in km.
    Nearest(RegionId, f64),
    /// The client has no location; the default region is preferred.
    NoLocation(RegionId),
    /// The preferred region does not have the tier taken.
    NotUsable {
        /// The preferred region.
        region: RegionId,
        /// The tier taken.
        wanted: Tier,
        /// The preferred region's tier.
        has: Tier,
    },
    /// The nearest region of the preferred one's group with the tier taken.
    GroupFallback(RegionId),
    /// The nearest region anywhere with the tier taken.
    Fallback(RegionId),
    /// The region taken has no bridges registered.
    Unwatched(RegionId),
}

impl Step {
    /// The step in words, handed to `put` piece by piece: `Display` joins the pieces, and
    /// the hot path's JSON writer escapes them straight into the answer.
    pub fn words(&self, mut put: impl FnMut(&str)) {
        match self {
            Step::Degraded(tier) => {
                put("no region is eligible; degraded to the ");
                put(tier.label());
                put(" tier");
            }
            Step::NetworkPin(region) => {
                put("a network pin sends this address to ");
                put(region.as_str());
            }
            Step::CountryPin(country, region) => {
                put("country ");
                put(country.as_str());
                put(" is pinned to ");
                put(region.as_str());
            }
            Step::Coarse(country) => {
                put("the location is coarse; measuring from the centroid of ");
                put(country.as_str());
            }
            // Rounded as the decision's `distance_km` is, so the two agree.
            Step::Nearest(region, km) => {
                put("nearest region is ");
                put(region.as_str());
                put(" at ");
                put(itoa::Buffer::new().format(km.round() as i64));
                put(" km");
            }
            Step::NoLocation(region) => {
                put("the client has no location; default region is ");
                put(region.as_str());
            }
            Step::NotUsable {
                region,
                wanted,
                has,
            } => {
                put(region.as_str());
                put(" is not usable at the ");
                put(wanted.label());
                put(" tier (it is ");
                put(has.label());
                put(")");
            }
            Step::GroupFallback(region) => {
                put("group fallback to ");
                put(region.as_str());
            }
            Step::Fallback(region) => {
                put("fallback to the nearest usable region, ");
                put(region.as_str());
            }
            Step::Unwatched(region) => {
                put(region.as_str());
                put(" has no bridges registered: its health is not watched");
            }
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = Ok(());
        self.words(|piece| written = written.and_then(|()| f.write_str(piece)));
        written
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every step reads as the words the API documents.
    #[test]
    fn steps_in_words() {
        let id = |s: &str| RegionId::parse(s).expect("id");
        let gb = CountryCode::parse("GB").expect("code");
        let cases = [
            (
                Step::Degraded(Tier::Panic),
                "no region is eligible; degraded to the panic tier",
            ),
            (
                Step::NetworkPin(id("eu-west")),
                "a network pin sends this address to eu-west",
            ),
            (
                Step::CountryPin(gb, id("eu-west")),
                "country GB is pinned to eu-west",
            ),
            (
                Step::Coarse(gb),
                "the location is coarse; measuring from the centroid of GB",
            ),
            (
                Step::Nearest(id("eu-west"), 38.5),
                "nearest region is eu-west at 39 km",
            ),
            (
                Step::NoLocation(id("eu-central")),
                "the client has no location; default region is eu-central",
            ),
            (
                Step::NotUsable {
                    region: id("eu-west"),
                    wanted: Tier::Eligible,
                    has: Tier::Draining,
                },
                "eu-west is not usable at the eligible tier (it is draining)",
            ),
            (
                Step::GroupFallback(id("eu-central")),
                "group fallback to eu-central",
            ),
            (
                Step::Fallback(id("us-east")),
                "fallback to the nearest usable region, us-east",
            ),
            (
                Step::Unwatched(id("eu-west")),
                "eu-west has no bridges registered: its health is not watched",
            ),
        ];
        for (step, words) in cases {
            assert_eq!(step.to_string(), words);
            let json = serde_json::to_string(&step).expect("serialises");
            assert_eq!(json, format!("\"{words}\""));
        }
    }
}

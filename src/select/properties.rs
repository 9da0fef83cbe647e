//! Property tests of the pure selection, over random catalogs, health and clients.
//!
//! Regions have no groups and no pins here, so "nearest eligible after bias" is the whole
//! rule; groups and pins have example tests in `select.rs`.

use proptest::prelude::*;

use super::*;
use crate::catalog::{AdminState, Bridge, BridgeId, Region, RegionId, Shard, Spec};
use crate::geo::Point;
use crate::probe::{Health, State, Stats};

/// One generated bridge: state, stress, drain, shutting down.
type BridgeSpec = (u8, f64, bool, bool);

/// One generated region: where, bias, its bridges.
type RegionSpec = ((f64, f64), f64, Vec<BridgeSpec>);

fn point() -> impl Strategy<Value = (f64, f64)> {
    (-80.0..80.0f64, -179.0..179.0f64)
}

fn bridge_spec() -> impl Strategy<Value = BridgeSpec> {
    (
        0u8..4,
        0.0..1.2f64,
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
    )
}

fn region_spec() -> impl Strategy<Value = RegionSpec> {
    (
        point(),
        -300.0..300.0f64,
        prop::collection::vec(bridge_spec(), 1..4),
    )
}

/// A scenario: catalog, health and a located client.
#[derive(Debug, Clone)]
struct World {
    regions: Vec<RegionSpec>,
    client: Location,
}

fn world() -> impl Strategy<Value = World> {
    (prop::collection::vec(region_spec(), 1..8), point()).prop_map(|(regions, (lat, lon))| World {
        regions,
        client: Location {
            country: None,
            continent: None,
            subdivision: Some("s".into()),
            point: Some(Point {
                latitude: lat,
                longitude: lon,
            }),
            accuracy_km: None,
            coarse: false,
        },
    })
}

/// One Jitsi shard for catalogs built in tests and benchmarks.
fn one_shard() -> Vec<Shard> {
    vec![Shard::single("https://meet.test")]
}

fn region_id(r: usize) -> RegionId {
    RegionId::parse(&format!("r{r}")).expect("valid id")
}

fn bridge_id(r: usize, b: usize) -> BridgeId {
    BridgeId::parse(&format!("r{r}-b{b}")).expect("valid id")
}

fn build(world: &World) -> (Catalog, HealthSnapshot) {
    let mut spec = Spec {
        shards: one_shard(),
        ..Spec::default()
    };
    let mut health = HealthSnapshot::default();
    for (r, ((lat, lon), bias, bridges)) in world.regions.iter().enumerate() {
        spec.regions.push(Region {
            id: region_id(r),
            name: String::new(),
            point: Point {
                latitude: *lat,
                longitude: *lon,
            },
            group: None,
            bias_km: *bias,
            shard: None,
        });
        for (b, &(state, stress, drain, closing)) in bridges.iter().enumerate() {
            spec.bridges.push(Bridge {
                id: bridge_id(r, b),
                region: region_id(r),
                url: "http://127.0.0.1:1".to_owned(),
                weight: 1,
                stats: true,
                admin_state: AdminState::Active,
            });
            let state = [State::Up, State::Up, State::Down, State::Unknown][usize::from(state)];
            let stats = Stats {
                stress_level: stress,
                drain,
                shutting_down: closing,
                ..Stats::default()
            };
            let h = Health {
                state,
                stats: Some(stats),
                ..Health::default()
            };
            health.insert(bridge_id(r, b), h);
        }
    }
    (Catalog::build(spec).expect("valid catalog"), health)
}

/// Eligibility by the words, independently of `bridge_tier`.
fn eligible(spec: &BridgeSpec) -> bool {
    let &(state, stress, drain, closing) = spec;
    state < 2 && stress < 0.8 && !drain && !closing
}

fn region_eligible(world: &World, r: usize) -> bool {
    world.regions[r].2.iter().any(eligible)
}

fn score(world: &World, r: usize) -> f64 {
    let ((lat, lon), bias, _) = &world.regions[r];
    let to = Point {
        latitude: *lat,
        longitude: *lon,
    };
    world.client.point.expect("located").distance_km(&to) + bias
}

fn choose(world: &World) -> Result<Decision, Refusal> {
    let (catalog, health) = build(world);
    let client = Client {
        ip: None,
        location: Some(&world.client),
    };
    select(client, &catalog, &health, &Policy::default())
}

fn chosen_index(decision: &Decision) -> usize {
    decision.region.as_str()[1..].parse().expect("r<n>")
}

proptest! {
    /// While some region has an eligible bridge, the region picked has one.
    #[test]
    fn never_picks_ineligible_while_eligible_exists(world in world()) {
        let any = (0..world.regions.len()).any(|r| region_eligible(&world, r));
        let decision = choose(&world);
        if any {
            let d = decision.expect("an eligible region exists");
            prop_assert!(region_eligible(&world, chosen_index(&d)));
            prop_assert_eq!(d.tier, Tier::Eligible);
        }
    }

    /// Regions are ordered nearest first, ties by catalog position, for a handful of them
    /// (sorted directly) and for hundreds (dealt into buckets first) alike.
    #[test]
    fn regions_come_nearest_first(
        kms in prop::collection::vec(prop_oneof![0.0..20_100.0f64, Just(900.0)], 0..300)
    ) {
        let mut expected: Vec<u32> = (0..kms.len() as u32).collect();
        expected.sort_by(|&a, &b| kms[a as usize].total_cmp(&kms[b as usize]).then(a.cmp(&b)));
        prop_assert_eq!(nearest_first(Some(&kms), kms.len()), expected);
    }

    /// The region picked is the nearest eligible one after bias.
    #[test]
    fn picks_nearest_eligible_after_bias(world in world()) {
        let eligible: Vec<usize> =
            (0..world.regions.len()).filter(|&r| region_eligible(&world, r)).collect();
        prop_assume!(!eligible.is_empty());
        let d = choose(&world).expect("chosen");
        let best = eligible.iter().map(|&r| score(&world, r)).fold(f64::INFINITY, f64::min);
        prop_assert!(score(&world, chosen_index(&d)) <= best + 1e-6);
    }

    /// The same inputs give the same decision, explanation included.
    #[test]
    fn deterministic(world in world()) {
        let a = choose(&world).map(|d| serde_json::to_value(d).expect("serialises"));
        let b = choose(&world).map(|d| serde_json::to_value(d).expect("serialises"));
        prop_assert_eq!(a, b);
    }

    /// Adding an eligible region that scores worse than the pick never changes the pick.
    #[test]
    fn farther_eligible_region_changes_nothing(
        world in world(),
        at in point(),
        extra in 1.0..5000.0f64,
    ) {
        let Ok(before) = choose(&world) else { return Ok(()) };
        prop_assume!(before.tier == Tier::Eligible);
        let chosen = score(&world, chosen_index(&before));
        let mut bigger = world.clone();
        bigger.regions.push((at, 0.0, vec![(0, 0.1, false, false)]));
        let last = bigger.regions.len() - 1;
        let distance = score(&bigger, last);
        bigger.regions[last].1 = chosen - distance + extra;
        let after = choose(&bigger).expect("chosen");
        prop_assert_eq!(after.region, before.region);
    }

    /// Taking away the picked region's last eligible bridge always changes the pick.
    #[test]
    fn losing_last_eligible_bridge_changes_pick(world in world()) {
        let Ok(before) = choose(&world) else { return Ok(()) };
        prop_assume!(before.tier == Tier::Eligible);
        let picked = chosen_index(&before);
        let mut worse = world.clone();
        for bridge in worse.regions[picked].2.iter_mut() {
            if eligible(bridge) {
                bridge.0 = 2;
            }
        }
        let others = (0..worse.regions.len()).any(|r| region_eligible(&worse, r));
        match choose(&worse) {
            Ok(after) if others => prop_assert_ne!(after.region, before.region),
            Ok(after) => prop_assert_ne!(after.tier, Tier::Eligible),
            Err(_) => {}
        }
    }

    /// The hot path's hand-written JSON equals serde's for every decision, also when the
    /// same catalog is answered from again with its bridges' health changed (the writer
    /// keeps each region's text between requests).
    #[test]
    fn hand_written_json_matches_serde(world in world(), located in any::<bool>()) {
        let (catalog, health) = build(&world);
        let catalog = Arc::new(catalog);
        let client = Client {
            ip: None,
            location: located.then_some(&world.client),
        };
        let policy = Policy::default();
        let unknown = HealthSnapshot::default();
        for health in [&health, &unknown, &health] {
            let survey = Survey::build(catalog.clone(), health, &policy);
            let Ok(decision) = select_in(client, &survey, &Load::default(), &policy) else {
                continue;
            };
            let mut out = Vec::new();
            crate::api::json::write_decision(&mut out, &decision);
            let expected = serde_json::to_vec(&decision).expect("serialises");
            prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
        }
    }
}

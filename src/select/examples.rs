//! Example tests of the selection: named situations with the region each must give.

use super::*;
use crate::catalog::{AdminState, Bridge, BridgeId, Region, RegionId, Shard, Spec};
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
    vec![Shard::single("https://meet.test")]
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
        subdivision: Some("somewhere".into()),
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

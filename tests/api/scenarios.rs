//! Failures seen in real Jitsi deployments, replayed in-process against scripted bridges.
//!
//! See `scripted.rs` for the harness: paused virtual time where only the prober and the pure
//! selection run, real time (`through_the_api_*`) where rooms go through the router and its
//! SQLite store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use geobridge::probe::State;
use geobridge::select::{self, Ledger, Refusal};
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::helpers::example_config;
use crate::scripted::{Act, Fakes, UK, bridge_toml, only_regions, probe, serve, stats, stress};

fn two_cities() -> String {
    example_config() + &bridge_toml("lon-1", "eu-west") + &bridge_toml("fra-1", "eu-central")
}

/// London's bridge misses one probe (a 2 s timeout): it stays in rotation. Hanging on, it
/// leaves at exactly the third failure and London's rooms go to Frankfurt. Answering again,
/// it comes back by itself after two passes and its hold-down of about a minute.
#[tokio::test(start_paused = true)]
async fn missed_probe_stays_then_falls_then_returns() {
    let fakes = Arc::new(Fakes::default());
    fakes.set("lon-1", stress(0.1));
    fakes.set("fra-1", stress(0.1));
    let p = probe(&two_cities(), fakes.clone());
    p.until(10, "lon-1 up", |p| p.health("lon-1").state == State::Up)
        .await;

    fakes.set("lon-1", Act::Hang);
    p.until(10, "one timeout", |p| p.health("lon-1").failures == 1)
        .await;
    fakes.set("lon-1", stress(0.1));
    assert_eq!(p.health("lon-1").state, State::Up);
    assert_eq!(p.region(), "eu-west");
    p.until(10, "a pass", |p| p.health("lon-1").failures == 0)
        .await;

    fakes.set("lon-1", Act::Hang);
    let mut seen = Vec::new();
    p.until(30, "lon-1 down", |p| {
        let h = p.health("lon-1");
        seen.push((h.failures, h.state));
        h.state == State::Down
    })
    .await;
    seen.dedup();
    let expected = [
        (0, State::Up),
        (1, State::Up),
        (2, State::Up),
        (3, State::Down),
    ];
    assert_eq!(seen, expected);
    let down_at = Instant::now();
    let mut none = Ledger::new(Duration::ZERO);
    let decision = p.choose(&mut none, 0).expect("chosen");
    assert_eq!(decision.region.as_str(), "eu-central");
    assert_eq!(decision.reason, select::Reason::GroupFallback);

    fakes.set("lon-1", stress(0.1));
    p.until(120, "lon-1 up again", |p| {
        p.health("lon-1").state == State::Up
    })
    .await;
    let held = Instant::now() - down_at;
    assert!(
        held >= Duration::from_secs(54),
        "back after {held:?}, inside the hold-down"
    );
    assert!(held <= Duration::from_secs(72), "back after {held:?}");
    assert_eq!(p.region(), "eu-west");
}

/// A bridge that hangs delays no other bridge: the healthy one is asked every 5 s to the
/// millisecond (plus at most 20 ms of jitter); the hanging one is still asked after it went
/// down, the first time 1.25 s after its state changed (the quick re-check).
#[tokio::test(start_paused = true)]
async fn hanging_bridge_delays_no_other() {
    let fakes = Arc::new(Fakes::default());
    fakes.set("lon-1", stress(0.1));
    fakes.set("fra-1", Act::Hang);
    let p = probe(&two_cities(), fakes.clone());
    sleep(Duration::from_secs(60)).await;

    let good = fakes.asked("lon-1");
    assert!(good.len() >= 11, "{} probes in 60 s", good.len());
    for pair in good[1..].windows(2) {
        let gap = pair[1] - pair[0];
        let window = Duration::from_millis(4980)..=Duration::from_millis(5020);
        assert!(
            window.contains(&gap),
            "healthy bridge asked {gap:?} after the last time"
        );
    }
    assert_eq!(p.health("lon-1").failures, 0);

    let hanging = fakes.asked("fra-1");
    assert_eq!(p.health("fra-1").state, State::Down);
    assert!(
        hanging.len() >= 8,
        "a down bridge keeps being probed: {}",
        hanging.len()
    );
    // Third probe: timeout at +2 s takes it down; the re-check follows 1.25 s later.
    let recheck = hanging[3] - hanging[2];
    assert_eq!(recheck, Duration::from_millis(3250), "{hanging:?}");
}

/// London's only bridge reports stress 0.69; 20 rooms of 5 participants from London arrive
/// within 5 s. London takes the 3 that fit under 0.8 (0.69, 0.74, 0.79), the other 17 go
/// to Frankfurt, the next nearest; 20 s later, with fresh stats, London takes rooms again.
#[tokio::test(start_paused = true)]
async fn burst_of_rooms_spills_to_next_region() {
    let fakes = Arc::new(Fakes::default());
    fakes.set("lon-1", stress(0.69));
    fakes.set("fra-1", stress(0.0));
    fakes.set("fra-2", stress(0.0));
    let config = two_cities() + &bridge_toml("fra-2", "eu-central");
    let p = probe(&config, fakes.clone());
    p.until(10, "all up", |p| {
        ["lon-1", "fra-1", "fra-2"]
            .iter()
            .all(|b| p.health(b).state == State::Up)
    })
    .await;

    let mut ledger = Ledger::new(Duration::from_secs(p.settings.policy.reservation_seconds));
    let started = Instant::now();
    let mut placed = Vec::new();
    for _ in 0..20 {
        let d = p.choose(&mut ledger, 5).expect("chosen");
        let bridge = d.bridge.map(|b| b.to_string()).unwrap_or_default();
        placed.push((d.region.to_string(), bridge));
        sleep(Duration::from_millis(250)).await;
    }
    assert!(Instant::now() - started <= Duration::from_secs(5));
    let london = ("eu-west".to_owned(), "lon-1".to_owned());
    assert_eq!(placed[..3], [london.clone(), london.clone(), london]);
    // Frankfurt's two idle bridges share the rest, each room on the less loaded one.
    let frankfurt = |p: &(String, String)| p.0 == "eu-central" && p.1.starts_with("fra-");
    assert!(placed[3..].iter().all(frankfurt), "{placed:?}");
    let on_fra_1 = placed.iter().filter(|p| p.1 == "fra-1").count();
    assert_eq!(on_fra_1, 9, "{placed:?}");
    let spilled = p.choose(&mut ledger, 0).expect("chosen");
    let west = spilled.regions.get("eu-west").expect("listed");
    assert_eq!(
        (west.tier, west.why),
        (select::Tier::Overloaded, select::Why::WorseTier)
    );

    let checked = p.health("lon-1").checked_at;
    sleep(Duration::from_secs(20)).await;
    assert_ne!(p.health("lon-1").checked_at, checked, "fresh stats arrived");
    let again = p.choose(&mut ledger, 5).expect("chosen");
    assert_eq!(again.region.as_str(), "eu-west");
    assert_eq!(again.tier, select::Tier::Eligible);
}

/// A bridge in graceful shutdown gets no new rooms; a draining bridge is used only when
/// nothing else is eligible; a bridge shutting down is never used, not even in panic.
#[tokio::test(start_paused = true)]
async fn graceful_draining_and_shutting_down() {
    let fakes = Arc::new(Fakes::default());
    let regions = [("eu-west", 51.51, -0.13), ("eu-central", 50.11, 8.68)];
    let config = only_regions(&regions, &[("lon-1", "eu-west"), ("fra-1", "eu-central")]);
    let (graceful, draining) = (stats("stats-graceful.json"), stats("stats-draining.json"));
    let closing = stats("stats-shutting-down.json");
    let cases = [
        (
            Act::Stats(graceful),
            stress(0.1),
            Some(("eu-central", "eligible")),
        ),
        (
            Act::Stats(draining.clone()),
            stress(0.1),
            Some(("eu-central", "eligible")),
        ),
        // Frankfurt down, London shutting down: panic takes Frankfurt, never London.
        (
            Act::Stats(closing.clone()),
            Act::Unhealthy,
            Some(("eu-central", "panic")),
        ),
        (
            Act::Stats(draining),
            Act::Stats(closing.clone()),
            Some(("eu-west", "draining")),
        ),
        (Act::Stats(closing.clone()), Act::Stats(closing), None),
    ];
    fakes.set("lon-1", stress(0.1));
    fakes.set("fra-1", stress(0.1));
    let p = probe(&config, fakes.clone());
    for (case, (london, frankfurt, expected)) in cases.into_iter().enumerate() {
        fakes.set("lon-1", london);
        fakes.set("fra-1", frankfurt);
        let since = Instant::now();
        p.until(15, "both probed", |p| {
            let fresh = |id| p.health(id).checked_at.is_some_and(|t| t > since);
            fresh("lon-1") && fresh("fra-1")
        })
        .await;
        let mut none = Ledger::new(Duration::ZERO);
        let got = p
            .choose(&mut none, 0)
            .map(|d| (d.region.to_string(), d.tier.label()));
        let expected = expected
            .map(|(r, t)| (r.to_owned(), t))
            .ok_or(Refusal::NothingLeft);
        assert_eq!(got, expected, "case {case}");
    }
}

/// Through the API, in real time: each room reserves its participants on the bridge
/// Jicofo would pick, so a burst from London spills to Frankfurt after three rooms, and
/// London takes rooms again once the (here 3 s) window has passed.
#[tokio::test]
async fn through_the_api_rooms_reserve_and_spill() {
    let fakes = Arc::new(Fakes::default());
    fakes.set("lon-1", stress(0.69));
    fakes.set("fra-1", stress(0.0));
    let config = two_cities().replace("reservation_seconds = 20", "reservation_seconds = 3");
    let w = serve(&config, fakes).await;
    w.until(10, "both up", |w| {
        w.health("lon-1").state == State::Up && w.health("fra-1").state == State::Up
    })
    .await;
    let mut regions = Vec::new();
    for _ in 0..6 {
        let (status, room) = w.create_room(UK, 5).await;
        assert_eq!(status, StatusCode::CREATED, "{room}");
        regions.push(room["region"].as_str().unwrap_or("").to_owned());
        if regions.len() <= 3 {
            assert_eq!(room["decision"]["bridge"], "lon-1", "{room}");
        }
    }
    let expected = [
        "eu-west",
        "eu-west",
        "eu-west",
        "eu-central",
        "eu-central",
        "eu-central",
    ];
    assert_eq!(regions, expected);
    let mut back = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !back && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
        back = w.select(UK).await["region"] == "eu-west";
    }
    assert!(back, "London never took rooms again");
    let (_, room) = w.create_room(UK, 5).await;
    assert_eq!(room["region"], "eu-west", "{room}");
}

/// Through the API: the only bridge of a one-region deployment reports unhealthy; with the
/// default policy rooms still get that region, marked degraded, and a metric counts each.
#[tokio::test]
async fn through_the_api_lone_unhealthy_bridge_still_gets_rooms() {
    let fakes = Arc::new(Fakes::default());
    fakes.set("fra-1", Act::Unhealthy);
    let config = only_regions(&[("eu-central", 50.11, 8.68)], &[("fra-1", "eu-central")]);
    let w = serve(&config, fakes).await;
    w.until(10, "fra-1 down", |w| w.health("fra-1").state == State::Down)
        .await;
    for _ in 0..2 {
        let (status, room) = w.create_room(UK, 1).await;
        assert_eq!(status, StatusCode::CREATED, "{room}");
        assert_eq!(room["region"], "eu-central");
        let decision = &room["decision"];
        let got = (decision["tier"].as_str(), decision["degraded"].as_bool());
        assert_eq!(got, (Some("panic"), Some(true)), "{room}");
    }
    let metrics = w.metrics().await;
    let series = "geobridge_degraded_decisions_total{region=\"eu-central\",tier=\"panic\"} 2";
    assert!(metrics.contains(series), "{metrics}");
}

/// Through the API: a guest joining from another region than the room's reserves one
/// participant on the bridge of the guest's region; a guest from the room's own region does
/// not, as the host's reservation already counts the room's participants there.
#[tokio::test]
async fn through_the_api_guests_reserve_in_their_own_region() {
    let fakes = Arc::new(Fakes::default());
    fakes.set("lon-1", stress(0.5));
    fakes.set("usw-1", stress(0.2));
    let config =
        example_config() + &bridge_toml("lon-1", "eu-west") + &bridge_toml("usw-1", "us-west");
    let w = serve(&config, fakes).await;
    w.until(10, "both up", |w| {
        w.health("lon-1").state == State::Up && w.health("usw-1").state == State::Up
    })
    .await;
    let (_, room) = w.create_room(UK, 4).await;
    let name = room["room"].as_str().expect("room").to_owned();
    let stress_of = |decision: &Value, region: &str| {
        let regions = decision["regions"].as_array().expect("regions").clone();
        let entry = regions.into_iter().find(|r| r["region"] == region);
        entry.and_then(|r| r["stress"].as_f64()).expect("stress")
    };
    assert_eq!(stress_of(&w.select(UK).await["decision"], "eu-west"), 0.54);
    for (ip, region) in [("8.8.8.8", "us-west"), (UK, "eu-west")] {
        let body = json!({"user": {"id": "g", "name": "Guest"}, "client_ip": ip});
        let request = Request::post(format!("/v1/rooms/{name}/participants"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        let (status, joined) = w.call(request).await;
        assert_eq!(status, StatusCode::CREATED, "{joined}");
        assert_eq!(joined["region"], region, "{joined}");
    }
    assert_eq!(
        stress_of(&w.select("8.8.8.8").await["decision"], "us-west"),
        0.21
    );
    assert_eq!(stress_of(&w.select(UK).await["decision"], "eu-west"), 0.54);
}

//! Probing real HTTP fake bridges: fall and rise counts, explicit failures, broken answers.
//!
//! These run the real binary against real sockets, so time cannot be paused: they poll with
//! deadlines and assert states and counts, never durations. The paused-time scenarios that
//! pin exact schedules are in `scenarios.rs`.

use std::sync::atomic::Ordering;

use crate::helpers::{Behaviour, FakeBridge, Options, fixture, spawn_app};

const UK: &str = "81.2.69.142";

/// London's only bridge hangs: it stays in rotation until the fall count (3) is reached,
/// then London is skipped for its group neighbour; when it answers again it comes back
/// after the rise count (2) and its hold-down, without a restart.
#[tokio::test]
async fn failing_bridge_leaves_after_fall_and_returns_after_rise() {
    let bridge = FakeBridge::start().await;
    let app = spawn_app(Options::default().bridge("lon-1", "eu-west", &bridge.url)).await;
    app.wait_until(10, "first probe", || async {
        app.get("/readyz").await.status == 200
    })
    .await;
    assert_eq!(app.select(UK).await.json["region"], "eu-west");

    bridge.set(Behaviour::Hang);
    app.wait_until(15, "bridge down", || async {
        let h = app.bridge_health("lon-1").await;
        let failures = h["failures"].as_u64().unwrap_or(0);
        if failures > 0 && failures < 3 {
            assert_eq!(h["state"], "up", "down before the fall count: {h}");
        }
        h["state"] == "down"
    })
    .await;
    let h = app.bridge_health("lon-1").await;
    assert!(h["failures"].as_u64().expect("failures") >= 3, "{h}");
    let answer = app.select(UK).await;
    assert_eq!(answer.json["region"], "eu-central", "{}", answer.text);
    assert_eq!(answer.json["decision"]["reason"], "group_fallback");

    bridge.set(Behaviour::Healthy(fixture("stats-idle.json")));
    app.wait_until(15, "bridge up again", || async {
        app.bridge_health("lon-1").await["state"] == "up"
    })
    .await;
    let h = app.bridge_health("lon-1").await;
    assert_eq!(
        (h["flaps"].as_u64(), h["failures"].as_u64()),
        (Some(1), Some(0)),
        "{h}"
    );
    assert!(h["passes"].as_u64().expect("passes") >= 2, "{h}");
    assert_eq!(app.select(UK).await.json["region"], "eu-west");
}

/// A 500 from /about/health takes the bridge down at the next probe, not after three.
#[tokio::test]
async fn explicit_unhealthy_is_immediate() {
    let bridge = FakeBridge::start().await;
    let app = spawn_app(Options::default().bridge("lon-1", "eu-west", &bridge.url)).await;
    app.wait_until(10, "bridge up", || async {
        app.bridge_health("lon-1").await["state"] == "up"
    })
    .await;
    bridge.set(Behaviour::Unhealthy);
    app.wait_until(10, "bridge down", || async {
        app.bridge_health("lon-1").await["state"] == "down"
    })
    .await;
    let h = app.bridge_health("lon-1").await;
    assert!(
        h["failures"].as_u64().expect("failures") < 3,
        "went down on the first: {h}"
    );
    assert!(
        h["last_error"].as_str().expect("error").contains("500"),
        "{h}"
    );
}

/// Garbage stats count as failures; overloaded, draining and shutting-down bridges are
/// avoided while other regions are eligible.
#[tokio::test]
async fn garbage_and_load_are_respected() {
    let bridge = FakeBridge::start().await;
    let app = spawn_app(Options::default().bridge("lon-1", "eu-west", &bridge.url)).await;
    app.wait_until(10, "bridge up", || async {
        app.bridge_health("lon-1").await["state"] == "up"
    })
    .await;
    for (stats, tier) in [
        ("stats-busy.json", "overloaded"),
        ("stats-draining.json", "draining"),
        ("stats-graceful.json", "draining"),
        ("stats-shutting-down.json", "unusable"),
    ] {
        bridge.set(Behaviour::Healthy(fixture(stats)));
        app.wait_until(10, stats, || async {
            let regions = app.get("/v1/regions").await.json;
            let regions = regions.as_array().expect("array").clone();
            regions
                .iter()
                .any(|r| r["id"] == "eu-west" && r["tier"] == tier)
        })
        .await;
        let answer = app.select(UK).await;
        assert_eq!(
            answer.json["region"], "eu-central",
            "{stats}: {}",
            answer.text
        );
    }
    bridge.set(Behaviour::Garbage);
    app.wait_until(15, "garbage takes it down", || async {
        app.bridge_health("lon-1").await["state"] == "down"
    })
    .await;
    let h = app.bridge_health("lon-1").await;
    assert!(
        h["last_error"]
            .as_str()
            .expect("error")
            .contains("not valid JSON"),
        "{h}"
    );
    let metrics = app.get("/metrics").await.text;
    assert!(
        metrics.contains("geobridge_probe_failures_total{bridge=\"lon-1\",cause=\"body\"}"),
        "{metrics}"
    );
}

/// A bridge that hangs after sending headers, one that streams 50 MB of stats and one that
/// sends invalid JSON each go down after the fall count, each for its own reason, while a
/// healthy bridge next to them never misses a probe and stays up throughout.
#[tokio::test]
async fn broken_answers_fall_while_others_keep_passing() {
    let good = FakeBridge::start().await;
    let bad = [
        (
            "hang-1",
            "eu-central",
            Behaviour::HangAfterHeaders,
            "no answer in",
        ),
        (
            "huge-1",
            "us-east",
            Behaviour::Huge,
            "body larger than 262144 bytes",
        ),
        ("junk-1", "us-west", Behaviour::Garbage, "not valid JSON"),
    ];
    let mut options = Options::default().bridge("lon-1", "eu-west", &good.url);
    let mut fakes = Vec::new();
    for (id, region, _, _) in &bad {
        let fake = FakeBridge::start().await;
        options = options.bridge(id, region, &fake.url);
        fakes.push(fake);
    }
    let app = spawn_app(options).await;
    app.wait_until(10, "every bridge up", || async {
        let mut all = app.bridge_health("lon-1").await["state"] == "up";
        for (id, ..) in &bad {
            all &= app.bridge_health(id).await["state"] == "up";
        }
        all
    })
    .await;
    let hits_before = good.health_hits.load(Ordering::Relaxed);
    for (fake, (_, _, behaviour, _)) in fakes.iter().zip(&bad) {
        fake.set(behaviour.clone());
    }
    app.wait_until(20, "every broken bridge down", || async {
        let h = app.bridge_health("lon-1").await;
        assert_eq!(
            (h["state"].as_str(), h["failures"].as_u64()),
            (Some("up"), Some(0)),
            "{h}"
        );
        let mut down = true;
        for (id, ..) in &bad {
            let h = app.bridge_health(id).await;
            let failures = h["failures"].as_u64().unwrap_or(0);
            if h["state"] == "down" {
                assert!(failures >= 3, "{id} down before the fall count: {h}");
            } else {
                down = false;
            }
        }
        down
    })
    .await;
    for (id, _, _, why) in &bad {
        let h = app.bridge_health(id).await;
        let error = h["last_error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{id}: {h}");
    }
    let hits = good.health_hits.load(Ordering::Relaxed) - hits_before;
    assert!(
        hits >= 3,
        "the healthy bridge was probed {hits} times meanwhile"
    );
    assert_eq!(app.select(UK).await.json["region"], "eu-west");
}

/// A bridge reporting another region is used in its registered region, with a warning and a
/// metric; a bridge whose stats answer 404 is judged on health alone and says so.
/// A bridge that redirects its health and stats elsewhere is not taken at its word: it is
/// down, whatever the other address says.
#[tokio::test]
async fn redirects_are_not_followed() {
    let elsewhere = FakeBridge::start().await;
    let redirecting = FakeBridge::start().await;
    redirecting.set(Behaviour::Redirect(elsewhere.url.clone()));
    let options = Options::default()
        .bridge("lon-1", "eu-west", &redirecting.url)
        .bridge("fra-1", "eu-central", &elsewhere.url);
    let app = spawn_app(options).await;
    app.wait_until(10, "the plain bridge up", || async {
        app.bridge_health("fra-1").await["state"] == "up"
    })
    .await;
    app.wait_until(10, "the redirecting bridge down", || async {
        app.bridge_health("lon-1").await["state"] == "down"
    })
    .await;
    let health = app.bridge_health("lon-1").await;
    assert!(health["stats"].is_null(), "{health}");
}

#[tokio::test]
async fn region_mismatch_and_missing_stats_are_reported() {
    // The idle fixture says "eu-central"; this bridge is registered in eu-west.
    let moved = FakeBridge::start().await;
    let bare = FakeBridge::start().await;
    bare.set(Behaviour::NoStats);
    let options = Options::default()
        .bridge("lon-1", "eu-west", &moved.url)
        .bridge("fra-1", "eu-central", &bare.url);
    let app = spawn_app(options).await;
    app.wait_until(10, "both up", || async {
        app.bridge_health("lon-1").await["state"] == "up"
            && app.bridge_health("fra-1").await["state"] == "up"
    })
    .await;
    let moved_health = app.bridge_health("lon-1").await;
    assert_eq!(moved_health["region_mismatch"], true, "{moved_health}");
    let answer = app.select(UK).await;
    assert_eq!(answer.json["region"], "eu-west", "{}", answer.text);
    let metrics = app.get("/metrics").await.text;
    let series = "geobridge_bridge_region_mismatch{bridge=\"lon-1\",region=\"eu-west\"} 1";
    assert!(metrics.contains(series), "{metrics}");
    let bare_health = app.bridge_health("fra-1").await;
    assert_eq!(bare_health["stats_unavailable"], true, "{bare_health}");
    assert!(bare_health["stats"].is_null(), "{bare_health}");
    let log = app.log.lock().expect("log").clone();
    assert!(log.contains("bridge reports another region"), "{log}");
    assert!(log.contains("serves no stats"), "{log}");
}

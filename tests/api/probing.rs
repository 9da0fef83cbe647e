//! Probing real HTTP fake bridges: fall and rise counts, explicit failures, garbage.

use crate::helpers::{Behaviour, FakeBridge, Options, fixture, spawn_app};

const UK: &str = "81.2.69.142";

/// London's only bridge hangs: it stays in rotation until the fall count (3) is reached,
/// then London is skipped for its group neighbour; when it answers again it comes back
/// only after the rise count (2).
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
        let h = app.bridge_health("lon-1").await;
        if h["state"] == "down" && h["passes"].as_u64().unwrap_or(0) >= 2 {
            panic!("still down after the rise count: {h}");
        }
        h["state"] == "up"
    })
    .await;
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

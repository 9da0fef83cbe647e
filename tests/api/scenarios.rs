//! Failures seen in real Jitsi deployments, replayed in-process with paused time.
//!
//! The prober runs as in service, but asks scripted fake Videobridges (a `Transport`)
//! instead of sockets, so tokio's paused clock drives every probe, timeout and hold-down to
//! the millisecond; rooms go through the real router, in-process. Instants asserted here are
//! virtual: they are exact, not measured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use geobridge::api::{self, AppState};
use geobridge::app;
use geobridge::catalog::{Bridge, BridgeId};
use geobridge::config::Settings;
use geobridge::probe::{Cause, Health, Outcome, Prober, State, Stats, Transport};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tower::ServiceExt;

use crate::helpers::{example_config, fixture, repo_path};

const UK: &str = "81.2.69.142";

/// How a scripted bridge answers.
#[derive(Clone, Debug)]
enum Act {
    Stats(Stats),
    Unhealthy,
    Hang,
}

/// Scripted bridges: what each answers, and when each was asked.
#[derive(Default)]
struct Fakes {
    acts: Mutex<HashMap<String, Act>>,
    asked: Mutex<Vec<(String, Instant)>>,
}

impl Fakes {
    fn set(&self, bridge: &str, act: Act) {
        self.acts
            .lock()
            .expect("acts")
            .insert(bridge.to_owned(), act);
    }

    /// When `bridge` was asked, in order.
    fn asked(&self, bridge: &str) -> Vec<Instant> {
        let asked = self.asked.lock().expect("asked");
        asked
            .iter()
            .filter(|(b, _)| b == bridge)
            .map(|(_, t)| *t)
            .collect()
    }
}

impl Transport for Fakes {
    async fn probe(&self, bridge: &Bridge) -> Outcome {
        let id = bridge.id.to_string();
        self.asked
            .lock()
            .expect("asked")
            .push((id.clone(), Instant::now()));
        let act = self.acts.lock().expect("acts").get(&id).cloned();
        match act {
            Some(Act::Stats(stats)) => Outcome::Pass(Some(stats)),
            Some(Act::Unhealthy) => Outcome::Unhealthy("health answered 500".to_owned(), None),
            Some(Act::Hang) => std::future::pending().await,
            None => Outcome::Failed(Cause::Connect, "connection refused".to_owned()),
        }
    }
}

fn stats(name: &str) -> Stats {
    serde_json::from_str(&fixture(name)).expect("fixture parses")
}

fn stress(level: f64) -> Act {
    Act::Stats(Stats {
        stress_level: level,
        ..stats("stats-idle.json")
    })
}

/// geobridge in-process: its state, router and prober, over scripted bridges.
struct World {
    state: Arc<AppState>,
    router: Router,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Starts geobridge on `config` with the prober asking `fakes`.
fn start(config: &str, fakes: Arc<Fakes>) -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("geobridge.toml");
    std::fs::write(&path, config).expect("write config");
    let database = repo_path("data/geobridge-city.mmdb");
    let env = HashMap::from([
        ("GEOBRIDGE_JITSI_AUTH".to_owned(), "none".to_owned()),
        (
            "GEOBRIDGE_GEO_DATABASE".to_owned(),
            database.display().to_string(),
        ),
    ]);
    let settings = Settings::load(Some(&path), &env).expect("valid settings");
    let state = app::prepare(&settings).expect("prepared");
    let prober = Prober {
        catalog: state.catalog.clone(),
        health: state.health.clone(),
        ready: state.ready.clone(),
        config: settings.probe.clone(),
        metrics: state.metrics.clone(),
    };
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(prober.run_with(fakes.clone(), stopped));
    World {
        router: api::router(state.clone()),
        state,
        _stop: stop,
        _dir: dir,
    }
}

fn bridge_toml(id: &str, region: &str) -> String {
    format!("\n[[bridges]]\nid = \"{id}\"\nregion = \"{region}\"\nurl = \"http://{id}.test\"\n")
}

/// The example configuration cut before its regions, with only these regions and bridges.
fn only_regions(regions: &[(&str, f64, f64)], bridges: &[(&str, &str)]) -> String {
    let example = example_config();
    let head = example.split("[[regions]]").next().expect("has regions");
    let mut config = head.replace("default_region = \"eu-central\"", "");
    for (id, latitude, longitude) in regions {
        config.push_str(&format!(
            "\n[[regions]]\nid = \"{id}\"\nlatitude = {latitude}\nlongitude = {longitude}\n\
             group = \"europe\"\n"
        ));
    }
    for (id, region) in bridges {
        config.push_str(&bridge_toml(id, region));
    }
    config
}

impl World {
    fn health(&self, bridge: &str) -> Health {
        let id = BridgeId::parse(bridge).expect("id");
        self.state
            .health
            .load()
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// Lets virtual time run in 50 ms steps until `check` holds; fails after `secs`.
    async fn until(&self, secs: u64, what: &str, mut check: impl FnMut(&World) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check(self) {
            assert!(Instant::now() < deadline, "no {what} within {secs} s");
            sleep(Duration::from_millis(50)).await;
        }
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, Value) {
        let mut request = request;
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn select(&self, ip: &str) -> Value {
        let uri = format!("/v1/regions/select?ip={ip}");
        let request = Request::get(uri).body(Body::empty()).expect("request");
        let (status, json) = self.call(request).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        json
    }

    async fn create_room(&self, ip: &str, participants: u32) -> (StatusCode, Value) {
        let body = json!({"user": {"id": "u-1", "name": "Ada"}, "client_ip": ip,
                          "participants": participants});
        let request = Request::post("/v1/rooms")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        self.call(request).await
    }

    async fn metrics(&self) -> String {
        let request = Request::get("/metrics")
            .body(Body::empty())
            .expect("request");
        let mut request = request;
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        String::from_utf8(body.to_vec()).expect("utf-8")
    }
}

/// London's bridge misses one probe (a 2 s timeout): it stays in rotation. Hanging on, it
/// leaves at exactly the third failure and London's rooms go to Frankfurt. Answering again,
/// it comes back by itself after two passes and its hold-down of about a minute.
#[tokio::test(start_paused = true)]
async fn missed_probe_stays_then_falls_then_returns() {
    let fakes = Arc::new(Fakes::default());
    fakes.set("lon-1", stress(0.1));
    fakes.set("fra-1", stress(0.1));
    let config =
        example_config() + &bridge_toml("lon-1", "eu-west") + &bridge_toml("fra-1", "eu-central");
    let w = start(&config, fakes.clone());
    w.until(10, "lon-1 up", |w| w.health("lon-1").state == State::Up)
        .await;

    fakes.set("lon-1", Act::Hang);
    w.until(10, "one timeout", |w| w.health("lon-1").failures == 1)
        .await;
    fakes.set("lon-1", stress(0.1));
    assert_eq!(w.health("lon-1").state, State::Up);
    assert_eq!(w.select(UK).await["region"], "eu-west");
    w.until(10, "a pass", |w| w.health("lon-1").failures == 0)
        .await;

    fakes.set("lon-1", Act::Hang);
    let mut seen = Vec::new();
    w.until(30, "lon-1 down", |w| {
        let h = w.health("lon-1");
        seen.push((h.failures, h.state));
        h.state == State::Down
    })
    .await;
    seen.dedup();
    assert_eq!(
        seen,
        [
            (0, State::Up),
            (1, State::Up),
            (2, State::Up),
            (3, State::Down)
        ]
    );
    let down_at = Instant::now();
    let answer = w.select(UK).await;
    assert_eq!(answer["region"], "eu-central", "{answer}");
    assert_eq!(answer["decision"]["reason"], "group_fallback");

    fakes.set("lon-1", stress(0.1));
    w.until(120, "lon-1 up again", |w| {
        w.health("lon-1").state == State::Up
    })
    .await;
    let held = Instant::now() - down_at;
    assert!(
        held >= Duration::from_secs(54),
        "back after {held:?}, inside the hold-down"
    );
    assert!(held <= Duration::from_secs(72), "back after {held:?}");
    assert_eq!(w.select(UK).await["region"], "eu-west");
}

/// A bridge that hangs delays no other bridge: the healthy one is asked every 5 s to the
/// millisecond (plus at most 20 ms of jitter); the hanging one is still asked after it went
/// down, the first time 1.25 s after its state changed (the quick re-check).
#[tokio::test(start_paused = true)]
async fn hanging_bridge_delays_no_other() {
    let fakes = Arc::new(Fakes::default());
    fakes.set("lon-1", stress(0.1));
    fakes.set("fra-1", Act::Hang);
    let config =
        example_config() + &bridge_toml("lon-1", "eu-west") + &bridge_toml("fra-1", "eu-central");
    let w = start(&config, fakes.clone());
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
    assert_eq!(w.health("lon-1").failures, 0);

    let hanging = fakes.asked("fra-1");
    assert_eq!(w.health("fra-1").state, State::Down);
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
    let config = example_config()
        + &bridge_toml("lon-1", "eu-west")
        + &bridge_toml("fra-1", "eu-central")
        + &bridge_toml("fra-2", "eu-central");
    let w = start(&config, fakes.clone());
    w.until(10, "all up", |w| {
        ["lon-1", "fra-1", "fra-2"]
            .iter()
            .all(|b| w.health(b).state == State::Up)
    })
    .await;

    let started = Instant::now();
    let mut placed = Vec::new();
    for _ in 0..20 {
        let (status, room) = w.create_room(UK, 5).await;
        assert_eq!(status, StatusCode::CREATED, "{room}");
        let bridge = room["decision"]["bridge"].as_str().unwrap_or("").to_owned();
        placed.push((room["region"].as_str().unwrap_or("").to_owned(), bridge));
        sleep(Duration::from_millis(250)).await;
    }
    assert!(Instant::now() - started <= Duration::from_secs(5));
    let london = ("eu-west".to_owned(), "lon-1".to_owned());
    assert_eq!(
        placed[..3],
        [london.clone(), london.clone(), london.clone()]
    );
    // Frankfurt's two idle bridges share the rest, each room on the less loaded one.
    let frankfurt = |p: &(String, String)| p.0 == "eu-central" && p.1.starts_with("fra-");
    assert!(placed[3..].iter().all(frankfurt), "{placed:?}");
    let on_fra_1 = placed.iter().filter(|p| p.1 == "fra-1").count();
    assert_eq!(on_fra_1, 9, "{placed:?}");
    let (_, spilled) = w.create_room(UK, 5).await;
    let west = &spilled["decision"]["regions"][0];
    assert_eq!(
        (west["region"].as_str(), west["tier"].as_str()),
        (Some("eu-west"), Some("overloaded"))
    );

    let checked = w.health("lon-1").checked_at;
    sleep(Duration::from_secs(20)).await;
    assert_ne!(w.health("lon-1").checked_at, checked, "fresh stats arrived");
    let (_, again) = w.create_room(UK, 5).await;
    assert_eq!(again["region"], "eu-west", "{again}");
    assert_eq!(again["decision"]["tier"], "eligible");
}

/// The only bridge of a one-region deployment reports unhealthy: with the default policy
/// rooms still get that region, marked degraded, and a metric counts each such room.
#[tokio::test(start_paused = true)]
async fn lone_unhealthy_bridge_still_gets_rooms() {
    let fakes = Arc::new(Fakes::default());
    fakes.set("fra-1", Act::Unhealthy);
    let config = only_regions(&[("eu-central", 50.11, 8.68)], &[("fra-1", "eu-central")]);
    let w = start(&config, fakes.clone());
    w.until(10, "fra-1 down", |w| w.health("fra-1").state == State::Down)
        .await;
    for _ in 0..2 {
        let (status, room) = w.create_room(UK, 1).await;
        assert_eq!(status, StatusCode::CREATED, "{room}");
        assert_eq!(room["region"], "eu-central");
        let decision = &room["decision"];
        assert_eq!(
            (decision["tier"].as_str(), decision["degraded"].as_bool()),
            (Some("panic"), Some(true))
        );
    }
    let metrics = w.metrics().await;
    let series = "geobridge_degraded_decisions_total{region=\"eu-central\",tier=\"panic\"} 2";
    assert!(metrics.contains(series), "{metrics}");
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
    let w = start(&config, fakes.clone());
    for (case, (london, frankfurt, expected)) in cases.into_iter().enumerate() {
        fakes.set("lon-1", london);
        fakes.set("fra-1", frankfurt);
        let since = Instant::now();
        w.until(15, "both probed", |w| {
            let fresh = |id| w.health(id).checked_at.is_some_and(|t| t > since);
            fresh("lon-1") && fresh("fra-1")
        })
        .await;
        let (status, room) = w.create_room(UK, 1).await;
        match expected {
            Some((region, tier)) => {
                assert_eq!(status, StatusCode::CREATED, "case {case}: {room}");
                let got = (room["region"].as_str(), room["decision"]["tier"].as_str());
                assert_eq!(got, (Some(region), Some(tier)), "case {case}: {room}");
            }
            None => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{room}");
                assert_eq!(room["error"]["code"], "no_region");
            }
        }
    }
}

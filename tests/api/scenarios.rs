//! Failures seen in real Jitsi deployments, replayed in-process against scripted bridges.
//!
//! The prober runs as in service, but asks scripted fake Videobridges (a `Transport`)
//! instead of sockets. Where only the prober and the pure selection are involved, tokio's
//! clock is paused, so every probe, timeout, hold-down and reservation window runs to the
//! millisecond and the instants asserted are virtual, exact ones. Rooms created through the
//! router also write to the SQLite store, whose worker thread a paused clock would jump
//! across; those tests (`through_the_api_*`) run in real time with short intervals and
//! poll with deadlines.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use geobridge::api::{self, AppState};
use geobridge::app;
use geobridge::catalog::{Bridge, BridgeId, Catalog};
use geobridge::config::Settings;
use geobridge::geo::{CountryCode, Location, Point};
use geobridge::metrics::Metrics;
use geobridge::probe::{Cause, Health, HealthSnapshot, Outcome, Prober, State, Stats, Transport};
use geobridge::select::{self, Client, Decision, Ledger, Refusal, Survey};
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

fn settings(config: &str, dir: &tempfile::TempDir, env: &[(&str, &str)]) -> Settings {
    let path = dir.path().join("geobridge.toml");
    std::fs::write(&path, config).expect("write config");
    let database = repo_path("data/geobridge-city.mmdb");
    let mut vars = HashMap::from([
        ("GEOBRIDGE_JITSI_AUTH".to_owned(), "none".to_owned()),
        (
            "GEOBRIDGE_GEO_DATABASE".to_owned(),
            database.display().to_string(),
        ),
        (
            "GEOBRIDGE_STATE_DIR".to_owned(),
            dir.path().join("state").display().to_string(),
        ),
    ]);
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Settings::load(Some(&path), &vars).expect("valid settings")
}

/// The prober over scripted bridges, and the pure selection over what it publishes.
struct Probed {
    settings: Settings,
    catalog: Arc<ArcSwap<Catalog>>,
    health: Arc<ArcSwap<HealthSnapshot>>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Starts the prober on `config`'s bridges, asking `fakes`.
fn probe(config: &str, fakes: Arc<Fakes>) -> Probed {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = settings(config, &dir, &[]);
    let catalog = Arc::new(ArcSwap::from_pointee(settings.catalog.clone()));
    let health = Arc::new(ArcSwap::from_pointee(HealthSnapshot::default()));
    let prober = Prober {
        catalog: catalog.clone(),
        health: health.clone(),
        ready: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        config: settings.probe.clone(),
        metrics: Arc::new(Metrics::new().expect("metrics")),
    };
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(prober.run_with(fakes, stopped));
    Probed {
        settings,
        catalog,
        health,
        _stop: stop,
        _dir: dir,
    }
}

/// A client in London, as the database places UK addresses.
fn london() -> Location {
    Location {
        country: Some(CountryCode::parse("GB").expect("code")),
        continent: Some(CountryCode::parse("EU").expect("code")),
        subdivision: Some("England".to_owned()),
        point: Some(Point {
            latitude: 51.5,
            longitude: -0.12,
        }),
        accuracy_km: None,
        coarse: false,
    }
}

impl Probed {
    fn health(&self, bridge: &str) -> Health {
        let id = BridgeId::parse(bridge).expect("id");
        self.health.load().get(&id).cloned().unwrap_or_default()
    }

    /// Lets virtual time run in 50 ms steps until `check` holds; fails after `secs`.
    async fn until(&self, secs: u64, what: &str, mut check: impl FnMut(&Probed) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check(self) {
            assert!(Instant::now() < deadline, "no {what} within {secs} s");
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Chooses for a client in London on the latest snapshot, as the API does: expired
    /// reservations dropped, then `reserve` participants reserved on the bridge chosen.
    fn choose(&self, ledger: &mut Ledger, reserve: u32) -> Result<Decision, Refusal> {
        let policy = &self.settings.policy;
        let survey = Survey::build(self.catalog.load_full(), &self.health.load(), policy);
        let location = london();
        let client = Client {
            ip: None,
            location: Some(&location),
        };
        let now = Instant::now();
        ledger.expire(now);
        let decision = select::select_in(client, &survey, ledger.load_for(&survey), policy)?;
        if let Some(bridge) = &decision.bridge {
            ledger.reserve(bridge.clone(), reserve, now);
        }
        Ok(decision)
    }

    fn region(&self) -> String {
        let mut none = Ledger::new(Duration::ZERO);
        self.choose(&mut none, 0)
            .map(|d| d.region.to_string())
            .unwrap_or_default()
    }
}

/// geobridge in-process with its store, router and prober, in real time.
struct Served {
    state: Arc<AppState>,
    router: Router,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Starts geobridge on `config`, probing `fakes` every 200 ms.
async fn serve(config: &str, fakes: Arc<Fakes>) -> Served {
    let dir = tempfile::tempdir().expect("temp dir");
    let fast = [
        ("GEOBRIDGE_PROBE_INTERVAL_MS", "200"),
        ("GEOBRIDGE_PROBE_TIMEOUT_MS", "150"),
        ("GEOBRIDGE_PROBE_HOLD_DOWN_MS", "200"),
    ];
    let settings = settings(config, &dir, &fast);
    let state = app::prepare(&settings).await.expect("prepared");
    let prober = Prober {
        catalog: state.catalog.clone(),
        health: state.health.clone(),
        ready: state.ready.clone(),
        config: settings.probe.clone(),
        metrics: state.metrics.clone(),
    };
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(prober.run_with(fakes, stopped));
    Served {
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

impl Served {
    fn health(&self, bridge: &str) -> Health {
        let id = BridgeId::parse(bridge).expect("id");
        self.state
            .health
            .load()
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// Polls every 20 ms until `check` holds; fails after `secs`.
    async fn until(&self, secs: u64, what: &str, mut check: impl FnMut(&Served) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check(self) {
            assert!(Instant::now() < deadline, "no {what} within {secs} s");
            sleep(Duration::from_millis(20)).await;
        }
    }

    async fn call(&self, request: Request<Body>) -> (StatusCode, Value) {
        let (status, body) = self.call_text(request).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    async fn call_text(&self, mut request: Request<Body>) -> (StatusCode, String) {
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
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn select(&self, ip: &str) -> Value {
        let uri = format!("/v1/regions/select?ip={ip}");
        let request = Request::get(uri).body(Body::empty()).expect("request");
        self.call(request).await.1
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
        self.call_text(request).await.1
    }
}

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

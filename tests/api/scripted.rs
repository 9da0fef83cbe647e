//! Harness for `scenarios`: scripted fake Videobridges, the prober over them, and
//! geobridge in-process.
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
use geobridge::probe::{Cause, Health, HealthSnapshot, Outcome, Prober, Stats, Transport};
use geobridge::select::{self, Client, Decision, Ledger, Refusal, Survey};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tower::ServiceExt;

use crate::helpers::{example_config, fixture, repo_path};

/// An address in London.
pub const UK: &str = "81.2.69.142";

/// How a scripted bridge answers.
#[derive(Clone, Debug)]
pub enum Act {
    Stats(Stats),
    Unhealthy,
    Hang,
}

/// Scripted bridges: what each answers, and when each was asked.
#[derive(Default)]
pub struct Fakes {
    acts: Mutex<HashMap<String, Act>>,
    asked: Mutex<Vec<(String, Instant)>>,
}

impl Fakes {
    /// Makes `bridge` answer with `act` from now on.
    pub fn set(&self, bridge: &str, act: Act) {
        self.acts
            .lock()
            .expect("acts")
            .insert(bridge.to_owned(), act);
    }

    /// When `bridge` was asked, in order.
    pub fn asked(&self, bridge: &str) -> Vec<Instant> {
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

/// A stats fixture, parsed.
pub fn stats(name: &str) -> Stats {
    serde_json::from_str(&fixture(name)).expect("fixture parses")
}

/// Healthy idle stats with this stress level.
pub fn stress(level: f64) -> Act {
    Act::Stats(Stats {
        stress_level: level,
        ..stats("stats-idle.json")
    })
}

/// Settings from `config` with the shipped database, no tokens and `env` on top.
pub fn settings(config: &str, dir: &tempfile::TempDir, env: &[(&str, &str)]) -> Settings {
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
pub struct Probed {
    /// The settings it runs with.
    pub settings: Settings,
    catalog: Arc<ArcSwap<Catalog>>,
    health: Arc<ArcSwap<HealthSnapshot>>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Starts the prober on `config`'s bridges, asking `fakes`.
pub fn probe(config: &str, fakes: Arc<Fakes>) -> Probed {
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
pub fn london() -> Location {
    Location {
        country: Some(CountryCode::parse("GB").expect("code")),
        continent: Some(CountryCode::parse("EU").expect("code")),
        subdivision: Some("England".into()),
        point: Some(Point {
            latitude: 51.5,
            longitude: -0.12,
        }),
        accuracy_km: None,
        coarse: false,
    }
}

impl Probed {
    /// The latest published health of `bridge`.
    pub fn health(&self, bridge: &str) -> Health {
        let id = BridgeId::parse(bridge).expect("id");
        self.health.load().get(&id).cloned().unwrap_or_default()
    }

    /// Lets virtual time run in 50 ms steps until `check` holds; fails after `secs`.
    pub async fn until(&self, secs: u64, what: &str, mut check: impl FnMut(&Probed) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check(self) {
            assert!(Instant::now() < deadline, "no {what} within {secs} s");
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Chooses for a client in London on the latest snapshot, as the API does: expired
    /// reservations dropped, then `reserve` participants reserved on the bridge chosen.
    pub fn choose(&self, ledger: &mut Ledger, reserve: u32) -> Result<Decision, Refusal> {
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

    /// The region chosen for London with nothing reserved.
    pub fn region(&self) -> String {
        let mut none = Ledger::new(Duration::ZERO);
        self.choose(&mut none, 0)
            .map(|d| d.region.to_string())
            .unwrap_or_default()
    }
}

/// geobridge in-process with its store, router and prober, in real time.
pub struct Served {
    state: Arc<AppState>,
    router: Router,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Starts geobridge on `config`, probing `fakes` every 200 ms.
pub async fn serve(config: &str, fakes: Arc<Fakes>) -> Served {
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

/// A `[[bridges]]` entry.
pub fn bridge_toml(id: &str, region: &str) -> String {
    format!("\n[[bridges]]\nid = \"{id}\"\nregion = \"{region}\"\nurl = \"http://{id}.test\"\n")
}

/// The example configuration cut before its regions, with only these regions and bridges.
pub fn only_regions(regions: &[(&str, f64, f64)], bridges: &[(&str, &str)]) -> String {
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
    /// The latest published health of `bridge`.
    pub fn health(&self, bridge: &str) -> Health {
        let id = BridgeId::parse(bridge).expect("id");
        self.state
            .health
            .load()
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// Polls every 20 ms until `check` holds; fails after `secs`.
    pub async fn until(&self, secs: u64, what: &str, mut check: impl FnMut(&Served) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check(self) {
            assert!(Instant::now() < deadline, "no {what} within {secs} s");
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `request` through the router, as from 127.0.0.1; the answer as JSON.
    pub async fn call(&self, request: Request<Body>) -> (StatusCode, Value) {
        let (status, body) = self.call_text(request).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// Sends `request` through the router, as from 127.0.0.1; the answer as text.
    pub async fn call_text(&self, mut request: Request<Body>) -> (StatusCode, String) {
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

    /// `GET /v1/regions/select?ip=`.
    pub async fn select(&self, ip: &str) -> Value {
        let uri = format!("/v1/regions/select?ip={ip}");
        let request = Request::get(uri).body(Body::empty()).expect("request");
        self.call(request).await.1
    }

    /// `POST /v1/rooms` for `ip` expecting `participants`.
    pub async fn create_room(&self, ip: &str, participants: u32) -> (StatusCode, Value) {
        let body = json!({"user": {"id": "u-1", "name": "Ada"}, "client_ip": ip,
                          "participants": participants});
        let request = Request::post("/v1/rooms")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        self.call(request).await
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let request = Request::get("/metrics")
            .body(Body::empty())
            .expect("request");
        self.call_text(request).await.1
    }
}

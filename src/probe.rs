//! Bridge health: one task probes every bridge and publishes a [`HealthSnapshot`].
//!
//! Each round asks every bridge, concurrently and each after a small random delay, for
//! `GET /about/health` and (when enabled) `GET /colibri/stats`. A result moves the bridge's
//! state by rise and fall counts: an explicit "unhealthy" answer takes it down at once, while
//! timeouts, refused connections and garbage count towards the fall threshold. The prober is
//! the only writer of health; handlers read the latest snapshot without locking.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument;

use crate::catalog::{Bridge, BridgeId, Catalog};
use crate::metrics::Metrics;

/// How probing is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Time between rounds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Time one request to one bridge may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passes that bring a down bridge back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up bridge out.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Largest response body read from a bridge.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

fn default_interval_ms() -> u64 {
    5000
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_max_body_bytes() -> usize {
    256 * 1024
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            rise: default_rise(),
            fall: default_fall(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

impl Config {
    /// Lists what is wrong with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.interval_ms < 50 {
            problems.push(format!(
                "probe.interval_ms: {} is below 50",
                self.interval_ms
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms >= self.interval_ms {
            problems.push(format!(
                "probe.timeout_ms: {} must be above 0 and below interval_ms ({})",
                self.timeout_ms, self.interval_ms
            ));
        }
        if self.rise == 0 || self.fall == 0 {
            problems.push("probe.rise and probe.fall must be at least 1".to_owned());
        }
        if self.max_body_bytes < 1024 {
            problems.push(format!(
                "probe.max_body_bytes: {} is below 1024",
                self.max_body_bytes
            ));
        }
        problems
    }
}

/// What `/colibri/stats` says; unknown keys are ignored, missing ones are normal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// 0 idle, 1 at capacity; may exceed 1.
    pub stress_level: f64,
    /// The bridge asks for no new conferences.
    pub drain: bool,
    /// The bridge finishes its conferences and then exits.
    pub graceful_shutdown: bool,
    /// The bridge is about to exit.
    pub shutting_down: bool,
    /// The bridge's own health verdict, when it reports one.
    pub healthy: Option<bool>,
    /// The region the bridge says it is in.
    pub region: Option<String>,
    /// Software version.
    pub version: Option<String>,
    /// Participants on the bridge.
    pub participants: u64,
    /// Conferences on the bridge.
    pub conferences: u64,
}

/// Where a bridge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not probed yet.
    #[default]
    Unknown,
    /// Passing.
    Up,
    /// Failing.
    Down,
}

/// The health of one bridge.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Health {
    /// Up, down or unknown.
    pub state: State,
    /// Latest stats, when the bridge serves them.
    pub stats: Option<Stats>,
    /// True when the bridge answers 404 for stats: judged on health alone.
    pub stats_unavailable: bool,
    /// Why the latest probe failed, when it did.
    pub last_error: Option<String>,
    /// Passes in a row.
    pub passes: u32,
    /// Failures in a row.
    pub failures: u32,
}

impl Health {
    /// The latest stress level, 0 when the bridge serves no stats.
    pub fn stress(&self) -> f64 {
        self.stats.as_ref().map_or(0.0, |s| s.stress_level)
    }
}

/// Health of every bridge at one moment.
#[derive(Debug, Clone, Default)]
pub struct HealthSnapshot {
    bridges: HashMap<BridgeId, Health>,
    /// Completed probe rounds.
    pub rounds: u64,
}

impl HealthSnapshot {
    /// The health of a bridge; unknown when it was never probed.
    pub fn get(&self, id: &BridgeId) -> Option<&Health> {
        self.bridges.get(id)
    }

    /// Marks every bridge of `catalog` up with no stats; for the `lookup` command.
    pub fn all_up(catalog: &Catalog) -> HealthSnapshot {
        let up = Health {
            state: State::Up,
            ..Health::default()
        };
        let bridges = catalog
            .bridges()
            .iter()
            .map(|b| (b.id.clone(), up.clone()))
            .collect();
        HealthSnapshot { bridges, rounds: 0 }
    }

    /// Sets one bridge's health; for tests and benchmarks.
    pub fn insert(&mut self, id: BridgeId, health: Health) {
        self.bridges.insert(id, health);
    }
}

/// How one probe ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Healthy; stats when read.
    Pass(Option<Stats>),
    /// Healthy by `/about/health`, stats endpoint absent (404).
    PassNoStats,
    /// The bridge says it is unhealthy: down at once.
    Unhealthy(String),
    /// No usable answer (timeout, refused, garbage): counts towards the fall threshold.
    Failed(Cause, String),
}

/// Why a probe got no usable answer; a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The bridge did not answer in time.
    Timeout,
    /// No connection could be made.
    Connect,
    /// An unexpected status code.
    Status,
    /// The body was too large or not the expected JSON.
    Body,
}

impl Cause {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Timeout => "timeout",
            Cause::Connect => "connect",
            Cause::Status => "status",
            Cause::Body => "body",
        }
    }
}

/// Applies one outcome to a bridge's health, by the rise and fall rules.
pub fn apply(previous: &Health, outcome: Outcome, config: &Config) -> Health {
    let mut next = previous.clone();
    match outcome {
        Outcome::Pass(stats) => {
            next.stats = stats;
            next.stats_unavailable = false;
            pass(&mut next, config);
        }
        Outcome::PassNoStats => {
            next.stats = None;
            next.stats_unavailable = true;
            pass(&mut next, config);
        }
        Outcome::Unhealthy(why) => {
            next.passes = 0;
            next.failures = next.failures.saturating_add(1);
            next.state = State::Down;
            next.last_error = Some(why);
        }
        Outcome::Failed(_, why) => {
            next.passes = 0;
            next.failures = next.failures.saturating_add(1);
            if next.failures >= config.fall {
                next.state = State::Down;
                next.stats = None;
            }
            next.last_error = Some(why);
        }
    }
    next
}

fn pass(health: &mut Health, config: &Config) {
    health.failures = 0;
    health.passes = health.passes.saturating_add(1);
    health.last_error = None;
    // A bridge never seen before is trusted on its first pass; a down one must earn it.
    if health.state == State::Unknown || health.passes >= config.rise {
        health.state = State::Up;
    }
}

/// Asks one bridge for its health and stats.
pub async fn probe(client: &reqwest::Client, bridge: &Bridge, config: &Config) -> Outcome {
    let base = bridge.url.trim_end_matches('/');
    match fetch(client, &format!("{base}/about/health"), config).await {
        Ok((status, _)) if status.is_success() => {}
        Ok((status, body)) if status.is_server_error() => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Outcome::Unhealthy(format!("health answered {status}: {}", text.trim()));
        }
        Ok((status, _)) => {
            return Outcome::Failed(Cause::Status, format!("health answered {status}"));
        }
        Err(failure) => return failure,
    }
    if !bridge.stats {
        return Outcome::Pass(None);
    }
    match fetch(client, &format!("{base}/colibri/stats"), config).await {
        Ok((status, _)) if status == reqwest::StatusCode::NOT_FOUND => Outcome::PassNoStats,
        Ok((status, body)) if status.is_success() => match serde_json::from_slice::<Stats>(&body) {
            Ok(stats) if stats.healthy == Some(false) => {
                Outcome::Unhealthy("stats report healthy: false".to_owned())
            }
            Ok(stats) => Outcome::Pass(Some(stats)),
            Err(error) => {
                Outcome::Failed(Cause::Body, format!("stats are not valid JSON: {error}"))
            }
        },
        Ok((status, _)) => Outcome::Failed(Cause::Status, format!("stats answered {status}")),
        Err(failure) => failure,
    }
}

/// GETs `url`, reading at most `max_body_bytes`, all within `timeout_ms`.
async fn fetch(
    client: &reqwest::Client,
    url: &str,
    config: &Config,
) -> Result<(reqwest::StatusCode, Vec<u8>), Outcome> {
    let timeout = Duration::from_millis(config.timeout_ms);
    let request = async {
        let mut response = client.get(url).send().await.map_err(request_failure)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_failure)? {
            if body.len() + chunk.len() > config.max_body_bytes {
                let why = format!("body larger than {} bytes", config.max_body_bytes);
                return Err(Outcome::Failed(Cause::Body, why));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, request).await {
        Ok(result) => result,
        Err(_) => Err(Outcome::Failed(
            Cause::Timeout,
            format!("no answer in {timeout:?}"),
        )),
    }
}

fn request_failure(error: reqwest::Error) -> Outcome {
    let cause = if error.is_timeout() {
        Cause::Timeout
    } else if error.is_connect() {
        Cause::Connect
    } else {
        Cause::Body
    };
    Outcome::Failed(cause, error.to_string())
}

/// What the prober needs: where to read bridges and where to publish health.
pub struct Prober {
    /// The registry, read at the start of every round.
    pub catalog: Arc<ArcSwap<Catalog>>,
    /// Where snapshots are published.
    pub health: Arc<ArcSwap<HealthSnapshot>>,
    /// Set after the first complete round.
    pub ready: Arc<AtomicBool>,
    /// Probe settings.
    pub config: Config,
    /// Series to update.
    pub metrics: Arc<Metrics>,
}

impl Prober {
    /// Probes until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let client = match reqwest::Client::builder().no_proxy().build() {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "cannot build the HTTP client; bridges stay unknown");
                return;
            }
        };
        let interval = Duration::from_millis(self.config.interval_ms);
        loop {
            let started = tokio::time::Instant::now();
            tokio::select! {
                () = self.round(&client) => {}
                _ = shutdown.changed() => break,
            }
            self.ready.store(true, Ordering::Release);
            let pause = jittered(interval).saturating_sub(started.elapsed());
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => break,
            }
        }
        tracing::info!("prober stopped");
    }

    async fn round(&self, client: &reqwest::Client) {
        let catalog = self.catalog.load_full();
        let mut tasks = tokio::task::JoinSet::new();
        let spread = Duration::from_millis((self.config.interval_ms / 20).min(250));
        for bridge in catalog.bridges().iter().cloned() {
            let (client, config) = (client.clone(), self.config.clone());
            let span = tracing::debug_span!("probe", bridge.id = %bridge.id);
            tasks.spawn(
                async move {
                    // Spread the round so every bridge is not asked at the same instant.
                    tokio::time::sleep(random_below(spread)).await;
                    let started = std::time::Instant::now();
                    let outcome = probe(&client, &bridge, &config).await;
                    (bridge, outcome, started.elapsed())
                }
                .instrument(span),
            );
        }
        let previous = self.health.load_full();
        let mut next = HealthSnapshot {
            bridges: HashMap::new(),
            rounds: previous.rounds + 1,
        };
        while let Some(joined) = tasks.join_next().await {
            let Ok((bridge, outcome, took)) = joined else {
                continue;
            };
            self.metrics.observe_probe(&bridge, &outcome, took);
            let before = previous.get(&bridge.id).cloned().unwrap_or_default();
            let after = apply(&before, outcome, &self.config);
            log_change(&bridge, &before, &after);
            self.metrics.set_bridge_health(&bridge, &after);
            next.bridges.insert(bridge.id.clone(), after);
        }
        self.health.store(Arc::new(next));
    }
}

fn log_change(bridge: &Bridge, before: &Health, after: &Health) {
    if before.state == after.state {
        return;
    }
    let (from, to) = (before.state, after.state);
    match (to, &after.last_error) {
        (State::Down, Some(error)) => tracing::warn!(
            bridge.id = %bridge.id, region = %bridge.region, ?from, ?to, %error,
            "bridge state changed"
        ),
        _ => tracing::info!(
            bridge.id = %bridge.id, region = %bridge.region, ?from, ?to, "bridge state changed"
        ),
    }
}

/// `base` plus or minus up to 10%, so instances do not probe in lockstep.
fn jittered(base: Duration) -> Duration {
    let tenth = base / 10;
    base - tenth + random_below(tenth * 2)
}

fn random_below(limit: Duration) -> Duration {
    let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::random_range(0..nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            rise: 2,
            fall: 3,
            ..Config::default()
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed(Cause::Timeout, "no answer".to_owned())
    }

    /// An up bridge survives fall-1 failures and goes down on the fall-th.
    #[test]
    fn fall_count_takes_a_bridge_down() {
        let mut h = apply(&Health::default(), Outcome::Pass(None), &config());
        assert_eq!(h.state, State::Up);
        for _ in 0..2 {
            h = apply(&h, failed(), &config());
            assert_eq!(h.state, State::Up);
        }
        h = apply(&h, failed(), &config());
        assert_eq!(h.state, State::Down);
    }

    /// A down bridge needs the rise count of passes; an explicit unhealthy is immediate.
    #[test]
    fn rise_count_and_explicit_unhealthy() {
        let up = apply(&Health::default(), Outcome::Pass(None), &config());
        let down = apply(&up, Outcome::Unhealthy("500".to_owned()), &config());
        assert_eq!(down.state, State::Down);
        let once = apply(&down, Outcome::Pass(None), &config());
        assert_eq!(once.state, State::Down);
        let twice = apply(&once, Outcome::PassNoStats, &config());
        assert_eq!(twice.state, State::Up);
        assert!(twice.stats_unavailable);
    }

    /// Every fixture of a real bridge's stats parses, unknown keys ignored.
    #[test]
    fn stats_fixtures_parse() {
        let busy: Stats = serde_json::from_str(
            r#"{"stress_level":0.83,"drain":false,"healthy":true,"region":"eu-central",
                "participants":214,"conferences":37,"unknown_counter":5}"#,
        )
        .expect("parses");
        assert_eq!(busy.stress_level, 0.83);
        assert_eq!(busy.region.as_deref(), Some("eu-central"));
        let minimal: Stats =
            serde_json::from_str(r#"{"stress_level":0.3,"conferences":4}"#).expect("parses");
        assert_eq!(minimal.healthy, None);
        assert!(!minimal.shutting_down);
    }
}

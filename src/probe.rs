//! Bridge health: every bridge probed on its own schedule, one writer, a [`HealthSnapshot`].
//!
//! Each bridge has a task of its own that asks it for `GET /about/health` and (when enabled)
//! `GET /colibri/stats` once per interval plus a few milliseconds of jitter, and again soon
//! after its state changed. A slow or hanging bridge therefore delays only its own task. The
//! results go to one writer, the [`Prober`], which moves each bridge between `unknown`, `up`
//! and `down` by [`apply`] and publishes snapshots that handlers read without locking:
//!
//! - an explicit "unhealthy" (5xx from `/about/health`, `healthy: false`) is down at once;
//! - timeouts, refused connections and unreadable answers count towards `fall`;
//! - coming back takes `rise` passes in a row *and* the end of a hold-down that doubles with
//!   each flap (capped, jittered), so a flapping bridge does not take rooms every minute;
//! - a bridge with no result for three intervals is `unknown` again; down bridges are probed
//!   forever, never forgotten.

mod http;
mod schedule;

pub use http::Http;
pub use schedule::{Prober, Transport};

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::catalog::{BridgeId, Catalog};

/// A bridge with no result for this many intervals is `unknown` again.
pub const STALE_INTERVALS: u32 = 3;

/// How probing is done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Time between two probes of one bridge.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Time one probe (health and stats together) may take.
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
    /// Hold-down after a bridge's first fall; it doubles with each further flap.
    #[serde(default = "default_hold_down_ms")]
    pub hold_down_ms: u64,
    /// Longest hold-down, however often a bridge flaps.
    #[serde(default = "default_max_hold_down_ms")]
    pub max_hold_down_ms: u64,
    /// Largest random delay added to each probe, so bridges are not asked in lockstep.
    #[serde(default = "default_jitter_ms")]
    pub jitter_ms: u64,
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
fn default_hold_down_ms() -> u64 {
    60_000
}
fn default_max_hold_down_ms() -> u64 {
    600_000
}
fn default_jitter_ms() -> u64 {
    20
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            rise: default_rise(),
            fall: default_fall(),
            max_body_bytes: default_max_body_bytes(),
            hold_down_ms: default_hold_down_ms(),
            max_hold_down_ms: default_max_hold_down_ms(),
            jitter_ms: default_jitter_ms(),
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
        if self.hold_down_ms > self.max_hold_down_ms {
            problems.push(format!(
                "probe.hold_down_ms: {} is above max_hold_down_ms ({})",
                self.hold_down_ms, self.max_hold_down_ms
            ));
        }
        if self.jitter_ms > self.interval_ms / 10 {
            problems.push(format!(
                "probe.jitter_ms: {} is above a tenth of interval_ms ({})",
                self.jitter_ms, self.interval_ms
            ));
        }
        problems
    }

    /// Time between two probes of one bridge.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Delay of the quick re-check after a state change: a quarter interval.
    pub fn recheck(&self) -> Duration {
        self.interval() / 4
    }
}

/// What `/colibri/stats` says; unknown keys are ignored, missing ones are normal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// 0 idle, 1 at capacity; may exceed 1. A negative value (a bridge's bug) reads as 0,
    /// so it cannot rank a bridge above an idle one.
    #[serde(deserialize_with = "non_negative")]
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

fn non_negative<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let x = f64::deserialize(d)?;
    Ok(if x > 0.0 { x } else { 0.0 })
}

/// Where a bridge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Never probed, or no result for three intervals.
    #[default]
    Unknown,
    /// Passing.
    Up,
    /// Failing, or passing but not yet for long enough.
    Down,
}

/// The health of one bridge.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Health {
    /// Up, down or unknown.
    pub state: State,
    /// Latest stats, when the bridge serves them; its flags follow the latest answer.
    pub stats: Option<Stats>,
    /// True when the bridge answers 404 for stats: judged on health alone.
    pub stats_unavailable: bool,
    /// True when the region in its stats is not the region it is registered in.
    pub region_mismatch: bool,
    /// Why the latest probe failed, when it did.
    pub last_error: Option<String>,
    /// Passes in a row.
    pub passes: u32,
    /// Failures in a row.
    pub failures: u32,
    /// Times it went down; each one doubles the next hold-down.
    pub flaps: u32,
    /// Length of the latest hold-down.
    pub hold_down_ms: u64,
    /// A down bridge stays down until then, however well it answers.
    #[serde(skip)]
    pub held_until: Option<Instant>,
    /// When the latest probe result arrived.
    #[serde(skip)]
    pub checked_at: Option<Instant>,
    /// When it last came up.
    #[serde(skip)]
    pub up_since: Option<Instant>,
}

impl Health {
    /// The latest stress level, 0 when the bridge serves no stats.
    pub fn stress(&self) -> f64 {
        self.stats.as_ref().map_or(0.0, |s| s.stress_level)
    }

    /// A bridge that is up with these stats; for tests and benchmarks.
    pub fn up(stats: Option<Stats>) -> Health {
        Health {
            state: State::Up,
            stats,
            ..Health::default()
        }
    }
}

/// Health of every bridge at one moment.
#[derive(Debug, Clone, Default)]
pub struct HealthSnapshot {
    bridges: HashMap<BridgeId, Health>,
    /// Snapshots published before this one.
    pub generation: u64,
}

impl HealthSnapshot {
    /// The health of a bridge; `None` when it was never probed.
    pub fn get(&self, id: &BridgeId) -> Option<&Health> {
        self.bridges.get(id)
    }

    /// Marks every bridge of `catalog` up with no stats; for the `lookup` command.
    pub fn all_up(catalog: &Catalog) -> HealthSnapshot {
        let bridges = catalog
            .bridges()
            .iter()
            .map(|b| (b.id.clone(), Health::up(None)))
            .collect();
        HealthSnapshot {
            bridges,
            generation: 0,
        }
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
    /// The bridge says it is unhealthy: down at once. Stats when it sent them.
    Unhealthy(String, Option<Stats>),
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

/// When a result is applied, and a random draw in `0..1` for the hold-down's jitter; passed
/// in so that [`apply`] reads no clock and no random source.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    /// Now.
    pub now: Instant,
    /// Uniform in `0..1`.
    pub draw: f64,
}

/// Applies one outcome to a bridge's health, by the rise, fall and hold-down rules.
pub fn apply(previous: &Health, outcome: Outcome, config: &Config, at: Moment) -> Health {
    let mut next = previous.clone();
    next.checked_at = Some(at.now);
    match outcome {
        Outcome::Pass(stats) => {
            next.stats = stats;
            next.stats_unavailable = false;
            pass(&mut next, config, at.now);
        }
        Outcome::PassNoStats => {
            next.stats = None;
            next.stats_unavailable = true;
            pass(&mut next, config, at.now);
        }
        Outcome::Unhealthy(why, stats) => {
            if stats.is_some() {
                next.stats = stats;
            }
            fail(&mut next, why, true, config, at);
        }
        Outcome::Failed(_, why) => fail(&mut next, why, false, config, at),
    }
    next
}

fn pass(health: &mut Health, config: &Config, now: Instant) {
    health.failures = 0;
    health.passes = health.passes.saturating_add(1);
    health.last_error = None;
    let held = health.held_until.is_some_and(|until| now < until);
    // A bridge never seen failing is trusted on its first pass; a failed one must earn it.
    let earned = health.held_until.is_none() || health.passes >= config.rise;
    if health.state != State::Up && earned && !held {
        health.state = State::Up;
        health.up_since = Some(now);
    }
}

fn fail(health: &mut Health, why: String, explicit: bool, config: &Config, at: Moment) {
    health.passes = 0;
    health.failures = health.failures.saturating_add(1);
    health.last_error = Some(why);
    if health.state == State::Down || !(explicit || health.failures >= config.fall) {
        return;
    }
    if !explicit {
        health.stats = None;
    }
    // A bridge that stayed up longer than the longest hold-down has its flaps forgiven.
    let max = Duration::from_millis(config.max_hold_down_ms);
    if health
        .up_since
        .is_some_and(|t| at.now.duration_since(t) >= max)
    {
        health.flaps = 0;
    }
    health.flaps = health.flaps.saturating_add(1);
    health.hold_down_ms = hold_down_ms(health.flaps, config, at.draw);
    health.held_until = Some(at.now + Duration::from_millis(health.hold_down_ms));
    health.state = State::Down;
    health.up_since = None;
}

/// The hold-down after the `flaps`-th fall: doubling from `hold_down_ms`, ±10% by `draw`,
/// never above `max_hold_down_ms`.
pub fn hold_down_ms(flaps: u32, config: &Config, draw: f64) -> u64 {
    let doublings = flaps.saturating_sub(1).min(30);
    let base = config.hold_down_ms.saturating_mul(1 << doublings) as f64;
    let jittered = base * (0.9 + 0.2 * draw.clamp(0.0, 1.0));
    (jittered as u64).min(config.max_hold_down_ms)
}

/// The health of a bridge whose latest result is too old at `now`, if it is.
pub fn expire(health: &Health, config: &Config, now: Instant) -> Option<Health> {
    let stale_after = config.interval() * STALE_INTERVALS;
    let checked = health.checked_at?;
    if health.state == State::Unknown || now.duration_since(checked) < stale_after {
        return None;
    }
    let mut next = health.clone();
    next.state = State::Unknown;
    next.passes = 0;
    next.up_since = None;
    next.last_error = Some(format!(
        "no probe result for {} ms",
        now.duration_since(checked).as_millis()
    ));
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            rise: 2,
            fall: 3,
            hold_down_ms: 60_000,
            max_hold_down_ms: 600_000,
            ..Config::default()
        }
    }

    fn failed() -> Outcome {
        Outcome::Failed(Cause::Timeout, "no answer".to_owned())
    }

    fn unhealthy() -> Outcome {
        Outcome::Unhealthy("500".to_owned(), None)
    }

    fn at(start: Instant, secs: u64) -> Moment {
        Moment {
            now: start + Duration::from_secs(secs),
            draw: 0.5,
        }
    }

    /// An up bridge survives fall-1 failures and goes down on the fall-th.
    #[test]
    fn fall_count_takes_a_bridge_down() {
        let t = Instant::now();
        let mut h = apply(&Health::default(), Outcome::Pass(None), &config(), at(t, 0));
        assert_eq!(h.state, State::Up);
        for s in 1..=2 {
            h = apply(&h, failed(), &config(), at(t, s));
            assert_eq!(h.state, State::Up);
        }
        h = apply(&h, failed(), &config(), at(t, 3));
        assert_eq!((h.state, h.flaps, h.hold_down_ms), (State::Down, 1, 60_000));
    }

    /// A down bridge needs the rise count of passes and the end of its hold-down; an
    /// explicit unhealthy is immediate.
    #[test]
    fn rise_count_and_hold_down() {
        let t = Instant::now();
        let up = apply(&Health::default(), Outcome::Pass(None), &config(), at(t, 0));
        let down = apply(&up, unhealthy(), &config(), at(t, 1));
        assert_eq!(down.state, State::Down);
        let once = apply(&down, Outcome::Pass(None), &config(), at(t, 2));
        let twice = apply(&once, Outcome::PassNoStats, &config(), at(t, 3));
        assert_eq!(
            (once.state, twice.state),
            (State::Down, State::Down),
            "held"
        );
        let late = apply(&twice, Outcome::PassNoStats, &config(), at(t, 61));
        assert_eq!(late.state, State::Up);
        assert!(late.stats_unavailable);
        let reset = apply(&down, Outcome::Pass(None), &config(), at(t, 61));
        assert_eq!(reset.state, State::Down, "one pass is below the rise count");
    }

    /// Each flap doubles the hold-down up to the cap; a long stable run forgives flaps.
    #[test]
    fn hold_down_grows_per_flap_and_is_capped() {
        let t = Instant::now();
        let mut h = apply(&Health::default(), Outcome::Pass(None), &config(), at(t, 0));
        let mut clock = 0;
        let mut seen = Vec::new();
        for _ in 0..6 {
            clock += 1;
            h = apply(&h, unhealthy(), &config(), at(t, clock));
            seen.push(h.hold_down_ms);
            clock += h.hold_down_ms / 1000;
            for _ in 0..2 {
                h = apply(&h, Outcome::Pass(None), &config(), at(t, clock));
            }
            assert_eq!(h.state, State::Up);
        }
        assert_eq!(seen, [60_000, 120_000, 240_000, 480_000, 600_000, 600_000]);
        clock += 600;
        h = apply(&h, unhealthy(), &config(), at(t, clock));
        assert_eq!((h.flaps, h.hold_down_ms), (1, 60_000));
    }

    /// The hold-down jitter stays within ±10% and under the cap.
    #[test]
    fn hold_down_jitter_is_bounded() {
        let c = config();
        assert_eq!(hold_down_ms(1, &c, 0.0), 54_000);
        assert_eq!(hold_down_ms(1, &c, 1.0), 66_000);
        assert_eq!(hold_down_ms(9, &c, 1.0), 600_000);
    }

    /// No result for three intervals makes a bridge unknown; a recent one does not.
    #[test]
    fn stale_bridge_becomes_unknown() {
        let t = Instant::now();
        let c = config();
        let up = apply(&Health::default(), Outcome::Pass(None), &c, at(t, 0));
        assert_eq!(expire(&up, &c, t + Duration::from_millis(14_999)), None);
        let stale = expire(&up, &c, t + Duration::from_secs(15)).expect("stale");
        assert_eq!(stale.state, State::Unknown);
        let back = apply(&stale, Outcome::Pass(None), &c, at(t, 16));
        assert_eq!(
            back.state,
            State::Up,
            "never failed: trusted on its first pass"
        );
    }

    /// Flags follow the latest stats: a bridge that was shutting down and restarted is
    /// usable again.
    #[test]
    fn flags_follow_latest_stats() {
        let t = Instant::now();
        let closing = Stats {
            shutting_down: true,
            ..Stats::default()
        };
        let h = apply(
            &Health::default(),
            Outcome::Pass(Some(closing)),
            &config(),
            at(t, 0),
        );
        let h = apply(
            &h,
            Outcome::Pass(Some(Stats::default())),
            &config(),
            at(t, 5),
        );
        assert!(!h.stats.expect("stats").shutting_down);
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
        let confused: Stats = serde_json::from_str(r#"{"stress_level":-0.0004}"#).expect("parses");
        assert_eq!(confused.stress_level.to_bits(), 0.0f64.to_bits());
        assert_eq!(busy.region.as_deref(), Some("eu-central"));
        let minimal: Stats =
            serde_json::from_str(r#"{"stress_level":0.3,"conferences":4}"#).expect("parses");
        assert_eq!(minimal.healthy, None);
        assert!(!minimal.shutting_down);
    }
}

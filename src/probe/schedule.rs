//! The schedule: one task per bridge that probes it, and one writer that owns all health.
//!
//! A bridge task sleeps until its next due time, probes within the timeout and reports to
//! the writer over a channel; it never waits for any other bridge. The writer applies reports
//! in arrival order, notices a state change and asks that bridge for a quick re-check, marks
//! bridges with no recent result unknown, follows catalog changes, and publishes snapshots:
//! at once after a state change, else at most every few tens of milliseconds.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

use super::{Cause, Config, Health, HealthSnapshot, Http, Moment, Outcome, State, apply, expire};
use crate::catalog::{Bridge, BridgeId, Catalog};
use crate::metrics::Metrics;

/// Longest time a stats-only change waits before it is published.
const PUBLISH_DELAY: Duration = Duration::from_millis(50);

/// How a bridge is asked for its health; HTTP in service, scripted in tests.
pub trait Transport: Send + Sync + 'static {
    /// Probes `bridge` once; the caller bounds the time it may take.
    fn probe(&self, bridge: &Bridge) -> impl Future<Output = Outcome> + Send;
}

/// What the prober needs: where to read bridges and where to publish health.
pub struct Prober {
    /// The registry; changes are followed within one interval.
    pub catalog: Arc<ArcSwap<Catalog>>,
    /// Where snapshots are published.
    pub health: Arc<ArcSwap<HealthSnapshot>>,
    /// Set once every bridge has its first result.
    pub ready: Arc<AtomicBool>,
    /// Probe settings.
    pub config: Config,
    /// Series to update.
    pub metrics: Arc<Metrics>,
}

impl Prober {
    /// Probes over HTTP until `shutdown` turns true.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        match Http::new(self.config.max_body_bytes) {
            Ok(http) => self.run_with(Arc::new(http), shutdown).await,
            Err(error) => {
                tracing::error!(%error, "cannot build the HTTP client; bridges stay unknown");
            }
        }
    }

    /// Probes through `transport` until `shutdown` turns true or its sender is dropped.
    pub async fn run_with<T: Transport>(
        self,
        transport: Arc<T>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut tick = tokio::time::interval(self.config.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut writer = Writer::new(self, transport, tx);
        let mut publish_at: Option<Instant> = None;
        loop {
            let publish = sleep_until(publish_at.unwrap_or_else(Instant::now));
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(report) = rx.recv() => {
                    let mut changed = writer.take(report);
                    while let Ok(report) = rx.try_recv() {
                        changed |= writer.take(report);
                    }
                    if changed {
                        writer.publish();
                        publish_at = None;
                    } else {
                        let delay = PUBLISH_DELAY.min(writer.config().interval() / 10);
                        publish_at.get_or_insert_with(|| Instant::now() + delay);
                    }
                }
                () = publish, if publish_at.is_some() => {
                    writer.publish();
                    publish_at = None;
                }
                _ = tick.tick() => {
                    writer.reconcile();
                    writer.sweep();
                }
            }
        }
        tracing::info!("prober stopped");
    }
}

/// A probe result on its way to the writer.
struct Report {
    id: BridgeId,
    serial: u64,
    outcome: Outcome,
    lateness: Duration,
    took: Duration,
}

/// One bridge as the writer tracks it.
struct Slot {
    bridge: Bridge,
    health: Health,
    serial: u64,
    recheck: Arc<Notify>,
    task: JoinHandle<()>,
}

/// The only owner of health.
struct Writer<T> {
    prober: Prober,
    transport: Arc<T>,
    tx: mpsc::Sender<Report>,
    slots: HashMap<BridgeId, Slot>,
    seen: Option<Arc<Catalog>>,
    serial: u64,
    generation: u64,
}

impl<T> Drop for Writer<T> {
    fn drop(&mut self) {
        for slot in self.slots.values() {
            slot.task.abort();
        }
    }
}

impl<T: Transport> Writer<T> {
    fn new(prober: Prober, transport: Arc<T>, tx: mpsc::Sender<Report>) -> Writer<T> {
        let mut writer = Writer {
            prober,
            transport,
            tx,
            slots: HashMap::new(),
            seen: None,
            serial: 0,
            generation: 0,
        };
        writer.reconcile();
        writer
    }

    fn config(&self) -> &Config {
        &self.prober.config
    }

    /// Starts tasks for new or changed bridges and stops those of removed ones.
    fn reconcile(&mut self) {
        let catalog = self.prober.catalog.load_full();
        if self.seen.as_ref().is_some_and(|c| Arc::ptr_eq(c, &catalog)) {
            return;
        }
        let mut slots = HashMap::with_capacity(catalog.bridges().len());
        for bridge in catalog.bridges() {
            let kept = self.slots.remove(&bridge.id);
            let slot = match kept {
                Some(slot) if slot.bridge == *bridge => slot,
                other => {
                    let health = other.map(|slot| {
                        slot.task.abort();
                        slot.health
                    });
                    self.start(bridge.clone(), health.unwrap_or_default())
                }
            };
            slots.insert(bridge.id.clone(), slot);
        }
        for gone in self.slots.values() {
            gone.task.abort();
        }
        self.slots = slots;
        self.seen = Some(catalog);
        self.publish();
    }

    fn start(&mut self, bridge: Bridge, health: Health) -> Slot {
        self.serial += 1;
        let recheck = Arc::new(Notify::new());
        let span = tracing::debug_span!("probe", bridge.id = %bridge.id);
        let task = tokio::spawn(
            watch_bridge(
                bridge.clone(),
                self.serial,
                self.transport.clone(),
                self.prober.config.clone(),
                recheck.clone(),
                self.tx.clone(),
            )
            .instrument(span),
        );
        Slot {
            bridge,
            health,
            serial: self.serial,
            recheck,
            task,
        }
    }

    /// Applies one report; true when the bridge's state changed.
    fn take(&mut self, report: Report) -> bool {
        let config = self.prober.config.clone();
        let metrics = self.prober.metrics.clone();
        let Some(slot) = self.slots.get_mut(&report.id) else {
            return false;
        };
        if slot.serial != report.serial {
            return false;
        }
        metrics.observe_probe(&slot.bridge, &report.outcome, report.took, report.lateness);
        let at = Moment {
            now: Instant::now(),
            draw: rand::random::<f64>(),
        };
        let mut after = apply(&slot.health, report.outcome, &config, at);
        after.region_mismatch = mismatch(&slot.bridge, &after);
        note_changes(&slot.bridge, &slot.health, &after, &metrics);
        let changed = after.state != slot.health.state;
        slot.health = after;
        if changed {
            slot.recheck.notify_one();
        }
        changed
    }

    /// Marks bridges with no recent result unknown.
    fn sweep(&mut self) {
        let now = Instant::now();
        let mut changed = false;
        for slot in self.slots.values_mut() {
            if let Some(after) = expire(&slot.health, &self.prober.config, now) {
                note_changes(&slot.bridge, &slot.health, &after, &self.prober.metrics);
                slot.health = after;
                changed = true;
            }
        }
        if changed {
            self.publish();
        }
    }

    fn publish(&mut self) {
        self.generation += 1;
        let bridges = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.health.checked_at.is_some())
            .map(|(id, slot)| (id.clone(), slot.health.clone()))
            .collect();
        let snapshot = HealthSnapshot {
            bridges,
            generation: self.generation,
        };
        self.prober.health.store(Arc::new(snapshot));
        let ready = &self.prober.ready;
        if !ready.load(Ordering::Acquire)
            && self.slots.values().all(|s| s.health.checked_at.is_some())
        {
            ready.store(true, Ordering::Release);
        }
    }
}

/// True when the bridge reports a region other than the one it is registered in.
fn mismatch(bridge: &Bridge, health: &Health) -> bool {
    let reported = health.stats.as_ref().and_then(|s| s.region.as_deref());
    reported.is_some_and(|r| r != bridge.region.as_str())
}

/// Logs what changed between two healths of one bridge and updates its series.
fn note_changes(bridge: &Bridge, before: &Health, after: &Health, metrics: &Metrics) {
    metrics.set_bridge_health(bridge, after);
    let (id, region) = (&bridge.id, &bridge.region);
    if after.region_mismatch && !before.region_mismatch {
        let reported = after.stats.as_ref().and_then(|s| s.region.as_deref());
        tracing::warn!(
            bridge.id = %id, %region, reported = reported.unwrap_or(""),
            "bridge reports another region than it is registered in; using the registered one"
        );
    }
    if after.stats_unavailable && !before.stats_unavailable {
        tracing::info!(
            bridge.id = %id, %region,
            "bridge serves no stats (404); judged on health alone"
        );
    }
    if before.state == after.state {
        return;
    }
    let (from, to) = (before.state, after.state);
    match (to, &after.last_error) {
        (State::Up, _) => {
            tracing::info!(bridge.id = %id, %region, ?from, ?to, "bridge state changed")
        }
        (_, error) => tracing::warn!(
            bridge.id = %id, %region, ?from, ?to, error = error.as_deref().unwrap_or(""),
            hold_down_ms = after.hold_down_ms, "bridge state changed"
        ),
    }
}

/// Probes one bridge forever: at its due time, within the timeout, then reports.
async fn watch_bridge<T: Transport>(
    bridge: Bridge,
    serial: u64,
    transport: Arc<T>,
    config: Config,
    recheck: Arc<Notify>,
    tx: mpsc::Sender<Report>,
) {
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut base = Instant::now();
    let mut due = base + jitter(config.jitter_ms);
    let mut first = true;
    loop {
        tokio::select! {
            () = sleep_until(due) => {}
            () = recheck.notified() => {
                let soon = Instant::now() + config.recheck();
                if soon < due {
                    (base, due) = (soon, soon);
                }
                continue;
            }
        }
        let started = Instant::now();
        let outcome = match tokio::time::timeout(timeout, transport.probe(&bridge)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed(Cause::Timeout, format!("no answer in {timeout:?}")),
        };
        let report = Report {
            id: bridge.id.clone(),
            serial,
            outcome,
            lateness: started.saturating_duration_since(due),
            took: started.elapsed(),
        };
        if tx.send(report).await.is_err() {
            return;
        }
        // After the first probe, bridges spread over the interval instead of moving together.
        let spread = if first {
            rand::random::<f64>() / 2.0
        } else {
            0.0
        };
        first = false;
        base = (base + config.interval().mul_f64(1.0 - spread)).max(Instant::now());
        due = base + jitter(config.jitter_ms);
    }
}

/// A random delay below `limit_ms` milliseconds.
fn jitter(limit_ms: u64) -> Duration {
    if limit_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::random_range(0..limit_ms * 1000))
}

//! Every Prometheus series geobridge exports, declared once with its help text.
//!
//! Labels are bounded: route templates, regions, bridge ids, reasons and outcomes. Client
//! addresses, room names and user ids never become labels.

use std::collections::HashSet;
use std::time::Duration;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::catalog::{Bridge, Catalog};
use crate::probe::{Health, Outcome, State};

const NAMESPACE: &str = "geobridge";

/// Every value of `geo_lookups_total{outcome}`.
pub const GEO_OUTCOMES: [&str; 5] = ["located", "coarse", "no_data", "private", "pinned"];

/// Every value of `refusals_total{cause}`.
const REFUSAL_CAUSES: [&str; 2] = ["nothing_left", "all_down"];

/// Every value of `region_state{state}`.
pub const REGION_STATES: [&str; 3] = ["eligible", "degraded", "none"];

/// The registry and its series.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route template, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP request latency by route template.
    pub http_duration: HistogramVec,
    /// Decisions by region, reason and tier.
    pub decisions: IntCounterVec,
    /// Refused selections by cause.
    pub refusals: IntCounterVec,
    /// GeoIP lookups by outcome.
    pub geo_lookups: IntCounterVec,
    /// Build time of the GeoIP database in service.
    pub geo_build_time: IntGauge,
    /// GeoIP database reloads by outcome.
    pub geo_reloads: IntCounterVec,
    /// 1 while the GeoIP database in service failed its full check at start-up.
    pub geo_damaged: IntGauge,
    /// 1 while the last read of the registry's version from the store succeeded.
    pub store_up: IntGauge,
    /// Requests refused because too many were in flight.
    pub overloaded: prometheus::IntCounter,
    /// Requests being served now (health and metrics routes not counted).
    pub in_flight: IntGauge,
    /// Tokens issued by region and key id.
    pub tokens: IntCounterVec,
    /// 1 when a bridge is up.
    bridge_up: IntGaugeVec,
    /// Latest stress per bridge.
    bridge_stress: GaugeVec,
    /// Latest participant count per bridge.
    bridge_participants: IntGaugeVec,
    /// Probe latency.
    probe_duration: HistogramVec,
    /// Failed probes by bridge and cause.
    probe_failures: IntCounterVec,
    /// How late probes start against their schedule.
    pub probe_lateness: Histogram,
    /// 1 while a bridge reports a region other than its registered one.
    bridge_region_mismatch: IntGaugeVec,
    /// Decisions taken below the eligible tier, by region and tier.
    pub degraded_decisions: IntCounterVec,
    /// Build information.
    build_info: IntGaugeVec,
    /// Signing key reloads by outcome.
    pub key_reloads: IntCounterVec,
    /// Credential file reloads by outcome.
    pub credential_reloads: IntCounterVec,
    /// Time to sign one token.
    pub signing_duration: Histogram,
    /// Rooms not yet expired, as the store counts them.
    pub rooms_alive: IntGauge,
    /// Bridges registered per region.
    region_bridges: IntGaugeVec,
    /// Eligible bridges per region.
    region_eligible: IntGaugeVec,
    /// 1 for the state a region is in (eligible, degraded, none).
    region_state: IntGaugeVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

impl Metrics {
    /// Creates and registers every series.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let m = Metrics {
            registry: Registry::new(),
            http_requests: IntCounterVec::new(
                opts(
                    "http_requests_total",
                    "HTTP requests by route template and status.",
                ),
                &["route", "method", "status"],
            )?,
            http_duration: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "HTTP request latency by route template.",
                )
                .namespace(NAMESPACE)
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ]),
                &["route"],
            )?,
            decisions: IntCounterVec::new(
                opts(
                    "decisions_total",
                    "Region decisions by region, reason and tier.",
                ),
                &["region", "reason", "tier"],
            )?,
            refusals: IntCounterVec::new(
                opts(
                    "refusals_total",
                    "Selections that found no usable region, by cause.",
                ),
                &["cause"],
            )?,
            geo_lookups: IntCounterVec::new(
                opts("geo_lookups_total", "GeoIP lookups by outcome."),
                &["outcome"],
            )?,
            geo_build_time: IntGauge::with_opts(opts(
                "geo_database_build_timestamp_seconds",
                "Build time of the GeoIP database in service.",
            ))?,
            geo_reloads: IntCounterVec::new(
                opts(
                    "geo_reloads_total",
                    "GeoIP database reloads by outcome (loaded, rejected).",
                ),
                &["outcome"],
            )?,
            geo_damaged: IntGauge::with_opts(opts(
                "geo_database_damaged",
                "1 while the GeoIP database in service failed its full check at start-up.",
            ))?,
            store_up: IntGauge::with_opts(opts(
                "store_up",
                "1 while the database answered the last poll of the registry, else 0.",
            ))?,
            overloaded: prometheus::IntCounter::with_opts(opts(
                "requests_rejected_overload_total",
                "Requests answered 503 because too many were in flight.",
            ))?,
            in_flight: IntGauge::with_opts(opts(
                "http_requests_in_flight",
                "Requests being served now, health and metrics routes not counted.",
            ))?,
            tokens: IntCounterVec::new(
                opts("tokens_issued_total", "Tokens issued by region and key id."),
                &["region", "kid"],
            )?,
            bridge_up: IntGaugeVec::new(
                opts(
                    "bridge_up",
                    "1 when the bridge passes its health checks, else 0.",
                ),
                &["bridge", "region"],
            )?,
            bridge_stress: GaugeVec::new(
                opts(
                    "bridge_stress",
                    "Latest stress level reported by the bridge.",
                ),
                &["bridge", "region"],
            )?,
            bridge_participants: IntGaugeVec::new(
                opts(
                    "bridge_participants",
                    "Latest participant count reported by the bridge.",
                ),
                &["bridge", "region"],
            )?,
            probe_duration: HistogramVec::new(
                HistogramOpts::new("probe_duration_seconds", "Time one bridge probe took.")
                    .namespace(NAMESPACE)
                    .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0]),
                &["bridge"],
            )?,
            probe_failures: IntCounterVec::new(
                opts("probe_failures_total", "Failed bridge probes by cause."),
                &["bridge", "cause"],
            )?,
            probe_lateness: Histogram::with_opts(
                HistogramOpts::new(
                    "probe_lateness_seconds",
                    "How late probes start against their schedule.",
                )
                .namespace(NAMESPACE)
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
            )?,
            bridge_region_mismatch: IntGaugeVec::new(
                opts(
                    "bridge_region_mismatch",
                    "1 while the bridge reports a region other than its registered one.",
                ),
                &["bridge", "region"],
            )?,
            degraded_decisions: IntCounterVec::new(
                opts(
                    "degraded_decisions_total",
                    "Decisions taken with no eligible region, by region and tier.",
                ),
                &["region", "tier"],
            )?,
            build_info: IntGaugeVec::new(
                opts("build_info", "Always 1; the version is a label."),
                &["version"],
            )?,
            key_reloads: IntCounterVec::new(
                opts(
                    "key_reloads_total",
                    "Signing key reloads by outcome (loaded, rejected: the old keys stay).",
                ),
                &["outcome"],
            )?,
            credential_reloads: IntCounterVec::new(
                opts(
                    "credential_reloads_total",
                    "Credential file reloads by outcome (loaded, rejected: the old ones stay).",
                ),
                &["outcome"],
            )?,
            signing_duration: Histogram::with_opts(
                HistogramOpts::new("token_signing_duration_seconds", "Time to sign one token.")
                    .namespace(NAMESPACE)
                    .buckets(vec![
                        0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    ]),
            )?,
            rooms_alive: IntGauge::with_opts(opts(
                "rooms_alive",
                "Rooms not yet expired in the store (shared by instances on one database).",
            ))?,
            region_bridges: IntGaugeVec::new(
                opts("region_bridges", "Bridges registered in the region."),
                &["region"],
            )?,
            region_eligible: IntGaugeVec::new(
                opts(
                    "region_eligible_bridges",
                    "Bridges of the region that can take a new room now.",
                ),
                &["region"],
            )?,
            region_state: IntGaugeVec::new(
                opts(
                    "region_state",
                    "1 for the region's current state: eligible, degraded or none.",
                ),
                &["region", "state"],
            )?,
        };
        m.register_all()?;
        m.initialise();
        Ok(m)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.http_requests.clone()))?;
        r.register(Box::new(self.http_duration.clone()))?;
        r.register(Box::new(self.decisions.clone()))?;
        r.register(Box::new(self.refusals.clone()))?;
        r.register(Box::new(self.geo_lookups.clone()))?;
        r.register(Box::new(self.geo_build_time.clone()))?;
        r.register(Box::new(self.tokens.clone()))?;
        r.register(Box::new(self.geo_reloads.clone()))?;
        r.register(Box::new(self.geo_damaged.clone()))?;
        r.register(Box::new(self.store_up.clone()))?;
        r.register(Box::new(self.overloaded.clone()))?;
        r.register(Box::new(self.in_flight.clone()))?;
        r.register(Box::new(self.bridge_up.clone()))?;
        r.register(Box::new(self.bridge_stress.clone()))?;
        r.register(Box::new(self.bridge_participants.clone()))?;
        r.register(Box::new(self.probe_duration.clone()))?;
        r.register(Box::new(self.probe_failures.clone()))?;
        r.register(Box::new(self.probe_lateness.clone()))?;
        r.register(Box::new(self.bridge_region_mismatch.clone()))?;
        r.register(Box::new(self.degraded_decisions.clone()))?;
        r.register(Box::new(self.build_info.clone()))?;
        r.register(Box::new(self.key_reloads.clone()))?;
        r.register(Box::new(self.credential_reloads.clone()))?;
        r.register(Box::new(self.signing_duration.clone()))?;
        r.register(Box::new(self.rooms_alive.clone()))?;
        r.register(Box::new(self.region_bridges.clone()))?;
        r.register(Box::new(self.region_eligible.clone()))?;
        r.register(Box::new(self.region_state.clone()))?;
        Ok(())
    }

    /// Creates every bounded label value at zero, so a rate over an outcome that has not
    /// happened yet is 0 rather than missing.
    fn initialise(&self) {
        for outcome in GEO_OUTCOMES {
            self.geo_lookups.with_label_values(&[outcome]);
        }
        for cause in REFUSAL_CAUSES {
            self.refusals.with_label_values(&[cause]);
        }
        for outcome in ["loaded", "rejected"] {
            self.geo_reloads.with_label_values(&[outcome]);
            self.key_reloads.with_label_values(&[outcome]);
            self.credential_reloads.with_label_values(&[outcome]);
        }
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
    }

    /// Publishes one region's registered and eligible bridge counts and its state.
    pub fn set_region(&self, region: &str, bridges: usize, eligible: usize, state: &str) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.region_bridges
            .with_label_values(&[region])
            .set(count(bridges));
        self.region_eligible
            .with_label_values(&[region])
            .set(count(eligible));
        for known in REGION_STATES {
            self.region_state
                .with_label_values(&[region, known])
                .set(i64::from(known == state));
        }
    }

    /// Drops the series of a region that left the catalog.
    pub fn forget_region(&self, region: &str) {
        let _ = self.region_bridges.remove_label_values(&[region]);
        let _ = self.region_eligible.remove_label_values(&[region]);
        for known in REGION_STATES {
            let _ = self.region_state.remove_label_values(&[region, known]);
        }
    }

    /// Drops the series of bridges that left `catalog`, and a moved bridge's series under
    /// the region it left. The prober sets them; nothing else would ever remove them.
    pub fn keep_bridges(&self, catalog: &Catalog) {
        let placed: HashSet<[&str; 2]> = catalog
            .bridges()
            .iter()
            .map(|b| [b.id.as_str(), b.region.as_str()])
            .collect();
        let ids: HashSet<&str> = placed.iter().map(|[id, _]| *id).collect();
        let gone = |labels: &[String]| match labels {
            [bridge, region] => !placed.contains(&[bridge.as_str(), region.as_str()]),
            _ => false,
        };
        forget(&self.bridge_up, ["bridge", "region"], gone);
        forget(&self.bridge_stress, ["bridge", "region"], gone);
        forget(&self.bridge_participants, ["bridge", "region"], gone);
        forget(&self.bridge_region_mismatch, ["bridge", "region"], gone);
        let gone = |labels: &[String]| !ids.contains(labels[0].as_str());
        forget(&self.probe_duration, ["bridge"], gone);
        forget(&self.probe_failures, ["bridge", "cause"], gone);
    }

    /// Counts one refused selection, also as a decision with reason `refused`.
    pub fn observe_refusal(&self, cause: &str) {
        self.refusals.with_label_values(&[cause]).inc();
        self.decisions
            .with_label_values(&["none", "refused", "none"])
            .inc();
    }

    /// Records one probe's latency, how late it started and, when it failed, its cause.
    pub fn observe_probe(
        &self,
        bridge: &Bridge,
        outcome: &Outcome,
        took: Duration,
        lateness: Duration,
    ) {
        let id = bridge.id.as_str();
        self.probe_lateness.observe(lateness.as_secs_f64());
        self.probe_duration
            .with_label_values(&[id])
            .observe(took.as_secs_f64());
        let cause = match outcome {
            Outcome::Pass(_) | Outcome::PassNoStats => return,
            Outcome::Unhealthy(..) => "unhealthy",
            Outcome::Failed(cause, _) => cause.label(),
        };
        self.probe_failures.with_label_values(&[id, cause]).inc();
    }

    /// Publishes a bridge's state, stress and participants.
    pub fn set_bridge_health(&self, bridge: &Bridge, health: &Health) {
        let labels = [bridge.id.as_str(), bridge.region.as_str()];
        self.bridge_up
            .with_label_values(&labels)
            .set(i64::from(health.state == State::Up));
        self.bridge_stress
            .with_label_values(&labels)
            .set(health.stress());
        let participants = health.stats.as_ref().map_or(0, |s| s.participants);
        let participants = i64::try_from(participants).unwrap_or(i64::MAX);
        self.bridge_participants
            .with_label_values(&labels)
            .set(participants);
        self.bridge_region_mismatch
            .with_label_values(&labels)
            .set(i64::from(health.region_mismatch));
    }

    /// The text exposition format of every series.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let families = self.registry.gather();
        if let Err(error) = TextEncoder::new().encode(&families, &mut buffer) {
            tracing::error!(%error, "metrics could not be encoded");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Removes the series of `vec` whose values of `names` (in that order, the vec's own) are
/// `gone`.
fn forget<T: MetricVecBuilder, const N: usize>(
    vec: &MetricVec<T>,
    names: [&str; N],
    gone: impl Fn(&[String]) -> bool,
) {
    let series = vec.collect();
    let metrics = series.iter().flat_map(|family| family.get_metric());
    for metric in metrics {
        let value = |name: &str| {
            let pair = metric.get_label().iter().find(|l| l.name() == name);
            pair.map(|l| l.value().to_owned())
        };
        let Some(values) = names.iter().map(|n| value(n)).collect::<Option<Vec<_>>>() else {
            continue;
        };
        if gone(&values) {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let _ = vec.remove_label_values(&values);
        }
    }
}

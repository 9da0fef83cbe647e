//! `GET /v1/regions/select?ip=…` answered without the router.
//!
//! Lobbies call this once per user, and for it the router, the middleware and serde cost
//! more than the lookup and the choice. A request that is exactly the common case (GET, this
//! path, one `ip` parameter written plainly, no body, a credential that lets it through, a
//! free request slot) is answered here, with the same decision, counters and log line as
//! through the router. Anything else, every client error included, goes to the router,
//! which stays the one place that explains what to fix.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::http::StatusCode;
use prometheus::{Histogram, IntCounter};
use tokio::time::Instant;

pub(crate) use super::ApiError;
use super::{AppState, Counted, Need, Role, json};
use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::select::Decision;

/// The route this module answers, as the router and the metrics name it.
pub const ROUTE: &str = "/v1/regions/select";

/// What the hot path reads of a request head.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// The method, such as `GET`.
    pub method: &'a str,
    /// The request target: path and query.
    pub target: &'a str,
    /// The first `Authorization` header, if any.
    pub authorization: Option<&'a [u8]>,
    /// True when the request declares a body (a non-zero length or a transfer coding).
    pub has_body: bool,
}

/// What [`answer`] did.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    /// The answer's status.
    pub status: StatusCode,
    /// When the answer was made: the clock, read once for the duration metric, also dates
    /// the answer and starts the wait for the next request.
    pub at: Instant,
}

/// Answers `head` into `out` when it is the common case; `None` leaves it to the router.
pub fn answer(state: &AppState, head: &Head<'_>, out: &mut Vec<u8>) -> Option<Answered> {
    let ip = plain_select(head)?;
    if !admitted(state, head.authorization) {
        return None;
    }
    let slot = state.in_flight.try_take()?;
    let started = Instant::now();
    let counted = Counted::new(&state.metrics.in_flight);
    let catalog = state.catalog.load_full();
    let status = match super::decide(state, ip, &catalog, None, started) {
        Ok((location, decision)) => {
            json::write_selected(out, location.as_ref(), &decision);
            StatusCode::OK
        }
        Err(error) => {
            write_error(out, &error);
            error.status()
        }
    };
    drop((counted, slot));
    let at = Instant::now();
    count(state, status, at - started);
    Some(Answered { status, at })
}

/// The address of a plain `GET /v1/regions/select?ip=<address>` without a body.
fn plain_select(head: &Head<'_>) -> Option<IpAddr> {
    if head.method != "GET" || head.has_body {
        return None;
    }
    let text = head.target.strip_prefix(ROUTE)?.strip_prefix("?ip=")?;
    // Anything percent-encoded, repeated or padded is the router's to read and judge.
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
    {
        return None;
    }
    text.parse().ok()
}

/// True when the route is open or the bearer credential is a lobby's.
fn admitted(state: &AppState, authorization: Option<&[u8]>) -> bool {
    let credentials = state.credentials.load();
    if credentials.open_for(Need::Role(Role::Lobby)) {
        return true;
    }
    // Read as the router reads it: visible ASCII (and tabs) only.
    let visible = |v: &&[u8]| v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
    let presented = authorization
        .filter(visible)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(super::auth::bearer);
    presented.is_some_and(|p| credentials.role_of(p.trim()) == Some(Role::Lobby))
}

/// The error envelope, as `ApiError` answers it through the router (errors are rare
/// here: serde is fast enough).
pub(crate) fn write_error(out: &mut Vec<u8>, error: &ApiError) {
    // Writing a serialisable struct into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &error.body());
}

/// Counts and logs the request as the router's `track` middleware does.
fn count(state: &AppState, status: StatusCode, took: Duration) {
    let series = &state.series;
    if status == StatusCode::OK {
        series.select_ok.inc();
    } else {
        let labels = [ROUTE, "GET", status.as_str()];
        state.metrics.http_requests.with_label_values(&labels).inc();
    }
    series.select_duration.observe(took.as_secs_f64());
    let (status, duration_ms) = (status.as_u16(), took.as_millis() as u64);
    tracing::debug!(
        method = "GET",
        route = ROUTE,
        status,
        duration_ms,
        "request"
    );
}

/// GeoIP lookup outcomes, the `outcome` label of `geo_lookups_total`.
pub const LOOKUP_OUTCOMES: [&str; 5] = ["located", "coarse", "no_data", "private", "pinned"];

/// The series every selection touches, resolved once instead of by label on each request.
pub struct Series {
    select_ok: IntCounter,
    select_duration: Histogram,
    lookups: [IntCounter; 5],
    /// Decisions by region, reason and tier.
    pub decisions: DecisionCounters,
}

impl Series {
    /// Resolves the series of `metrics`.
    pub fn new(metrics: &Metrics) -> Series {
        Series {
            select_ok: metrics
                .http_requests
                .with_label_values(&[ROUTE, "GET", "200"]),
            select_duration: metrics.http_duration.with_label_values(&[ROUTE]),
            lookups: LOOKUP_OUTCOMES.map(|o| metrics.geo_lookups.with_label_values(&[o])),
            decisions: DecisionCounters::default(),
        }
    }

    /// Counts one lookup with outcome `LOOKUP_OUTCOMES[outcome]`.
    pub fn lookup(&self, outcome: usize) {
        self.lookups[outcome].inc();
    }
}

/// `decisions_total` series by region, reason and tier, resolved once per catalog.
#[derive(Default)]
pub struct DecisionCounters {
    latest: ArcSwapOption<Slots>,
}

struct Slots {
    catalog: Arc<Catalog>,
    counters: Vec<OnceLock<IntCounter>>,
}

const REASONS: usize = 7;
const TIERS: usize = 5;

impl DecisionCounters {
    /// Counts `decision`, made from `catalog`.
    pub fn count(&self, metrics: &Metrics, catalog: &Arc<Catalog>, decision: &Decision) {
        let slots = match self.latest.load_full() {
            Some(slots) if Arc::ptr_eq(&slots.catalog, catalog) => slots,
            _ => {
                let counters = (0..catalog.regions().len() * REASONS * TIERS)
                    .map(|_| OnceLock::new())
                    .collect();
                let slots = Arc::new(Slots {
                    catalog: catalog.clone(),
                    counters,
                });
                self.latest.store(Some(slots.clone()));
                slots
            }
        };
        let region = decision.regions.taken();
        let labels = [
            decision.region.as_str(),
            decision.reason.label(),
            decision.tier.label(),
        ];
        let Some(region) = region else {
            metrics.decisions.with_label_values(&labels).inc();
            return;
        };
        let slot = (region * REASONS + decision.reason as usize) * TIERS + decision.tier as usize;
        slots.counters[slot]
            .get_or_init(|| metrics.decisions.with_label_values(&labels))
            .inc();
    }
}

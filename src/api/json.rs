//! The selection answer written as JSON bytes directly, for the hot path.
//!
//! `GET /v1/regions/select` is the endpoint lobbies call for every user, so its answer is
//! written here without serde's machinery: identifiers are known to need no escaping,
//! distances are whole kilometres, and the bytes go straight into one reused buffer. The
//! output is byte for byte what `serde_json` makes of [`Selected`]; a property test holds
//! the two together (here and in `select::properties`), so the serde types stay the one
//! definition of the format.

use std::cell::RefCell;
use std::sync::Arc;

use crate::catalog::Catalog;
use crate::geo::{CountryCode, Location, Point};
use crate::select::{Considered, Decision, Tier, Why};

/// Appends `{"region":…,"location":…,"decision":…}` for `decision` and `location`.
pub fn write_selected(out: &mut Vec<u8>, location: Option<&Location>, decision: &Decision) {
    // About 180 bytes per region and 500 for the rest: one allocation for the whole answer.
    out.reserve(512 + 192 * decision.regions.len());
    out.extend_from_slice(b"{\"region\":");
    id(out, decision.region.as_str());
    out.extend_from_slice(b",\"location\":");
    match location {
        Some(location) => write_location(out, location),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"decision\":");
    write_decision(out, decision);
    out.push(b'}');
}

/// Appends a [`Location`] as serde writes it.
pub fn write_location(out: &mut Vec<u8>, location: &Location) {
    out.extend_from_slice(b"{\"country\":");
    code(out, location.country);
    out.extend_from_slice(b",\"continent\":");
    code(out, location.continent);
    out.extend_from_slice(b",\"subdivision\":");
    match &location.subdivision {
        Some(name) => string(out, name),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"point\":");
    match location.point {
        Some(Point {
            latitude,
            longitude,
        }) => {
            out.extend_from_slice(b"{\"latitude\":");
            float(out, Some(latitude));
            out.extend_from_slice(b",\"longitude\":");
            float(out, Some(longitude));
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"accuracy_km\":");
    match location.accuracy_km {
        Some(km) => integer(out, u64::from(km)),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"coarse\":");
    boolean(out, location.coarse);
    out.push(b'}');
}

/// Appends a [`Decision`] as serde writes it.
pub fn write_decision(out: &mut Vec<u8>, decision: &Decision) {
    out.extend_from_slice(b"{\"region\":");
    id(out, decision.region.as_str());
    out.extend_from_slice(b",\"reason\":");
    id(out, decision.reason.label());
    out.extend_from_slice(b",\"tier\":");
    id(out, decision.tier.label());
    out.extend_from_slice(b",\"degraded\":");
    boolean(out, decision.degraded);
    out.extend_from_slice(b",\"unwatched\":");
    boolean(out, decision.unwatched);
    out.extend_from_slice(b",\"distance_km\":");
    kilometres(out, decision.distance_km);
    out.extend_from_slice(b",\"bridge\":");
    match &decision.bridge {
        Some(bridge) => id(out, bridge.as_str()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"steps\":[");
    for (i, step) in decision.steps.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Every piece of a step is fixed text, an identifier, a label, a country code or
        // a number: nothing to escape.
        out.push(b'"');
        step.words(|piece| {
            debug_assert!(piece.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
            out.extend_from_slice(piece.as_bytes());
        });
        out.push(b'"');
    }
    out.extend_from_slice(b"],\"regions\":[");
    FRAGMENTS.with_borrow_mut(|cached| {
        let catalog = decision.regions.catalog();
        let fragments = match cached {
            Some(fragments) if Arc::ptr_eq(&fragments.catalog, catalog) => fragments,
            _ => cached.insert(Fragments::new(catalog)),
        };
        for (i, (_, considered)) in decision.regions.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            fragments.write(out, considered);
        }
    });
    out.extend_from_slice(b"]}");
}

thread_local! {
    /// The fragments of the catalog this thread last answered from.
    static FRAGMENTS: RefCell<Option<Fragments>> = const { RefCell::new(None) };
}

/// Each region's entry in `regions` as text written ahead: the region's id, and what it
/// stood at (tier, bridges, stress) when last written. Every request writes every region, but
/// ids change only with the catalog and standings only with health and reservations, so
/// an entry is two copies and a distance instead of a dozen pieces.
// Known limit: each thread keeps the catalog it last answered from alive until it answers
// from a newer one.
struct Fragments {
    catalog: Arc<Catalog>,
    regions: Vec<Fragment>,
}

struct Fragment {
    /// `{"region":"<id>","distance_km":`
    head: Box<[u8]>,
    /// What `standing` was written for; `None` before the first write.
    written_for: Option<Standing>,
    /// `,"tier":…,"why":"`: everything between the distance and the reason.
    standing: Vec<u8>,
}

/// The part of a [`Considered`] that its standing text depends on.
#[derive(Clone, Copy, PartialEq)]
struct Standing {
    tier: Tier,
    unwatched: bool,
    eligible_bridges: usize,
    stress: Option<u64>,
    bridge: Option<usize>,
}

impl Standing {
    fn of(c: &Considered) -> Standing {
        Standing {
            tier: c.tier,
            unwatched: c.unwatched,
            eligible_bridges: c.eligible_bridges,
            stress: c.stress.map(f64::to_bits),
            bridge: c.bridge,
        }
    }
}

impl Fragments {
    fn new(catalog: &Arc<Catalog>) -> Fragments {
        let head = |id: &str| {
            let mut head = b"{\"region\":\"".to_vec();
            head.extend_from_slice(id.as_bytes());
            head.extend_from_slice(b"\",\"distance_km\":");
            head.into_boxed_slice()
        };
        let regions = catalog.regions().iter().map(|region| Fragment {
            head: head(region.id.as_str()),
            written_for: None,
            standing: Vec::new(),
        });
        Fragments {
            catalog: catalog.clone(),
            regions: regions.collect(),
        }
    }

    /// Appends the entry of `c`, a region of this catalog.
    fn write(&mut self, out: &mut Vec<u8>, c: &Considered) {
        let fragment = &mut self.regions[c.index];
        out.extend_from_slice(&fragment.head);
        kilometres(out, c.distance_km);
        let standing = Standing::of(c);
        if fragment.written_for != Some(standing) {
            fragment.standing.clear();
            write_standing(&mut fragment.standing, &self.catalog, c);
            fragment.written_for = Some(standing);
        }
        out.extend_from_slice(&fragment.standing);
        out.extend_from_slice(why_end(c.why));
    }
}

/// `,"tier":…,"unwatched":…,"eligible_bridges":…,"stress":…,"bridge":…,"why":"` of `c`.
fn write_standing(out: &mut Vec<u8>, catalog: &Catalog, c: &Considered) {
    out.extend_from_slice(TIER_UNWATCHED[c.tier as usize][usize::from(c.unwatched)]);
    integer(out, c.eligible_bridges as u64);
    match c.stress {
        Some(x) => {
            out.extend_from_slice(b",\"stress\":");
            float(out, Some((x * 1000.0).round() / 1000.0));
        }
        None => out.extend_from_slice(b",\"stress\":null"),
    }
    match c.bridge {
        Some(b) => {
            out.extend_from_slice(b",\"bridge\":\"");
            out.extend_from_slice(catalog.bridges()[b].id.as_str().as_bytes());
            out.extend_from_slice(b"\",\"why\":\"");
        }
        None => out.extend_from_slice(b",\"bridge\":null,\"why\":\""),
    }
}

/// `,"tier":…,"unwatched":…,"eligible_bridges":` by tier (in `Tier` order) and unwatched.
const TIER_UNWATCHED: [[&[u8]; 2]; 5] = {
    macro_rules! pair {
        ($tier:literal) => {
            [
                concat!(
                    ",\"tier\":\"",
                    $tier,
                    "\",\"unwatched\":false,\"eligible_bridges\":"
                )
                .as_bytes(),
                concat!(
                    ",\"tier\":\"",
                    $tier,
                    "\",\"unwatched\":true,\"eligible_bridges\":"
                )
                .as_bytes(),
            ]
        };
    }
    [
        pair!("eligible"),
        pair!("overloaded"),
        pair!("draining"),
        pair!("panic"),
        pair!("unusable"),
    ]
};

/// The reason of an entry, its closing quote and brace.
fn why_end(why: Why) -> &'static [u8] {
    match why {
        Why::Taken => b"taken\"}",
        Why::WorseTier => b"worse_tier\"}",
        Why::Farther => b"farther\"}",
        Why::OutsideGroup => b"outside_group\"}",
        Why::NotPreferred => b"not_preferred\"}",
    }
}

/// A string that needs no escaping: identifiers (`[a-z0-9-]`) and fixed labels.
fn id(out: &mut Vec<u8>, text: &str) {
    debug_assert!(text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

fn code(out: &mut Vec<u8>, code: Option<CountryCode>) {
    match code {
        Some(code) => id(out, code.as_str()),
        None => out.extend_from_slice(b"null"),
    }
}

fn boolean(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

fn integer(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// A distance rounded to whole kilometres, as serde writes `km.round()`; rounds without
/// calling into libm, which the request path would otherwise do for every region.
fn kilometres(out: &mut Vec<u8>, km: Option<f64>) {
    match km {
        Some(km) if km.is_sign_positive() && km < 1e15 => {
            let whole = km as u64;
            let rounded = whole + u64::from(km - whole as f64 >= 0.5);
            match u32::try_from(rounded) {
                Ok(short) if short < 100_000 => short_whole(out, short),
                _ => {
                    integer(out, rounded);
                    out.extend_from_slice(b".0");
                }
            }
        }
        other => float(out, other.map(f64::round)),
    }
}

/// `n` (below 100,000: every distance on Earth) followed by `.0`, without branches: the
/// number of digits varies from request to request and would be mispredicted. Five digits
/// are made, the leading zeros shifted out, and eight bytes copied then cut to length
/// (cheaper than a copy of variable length).
fn short_whole(out: &mut Vec<u8>, n: u32) {
    debug_assert!(n < 100_000);
    let digit = |place: u32| b'0' + (n / place % 10) as u8;
    let text = [
        digit(10_000),
        digit(1_000),
        digit(100),
        digit(10),
        digit(1),
        b'.',
        b'0',
        0,
    ];
    let digits = 1 + [10, 100, 1_000, 10_000].iter().filter(|&&p| n >= p).count();
    let shifted = u64::from_le_bytes(text) >> (8 * (5 - digits));
    let end = out.len() + digits + 2;
    out.extend_from_slice(&shifted.to_le_bytes());
    out.truncate(end);
}

/// A number as serde_json writes an `f64`: shortest round-trip form, `null` when not finite.
fn float(out: &mut Vec<u8>, value: Option<f64>) {
    match value {
        // Whole numbers below 10^15 (every distance) print as digits and `.0`; cheaper than
        // the general shortest form, and the same text.
        Some(x)
            if x.abs() < 1e15 && (x as i64) as f64 == x && !(x == 0.0 && x.is_sign_negative()) =>
        {
            out.extend_from_slice(itoa::Buffer::new().format(x as i64).as_bytes());
            out.extend_from_slice(b".0");
        }
        Some(x) if x.is_finite() => {
            out.extend_from_slice(zmij::Buffer::new().format_finite(x).as_bytes());
        }
        _ => out.extend_from_slice(b"null"),
    }
}

/// A JSON string with quotes, backslashes and control characters escaped.
pub fn string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    escape(out, text);
    out.push(b'"');
}

/// `text` with quotes, backslashes and control characters escaped.
fn escape(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]];
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&hex);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn location() -> impl Strategy<Value = Location> {
        let code = prop::option::of("[A-Z]{2}")
            .prop_map(|c| c.map(|c| CountryCode::parse(&c).expect("two letters")));
        let point = prop::option::of((-90.0..=90.0f64, -180.0..=180.0f64));
        (
            code.clone(),
            code,
            prop::option::of(any::<String>()),
            point,
            prop::option::of(any::<u16>()),
            any::<bool>(),
        )
            .prop_map(
                |(country, continent, subdivision, point, accuracy_km, coarse)| Location {
                    country,
                    continent,
                    subdivision: subdivision.map(Into::into),
                    point: point.map(|(latitude, longitude)| Point {
                        latitude,
                        longitude,
                    }),
                    accuracy_km,
                    coarse,
                },
            )
    }

    proptest! {
        /// Any location, including names with quotes, backslashes and control characters,
        /// is written exactly as serde writes it.
        #[test]
        fn locations_match_serde(location in location()) {
            let mut out = Vec::new();
            write_location(&mut out, &location);
            let expected = serde_json::to_vec(&location).expect("serialisable");
            prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
        }

        /// Distances are rounded and written as serde writes `km.round()`.
        #[test]
        fn kilometres_match_serde(km in any::<f64>(), near in 0.0..40_000.0f64) {
            let edges = [0.49, 9.5, 99.49, 999.5, 9_999.5, 99_999.49, 99_999.5, 1e5];
            for km in [km, near, near.floor() + 0.5, -0.0, 0.0, f64::NAN].into_iter().chain(edges) {
                let mut out = Vec::new();
                kilometres(&mut out, Some(km));
                let expected = serde_json::to_vec(&km.round()).expect("serialisable");
                prop_assert_eq!(out, expected);
            }
        }

        /// Any string is escaped as serde escapes it.
        #[test]
        fn strings_match_serde(text in any::<String>()) {
            let mut out = Vec::new();
            string(&mut out, &text);
            prop_assert_eq!(out, serde_json::to_vec(&text).expect("serialisable"));
        }

        /// Any float, including integers, tiny and huge values, is written as serde writes it.
        #[test]
        fn floats_match_serde(x in any::<f64>(), whole in -1e16..1e16f64) {
            for x in [x, whole.round(), -0.0, 1e15, 1e15 - 1.0] {
                let mut out = Vec::new();
                float(&mut out, Some(x));
                prop_assert_eq!(out, serde_json::to_vec(&x).expect("serialisable"));
            }
        }
    }
}

//! Regions, bridges and pins: what geobridge may choose from.
//!
//! A [`Catalog`] is an immutable value. Whoever changes the registry builds a new catalog and
//! swaps it in; readers (the prober, request handlers) hold an `Arc` to the one they started
//! with. Regions are addressed by position inside a catalog so that selection needs no hashing.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::geo::{CountryCode, Point};

/// Why an identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{value}' is not a valid id: use 1-63 characters of a-z, 0-9 and '-', {EDGES}")]
pub struct InvalidId {
    /// The refused value.
    pub value: String,
}

const EDGES: &str = "not starting or ending with '-'";

fn check_id(value: &str) -> Result<(), InvalidId> {
    let fits = (1..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if fits {
        Ok(())
    } else {
        Err(InvalidId {
            value: value.to_owned(),
        })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        // Shared text: decisions and reservations copy ids on every request.
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            /// Checks `value` and wraps it.
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                check_id(value).map(|()| Self(value.into()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A region's identifier, such as `eu-central`.
    RegionId
);
id_type!(
    /// A bridge's identifier, such as `jvb-fra-1`.
    BridgeId
);
id_type!(
    /// A Jitsi shard's identifier, such as `default` or `meet-eu`.
    ShardId
);

/// One Jitsi deployment (web frontend, Prosody, Jicofo) that rooms live on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// Identifier.
    pub id: ShardId,
    /// The Jitsi web frontend links point to.
    pub url: String,
    /// The token's `sub` (XMPP domain) on this shard, when it differs from `jitsi.subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The token's `iss` (Prosody `app_id`) on this shard, when it differs from `jitsi.issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Shard {
    /// The one shard of a deployment that has a single Jitsi frontend at `url`, with the
    /// token claims of `[jitsi]`.
    pub fn single(url: &str) -> Shard {
        Shard {
            id: ShardId(std::sync::Arc::from(DEFAULT_SHARD)),
            url: url.to_owned(),
            subject: None,
            issuer: None,
        }
    }
}

/// The id of the shard of a single-frontend deployment.
const DEFAULT_SHARD: &str = "default";

/// Whether an operator lets a bridge take rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// In rotation.
    #[default]
    Active,
    /// No new rooms; used only when nothing else is left.
    Drain,
    /// Out of rotation entirely.
    Maintenance,
}

/// One region: a place where Videobridges run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// Identifier, as it appears in decisions and in the token's `context.region`.
    pub id: RegionId,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// Where the region's data centre is.
    #[serde(flatten)]
    pub point: Point,
    /// Regions of one group stand in for each other first when one has no eligible bridge.
    #[serde(default)]
    pub group: Option<String>,
    /// Added to the great-circle distance when comparing regions; negative attracts.
    #[serde(default)]
    pub bias_km: f64,
    /// The Jitsi shard the region's bridges serve; the first shard when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardId>,
}

impl Region {
    /// What is wrong with the region's name and group, if anything.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let chars = self.name.chars().count();
        if chars > 100
            || self
                .name
                .chars()
                .any(|c| c.is_control() || is_bidi_control(c))
        {
            problems.push(format!(
                "name has {chars} characters or control characters; use at most 100 printable ones"
            ));
        }
        if let Some(group) = &self.group
            && check_id(group).is_err()
        {
            problems.push(format!(
                "group '{group}' must be 1-63 characters of a-z, 0-9 and '-'"
            ));
        }
        problems
    }
}

/// Characters that reorder text when shown: harmless to us, confusing on a dashboard.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// One Videobridge, reached through its private REST API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bridge {
    /// Identifier.
    pub id: BridgeId,
    /// The region it serves.
    pub region: RegionId,
    /// Base URL of the private REST API, such as `http://10.0.0.5:8080`.
    pub url: String,
    /// Relative share of the region's rooms.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Whether to read `/colibri/stats` (the bridge must enable its REST API).
    #[serde(default = "default_true")]
    pub stats: bool,
    /// Operator's choice.
    #[serde(default)]
    pub admin_state: AdminState,
}

fn default_weight() -> u32 {
    1
}

fn default_true() -> bool {
    true
}

/// Regions, bridges and pins, checked for consistency.
#[derive(Debug, Clone)]
pub struct Catalog {
    regions: Vec<Region>,
    bridges: Vec<Bridge>,
    /// Bridge positions per region position.
    bridges_of: Vec<Vec<usize>>,
    country_pins: HashMap<CountryCode, usize>,
    network_pins: Vec<(IpNet, usize)>,
    default_region: usize,
    shards: Vec<Shard>,
    /// Shard position per region position.
    shard_of: Vec<usize>,
}

/// What a catalog needs, before checking.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Regions in the order the operator listed them.
    pub regions: Vec<Region>,
    /// Bridges.
    pub bridges: Vec<Bridge>,
    /// Country code → region id.
    pub country_pins: Vec<(CountryCode, RegionId)>,
    /// Network → region id; the longest matching prefix wins.
    pub network_pins: Vec<(IpNet, RegionId)>,
    /// The region for clients with no location.
    pub default_region: Option<RegionId>,
    /// Jitsi shards; the first is where regions without a shard belong.
    pub shards: Vec<Shard>,
}

impl Catalog {
    /// Checks `spec` and builds a catalog; every problem found is returned, one per entry.
    pub fn build(spec: Spec) -> Result<Catalog, Vec<String>> {
        let mut problems = Vec::new();
        let index: HashMap<&RegionId, usize> = spec
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| (&r.id, i))
            .collect();
        let known = || known_list(&spec.regions);
        if index.len() != spec.regions.len() {
            problems.push("regions: the same region id is listed twice".to_owned());
        }
        for region in &spec.regions {
            problems.extend(
                region
                    .problems()
                    .into_iter()
                    .map(|why| format!("region '{}': {why}", region.id)),
            );
            if let Err(why) = region.point.check() {
                problems.push(format!("region '{}': {why}", region.id));
            }
            if !region.bias_km.is_finite() {
                problems.push(format!(
                    "region '{}': bias_km must be a finite number",
                    region.id
                ));
            }
        }
        let mut find = |what: String, id: &RegionId| match index.get(id) {
            Some(&i) => Some(i),
            None => {
                problems.push(format!("{what}: unknown region '{id}'; known: {}", known()));
                None
            }
        };
        let mut bridges_of = vec![Vec::new(); spec.regions.len()];
        for (b, bridge) in spec.bridges.iter().enumerate() {
            if let Some(r) = find(format!("bridge '{}'", bridge.id), &bridge.region) {
                bridges_of[r].push(b);
            }
        }
        let country_pins = spec
            .country_pins
            .iter()
            .filter_map(|(c, id)| Some((*c, find(format!("country pin {c}"), id)?)))
            .collect();
        let mut network_pins: Vec<(IpNet, usize)> = spec
            .network_pins
            .iter()
            .filter_map(|(n, id)| Some((*n, find(format!("network pin {n}"), id)?)))
            .collect();
        // Longest prefix first, so the first match is the most specific one.
        network_pins.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        let default_region = match &spec.default_region {
            Some(id) => find("default_region".to_owned(), id),
            None if spec.regions.is_empty() => None,
            None => Some(0),
        };
        problems.extend(check_bridges(&spec.bridges));
        let shard_of = shard_positions(&spec.regions, &spec.shards, &mut problems);
        if spec.regions.is_empty() {
            problems.push("regions: at least one region is needed".to_owned());
        }
        match default_region {
            Some(default_region) if problems.is_empty() => Ok(Catalog {
                regions: spec.regions,
                bridges: spec.bridges,
                bridges_of,
                country_pins,
                network_pins,
                default_region,
                shards: spec.shards,
                shard_of,
            }),
            _ => Err(problems),
        }
    }

    /// All regions, in configuration order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// All bridges.
    pub fn bridges(&self) -> &[Bridge] {
        &self.bridges
    }

    /// Positions (in [`Catalog::bridges`]) of the bridges of the region at `region`.
    pub fn bridges_of(&self, region: usize) -> &[usize] {
        &self.bridges_of[region]
    }

    /// Position of the region with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.id.as_str() == id)
    }

    /// Position of the region pinned for this country.
    pub fn country_pin(&self, country: CountryCode) -> Option<usize> {
        self.country_pins.get(&country).copied()
    }

    /// Position of the region pinned for the most specific network holding `ip`.
    pub fn network_pin(&self, ip: IpAddr) -> Option<usize> {
        let ip = ip.to_canonical();
        self.network_pins
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|&(_, r)| r)
    }

    /// Position of the region for clients with no location.
    pub fn default_region(&self) -> usize {
        self.default_region
    }

    /// The shard the region at `region` belongs to.
    pub fn shard_of(&self, region: usize) -> &Shard {
        &self.shards[self.shard_of[region]]
    }

    /// The shard with this id.
    pub fn shard(&self, id: &str) -> Option<&Shard> {
        self.shards.iter().find(|s| s.id.as_str() == id)
    }

    /// The part of this catalog on one shard: its regions, their bridges and the pins that
    /// point into it. The default region is kept when it is on the shard, else the first.
    pub fn within_shard(&self, shard: &str) -> Option<Catalog> {
        let position = self.shards.iter().position(|s| s.id.as_str() == shard)?;
        let keep: Vec<usize> = (0..self.regions.len())
            .filter(|&r| self.shard_of[r] == position)
            .collect();
        let kept = |r: &usize| keep.contains(r);
        let id = |r: usize| self.regions[r].id.clone();
        let default_region = Some(self.default_region)
            .filter(kept)
            .or(keep.first().copied());
        let spec = Spec {
            regions: keep.iter().map(|&r| self.regions[r].clone()).collect(),
            bridges: keep
                .iter()
                .flat_map(|&r| self.bridges_of[r].iter().map(|&b| self.bridges[b].clone()))
                .collect(),
            country_pins: self
                .country_pins
                .iter()
                .filter(|(_, r)| kept(r))
                .map(|(c, &r)| (*c, id(r)))
                .collect(),
            network_pins: self
                .network_pins
                .iter()
                .filter(|(_, r)| kept(r))
                .map(|(n, r)| (*n, id(*r)))
                .collect(),
            default_region: default_region.map(id),
            shards: self.shards.clone(),
        };
        Catalog::build(spec).ok()
    }

    /// Ids of all regions, comma-separated, for error messages.
    pub fn known_regions(&self) -> String {
        known_list(&self.regions)
    }
}

fn shard_positions(regions: &[Region], shards: &[Shard], problems: &mut Vec<String>) -> Vec<usize> {
    if shards.is_empty() {
        problems.push("shards: at least one Jitsi shard is needed (set JITSI_URL)".to_owned());
    }
    let known = || {
        shards
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for shard in shards {
        if let Err(why) = crate::config::check_web_url(&shard.url) {
            problems.push(format!("shard '{}': url {why}", shard.id));
        }
    }
    regions
        .iter()
        .map(|region| match &region.shard {
            None => 0,
            Some(id) => shards.iter().position(|s| &s.id == id).unwrap_or_else(|| {
                let why = format!(
                    "region '{}': unknown shard '{id}'; known: {}",
                    region.id,
                    known()
                );
                problems.push(why);
                0
            }),
        })
        .collect()
}

fn known_list(regions: &[Region]) -> String {
    let ids: Vec<&str> = regions.iter().map(|r| r.id.as_str()).collect();
    ids.join(", ")
}

fn check_bridges(bridges: &[Bridge]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for bridge in bridges {
        if !seen.insert(&bridge.id) {
            problems.push(format!("bridge '{}': the id is listed twice", bridge.id));
        }
        if let Err(why) = check_bridge_url(&bridge.url) {
            problems.push(format!("bridge '{}': {why}", bridge.id));
        }
        if bridge.weight == 0 {
            problems.push(format!("bridge '{}': weight must be at least 1", bridge.id));
        }
    }
    problems
}

/// [`check_bridge_url`] for a URL an operator sends now: also refused with control
/// characters, which the URL parser drops silently, so that what is stored is what is
/// probed. URLs stored by earlier versions are not held to it: they still load.
pub fn check_new_bridge_url(url: &str) -> Result<(), String> {
    if url.chars().any(char::is_control) {
        return Err("url must not contain control characters (tabs, newlines, ...)".to_owned());
    }
    check_bridge_url(url)
}

/// Checks a bridge base URL: http or https, a valid host and port, no credentials, no query,
/// and not a link-local, multicast or unspecified address (169.254.169.254 is where clouds
/// serve instance metadata; a bridge is never there).
pub fn check_bridge_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        let shown = if url.contains('@') {
            "(with credentials, not shown)"
        } else {
            url
        };
        format!("url {shown} is not a valid URL ({e})")
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("url must not carry credentials (user:password@)".to_owned());
    }
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("url '{url}' must start with http:// or https://"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || url.contains(' ') {
        return Err(format!(
            "url '{url}' must not have a query, fragment or spaces"
        ));
    }
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6).to_canonical()),
        Some(url::Host::Domain(_)) => None,
        None => return Err(format!("url '{url}' has no host")),
    };
    let class = ip.map(crate::geo::classify);
    use crate::geo::AddressClass::{LinkLocal, Multicast, Unspecified};
    if matches!(class, Some(LinkLocal | Multicast | Unspecified)) {
        return Err(format!(
            "url '{url}' points at a link-local, multicast or unspecified address"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: &str) -> Region {
        Region {
            id: RegionId::parse(id).expect("valid id"),
            name: String::new(),
            point: Point {
                latitude: 1.0,
                longitude: 2.0,
            },
            group: None,
            bias_km: 0.0,
            shard: None,
        }
    }

    fn shards() -> Vec<Shard> {
        let id = ShardId::parse("default").expect("id");
        vec![Shard {
            id,
            url: "https://meet.test".to_owned(),
            subject: None,
            issuer: None,
        }]
    }

    /// Ids accept the documented alphabet and refuse everything else.
    #[test]
    fn ids_are_checked() {
        assert!(RegionId::parse("eu-central").is_ok());
        assert!(RegionId::parse("a").is_ok());
        for bad in ["", "-a", "a-", "EU", "eu_central", "eü", &"a".repeat(64)] {
            assert!(RegionId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// A bridge in an unknown region is reported with the known ones.
    #[test]
    fn unknown_region_is_named() {
        let spec = Spec {
            regions: vec![region("eu-west")],
            bridges: vec![Bridge {
                id: BridgeId::parse("b1").expect("valid id"),
                region: RegionId::parse("eu-wst").expect("valid id"),
                url: "http://user:pw@h:1".to_owned(),
                weight: 1,
                stats: true,
                admin_state: AdminState::Active,
            }],
            shards: shards(),
            ..Spec::default()
        };
        let problems = Catalog::build(spec).expect_err("must fail");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("unknown region 'eu-wst'; known: eu-west"));
        assert!(problems[1].contains("credentials"));
    }

    /// The most specific network pin wins.
    #[test]
    fn longest_network_pin_wins() {
        let spec = Spec {
            regions: vec![region("a"), region("b")],
            network_pins: vec![
                (
                    "10.0.0.0/8".parse().expect("net"),
                    RegionId::parse("a").expect("id"),
                ),
                (
                    "10.1.0.0/16".parse().expect("net"),
                    RegionId::parse("b").expect("id"),
                ),
            ],
            shards: shards(),
            ..Spec::default()
        };
        let catalog = Catalog::build(spec).expect("valid");
        assert_eq!(
            catalog.network_pin("10.1.2.3".parse().expect("ip")),
            Some(1)
        );
        assert_eq!(
            catalog.network_pin("10.2.2.3".parse().expect("ip")),
            Some(0)
        );
        assert_eq!(catalog.network_pin("11.2.2.3".parse().expect("ip")), None);
        let mapped = "::ffff:10.1.2.3".parse().expect("ip");
        assert_eq!(
            catalog.network_pin(mapped),
            Some(1),
            "IPv4-mapped addresses match IPv4 pins"
        );
    }

    /// Bridge URLs are parsed for real; credentials are refused without being echoed, and
    /// link-local addresses (cloud metadata) are refused.
    #[test]
    fn bridge_urls_are_checked() {
        assert!(check_bridge_url("http://10.0.0.5:8080").is_ok());
        assert!(check_bridge_url("https://jvb.example.com").is_ok());
        let secret = check_bridge_url("http://u:hunter2@10.0.0.5:8080").expect_err("refused");
        assert!(
            secret.contains("credentials") && !secret.contains("hunter2"),
            "{secret}"
        );
        for bad in [
            "http://10.0.0.5:99999",
            "http://[::1",
            "ftp://h",
            "http://169.254.169.254",
            "http://[fe80::1]:8080",
            "http://h/x?y=1",
        ] {
            assert!(check_bridge_url(bad).is_err(), "{bad} accepted");
        }
        let controls = [
            "http://127.0.0.1:18\n191",
            "http://127.0.0.1:18191\t",
            "http://127.0.0.1:18191\r",
            "http://127.0.0.1:18191/\u{0}",
        ];
        for bad in controls {
            assert!(check_new_bridge_url(bad).is_err(), "{bad} accepted");
            // Stored by an earlier version: still loads.
            assert!(check_bridge_url(bad).is_ok(), "{bad} refused when loaded");
        }
    }
}

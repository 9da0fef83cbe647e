//! The sections of the settings file as they are read, with their defaults.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::catalog::RegionId;
use crate::select::{Policy, WhenAllDown};
use crate::token;

/// A value that must never be printed: shown as `<set>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret read from elsewhere (a credential file).
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself; use only where it is needed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<set>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<set>")
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[server]`: where and how the HTTP API listens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Address and port; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the generated key (and later the database) live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Bearer credentials the lobby may send; several allow rotation.
    #[serde(default)]
    pub lobby_credentials: Vec<Secret>,
    /// A file with more lobby credentials, one per line; re-read on SIGHUP.
    #[serde(default)]
    pub lobby_credentials_file: Option<PathBuf>,
    /// Bearer credentials for the admin API.
    #[serde(default)]
    pub admin_credentials: Vec<Secret>,
    /// A file with more admin credentials, one per line; re-read on SIGHUP.
    #[serde(default)]
    pub admin_credentials_file: Option<PathBuf>,
    /// Log line format.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Networks whose `Forwarded` / `X-Forwarded-For` headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Requests served at once; more are answered 503 with `Retry-After`.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
    /// Time one request may take before it is answered 503.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Time a client has to send a request's headers; slower connections are closed.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Largest request head (request line and headers) accepted.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time requests in flight get to finish after SIGTERM or SIGINT.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

fn default_max_concurrent() -> usize {
    512
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_header_read_timeout_ms() -> u64 {
    5_000
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_shutdown_grace_ms() -> u64 {
    10_000
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

/// `[geo]`: the GeoIP database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geo {
    /// A GeoIP2/GeoLite2 City or Country mmdb file.
    #[serde(default = "default_database")]
    pub database: PathBuf,
    /// How often to look for a replaced database file; 0 turns watching off (SIGHUP still
    /// reloads).
    #[serde(default = "default_watch_ms")]
    pub watch_ms: u64,
    /// A replacement file must place at least this share of sampled addresses in the same
    /// country as the database in service; 0 accepts any well-formed file.
    #[serde(default = "default_min_agreement")]
    pub min_agreement: f64,
}

fn default_min_agreement() -> f64 {
    0.5
}

fn default_watch_ms() -> u64 {
    5_000
}

fn default_database() -> PathBuf {
    PathBuf::from("data/geobridge-city.mmdb")
}

/// `[store]`: where regions, bridges and rooms are kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    /// `postgres://...` to share state between instances; SQLite in `state_dir` when unset.
    #[serde(default)]
    pub url: Option<Secret>,
    /// How often to look for registry changes made by other instances.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

fn default_poll_ms() -> u64 {
    500
}

/// `[rooms]`: room lifetime.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rooms {
    /// How long guests may join a room after it was created.
    #[serde(default = "default_room_lifetime")]
    pub lifetime_seconds: u64,
}

fn default_room_lifetime() -> u64 {
    86_400
}

/// How tokens are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// RS256 with a key id; Prosody fetches the public key from geobridge.
    #[default]
    Rs256,
    /// HS256 with Prosody's `app_secret`.
    Hs256,
    /// No token, for a public Jitsi.
    None,
}

/// `[jitsi]`: the Jitsi deployment and the tokens it accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jitsi {
    /// The Jitsi web frontend a link points to (`JITSI_URL`).
    #[serde(default = "default_jitsi_url")]
    pub url: String,
    /// Token mode.
    #[serde(default)]
    pub auth: Auth,
    /// The `kid` of RS256 tokens.
    #[serde(default = "default_key_id")]
    pub key_id: String,
    /// RSA private key, PKCS#1 or PKCS#8 PEM (`JITSI_RSA_JWT_KEY_FILE`); generated if unset.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Prosody's `app_secret`, for HS256.
    #[serde(default)]
    pub app_secret: Option<Secret>,
    /// `iss`: Prosody's `app_id`.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// `aud`.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// `sub`: the XMPP domain, or `*`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Time from issue to `exp`.
    #[serde(default = "default_lifetime")]
    pub token_lifetime_seconds: u64,
    /// How far `nbf` is backdated; Prosody allows no clock skew.
    #[serde(default = "default_nbf_margin")]
    pub nbf_margin_seconds: u64,
    /// Put before every generated room name.
    #[serde(default)]
    pub room_prefix: String,
    /// `context.features` of every token, such as `recording = false`.
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
    /// `[[jitsi.keys]]`: several RS256 keys, one signing; replaces `key_file` and `key_id`.
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

/// One `[[jitsi.keys]]` entry: a key published under its kid, maybe the signing one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// The kid Prosody knows the key by.
    pub kid: String,
    /// PKCS#1 or PKCS#8 PEM private key file.
    pub file: PathBuf,
    /// True for the one key that signs new tokens; the others are only published.
    #[serde(default)]
    pub signing: bool,
}

impl Jitsi {
    /// The claims every token of this deployment carries besides user, room and region.
    pub fn token_profile(&self) -> token::Profile {
        token::Profile {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            subject: self.subject.clone(),
            lifetime_seconds: self.token_lifetime_seconds,
            nbf_margin_seconds: self.nbf_margin_seconds,
            features: self.features.clone(),
        }
    }
}

fn default_jitsi_url() -> String {
    "https://meet.example.com".to_owned()
}
fn default_key_id() -> String {
    "CWMKey".to_owned()
}
fn default_issuer() -> String {
    "CodeWithMe".to_owned()
}
fn default_audience() -> String {
    "jitsi".to_owned()
}
fn default_subject() -> String {
    "*".to_owned()
}
fn default_lifetime() -> u64 {
    3600
}
fn default_nbf_margin() -> u64 {
    30
}

/// `[select]`: default region and policy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SelectSection {
    #[serde(default)]
    pub(super) default_region: Option<RegionId>,
    #[serde(default = "default_threshold")]
    pub(super) stress_threshold: f64,
    #[serde(default)]
    pub(super) when_all_down: WhenAllDown,
    #[serde(default = "default_participant_stress")]
    pub(super) participant_stress: f64,
    #[serde(default = "default_reservation_seconds")]
    pub(super) reservation_seconds: u64,
}

fn default_threshold() -> f64 {
    Policy::default().stress_threshold
}

fn default_participant_stress() -> f64 {
    Policy::default().participant_stress
}

fn default_reservation_seconds() -> u64 {
    Policy::default().reservation_seconds
}

/// `[pins]`: countries and networks sent to a fixed region.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pins {
    /// Country code → region id.
    #[serde(default)]
    pub countries: HashMap<String, RegionId>,
    /// CIDR network → region id.
    #[serde(default)]
    pub networks: HashMap<String, RegionId>,
}

//! Settings: a TOML file, then environment variables on top, validated all at once.
//!
//! With no file, the example configuration compiled into the binary is used (ten regions at
//! real cloud sites, no bridges). Every problem found is collected and reported together,
//! each naming its setting, so an operator fixes a config in one pass. The Code With Me lobby's
//! variable names `JITSI_URL` and `JITSI_RSA_JWT_KEY_FILE` work as they did there.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::catalog::{self, Bridge, Catalog, Region, RegionId, Shard};
use crate::geo::CountryCode;
use crate::probe;
use crate::select::Policy;
use crate::token::{KeyId, KeySource};

mod checks;
mod sections;

pub use checks::{check_web_url, credential_problem};
use checks::{jitsi_problems, reservation_problems, server_problems};
use sections::SelectSection;
pub use sections::{Auth, Geo, Jitsi, KeyEntry, LogFormat, Pins, Rooms, Secret, Server, Store};

/// The example configuration shipped in `data/`, used when no file is given.
pub const EXAMPLE: &str = include_str!("../data/geobridge.example.toml");

/// Exit status for a bad configuration (`EX_CONFIG` is 78; 64 is `EX_USAGE`, as documented).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// How an environment variable's text becomes a TOML value.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Number,
    List,
}

/// Environment variables and the settings they override.
const ENV: &[(&str, &str, Kind)] = &[
    ("GEOBRIDGE_LISTEN", "server.listen", Kind::Text),
    ("GEOBRIDGE_STATE_DIR", "server.state_dir", Kind::Text),
    (
        "GEOBRIDGE_LOBBY_CREDENTIALS",
        "server.lobby_credentials",
        Kind::List,
    ),
    (
        "GEOBRIDGE_LOBBY_CREDENTIALS_FILE",
        "server.lobby_credentials_file",
        Kind::Text,
    ),
    (
        "GEOBRIDGE_ADMIN_CREDENTIALS",
        "server.admin_credentials",
        Kind::List,
    ),
    (
        "GEOBRIDGE_ADMIN_CREDENTIALS_FILE",
        "server.admin_credentials_file",
        Kind::Text,
    ),
    ("GEOBRIDGE_LOG_FORMAT", "server.log_format", Kind::Text),
    (
        "GEOBRIDGE_TRUSTED_PROXIES",
        "server.trusted_proxies",
        Kind::List,
    ),
    (
        "GEOBRIDGE_MAX_CONCURRENT_REQUESTS",
        "server.max_concurrent_requests",
        Kind::Number,
    ),
    (
        "GEOBRIDGE_REQUEST_TIMEOUT_MS",
        "server.request_timeout_ms",
        Kind::Number,
    ),
    (
        "GEOBRIDGE_HEADER_READ_TIMEOUT_MS",
        "server.header_read_timeout_ms",
        Kind::Number,
    ),
    (
        "GEOBRIDGE_MAX_HEADER_BYTES",
        "server.max_header_bytes",
        Kind::Number,
    ),
    (
        "GEOBRIDGE_SHUTDOWN_GRACE_MS",
        "server.shutdown_grace_ms",
        Kind::Number,
    ),
    ("GEOBRIDGE_GEO_WATCH_MS", "geo.watch_ms", Kind::Number),
    (
        "GEOBRIDGE_GEO_MIN_AGREEMENT",
        "geo.min_agreement",
        Kind::Number,
    ),
    ("GEOBRIDGE_DATABASE_URL", "store.url", Kind::Text),
    ("GEOBRIDGE_STORE_POLL_MS", "store.poll_ms", Kind::Number),
    (
        "GEOBRIDGE_ROOM_LIFETIME_SECONDS",
        "rooms.lifetime_seconds",
        Kind::Number,
    ),
    ("GEOBRIDGE_GEO_DATABASE", "geo.database", Kind::Text),
    ("JITSI_URL", "jitsi.url", Kind::Text),
    ("JITSI_RSA_JWT_KEY_FILE", "jitsi.key_file", Kind::Text),
    ("GEOBRIDGE_JITSI_AUTH", "jitsi.auth", Kind::Text),
    ("GEOBRIDGE_JITSI_KEY_ID", "jitsi.key_id", Kind::Text),
    ("GEOBRIDGE_JITSI_APP_SECRET", "jitsi.app_secret", Kind::Text),
    ("GEOBRIDGE_JITSI_ISSUER", "jitsi.issuer", Kind::Text),
    ("GEOBRIDGE_JITSI_AUDIENCE", "jitsi.audience", Kind::Text),
    ("GEOBRIDGE_JITSI_SUBJECT", "jitsi.subject", Kind::Text),
    (
        "GEOBRIDGE_TOKEN_LIFETIME_SECONDS",
        "jitsi.token_lifetime_seconds",
        Kind::Number,
    ),
    (
        "GEOBRIDGE_NBF_MARGIN_SECONDS",
        "jitsi.nbf_margin_seconds",
        Kind::Number,
    ),
    ("GEOBRIDGE_ROOM_PREFIX", "jitsi.room_prefix", Kind::Text),
    (
        "GEOBRIDGE_PROBE_INTERVAL_MS",
        "probe.interval_ms",
        Kind::Number,
    ),
    (
        "GEOBRIDGE_PROBE_TIMEOUT_MS",
        "probe.timeout_ms",
        Kind::Number,
    ),
    ("GEOBRIDGE_PROBE_RISE", "probe.rise", Kind::Number),
    ("GEOBRIDGE_PROBE_FALL", "probe.fall", Kind::Number),
    (
        "GEOBRIDGE_PROBE_HOLD_DOWN_MS",
        "probe.hold_down_ms",
        Kind::Number,
    ),
    (
        "GEOBRIDGE_DEFAULT_REGION",
        "select.default_region",
        Kind::Text,
    ),
    (
        "GEOBRIDGE_STRESS_THRESHOLD",
        "select.stress_threshold",
        Kind::Number,
    ),
    (
        "GEOBRIDGE_WHEN_ALL_DOWN",
        "select.when_all_down",
        Kind::Text,
    ),
];

/// Everything geobridge was told, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Where the settings came from, for `check-config`.
    pub source: String,
    /// `[server]`.
    pub server: Server,
    /// `[geo]`.
    pub geo: Geo,
    /// `[jitsi]`.
    pub jitsi: Jitsi,
    /// `[probe]`.
    pub probe: probe::Config,
    /// `[select]`, as the selection policy.
    pub policy: Policy,
    /// `[select].default_region`.
    pub default_region: Option<RegionId>,
    /// `[pins]`.
    pub pins: Pins,
    /// `[[regions]]`.
    pub regions: Vec<Region>,
    /// `[[bridges]]`.
    pub bridges: Vec<Bridge>,
    /// `[[shards]]`, or one `default` shard at `jitsi.url`.
    pub shards: Vec<Shard>,
    /// `[store]`.
    pub store: Store,
    /// `[rooms]`.
    pub rooms: Rooms,
    /// Regions, bridges and pins, as one checked value.
    #[serde(skip)]
    pub catalog: Catalog,
    /// The file and environment these settings were read from, to read them again.
    #[serde(skip)]
    pub origin: Origin,
}

/// Where settings came from: `reload` reads the same file with the same environment.
#[derive(Clone, Default)]
pub struct Origin {
    file: Option<PathBuf>,
    env: HashMap<String, String>,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment holds secrets: show the file only.
        write!(f, "Origin {{ file: {:?} }}", self.file)
    }
}

/// Every problem found, each naming its setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct Problems(pub Vec<String>);

impl Settings {
    /// Reads `file` (or the built-in example) and applies `env` on top.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Settings, Problems> {
        let (source, text) = match file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => (path.display().to_string(), text),
                Err(e) => {
                    return Err(Problems(vec![format!(
                        "config file '{}': {e}",
                        path.display()
                    )]));
                }
            },
            None => (
                "built-in example configuration".to_owned(),
                EXAMPLE.to_owned(),
            ),
        };
        let mut settings = Settings::parse(source, &text, env)?;
        settings.origin.file = file.map(Path::to_owned);
        Ok(settings)
    }

    /// Parses settings from TOML `text` read from `source` and applies `env` on top; the
    /// result remembers no file, so a reload of it reads the built-in example.
    pub fn parse(
        source: String,
        text: &str,
        env: &HashMap<String, String>,
    ) -> Result<Settings, Problems> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Problems(vec![syntax_problem(&source, text, &e)]))?;
        let mut problems = Vec::new();
        apply_env(&mut table, env, &mut problems);
        let settings = from_table(source, table, env, &mut problems);
        match settings {
            Some(mut settings) if problems.is_empty() => {
                settings.origin = Origin {
                    file: None,
                    env: env.clone(),
                };
                Ok(settings)
            }
            _ => Err(Problems(problems)),
        }
    }

    /// Reads the same file with the same environment again, for a reload on SIGHUP.
    pub fn reload(&self) -> Result<Settings, Problems> {
        Settings::load(self.origin.file.as_deref(), &self.origin.env)
    }

    /// The RS256 keys: `[[jitsi.keys]]`, or else the one `key_file` under `key_id`.
    pub fn key_sources(&self) -> Vec<KeySource> {
        if self.jitsi.keys.is_empty() {
            return vec![KeySource {
                kid: self.key_id(),
                file: self.key_file(),
                signing: true,
            }];
        }
        self.jitsi
            .keys
            .iter()
            .map(|entry| KeySource {
                kid: KeyId::parse(&entry.kid).expect("checked when the settings were loaded"),
                file: entry.file.clone(),
                signing: entry.signing,
            })
            .collect()
    }

    /// The key id, checked at load.
    pub fn key_id(&self) -> KeyId {
        KeyId::parse(&self.jitsi.key_id).expect("checked when the settings were loaded")
    }

    /// The RSA key file to use: the configured one, or the generated one in the state dir.
    pub fn key_file(&self) -> PathBuf {
        match &self.jitsi.key_file {
            Some(path) => path.clone(),
            None => self.server.state_dir.join("jitsi-rsa.pem"),
        }
    }
}

/// True for the name of an environment variable geobridge reads.
pub fn reads_variable(name: &str) -> bool {
    ENV.iter().any(|(known, _, _)| *known == name)
}

/// Variables named `GEOBRIDGE_*` that geobridge does not read, sorted: most likely typos.
pub fn unknown_variables(env: &HashMap<String, String>) -> Vec<&str> {
    let mut unknown: Vec<&str> = env
        .keys()
        .map(String::as_str)
        .filter(|name| name.starts_with("GEOBRIDGE_"))
        .filter(|name| !reads_variable(name))
        .filter(|name| !NOT_SETTINGS.contains(name))
        .collect();
    unknown.sort_unstable();
    unknown
}

/// `GEOBRIDGE_*` variables read by something other than the settings.
const NOT_SETTINGS: &[&str] = &["GEOBRIDGE_TEST_POSTGRES", "GEOBRIDGE_TEST_POSTGRES_PORT"];

fn apply_env(table: &mut toml::Table, env: &HashMap<String, String>, problems: &mut Vec<String>) {
    for &(name, path, kind) in ENV {
        let Some(text) = env.get(name) else { continue };
        let value = match kind {
            Kind::Text => toml::Value::String(text.clone()),
            Kind::List => {
                let entries: Vec<_> = text
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect();
                // Unquoted: the entries may be credentials.
                if entries.is_empty() && !text.trim().is_empty() {
                    problems.push(format!(
                        "{name}: holds no entries, only commas and spaces; give values \
                         separated by commas, or unset it"
                    ));
                    continue;
                }
                toml::Value::Array(entries)
            }
            Kind::Number => match number(text) {
                Ok(value) => value,
                Err(why) => {
                    problems.push(format!("{name}: '{text}' {why}"));
                    continue;
                }
            },
        };
        let (section, key) = path.split_once('.').expect("ENV paths are section.key");
        let entry = table
            .entry(section)
            .or_insert_with(|| toml::Table::new().into());
        if let Some(section) = entry.as_table_mut() {
            section.insert(key.to_owned(), value);
        }
    }
}

/// An environment variable read as a number: an integer when it is one, else a finite float.
fn number(text: &str) -> Result<toml::Value, &'static str> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return Ok(toml::Value::Integer(n));
    }
    // A whole number past i64 would parse as a float and be refused as one.
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is out of range for any setting");
    }
    text.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(toml::Value::Float)
        .ok_or("is not a number")
}

/// Deserialises one section (an empty one when absent), recording its error by the setting
/// and, when an environment variable set it, by that variable too.
fn section<T: DeserializeOwned>(
    table: &mut toml::Table,
    name: &str,
    env: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> Option<T> {
    let empty = if matches!(name, "regions" | "bridges" | "shards") {
        toml::Value::Array(Vec::new())
    } else {
        toml::Value::Table(toml::Table::new())
    };
    match table.remove(name).unwrap_or(empty).try_into() {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            problems.push(section_problem(name, &e.to_string(), env));
            None
        }
    }
}

/// A TOML syntax error by line and column, without the parser's quote of the line or of a
/// value (a number too large for TOML, say), either of which could hold a secret.
fn syntax_problem(source: &str, text: &str, error: &toml::de::Error) -> String {
    let what = hide_quoted(&error.message().trim().replace('\n', "; "), 3);
    let Some(at) = error.span().map(|span| span.start.min(text.len())) else {
        return format!("config file {source}: {what}");
    };
    let before = text.get(..at).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("config file {source}, line {line}, column {column}: {what}")
}

/// Settings whose values are secrets: their problems never quote a value.
const SECRET_SETTINGS: [&str; 4] = [
    "server.lobby_credentials",
    "server.admin_credentials",
    "jitsi.app_secret",
    "store.url",
];

/// `text` with every part quoted in double quotes or backticks replaced by `<hidden>`,
/// unless it is at most `kept` characters long: the deserialiser quotes strings one way
/// and numbers the other, the parser also quotes the punctuation it expected (`=`).
fn hide_quoted(text: &str, kept: usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = &rest[open..=open];
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            out.push_str("<hidden>");
            return out;
        };
        let inner = &after[..close];
        out.push_str(if inner.chars().count() <= kept {
            inner
        } else {
            "<hidden>"
        });
        out.push_str(quote);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// `server.listen: invalid socket address syntax (from GEOBRIDGE_LISTEN='x')` from the
/// deserialiser's `invalid socket address syntax\nin `listen``, on one line.
fn section_problem(name: &str, error: &str, env: &HashMap<String, String>) -> String {
    let error = error.trim();
    let Some((what, key)) = error
        .rsplit_once("\nin `")
        .and_then(|(what, key)| Some((what, key.strip_suffix('`')?)))
    else {
        return format!("[{name}]: {}", error.replace('\n', " "));
    };
    let setting = format!("{name}.{key}");
    let secret = SECRET_SETTINGS.contains(&setting.as_str());
    let mut what = what.replace('\n', " ");
    if secret {
        what = hide_quoted(&what, 0);
    }
    let Some(&(variable, _, _)) = ENV
        .iter()
        .find(|(v, path, _)| *path == setting && env.contains_key(*v))
    else {
        return format!("{setting}: {what}");
    };
    match env.get(variable) {
        Some(value) if !secret => format!("{setting}: {what} (from {variable}='{value}')"),
        _ => format!("{setting}: {what} (from {variable})"),
    }
}

fn from_table(
    source: String,
    mut table: toml::Table,
    env: &HashMap<String, String>,
    problems: &mut Vec<String>,
) -> Option<Settings> {
    let table = &mut table;
    let server: Option<Server> = section(table, "server", env, problems);
    let geo: Option<Geo> = section(table, "geo", env, problems);
    let jitsi: Option<Jitsi> = section(table, "jitsi", env, problems);
    let probe: Option<probe::Config> = section(table, "probe", env, problems);
    let select: Option<SelectSection> = section(table, "select", env, problems);
    let pins: Option<Pins> = section(table, "pins", env, problems);
    let regions: Option<Vec<Region>> = section(table, "regions", env, problems);
    let bridges: Option<Vec<Bridge>> = section(table, "bridges", env, problems);
    let shards: Option<Vec<Shard>> = section(table, "shards", env, problems);
    let store: Option<Store> = section(table, "store", env, problems);
    let rooms: Option<Rooms> = section(table, "rooms", env, problems);
    for unknown in table.keys() {
        problems.push(format!("[{unknown}]: unknown section"));
    }
    let (server, geo, jitsi, probe) = (server?, geo?, jitsi?, probe?);
    let (select, pins, regions, bridges) = (select?, pins?, regions?, bridges?);
    let (shards, store, rooms) = (shards?, store?, rooms?);
    let shards = if shards.is_empty() {
        vec![default_shard(&jitsi)]
    } else {
        shards
    };
    if store.poll_ms < 50 {
        problems.push(format!("store.poll_ms: {} is below 50", store.poll_ms));
    }
    if !(60..=30 * 86_400).contains(&rooms.lifetime_seconds) {
        problems.push(format!(
            "rooms.lifetime_seconds: {} must be between 60 and 2592000",
            rooms.lifetime_seconds
        ));
    }
    problems.extend(server_problems(&server));
    problems.extend(jitsi_problems(&jitsi));
    problems.extend(probe.problems());
    if !(select.stress_threshold > 0.0 && select.stress_threshold <= 10.0) {
        problems.push(format!(
            "select.stress_threshold: {} must be above 0 and at most 10",
            select.stress_threshold
        ));
    }
    problems.extend(reservation_problems(&select));
    if !(0.0..=1.0).contains(&geo.min_agreement) {
        problems.push(format!(
            "geo.min_agreement: {} must be between 0 and 1",
            geo.min_agreement
        ));
    }
    let geo = Geo {
        database: resolve_data_path(&geo.database),
        ..geo
    };
    let spec = catalog_spec(
        &regions,
        &bridges,
        &pins,
        &select.default_region,
        &shards,
        problems,
    );
    let catalog = match Catalog::build(spec) {
        Ok(catalog) => catalog,
        Err(found) => {
            let fresh: Vec<String> = found
                .into_iter()
                .filter(|p| !repeats_jitsi_url(p, problems))
                .collect();
            problems.extend(fresh);
            return None;
        }
    };
    let policy = Policy {
        stress_threshold: select.stress_threshold,
        when_all_down: select.when_all_down,
        participant_stress: select.participant_stress,
        reservation_seconds: select.reservation_seconds,
    };
    Some(Settings {
        source,
        server,
        geo,
        jitsi,
        probe,
        policy,
        default_region: select.default_region,
        pins,
        regions,
        bridges,
        shards,
        store,
        rooms,
        catalog,
        origin: Origin::default(),
    })
}

/// True for the default shard's URL problem when `jitsi.url`, its source, already has it.
fn repeats_jitsi_url(problem: &str, problems: &[String]) -> bool {
    problem
        .strip_prefix("shard 'default': url ")
        .is_some_and(|why| {
            problems
                .iter()
                .any(|p| p.strip_prefix("jitsi.url: ") == Some(why))
        })
}

fn default_shard(jitsi: &Jitsi) -> Shard {
    Shard::single(&jitsi.url)
}

/// The catalog spec from settings; the store replaces its regions and bridges later.
fn catalog_spec(
    regions: &[Region],
    bridges: &[Bridge],
    pins: &Pins,
    default_region: &Option<RegionId>,
    shards: &[Shard],
    problems: &mut Vec<String>,
) -> catalog::Spec {
    let mut spec = catalog::Spec {
        regions: regions.to_vec(),
        bridges: bridges.to_vec(),
        default_region: default_region.clone(),
        shards: shards.to_vec(),
        ..catalog::Spec::default()
    };
    for (country, region) in &pins.countries {
        match CountryCode::parse(country) {
            Ok(code) => spec.country_pins.push((code, region.clone())),
            Err(why) => problems.push(format!("pins.countries: {why}")),
        }
    }
    for (network, region) in &pins.networks {
        match network.parse() {
            Ok(net) => spec.network_pins.push((net, region.clone())),
            Err(_) => problems.push(format!("pins.networks: '{network}' is not a CIDR network")),
        }
    }
    spec
}

impl Settings {
    /// The catalog spec for these settings with another set of regions and bridges.
    pub fn spec_with(&self, regions: Vec<Region>, bridges: Vec<Bridge>) -> catalog::Spec {
        let mut ignored = Vec::new();
        let base = catalog_spec(
            &[],
            &[],
            &self.pins,
            &self.default_region,
            &self.shards,
            &mut ignored,
        );
        catalog::Spec {
            regions,
            bridges,
            ..base
        }
    }
}

/// A relative data path missing from the working directory falls back to the source tree
/// that built this binary, so `cargo run` works from any directory of the checkout.
fn resolve_data_path(path: &Path) -> PathBuf {
    if path.is_absolute() || path.exists() {
        return path.to_owned();
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if built.exists() {
        built
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The built-in example loads with its ten regions and defaults.
    #[test]
    fn example_loads() {
        let s = Settings::load(None, &HashMap::new()).expect("example is valid");
        assert_eq!(s.catalog.regions().len(), 10);
        assert_eq!(s.jitsi.key_id, "CWMKey");
        assert_eq!(s.jitsi.issuer, "CodeWithMe");
        assert_eq!(s.server.listen.port(), 8080);
    }

    /// The lobby's variable names override the file.
    #[test]
    fn environment_wins() {
        let e = env(&[
            ("JITSI_URL", "https://meet.test"),
            ("JITSI_RSA_JWT_KEY_FILE", "/k.pem"),
            ("GEOBRIDGE_PROBE_RISE", "5"),
        ]);
        let s = Settings::load(None, &e).expect("valid");
        assert_eq!(s.jitsi.url, "https://meet.test");
        assert_eq!(s.jitsi.key_file, Some(PathBuf::from("/k.pem")));
        assert_eq!(s.probe.rise, 5);
    }

    /// A value the deserialiser refuses is named by its setting and by the variable that
    /// set it, with the value, on one line; a secret's value is never shown.
    #[test]
    fn refused_values_name_their_variable() {
        let e = env(&[("GEOBRIDGE_LISTEN", "not-an-addr")]);
        let problems = Settings::load(None, &e).expect_err("refused").0;
        assert_eq!(
            problems,
            ["server.listen: invalid socket address syntax (from GEOBRIDGE_LISTEN='not-an-addr')"]
        );
        let e = env(&[("GEOBRIDGE_DATABASE_URL", "postgres://u:hunter2@db")]);
        let problem = section_problem("store", "bad value\nin `url`", &e);
        assert_eq!(
            problem,
            "store.url: bad value (from GEOBRIDGE_DATABASE_URL)"
        );
        let problem = section_problem("probe", "missing field\nsomewhere", &HashMap::new());
        assert_eq!(problem, "[probe]: missing field somewhere");
    }

    /// A file's problems never quote a secret: not the line of a syntax error, not the
    /// value of a credential of the wrong type.
    #[test]
    fn file_problems_keep_secrets() {
        let text = "[store]\nurl = \"postgres://u:hunter2@db/x\" junk\n";
        let problems = Settings::parse("f.toml".into(), text, &HashMap::new())
            .expect_err("refused")
            .0;
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("config file f.toml, line 2, column "));
        assert!(!problems[0].contains("hunter2"), "{}", problems[0]);
        let text = "[server]\nlobby_credentials = \"lobby-secret-1234567890\"\n";
        let problems = Settings::parse("f.toml".into(), text, &HashMap::new())
            .expect_err("refused")
            .0;
        assert!(problems[0].starts_with("server.lobby_credentials: invalid type"));
        assert!(!problems[0].contains("lobby-secret"), "{}", problems[0]);
        for value in ["123456789", "1234.5678", "true", "123456789012345678901"] {
            let text = format!("[jitsi]\napp_secret = {value}\n");
            let problems = Settings::parse("f.toml".into(), &text, &HashMap::new())
                .expect_err("refused")
                .0;
            let problem = &problems[0];
            // Too large for TOML, the last is refused by the parser, before the setting.
            let named = problem.starts_with("jitsi.app_secret: invalid type")
                || problem.starts_with("config file f.toml, line 2, column 14: invalid type");
            assert!(named, "{problem}");
            assert!(!problem.contains(value), "{problem}");
        }
    }

    /// A whole number out of range for any setting is named as such, not as a float.
    #[test]
    fn huge_numbers_from_the_environment() {
        let e = env(&[("GEOBRIDGE_MAX_CONCURRENT_REQUESTS", "99999999999999999999")]);
        let problems = Settings::load(None, &e).expect_err("refused").0;
        assert_eq!(
            problems,
            [
                "GEOBRIDGE_MAX_CONCURRENT_REQUESTS: '99999999999999999999' is out of range for \
                 any setting"
            ]
        );
    }

    /// Several problems are reported together, each naming its setting.
    #[test]
    fn all_problems_at_once() {
        let e = env(&[
            ("GEOBRIDGE_LISTEN", "0.0.0.0:8080"),
            ("JITSI_URL", "meet.test"),
            ("GEOBRIDGE_PROBE_FALL", "x"),
            ("GEOBRIDGE_DEFAULT_REGION", "eu-cntral"),
        ]);
        let problems = Settings::load(None, &e).expect_err("invalid").0;
        let all = problems.join("\n");
        assert!(
            all.contains("GEOBRIDGE_PROBE_FALL: 'x' is not a number"),
            "{all}"
        );
        assert!(all.contains("server.lobby_credentials"), "{all}");
        assert!(all.contains("jitsi.url: 'meet.test'"), "{all}");
        assert!(all.contains("unknown region 'eu-cntral'"), "{all}");
    }

    /// A Jitsi URL with a user and password is refused without quoting it.
    #[test]
    fn web_urls_hold_no_credentials() {
        let e = env(&[("JITSI_URL", "https://admin:hunter2@meet.test/")]);
        let problems = Settings::load(None, &e).expect_err("invalid").0;
        let all = problems.join("\n");
        assert!(all.contains("jitsi.url: must not hold '@'"), "{all}");
        assert!(!all.contains("shard 'default'"), "said twice: {all}");
        assert!(!all.contains("hunter2"), "{all}");
        for hidden in [
            "https://bob:12/34@meet.test/",
            "https://bob:pa?ss@meet.test/",
            "https://meet.test/path@x",
        ] {
            let why = check_web_url(hidden).expect_err(hidden);
            assert!(!why.contains("bob") && !why.contains("path@"), "{why}");
        }
        assert!(check_web_url("https://meet.test/path%40x").is_ok());
        let why = check_web_url("https://meet.test/a\nb").expect_err("a newline");
        assert!(why.contains("'https://meet.test/a\\nb'"), "{why}");
        let why = check_web_url("https://:8443/").expect_err("no host");
        assert!(
            why.contains("is not a URL") || why.contains("has no host"),
            "{why}"
        );
    }

    /// Every environment variable names a setting that exists.
    #[test]
    fn every_variable_has_a_setting() {
        for &(name, path, kind) in ENV {
            let value = match kind {
                Kind::Number => "1000",
                _ => "x",
            };
            let problems = match Settings::load(None, &env(&[(name, value)])) {
                Ok(_) => continue,
                Err(problems) => problems.0.join("\n"),
            };
            assert!(
                !problems.contains("unknown field"),
                "{name} -> {path}: {problems}"
            );
        }
    }

    /// Secrets never show in Debug or serialised output.
    #[test]
    fn secrets_are_masked() {
        let e = env(&[("GEOBRIDGE_LOBBY_CREDENTIALS", "0123456789abcdef0123")]);
        let s = Settings::load(None, &e).expect("valid");
        let shown = format!("{s:?} {}", toml::to_string(&s).expect("serialises"));
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("<set>"));
    }

    /// A list variable of commas alone is refused; a misspelt variable is found.
    #[test]
    fn empty_lists_and_unknown_variables() {
        let e = env(&[("GEOBRIDGE_LOBBY_CREDENTIALS", " , ,")]);
        let problems = Settings::load(None, &e).expect_err("refused").0;
        assert!(problems[0].starts_with("GEOBRIDGE_LOBBY_CREDENTIALS: holds no entries"));
        let e = env(&[
            ("GEOBRIDGE_LISTEN", "127.0.0.1:1"),
            ("GEOBRIDGE_LSTEN", "127.0.0.1:2"),
            ("GEOBRIDGE_TEST_POSTGRES", "postgres://x"),
        ]);
        assert_eq!(unknown_variables(&e), ["GEOBRIDGE_LSTEN"]);
    }

    /// HS256 needs an app_secret of at least 32 bytes.
    #[test]
    fn hs256_secrets_are_long_enough() {
        for (secret, refused) in [("", true), ("short", true), (&"k".repeat(32), false)] {
            let e = env(&[
                ("GEOBRIDGE_JITSI_AUTH", "hs256"),
                ("GEOBRIDGE_JITSI_APP_SECRET", secret),
            ]);
            let problems = Settings::load(None, &e).err().map(|p| p.0.join("\n"));
            let named = problems
                .as_deref()
                .is_some_and(|p| p.contains("jitsi.app_secret"));
            assert_eq!(named, refused, "{secret:?}: {problems:?}");
        }
    }

    /// Without `[[jitsi.keys]]`, the one key is `key_file` under `key_id`, signing.
    #[test]
    fn single_key_from_the_lobby_variables() {
        let e = env(&[
            ("JITSI_RSA_JWT_KEY_FILE", "/k.pem"),
            ("GEOBRIDGE_JITSI_KEY_ID", "ops"),
        ]);
        let sources = Settings::load(None, &e).expect("valid").key_sources();
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].kid.as_str(), "ops");
        assert_eq!(sources[0].file, PathBuf::from("/k.pem"));
        assert!(sources[0].signing);
    }

    /// `[[jitsi.keys]]` and features are checked: one signing key, valid kids, not mixed
    /// with `key_file`, feature names without spaces.
    #[test]
    fn key_list_and_features_are_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("g.toml");
        let keys = "\n[[jitsi.keys]]\nkid = \"a\"\nfile = \"/a.pem\"\n\
                    \n[[jitsi.keys]]\nkid = \"b c\"\nfile = \"/b.pem\"\n\
                    \n[jitsi.features]\n\"screen sharing\" = true\n";
        std::fs::write(&file, format!("{EXAMPLE}{keys}")).expect("write");
        let e = env(&[("JITSI_RSA_JWT_KEY_FILE", "/k.pem")]);
        let all = Settings::load(Some(&file), &e)
            .expect_err("invalid")
            .0
            .join("\n");
        assert!(all.contains("found 0"), "{all}");
        assert!(all.contains("key id 'b c'"), "{all}");
        assert!(all.contains("not both"), "{all}");
        assert!(all.contains("jitsi.features: 'screen sharing'"), "{all}");

        let good = "\n[[jitsi.keys]]\nkid = \"old\"\nfile = \"/a.pem\"\n\
                    \n[[jitsi.keys]]\nkid = \"new\"\nfile = \"/b.pem\"\nsigning = true\n";
        std::fs::write(&file, format!("{EXAMPLE}{good}")).expect("write");
        let settings = Settings::load(Some(&file), &HashMap::new()).expect("valid");
        let sources = settings.key_sources();
        let signing: Vec<_> = sources
            .iter()
            .map(|s| (s.kid.as_str(), s.signing))
            .collect();
        assert_eq!(signing, [("old", false), ("new", true)]);
        assert_eq!(
            settings.reload().expect("reads again").key_sources(),
            sources
        );
    }
}

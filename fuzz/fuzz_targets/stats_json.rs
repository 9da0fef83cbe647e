//! A bridge's `/colibri/stats` body: parsed, applied to the bridge's health, used to choose a
//! region, and served back as JSON, whatever the bridge sends.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use geobridge::catalog::BridgeId;
use geobridge::config::Settings;
use geobridge::probe::{self, Health, HealthSnapshot, Outcome, Stats};
use geobridge::select::{self, Client};
use libfuzzer_sys::fuzz_target;

const BRIDGES: &str = r#"
[[bridges]]
id = "jvb-fra-1"
region = "eu-central"
url = "http://127.0.0.1:9"

[[bridges]]
id = "jvb-fra-2"
region = "eu-central"
url = "http://127.0.0.1:9"
"#;

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/geobridge.example.toml"
        ))
        .expect("example file");
        Settings::parse("fuzz".into(), &(text + BRIDGES), &HashMap::new()).expect("parses")
    })
}

fuzz_target!(|body: &[u8]| {
    let Ok(stats) = serde_json::from_slice::<Stats>(body) else { return };
    let settings = settings();
    let previous = Health::default();
    let outcome = if stats.healthy == Some(false) {
        Outcome::Unhealthy("stats report healthy: false".into())
    } else {
        Outcome::Pass(Some(stats))
    };
    let health = probe::apply(&previous, outcome, &settings.probe);
    let _ = health.stress();
    serde_json::to_string(&health).expect("health serialises");
    let mut snapshot = HealthSnapshot::default();
    snapshot.insert(BridgeId::parse("jvb-fra-1").expect("id"), health);
    let _ = select::survey(&settings.catalog, &snapshot, &settings.policy);
    if let Ok(decision) = select::select(Client::default(), &settings.catalog, &snapshot, &settings.policy) {
        serde_json::to_string(&decision).expect("decision serialises");
    }
});

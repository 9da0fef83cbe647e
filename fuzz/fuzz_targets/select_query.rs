//! `GET /v1/regions/select?<query>`: the query string as the `Query` extractor reads it, the
//! address text as `parse_ip` reads it (also as a `client_ip`), then the GeoIP lookup in the
//! shipped database and the choice of a region.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::Query;
use axum::http::Uri;
use geobridge::api::{SelectQuery, parse_ip};
use geobridge::config::Settings;
use geobridge::geo::{Database, Lookup};
use geobridge::probe::HealthSnapshot;
use geobridge::select::{self, Client};
use libfuzzer_sys::fuzz_target;

struct World {
    settings: Settings,
    database: Database,
    health: HealthSnapshot,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let settings = Settings::load(None, &HashMap::new()).expect("the example loads");
        let database = Database::open(&settings.geo.database).expect("shipped database");
        let health = HealthSnapshot::all_up(&settings.catalog);
        World { settings, database, health }
    })
}

fn choose(text: &str) {
    let Ok(ip) = parse_ip("ip", text) else { return };
    let world = world();
    let location = match world.database.lookup(ip) {
        Lookup::Located(location) => Some(location),
        Lookup::NoData | Lookup::Special(_) => None,
    };
    let client = Client { ip: Some(ip), location: location.as_ref() };
    let settings = &world.settings;
    let decision = select::select(client, &settings.catalog, &world.health, &settings.policy)
        .expect("every example region is unwatched, so one is always chosen");
    serde_json::to_string(&decision).expect("decision serialises");
}

fuzz_target!(|query: &str| {
    choose(query);
    let Ok(uri) = format!("/v1/regions/select?{query}").parse::<Uri>() else { return };
    if let Ok(Query(SelectQuery { ip: Some(ip) })) = Query::<SelectQuery>::try_from_uri(&uri) {
        choose(&ip);
    }
});

//! The record the built database stores for every located network.
//!
//! This is the contract the geobridge service decodes, in GeoIP2-City layout:
//! `{"continent":{"code":"EU"},"country":{"iso_code":"GB"},
//! "subdivisions":[{"names":{"en":"England"}}],"location":{"latitude":51.5,"longitude":-0.13}}`.
//! `continent` is absent for codes that name no country (`ZZ`, `EU`); `subdivisions` is
//! absent when the source names none. Coordinates are 64-bit doubles.

use serde::{Deserialize, Serialize};

/// One record of the built database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct City {
    /// The country's continent, when the country is known to countries-list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continent: Option<Continent>,
    /// The country.
    pub country: Country,
    /// At most one subdivision (DB-IP's `state1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdivisions: Option<Vec<Subdivision>>,
    /// The address-weighted centroid of the subdivision, or of the country without one.
    pub location: Location,
}

/// A continent code (`AF`, `AN`, `AS`, `EU`, `NA`, `OC`, `SA`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Continent {
    /// Two-letter continent code.
    pub code: String,
}

/// A country by ISO 3166-1 alpha-2 code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Country {
    /// Two-letter country code as the source gives it.
    pub iso_code: String,
}

/// A first-level subdivision (state, region, province).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subdivision {
    /// Its names; only English is stored.
    pub names: Names,
}

/// Names by language.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Names {
    /// The English name.
    pub en: String,
}

/// Coordinates in degrees, rounded to 0.01°.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
}

//! Reading an input database into networks that point into a small table of places.
//!
//! Two layouts are accepted: DB-IP City Lite as the npm package ships it (flat `country_code`,
//! `state1`, `latitude`, `longitude` with 32-bit floats) and GeoIP2-City layout (`country`,
//! `subdivisions`, `location` with doubles), which DB-IP also publishes. Networks without a
//! country are dropped.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use ipnet::IpNet;
use maxminddb::{LookupResult, Reader, WithinOptions};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::sphere::Point;

/// An address family; each input file supplies one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4 networks.
    V4,
    /// IPv6 networks.
    V6,
}

impl Family {
    /// The family a network belongs to.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

/// Where a source record puts its addresses.
#[derive(Clone, Debug, PartialEq)]
pub struct Place {
    /// Country code as the source gives it (not always a country: DB-IP uses `ZZ`, `EU`).
    pub country: String,
    /// First-level subdivision name, if the source gives one.
    pub subdivision: Option<String>,
    /// The source's own (city) coordinates, if it gives them.
    pub coordinates: Option<Point>,
}

/// One source network and the index of its place in [`Source::places`].
#[derive(Clone, Copy, Debug)]
pub struct Network {
    /// The network.
    pub net: IpNet,
    /// Index into [`Source::places`].
    pub place: u32,
}

/// The located networks of one address family.
#[derive(Debug, Default)]
pub struct Source {
    /// Distinct places, shared by many networks.
    pub places: Vec<Place>,
    /// Located networks of the requested family, in address order.
    pub networks: Vec<Network>,
    /// Networks dropped, by reason.
    pub skipped: Skipped,
    /// The input's own build time, in seconds since 1970.
    pub build_epoch: u64,
}

/// Counts of input networks that were not taken.
#[derive(Clone, Copy, Debug, Default)]
pub struct Skipped {
    /// Networks whose record names no country.
    pub no_country: usize,
    /// Networks of the other address family.
    pub other_family: usize,
    /// IPv6 networks inside the ranges the output keeps for IPv4 aliases.
    pub aliased: usize,
}

/// IPv6 ranges the output reserves for IPv4 aliases (mapped, Teredo, 6to4).
const ALIAS_RANGES: [&str; 3] = ["::ffff:0:0/96", "2001::/32", "2002::/16"];

impl Source {
    /// Reads the located networks of `family` from the database at `path`.
    pub fn read(path: &Path, family: Family) -> Result<Source> {
        let reader = Reader::open_readfile(path)
            .with_context(|| format!("cannot open input database {}", path.display()))?;
        Source::from_reader(&reader, family)
            .with_context(|| format!("cannot read input database {}", path.display()))
    }

    /// Reads the located networks of `family` from an open database.
    pub fn from_reader<S: AsRef<[u8]>>(reader: &Reader<S>, family: Family) -> Result<Source> {
        let aliases: Vec<IpNet> = ALIAS_RANGES.iter().filter_map(|r| r.parse().ok()).collect();
        let mut source = Source {
            build_epoch: reader.metadata().build_epoch,
            ..Source::default()
        };
        // Many networks share one data record; decode each record once.
        let mut by_offset: HashMap<usize, Option<u32>> = HashMap::new();
        for item in reader.networks(WithinOptions::default())? {
            let lookup = item?;
            let network = lookup.network()?;
            let net = IpNet::new(network.ip(), network.prefix())
                .with_context(|| format!("bad network {network} in input"))?;
            // The default iteration options yield only networks with data, so with an offset.
            let Some(offset) = lookup
                .offset()
                .filter(|_| source.wanted(net, family, &aliases))
            else {
                continue;
            };
            let place = match by_offset.get(&offset) {
                Some(&place) => place,
                None => {
                    let place = source.intern(&lookup, net)?;
                    by_offset.insert(offset, place);
                    place
                }
            };
            match place {
                Some(place) => source.networks.push(Network { net, place }),
                None => source.skipped.no_country += 1,
            }
        }
        Ok(source)
    }

    /// Whether `net` belongs in this source; counts it as skipped when not.
    fn wanted(&mut self, net: IpNet, family: Family, aliases: &[IpNet]) -> bool {
        if Family::of(&net) != family {
            self.skipped.other_family += 1;
        } else if aliases
            .iter()
            .any(|alias| alias.contains(&net) || net.contains(alias))
        {
            self.skipped.aliased += 1;
        } else {
            return true;
        }
        false
    }

    /// Decodes the record behind `lookup` and adds its place, or returns `None` without one.
    fn intern<S: AsRef<[u8]>>(
        &mut self,
        lookup: &LookupResult<'_, S>,
        net: IpNet,
    ) -> Result<Option<u32>> {
        let raw: Option<RawRecord<'_>> = lookup
            .decode()
            .with_context(|| format!("cannot decode the record of {net}"))?;
        let Some(place) = raw.and_then(RawRecord::into_place) else {
            return Ok(None);
        };
        let index = u32::try_from(self.places.len()).context("more than 2^32 distinct places")?;
        self.places.push(place);
        Ok(Some(index))
    }

    /// The place of a network of this source.
    pub fn place(&self, network: &Network) -> &Place {
        &self.places[network.place as usize]
    }
}

/// A source record in either layout; unknown keys (city, postcode, …) are ignored.
#[derive(Deserialize)]
struct RawRecord<'a> {
    #[serde(borrow)]
    country_code: Option<&'a str>,
    #[serde(borrow)]
    state1: Option<&'a str>,
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
    #[serde(borrow)]
    country: Option<RawCountry<'a>>,
    #[serde(borrow)]
    subdivisions: Option<Vec<RawSubdivision<'a>>>,
    location: Option<RawLocation>,
}

#[derive(Deserialize)]
struct RawCountry<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawSubdivision<'a> {
    #[serde(borrow)]
    names: Option<RawNames<'a>>,
}

#[derive(Deserialize)]
struct RawNames<'a> {
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct RawLocation {
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
}

impl RawRecord<'_> {
    fn into_place(self) -> Option<Place> {
        let nested_country = self.country.and_then(|c| c.iso_code);
        let country = self
            .country_code
            .or(nested_country)
            .filter(|c| !c.is_empty())?;
        let nested_subdivision = self
            .subdivisions
            .and_then(|all| all.into_iter().next())
            .and_then(|first| first.names)
            .and_then(|names| names.en);
        let subdivision = self.state1.or(nested_subdivision).filter(|s| !s.is_empty());
        let (nested_lat, nested_lon) = match self.location {
            Some(location) => (location.latitude, location.longitude),
            None => (None, None),
        };
        let coordinates = match (self.latitude.or(nested_lat), self.longitude.or(nested_lon)) {
            (Some(Degrees(latitude)), Some(Degrees(longitude))) => Some(Point {
                latitude,
                longitude,
            }),
            _ => None,
        };
        Some(Place {
            country: country.to_owned(),
            subdivision: subdivision.map(str::to_owned),
            coordinates,
        })
    }
}

/// A coordinate stored as either a 32-bit float or a 64-bit double.
struct Degrees(f64);

impl<'de> Deserialize<'de> for Degrees {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DegreesVisitor)
    }
}

struct DegreesVisitor;

impl Visitor<'_> for DegreesVisitor {
    type Value = Degrees;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a coordinate as a float or a double")
    }

    fn visit_f32<E: de::Error>(self, value: f32) -> Result<Degrees, E> {
        Ok(Degrees(f64::from(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Degrees, E> {
        Ok(Degrees(value))
    }
}

#[cfg(test)]
mod tests {
    use mmdb_writer::{Value, Writer};

    use super::*;

    fn reader(records: &[(&str, Value)]) -> Reader<Vec<u8>> {
        let mut writer = Writer::builder("Test")
            .description(&[("en", "test")])
            .build();
        for (net, value) in records {
            let net: IpNet = net.parse().expect("test network parses");
            writer
                .insert_value(net, value.clone())
                .expect("test insert works");
        }
        let bytes = writer.to_bytes().expect("test database serialises");
        Reader::from_source(bytes).expect("test database opens")
    }

    fn place(country: &str, subdivision: &str, latitude: f64, longitude: f64) -> Place {
        Place {
            country: country.to_owned(),
            subdivision: Some(subdivision.to_owned()),
            coordinates: Some(Point {
                latitude,
                longitude,
            }),
        }
    }

    /// The npm layout: flat keys, 32-bit float coordinates; records without a country drop.
    #[test]
    fn reads_the_flat_dbip_layout() {
        let london = Value::map([
            ("country_code", Value::from("GB")),
            ("state1", Value::from("England")),
            ("city", Value::from("London")),
            ("latitude", Value::Float(51.5)),
            ("longitude", Value::Float(-0.125)),
        ]);
        let nowhere = Value::map([("country_code", Value::from(""))]);
        let db = reader(&[("81.2.69.0/24", london), ("192.0.2.0/24", nowhere)]);
        let source = Source::from_reader(&db, Family::V4).expect("test source reads");
        assert_eq!(source.places, vec![place("GB", "England", 51.5, -0.125)]);
        assert_eq!(source.networks.len(), 1);
        assert_eq!(
            source.networks[0].net,
            "81.2.69.0/24".parse::<IpNet>().expect("parses")
        );
        assert_eq!(source.skipped.no_country, 1);
    }

    /// The GeoIP2-City layout: nested keys and doubles.
    #[test]
    fn reads_the_geoip2_layout() {
        let names = Value::map([("en", Value::from("Quebec")), ("fr", Value::from("Québec"))]);
        let record = Value::map([
            ("country", Value::map([("iso_code", Value::from("CA"))])),
            (
                "subdivisions",
                Value::array([Value::map([("names", names)])]),
            ),
            (
                "location",
                Value::map([
                    ("latitude", Value::Double(45.5)),
                    ("longitude", Value::Double(-73.57)),
                ]),
            ),
        ]);
        let db = reader(&[("2001:db8::/32", record)]);
        let source = Source::from_reader(&db, Family::V6).expect("test source reads");
        assert_eq!(source.places, vec![place("CA", "Quebec", 45.5, -73.57)]);
        assert_eq!(source.networks.len(), 1);
    }

    /// Networks of the other family are counted, not taken.
    #[test]
    fn skips_the_other_family() {
        let record = Value::map([("country_code", Value::from("GB"))]);
        let db = reader(&[("192.0.2.0/24", record)]);
        let source = Source::from_reader(&db, Family::V6).expect("test source reads");
        assert!(source.networks.is_empty());
        assert_eq!(source.skipped.other_family, 1);
    }
}

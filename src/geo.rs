//! Where an IP address is: the GeoIP database and the address ranges that have no place.
//!
//! The database is any MaxMind DB file in the GeoIP2/GeoLite2 City or Country layout; the one
//! shipped in `data/` is built from DB-IP's City Lite data by `tools/geodb`. The whole file is
//! read into memory at open, so replacing the file on disk never changes what is being read.
//! [`Geo`] holds the database behind an atomic pointer so a reload can swap it in while
//! requests keep using the one they started with.

mod buffer;
mod ipv4;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use buffer::Buffer;
use ipv4::{Found, Ipv4Index};

/// Mean Earth radius used for great-circle distances.
const EARTH_RADIUS_KM: f64 = 6371.0;

/// A location at or beyond this accuracy radius is too vague to measure distances from.
const COARSE_RADIUS_KM: u16 = 500;

/// A point on Earth in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Degrees north, -90 to 90.
    pub latitude: f64,
    /// Degrees east, -180 to 180.
    pub longitude: f64,
}

impl Point {
    /// Checks that both coordinates are finite and in range.
    pub fn check(&self) -> Result<(), String> {
        if !(self.latitude.is_finite() && (-90.0..=90.0).contains(&self.latitude)) {
            return Err(format!("latitude {} is outside -90..90", self.latitude));
        }
        if !(self.longitude.is_finite() && (-180.0..=180.0).contains(&self.longitude)) {
            return Err(format!("longitude {} is outside -180..180", self.longitude));
        }
        Ok(())
    }

    /// Great-circle distance by the haversine formula.
    pub fn distance_km(&self, other: &Point) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

/// An ISO 3166-1 alpha-2 country code in upper case, such as `DE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Accepts two ASCII letters in either case.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Ok(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => Err(format!("'{value}' is not a two-letter country code")),
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("built from ASCII letters only")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CountryCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What the database says about an address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Location {
    /// Country, when known.
    pub country: Option<CountryCode>,
    /// Continent code (`EU`, `NA`, ...), when known.
    pub continent: Option<CountryCode>,
    /// First-level subdivision name (state, province), when known; shared, since cached
    /// records hand out copies on every lookup.
    pub subdivision: Option<Arc<str>>,
    /// Coordinates to measure distances from, when known.
    pub point: Option<Point>,
    /// The database's accuracy radius, when it gives one.
    pub accuracy_km: Option<u16>,
    /// True when the place is only known to country level.
    pub coarse: bool,
}

/// Countries' population-weighted centres, `country,continent,latitude,longitude,weight`.
const CENTROIDS_CSV: &str = include_str!("../data/country-centroids.csv");

static CENTROIDS: LazyLock<HashMap<CountryCode, Point>> =
    LazyLock::new(|| parse_centroids(CENTROIDS_CSV));

/// Where a country's people are on average; used when a location is only known to country
/// level. `None` for a country missing from `data/country-centroids.csv`.
pub fn country_centroid(country: CountryCode) -> Option<Point> {
    CENTROIDS.get(&country).copied()
}

fn parse_centroids(csv: &str) -> HashMap<CountryCode, Point> {
    csv.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split(',');
            let country = CountryCode::parse(fields.next()?).ok()?;
            let _continent = fields.next()?;
            let latitude = fields.next()?.trim().parse().ok()?;
            let longitude = fields.next()?.trim().parse().ok()?;
            let point = Point {
                latitude,
                longitude,
            };
            point.check().ok().map(|()| (country, point))
        })
        .collect()
}

/// Address ranges that are not on the public Internet and so have no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressClass {
    /// A public address: look it up.
    Public,
    /// 0.0.0.0, `::`.
    Unspecified,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// RFC 1918 networks.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT.
    Cgnat,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// fc00::/7.
    UniqueLocal,
    /// TEST-NETs, 2001:db8::/32.
    Documentation,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// Other special-purpose ranges (benchmarking, reserved, broadcast).
    Reserved,
}

/// Sorts an address into [`AddressClass`]; IPv4-mapped IPv6 is classified as IPv4.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_loopback() => AddressClass::Loopback,
        _ if ip.is_private() => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::Cgnat,
        _ if ip.is_link_local() => AddressClass::LinkLocal,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Documentation,
        _ if ip.is_multicast() => AddressClass::Multicast,
        (0, ..) | (192, 0, 0) | (198, 18..=19, _) | (240..=255, ..) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let first = ip.segments()[0];
    match first {
        _ if ip.is_unspecified() => AddressClass::Unspecified,
        _ if ip.is_loopback() => AddressClass::Loopback,
        _ if ip.is_multicast() => AddressClass::Multicast,
        _ if (first & 0xffc0) == 0xfe80 => AddressClass::LinkLocal,
        _ if (first & 0xfe00) == 0xfc00 => AddressClass::UniqueLocal,
        0x2001 if ip.segments()[1] == 0x0db8 => AddressClass::Documentation,
        0x3fff if ip.segments()[1] < 0x1000 => AddressClass::Documentation,
        // Only 2000::/3 is handed out as global unicast.
        _ if (first & 0xe000) != 0x2000 => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

/// The answer for one address.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The database places the address.
    Located(Location),
    /// A public address the database has nothing on.
    NoData,
    /// An address with no place on the public Internet.
    Special(AddressClass),
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is missing, unreadable, or not a MaxMind DB.
    #[error("GeoIP database '{path}': {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        source: maxminddb::MaxMindDbError,
    },
    /// A well-formed file whose answers differ from the database in service far more than
    /// any real update does.
    #[error(
        "GeoIP database '{path}' places only {:.0}% of sampled addresses in the same country as \
         the database in service (at least {:.0}% needed; geo.min_agreement); it looks damaged",
        agreement * 100.0, needed * 100.0
    )]
    Implausible {
        /// The file.
        path: PathBuf,
        /// Share of samples that agreed.
        agreement: f64,
        /// The configured minimum.
        needed: f64,
    },
    /// A MaxMind DB, but not a layout geobridge understands.
    #[error(
        "GeoIP database '{path}' has type '{found}'; use a GeoIP2/GeoLite2 City or Country file"
    )]
    WrongType {
        /// The file.
        path: PathBuf,
        /// Its `database_type`.
        found: String,
    },
}

/// Facts about the open database, for `/readyz`, metrics and the CLI.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// The file it was read from.
    pub path: PathBuf,
    /// The metadata's `database_type`.
    pub database_type: String,
    /// When the database was built, seconds since 1970.
    pub build_epoch: u64,
}

/// What identifies one version of a file on disk: length, modification time, inode.
pub type Signature = (u64, std::time::SystemTime, u64);

/// The signature of the file at `path` now.
pub fn signature(path: &Path) -> Option<Signature> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.len(), meta.modified().ok()?, inode))
}

/// One open database.
pub struct Database {
    reader: maxminddb::Reader<Buffer>,
    /// The same bytes the reader reads, for the IPv4 jump table.
    bytes: Buffer,
    /// `None` when the tree could not be walked; lookups then take the reader's way.
    ipv4: Option<Ipv4Index>,
    info: Info,
    /// The file's signature just before it was read.
    signature: Option<Signature>,
    /// Unique per opened database: keys the decoded-record cache.
    serial: u64,
}

/// Serial numbers of opened databases.
static SERIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Slots in each thread's cache of decoded records; a power of two.
const CACHED_RECORDS: usize = 1024;

/// One thread's decoded records, by database serial and data offset. Many addresses share
/// a record (every address of a city), so most lookups skip decoding.
struct RecordCache {
    slots: Vec<Option<(u64, usize, Option<Location>)>>,
}

impl RecordCache {
    fn slot(offset: usize) -> usize {
        // Fibonacci hashing: records sit at scattered offsets, the top bits spread them.
        let spread = (offset as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (spread >> (64 - CACHED_RECORDS.trailing_zeros())) as usize
    }
}

thread_local! {
    static RECORDS: std::cell::RefCell<RecordCache> = std::cell::RefCell::new(RecordCache {
        slots: vec![None; CACHED_RECORDS],
    });
}

impl Database {
    /// Reads the whole file and checks that it is a City or Country database.
    pub fn open(path: &Path) -> Result<Database, Error> {
        // Taken first: a replacement while reading shows as a change and is read again.
        let signature = signature(path);
        let opened = Buffer::read(path).map_err(maxminddb::MaxMindDbError::from);
        let bytes = opened.map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let reader =
            maxminddb::Reader::from_source(bytes.clone()).map_err(|source| Error::Open {
                path: path.to_owned(),
                source,
            })?;
        let ipv4 = Ipv4Index::build(bytes.as_ref(), reader.metadata());
        let promoted = bytes.clone();
        let promoting = std::thread::Builder::new().name("geo-huge-pages".into());
        if let Err(error) = promoting.spawn(move || promoted.promote()) {
            tracing::debug!(%error, "GeoIP database stays on small pages");
        }
        let meta = reader.metadata();
        let found = meta.database_type.clone();
        if !(found.contains("City") || found.contains("Country")) {
            return Err(Error::WrongType {
                path: path.to_owned(),
                found,
            });
        }
        let info = Info {
            path: path.to_owned(),
            database_type: found,
            build_epoch: meta.build_epoch,
        };
        Ok(Database {
            reader,
            bytes,
            ipv4,
            info,
            signature,
            serial: SERIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Opens like [`Database::open`], then walks the whole search tree and data section, so
    /// a truncated or corrupt file is refused before it is put in service.
    pub fn open_verified(path: &Path) -> Result<Database, Error> {
        let database = Database::open(path)?;
        database.verify()?;
        Ok(database)
    }

    /// Walks the whole search tree and data section (about a quarter of a second for the
    /// shipped file): an error names the file and the first damage found.
    pub fn verify(&self) -> Result<(), Error> {
        self.reader.verify().map_err(|source| Error::Open {
            path: self.info.path.clone(),
            source,
        })
    }

    /// The share of `samples` pseudo-random public IPv4 addresses that `other` places in the
    /// same country as this database, among those either of them knows. A monthly update
    /// moves a few percent; a damaged file that still parses moves most of them.
    pub fn agreement(&self, other: &Database, samples: usize) -> f64 {
        let country = |db: &Database, ip| match db.lookup(ip) {
            Lookup::Located(l) => l.country,
            _ => None,
        };
        let mut state: u32 = 0x9e37_79b9;
        let (mut known, mut same) = (0usize, 0usize);
        for _ in 0..samples {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let ip = IpAddr::V4(Ipv4Addr::from(state));
            let (ours, theirs) = (country(self, ip), country(other, ip));
            if ours.is_some() || theirs.is_some() {
                known += 1;
                same += usize::from(ours == theirs);
            }
        }
        if known == 0 {
            1.0
        } else {
            same as f64 / known as f64
        }
    }

    /// Facts about this database.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// The signature its file had when it was read.
    pub fn signature(&self) -> Option<Signature> {
        self.signature
    }

    /// Looks `ip` up; special ranges are answered without touching the database.
    pub fn lookup(&self, ip: IpAddr) -> Lookup {
        let ip = ip.to_canonical();
        match classify(ip) {
            AddressClass::Public => {}
            special => return Lookup::Special(special),
        }
        match self.decode(ip) {
            Ok(Some(location)) => Lookup::Located(location),
            Ok(None) => Lookup::NoData,
            Err(error) => {
                // A damaged record must not fail the request: treat it as unknown.
                tracing::warn!(%error, "GeoIP record could not be decoded");
                Lookup::NoData
            }
        }
    }

    fn decode(&self, ip: IpAddr) -> Result<Option<Location>, maxminddb::MaxMindDbError> {
        if let (IpAddr::V4(v4), Some(index)) = (ip, &self.ipv4) {
            match index.find(self.bytes.as_ref(), u32::from(v4)) {
                Some(Found::Nothing) => return Ok(None),
                Some(Found::Record(offset)) => {
                    if let Some(location) = self.cached(offset) {
                        return Ok(location);
                    }
                }
                None => {}
            }
        }
        let found = match self.reader.lookup(ip) {
            Ok(found) => found,
            // An IPv6 address in an IPv4-only database: nothing to find.
            Err(maxminddb::MaxMindDbError::InvalidInput { .. }) => return Ok(None),
            Err(error) => return Err(error),
        };
        let Some(offset) = found.offset() else {
            return Ok(None);
        };
        if let Some(location) = self.cached(offset) {
            return Ok(location);
        }
        let location = read_record(&found)?;
        RECORDS.with_borrow_mut(|cache| {
            cache.slots[RecordCache::slot(offset)] = Some((self.serial, offset, location.clone()));
        });
        Ok(location)
    }

    /// The record at `offset` if this thread has decoded it lately.
    fn cached(&self, offset: usize) -> Option<Option<Location>> {
        RECORDS.with_borrow(|cache| match &cache.slots[RecordCache::slot(offset)] {
            Some((serial, at, location)) if *serial == self.serial && *at == offset => {
                Some(location.clone())
            }
            _ => None,
        })
    }
}

/// Decodes the record a lookup found.
fn read_record<S: AsRef<[u8]>>(
    found: &maxminddb::LookupResult<'_, S>,
) -> Result<Option<Location>, maxminddb::MaxMindDbError> {
    Ok(found
        .decode::<Record<'_>>()?
        .and_then(Record::into_location))
}

/// The subset of the GeoIP2 City/Country record that geobridge reads.
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    continent: Option<Codes<'a>>,
    #[serde(borrow)]
    country: Option<Codes<'a>>,
    #[serde(borrow)]
    registered_country: Option<Codes<'a>>,
    #[serde(borrow)]
    subdivisions: Option<Vec<Subdivision<'a>>>,
    location: Option<RecordLocation>,
}

#[derive(Deserialize)]
struct Codes<'a> {
    code: Option<&'a str>,
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Subdivision<'a> {
    #[serde(borrow)]
    names: Option<Names<'a>>,
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Names<'a> {
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct RecordLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy_radius: Option<u16>,
}

impl Record<'_> {
    fn into_location(self) -> Option<Location> {
        let code = |text: Option<&str>| text.and_then(|s| CountryCode::parse(s).ok());
        let country = code(self.country.and_then(|c| c.iso_code))
            .or_else(|| code(self.registered_country.and_then(|c| c.iso_code)));
        let continent = code(self.continent.and_then(|c| c.code));
        let subdivision = self
            .subdivisions
            .and_then(|s| s.into_iter().next())
            .and_then(|s| s.names.and_then(|n| n.en).or(s.iso_code).map(Arc::from));
        let (point, accuracy_km) = match self.location {
            Some(RecordLocation {
                latitude: Some(latitude),
                longitude: Some(longitude),
                ..
            }) if (Point {
                latitude,
                longitude,
            })
            .check()
            .is_ok() =>
            {
                let radius = self.location.as_ref().and_then(|l| l.accuracy_radius);
                (
                    Some(Point {
                        latitude,
                        longitude,
                    }),
                    radius,
                )
            }
            Some(RecordLocation {
                accuracy_radius, ..
            }) => (None, accuracy_radius),
            None => (None, None),
        };
        if country.is_none() && point.is_none() {
            return None;
        }
        let coarse = subdivision.is_none() || accuracy_km.is_some_and(|r| r >= COARSE_RADIUS_KM);
        Some(Location {
            country,
            continent,
            subdivision,
            point,
            accuracy_km,
            coarse,
        })
    }
}

/// The database in service, replaceable while requests use it.
pub struct Geo {
    current: ArcSwap<Database>,
}

impl Geo {
    /// Puts `database` in service.
    pub fn new(database: Database) -> Geo {
        Geo {
            current: ArcSwap::from_pointee(database),
        }
    }

    /// The database in service now; keep the `Arc` for the whole of one request.
    pub fn current(&self) -> Arc<Database> {
        self.current.load_full()
    }

    /// Replaces the database; requests in flight finish on the old one.
    pub fn replace(&self, database: Database) {
        self.current.store(Arc::new(database));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 jump table finds the very record the reader finds, for 200,000 addresses
    /// spread over the whole IPv4 space (special ranges included).
    #[test]
    fn ipv4_table_agrees_with_the_reader() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/geobridge-city.mmdb");
        let db = Database::open(&path).expect("db");
        let index = db.ipv4.as_ref().expect("the shipped tree can be walked");
        let mut state: u32 = 0x9e37_79b9;
        let mut records = 0;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let found = db
                .reader
                .lookup(IpAddr::V4(Ipv4Addr::from(state)))
                .expect("lookup");
            let expected = match found.offset() {
                Some(offset) => Found::Record(offset),
                None => Found::Nothing,
            };
            records += usize::from(found.has_data());
            assert_eq!(
                index.find(db.bytes.as_ref(), state),
                Some(expected),
                "{state}"
            );
        }
        assert!(records > 150_000, "only {records} addresses have records");
    }

    /// Cached records are the records: 50,000 pseudo-random addresses (many sharing a
    /// record, many colliding in the cache) answer as decoding each afresh does, in two
    /// databases open at once.
    #[test]
    fn cached_records_match_decoding() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/geobridge-city.mmdb");
        let (a, b) = (
            Database::open(&path).expect("db"),
            Database::open(&path).expect("db"),
        );
        let mut state: u32 = 0x1234_5678;
        let mut hits = 0;
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let ip = IpAddr::V4(Ipv4Addr::from(state));
            let fresh = match a.reader.lookup(ip).expect("lookup") {
                found if found.has_data() => read_record(&found).expect("decodes"),
                _ => None,
            };
            for db in [&a, &b] {
                match db.lookup(ip) {
                    Lookup::Located(location) => {
                        hits += 1;
                        assert_eq!(Some(location), fresh, "{ip}");
                    }
                    Lookup::NoData | Lookup::Special(_) => {
                        assert!(fresh.is_none() || classify(ip) != AddressClass::Public)
                    }
                }
            }
        }
        assert!(hits > 40_000, "only {hits} located");
    }

    fn class(ip: &str) -> AddressClass {
        classify(ip.parse().expect("test address"))
    }

    /// Every special range of the issue is recognised, and public addresses are not.
    #[test]
    fn special_ranges() {
        assert_eq!(class("127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("10.0.0.1"), AddressClass::Private);
        assert_eq!(class("172.16.5.4"), AddressClass::Private);
        assert_eq!(class("192.168.1.1"), AddressClass::Private);
        assert_eq!(class("100.64.0.1"), AddressClass::Cgnat);
        assert_eq!(class("169.254.1.1"), AddressClass::LinkLocal);
        assert_eq!(class("192.0.2.1"), AddressClass::Documentation);
        assert_eq!(class("203.0.113.9"), AddressClass::Documentation);
        assert_eq!(class("224.0.0.1"), AddressClass::Multicast);
        assert_eq!(class("255.255.255.255"), AddressClass::Reserved);
        assert_eq!(class("::1"), AddressClass::Loopback);
        assert_eq!(class("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(class("fd00::1"), AddressClass::UniqueLocal);
        assert_eq!(class("2001:db8::1"), AddressClass::Documentation);
        assert_eq!(class("ff02::1"), AddressClass::Multicast);
        assert_eq!(class("::ffff:10.1.1.1"), AddressClass::Private);
        assert_eq!(class("8.8.8.8"), AddressClass::Public);
        assert_eq!(class("100.128.0.1"), AddressClass::Public);
        assert_eq!(class("2001:4860:4860::8888"), AddressClass::Public);
        assert_eq!(class("::ffff:8.8.8.8"), AddressClass::Public);
    }

    /// London to Frankfurt is about 640 km; a point is 0 km from itself.
    #[test]
    fn great_circle_distance() {
        let london = Point {
            latitude: 51.51,
            longitude: -0.13,
        };
        let frankfurt = Point {
            latitude: 50.11,
            longitude: 8.68,
        };
        let d = london.distance_km(&frankfurt);
        assert!((630.0..650.0).contains(&d), "{d}");
        assert_eq!(london.distance_km(&london), 0.0);
    }

    /// Every line of the shipped centroid table parses, and Germany's centre is in Germany.
    #[test]
    fn country_centroids_load() {
        let rows = CENTROIDS_CSV
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count();
        assert_eq!(CENTROIDS.len(), rows);
        let de = country_centroid(CountryCode::parse("DE").expect("code")).expect("DE listed");
        assert!((47.0..55.0).contains(&de.latitude) && (6.0..15.0).contains(&de.longitude));
    }

    /// Country codes are normalised to upper case and checked.
    #[test]
    fn country_codes() {
        assert_eq!(
            CountryCode::parse("de").map(|c| c.to_string()),
            Ok("DE".to_owned())
        );
        assert!(CountryCode::parse("DEU").is_err());
        assert!(CountryCode::parse("1A").is_err());
    }
}

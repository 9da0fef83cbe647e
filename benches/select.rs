//! Hot path benchmarks: GeoIP lookup, and lookup plus selection over the example regions.
//!
//! Run with `cargo bench --bench select`; each iteration takes the next of 4096 random
//! public IPv4 addresses, so the database is not read from one warm spot.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use geobridge::config::Settings;
use geobridge::geo::{self, AddressClass, Database, Lookup};
use geobridge::probe::HealthSnapshot;
use geobridge::select::{self, Client};

fn addresses() -> Vec<IpAddr> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::new();
    while out.len() < 4096 {
        // xorshift: deterministic, so runs compare.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let ip = IpAddr::V4(Ipv4Addr::from(state as u32));
        if geo::classify(ip) == AddressClass::Public {
            out.push(ip);
        }
    }
    out
}

fn benches(c: &mut Criterion) {
    let settings = Settings::load(None, &HashMap::new()).expect("example settings");
    let database = Database::open(&settings.geo.database).expect("shipped database");
    let health = HealthSnapshot::default();
    let ips = addresses();
    let mut next = ips.iter().cycle();
    c.bench_function("lookup", |b| {
        b.iter(|| black_box(database.lookup(*next.next().expect("ip"))))
    });
    c.bench_function("lookup_and_select", |b| {
        b.iter(|| {
            let ip = *next.next().expect("ip");
            let lookup = database.lookup(ip);
            let location = match &lookup {
                Lookup::Located(l) => Some(l),
                _ => None,
            };
            let client = Client {
                ip: Some(ip),
                location,
            };
            black_box(select::select(
                client,
                &settings.catalog,
                &health,
                &settings.policy,
            ))
        })
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);

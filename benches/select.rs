//! Hot path benchmarks: GeoIP lookup, lookup plus selection over the example regions, and
//! selection alone over 200 regions and 5,000 bridges.
//!
//! Run with `cargo bench --bench select`; each iteration takes the next of 4096 random
//! public IPv4 addresses (or points), so neither the database nor the regions are read from
//! one warm spot. The large catalog's survey is built once, as the service builds it once
//! per health snapshot; its build time is measured separately. The large selection is also
//! measured in CPU time of the benchmark's thread (`..._cpu`), which time spent waiting for
//! a core on a shared machine does not inflate.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use geobridge::catalog::{AdminState, Bridge, BridgeId, Catalog, Region, RegionId, Shard, Spec};
use geobridge::config::Settings;
use geobridge::geo::{self, AddressClass, Database, Location, Lookup, Point};
use geobridge::probe::{Health, HealthSnapshot, State, Stats};
use geobridge::select::{self, Client, Load, Policy, Survey};

/// Deterministic pseudo-random numbers, so runs compare.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..1`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn addresses() -> Vec<IpAddr> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    while out.len() < 4096 {
        let ip = IpAddr::V4(Ipv4Addr::from(rng.next() as u32));
        if geo::classify(ip) == AddressClass::Public {
            out.push(ip);
        }
    }
    out
}

fn point(rng: &mut XorShift) -> Point {
    Point {
        latitude: rng.unit() * 140.0 - 70.0,
        longitude: rng.unit() * 360.0 - 180.0,
    }
}

/// 200 regions in 8 groups with 25 bridges each, mostly healthy, some loaded, draining or
/// down; recent reservations on 50 bridges.
fn large() -> (Catalog, HealthSnapshot, Load) {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut spec = Spec {
        shards: one_shard(),
        ..Spec::default()
    };
    let mut health = HealthSnapshot::default();
    let mut load = Load::default();
    for r in 0..200 {
        let id = RegionId::parse(&format!("region-{r}")).expect("id");
        spec.regions.push(Region {
            id: id.clone(),
            name: String::new(),
            point: point(&mut rng),
            group: Some(format!("group-{}", r % 8)),
            bias_km: (rng.unit() - 0.5) * 200.0,
            shard: None,
        });
        for b in 0..25 {
            let bridge = BridgeId::parse(&format!("jvb-{r}-{b}")).expect("id");
            let roll = rng.unit();
            let stats = Stats {
                stress_level: rng.unit() * 0.9,
                drain: roll > 0.95,
                ..Stats::default()
            };
            let state = if roll < 0.05 { State::Down } else { State::Up };
            let h = Health {
                state,
                stats: Some(stats),
                ..Health::default()
            };
            health.insert(bridge.clone(), h);
            if b == 0 && r % 4 == 0 {
                load.add(bridge.clone(), 5);
            }
            spec.bridges.push(Bridge {
                id: bridge,
                region: id.clone(),
                url: format!("http://10.0.{r}.{b}:8080"),
                weight: 1,
                stats: true,
                admin_state: AdminState::Active,
            });
        }
    }
    (Catalog::build(spec).expect("valid"), health, load)
}

/// One Jitsi shard for catalogs built in tests and benchmarks.
fn one_shard() -> Vec<Shard> {
    vec![Shard::single("https://meet.test")]
}

fn located(p: Point) -> Location {
    Location {
        country: None,
        continent: None,
        subdivision: Some("s".into()),
        point: Some(p),
        accuracy_km: None,
        coarse: false,
    }
}

fn example_paths(c: &mut Criterion) {
    let settings = Settings::load(None, &HashMap::new()).expect("example settings");
    let database = Database::open(&settings.geo.database).expect("shipped database");
    let catalog = Arc::new(settings.catalog.clone());
    let survey = Survey::build(catalog, &HealthSnapshot::default(), &settings.policy);
    let load = Load::default();
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
            black_box(select::select_in(client, &survey, &load, &settings.policy))
        })
    });
}

fn large_catalog(c: &mut Criterion) {
    select_large(c, "select_200_regions_5000_bridges");
    let (catalog, health, _) = large();
    let catalog = Arc::new(catalog);
    let policy = Policy::default();
    c.bench_function("survey_build_200_regions_5000_bridges", |b| {
        b.iter(|| black_box(Survey::build(catalog.clone(), &health, &policy)))
    });
}

fn large_catalog_cpu(c: &mut Criterion<ThreadCpu>) {
    select_large(c, "select_200_regions_5000_bridges_cpu");
}

fn select_large<M: Measurement + 'static>(c: &mut Criterion<M>, name: &str) {
    let (catalog, health, mut load) = large();
    let policy = Policy::default();
    let survey = Survey::build(Arc::new(catalog), &health, &policy);
    // As the API keeps it: reservations resolved to positions once, not per request.
    load.place(&survey);
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let clients: Vec<Location> = (0..4096).map(|_| located(point(&mut rng))).collect();
    let mut next = clients.iter().cycle();
    c.bench_function(name, |b| {
        b.iter(|| {
            let client = Client {
                ip: None,
                location: next.next(),
            };
            black_box(select::select_in(client, &survey, &load, &policy))
        })
    });
}

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpu;

fn thread_cpu_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_nanos()
    }

    fn end(&self, start: u64) -> u64 {
        thread_cpu_nanos().saturating_sub(start)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNanos
    }
}

/// Shows CPU nanoseconds as ns, µs or ms of CPU time.
struct CpuNanos;

impl ValueFormatter for CpuNanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (divisor, unit) = match typical {
            t if t < 1e3 => (1.0, "ns cpu"),
            t if t < 1e6 => (1e3, "µs cpu"),
            _ => (1e6, "ms cpu"),
        };
        values.iter_mut().for_each(|v| *v /= divisor);
        unit
    }

    fn scale_throughputs(&self, _: f64, _: &Throughput, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v = 1e9 / *v);
        "per cpu second"
    }

    fn scale_for_machines(&self, _: &mut [f64]) -> &'static str {
        "ns cpu"
    }
}

criterion_group!(hot_path, example_paths, large_catalog);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = large_catalog_cpu
}
criterion_main!(hot_path, cpu_time);

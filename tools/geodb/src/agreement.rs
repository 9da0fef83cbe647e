//! `agreement`: how often the built database leads to the same region as the source.
//!
//! Addresses are drawn from the source's located networks, half from each family: uniformly
//! over located IPv4 addresses, and for IPv6 a uniformly chosen network, then an address in
//! it (see [`sample_weight`]). For each address the nearest region is found three ways: from the
//! source's own city coordinates (the reference), from the built database's coordinates, and
//! from the country centroid alone (for comparison).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use maxminddb::Reader;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::country;
use crate::record::City;
use crate::region::Regions;
use crate::source::{Family, Network, Source};
use crate::sphere::Point;

/// Arguments of `agreement`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// DB-IP City Lite IPv4 database the build read.
    #[arg(long)]
    ipv4: PathBuf,
    /// DB-IP City Lite IPv6 database the build read.
    #[arg(long)]
    ipv6: PathBuf,
    /// The built database.
    #[arg(long, default_value = "data/geobridge-city.mmdb")]
    built: PathBuf,
    /// A geobridge configuration file whose `[[regions]]` to measure against.
    #[arg(long, default_value = "data/geobridge.example.toml")]
    regions: PathBuf,
    /// The country centroid CSV the build wrote.
    #[arg(long, default_value = "data/country-centroids.csv")]
    centroids: PathBuf,
    /// Number of addresses, half IPv4 and half IPv6.
    #[arg(long, default_value_t = 100_000)]
    sample: u64,
    /// Seed of the random generator, so a run can be repeated exactly.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs `agreement` and prints the shares.
pub fn run(args: &Args) -> Result<()> {
    let regions = Regions::load(&args.regions)?;
    let countries = country::read_centroids_csv(&args.centroids)?;
    let built = Reader::open_readfile(&args.built)
        .with_context(|| format!("cannot open built database {}", args.built.display()))?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(args.seed);
    let judge = Judge {
        regions: &regions,
        countries: &countries,
        built: &built,
    };
    let mut tally = Tally::default();
    let v4_count = args.sample - args.sample / 2;
    for (family, path, count) in [
        (Family::V4, &args.ipv4, v4_count),
        (Family::V6, &args.ipv6, args.sample / 2),
    ] {
        let source = Source::read(path, family)?;
        let sampler = Sampler::new(&source)?;
        for _ in 0..count {
            let network = sampler.pick(&mut rng);
            let address = random_address(network.net, &mut rng);
            let verdict = judge.judge(&source, network, address)?;
            tally.add(family, &source.place(network).country, verdict);
        }
    }
    tally.print();
    Ok(())
}

/// Draws networks in proportion to their weight, among those the source gives coordinates.
struct Sampler<'a> {
    networks: Vec<&'a Network>,
    cumulative: Vec<f64>,
}

impl<'a> Sampler<'a> {
    fn new(source: &'a Source) -> Result<Sampler<'a>> {
        let networks: Vec<&Network> = source
            .networks
            .iter()
            .filter(|network| source.place(network).coordinates.is_some())
            .collect();
        let mut total = 0.0;
        let cumulative = networks
            .iter()
            .map(|network| {
                total += sample_weight(&network.net);
                total
            })
            .collect();
        if networks.is_empty() {
            bail!("the source has no network with coordinates to sample");
        }
        Ok(Sampler {
            networks,
            cumulative,
        })
    }

    fn pick(&self, rng: &mut Xoshiro256PlusPlus) -> &'a Network {
        let total = self.cumulative.last().copied().unwrap_or_default();
        let target = rng.random::<f64>() * total;
        let index = self.cumulative.partition_point(|&sum| sum <= target);
        self.networks[index.min(self.networks.len() - 1)]
    }
}

/// How likely a network is to be drawn.
///
/// IPv4: its address count, so every located address is equally likely. IPv6: one per
/// network. Weighting by /48s would put about 85% of the draws into a handful of unassigned
/// blocks (/7 to /10) that DB-IP files at one place in Switzerland, measuring nothing; DB-IP
/// splits IPv6 space finely where it knows more, so networks follow its detail instead.
fn sample_weight(net: &IpNet) -> f64 {
    match net {
        IpNet::V4(v4) => 2f64.powi(32 - i32::from(v4.prefix_len())),
        IpNet::V6(_) => 1.0,
    }
}

/// A uniformly random address inside `net`.
fn random_address(net: IpNet, rng: &mut Xoshiro256PlusPlus) -> IpAddr {
    match net {
        IpNet::V4(v4) => {
            let host = rng.random::<u32>() & u32::from(v4.hostmask());
            IpAddr::V4(Ipv4Addr::from(u32::from(v4.network()) | host))
        }
        IpNet::V6(v6) => {
            let host = rng.random::<u128>() & u128::from(v6.hostmask());
            IpAddr::V6(Ipv6Addr::from(u128::from(v6.network()) | host))
        }
    }
}

/// What one address says: whether each variant picks the reference region.
#[derive(Clone, Copy, Debug)]
struct Verdict {
    built_same: bool,
    built_missing: bool,
    country_same: bool,
}

struct Judge<'a> {
    regions: &'a Regions,
    countries: &'a BTreeMap<String, Point>,
    built: &'a Reader<Vec<u8>>,
}

impl Judge<'_> {
    fn judge(&self, source: &Source, network: &Network, address: IpAddr) -> Result<Verdict> {
        let place = source.place(network);
        let reference = place.coordinates.map(|point| self.region(point));
        let record: Option<City> = self
            .built
            .lookup(address)
            .and_then(|lookup| lookup.decode())
            .with_context(|| format!("cannot look up {address} in the built database"))?;
        let built = record.map(|city| {
            self.region(Point {
                latitude: city.location.latitude,
                longitude: city.location.longitude,
            })
        });
        let country = self
            .countries
            .get(&place.country)
            .map(|&point| self.region(point));
        Ok(Verdict {
            built_same: built.is_some() && built == reference,
            built_missing: built.is_none(),
            country_same: country.is_some() && country == reference,
        })
    }

    fn region(&self, point: Point) -> &str {
        self.regions.nearest(point).0.id.as_str()
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    samples: u64,
    built_same: u64,
    built_missing: u64,
    country_same: u64,
}

impl Counts {
    fn add(&mut self, verdict: Verdict) {
        self.samples += 1;
        self.built_same += u64::from(verdict.built_same);
        self.built_missing += u64::from(verdict.built_missing);
        self.country_same += u64::from(verdict.country_same);
    }
}

#[derive(Debug, Default)]
struct Tally {
    overall: Counts,
    ipv4: Counts,
    us_ipv4: Counts,
    ipv6: Counts,
    us_ipv6: Counts,
}

impl Tally {
    fn add(&mut self, family: Family, country: &str, verdict: Verdict) {
        self.overall.add(verdict);
        let (all, us) = match family {
            Family::V4 => (&mut self.ipv4, &mut self.us_ipv4),
            Family::V6 => (&mut self.ipv6, &mut self.us_ipv6),
        };
        all.add(verdict);
        if country == "US" {
            us.add(verdict);
        }
    }

    fn print(&self) {
        println!("same region as the source's city coordinates");
        println!(
            "{:<14} {:>8} {:>10} {:>13} {:>8}",
            "", "samples", "built", "country-only", "missing"
        );
        let rows = [
            ("overall", &self.overall),
            ("IPv4", &self.ipv4),
            ("US IPv4", &self.us_ipv4),
            ("IPv6", &self.ipv6),
            ("US IPv6", &self.us_ipv6),
        ];
        for (label, counts) in rows {
            let share = |part: u64| 100.0 * part as f64 / counts.samples.max(1) as f64;
            println!(
                "{label:<14} {:>8} {:>9.2}% {:>12.2}% {:>8}",
                counts.samples,
                share(counts.built_same),
                share(counts.country_same),
                counts.built_missing
            );
        }
    }
}

//! `lookup`: checks a database's structure, then prints the record it holds for addresses and
//! the nearest region.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use maxminddb::Reader;

use crate::record::City;
use crate::region::Regions;
use crate::sphere::Point;

/// Arguments of `lookup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database to read.
    #[arg(long, default_value = "data/geobridge-city.mmdb")]
    db: PathBuf,
    /// A geobridge configuration file whose `[[regions]]` to measure against.
    #[arg(long, default_value = "data/geobridge.example.toml")]
    regions: PathBuf,
    /// Addresses to look up; `::ffff:a.b.c.d` is looked up as `a.b.c.d`.
    #[arg(required = true)]
    addresses: Vec<IpAddr>,
}

/// Runs `lookup`, one line per address.
pub fn run(args: &Args) -> Result<()> {
    let reader = Reader::open_readfile(&args.db)
        .with_context(|| format!("cannot open database {}", args.db.display()))?;
    let regions = Regions::load(&args.regions)?;
    reader
        .verify()
        .with_context(|| format!("{} is not a valid database", args.db.display()))?;
    let metadata = reader.metadata();
    println!(
        "{}: {}, built {}, {} nodes, {}-bit records",
        args.db.display(),
        metadata.database_type,
        metadata.build_epoch,
        metadata.node_count,
        metadata.record_size
    );
    for &address in &args.addresses {
        println!("{}", describe(&reader, &regions, address)?);
    }
    Ok(())
}

fn describe(reader: &Reader<Vec<u8>>, regions: &Regions, address: IpAddr) -> Result<String> {
    let canonical = address.to_canonical();
    let record: Option<City> = reader
        .lookup(canonical)
        .and_then(|lookup| lookup.decode())
        .with_context(|| format!("cannot look up {canonical}"))?;
    let Some(city) = record else {
        return Ok(format!("{address}\tno record"));
    };
    let point = Point {
        latitude: city.location.latitude,
        longitude: city.location.longitude,
    };
    let (region, distance_km) = regions.nearest(point);
    let json = serde_json::to_string(&city).context("cannot render the record as JSON")?;
    Ok(format!(
        "{address}\t{}\t{distance_km:.0} km\t{json}",
        region.id
    ))
}

//! `geobridge-geodb` builds geobridge's GeoIP database from DB-IP City Lite and checks it.
//!
//! - `source` reads an input database into networks and the places they point to;
//! - `centroid` averages the places' coordinates per subdivision and country, by address;
//! - `record` is the output record, the contract the geobridge service decodes;
//! - `build` writes the database and `country` the per-country tables (continents, CSV);
//! - `agreement` measures how often the built database picks the same region as the source,
//!   using `region` (nearest region) and `sphere` (distances and means on the globe);
//! - `lookup` prints what the database says about addresses.

mod agreement;
mod build;
mod centroid;
mod country;
mod lookup;
mod record;
mod region;
mod source;
mod sphere;

use clap::{Parser, Subcommand};

/// Builds and checks geobridge's GeoIP2-City-layout database.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the database and the country centroid CSV from DB-IP City Lite.
    Build(build::Args),
    /// Measure how often the built database picks the source's nearest region.
    Agreement(agreement::Args),
    /// Print the record and nearest region for addresses.
    Lookup(lookup::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Build(args) => build::run(&args),
        Command::Agreement(args) => agreement::run(&args),
        Command::Lookup(args) => lookup::run(&args),
    }
}

//! Per-country tables: continents from countries-list and the country centroid CSV.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::centroid::Centroids;
use crate::sphere::Point;

/// The header line of the country centroid CSV.
const CSV_HEADER: &str = "country,continent,latitude,longitude,weight";

/// Continent codes by country code.
pub type Continents = HashMap<String, String>;

#[derive(Deserialize)]
struct CountryEntry {
    continent: String,
}

/// Reads countries-list's `countries.min.json` (`{"GB": {"continent": "EU", …}, …}`).
pub fn load_continents(path: &Path) -> Result<Continents> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read countries file {}", path.display()))?;
    let entries: HashMap<String, CountryEntry> =
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not countries-list's countries.min.json",
                path.display()
            )
        })?;
    if entries.is_empty() {
        bail!("countries file {} lists no countries", path.display());
    }
    Ok(entries
        .into_iter()
        .map(|(code, entry)| (code, entry.continent))
        .collect())
}

/// Renders every country centroid as CSV, coordinates rounded to `1 / steps_per_degree`.
pub fn centroids_csv(
    centroids: &Centroids,
    continents: &Continents,
    steps_per_degree: f64,
) -> String {
    let mut csv = format!("{CSV_HEADER}\n");
    for (country, centroid) in centroids.countries() {
        let continent = continents.get(country).map_or("", String::as_str);
        let point = centroid.point.rounded(steps_per_degree);
        let (latitude, longitude, weight) = (point.latitude, point.longitude, centroid.weight);
        // Writing to a String cannot fail.
        let _ = writeln!(
            csv,
            "{country},{continent},{latitude:.2},{longitude:.2},{weight:.0}"
        );
    }
    csv
}

/// Reads a country centroid CSV written by [`centroids_csv`].
pub fn read_centroids_csv(path: &Path) -> Result<BTreeMap<String, Point>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read country centroids {}", path.display()))?;
    let mut lines = text.lines();
    if lines.next() != Some(CSV_HEADER) {
        bail!(
            "{} does not start with the header '{CSV_HEADER}'",
            path.display()
        );
    }
    lines
        .enumerate()
        .map(|(index, line)| {
            parse_csv_line(line)
                .with_context(|| format!("{} line {}: '{line}'", path.display(), index + 2))
        })
        .collect()
}

fn parse_csv_line(line: &str) -> Result<(String, Point)> {
    let fields: Vec<&str> = line.split(',').collect();
    let [country, _continent, latitude, longitude, _weight] = fields[..] else {
        bail!("expected 5 comma-separated fields, found {}", fields.len());
    };
    let latitude: f64 = latitude
        .parse()
        .with_context(|| format!("bad latitude '{latitude}'"))?;
    let longitude: f64 = longitude
        .parse()
        .with_context(|| format!("bad longitude '{longitude}'"))?;
    Ok((
        country.to_owned(),
        Point {
            latitude,
            longitude,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of the CSV parses into its country and point.
    #[test]
    fn csv_line_parses() {
        let (country, point) = parse_csv_line("GB,EU,52.41,-1.47,43000000").expect("valid line");
        assert_eq!(country, "GB");
        assert_eq!(
            point,
            Point {
                latitude: 52.41,
                longitude: -1.47
            }
        );
        assert!(parse_csv_line("GB,EU,north,-1.47,1").is_err());
    }
}

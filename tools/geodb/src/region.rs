//! Regions from a geobridge configuration file and the nearest one to a point.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::sphere::Point;

/// One `[[regions]]` entry; other keys of the entry are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct Region {
    /// The region id, e.g. `eu-west`.
    pub id: String,
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
}

impl Region {
    /// The region's location.
    pub fn point(&self) -> Point {
        Point {
            latitude: self.latitude,
            longitude: self.longitude,
        }
    }
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    regions: Vec<Region>,
}

/// The regions of a configuration file, never empty.
#[derive(Clone, Debug)]
pub struct Regions(Vec<Region>);

impl Regions {
    /// Reads the `[[regions]]` entries of a geobridge TOML configuration file.
    pub fn load(path: &Path) -> Result<Regions> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read regions file {}", path.display()))?;
        let file: ConfigFile = toml::from_str(&text)
            .with_context(|| format!("cannot parse regions file {}", path.display()))?;
        Regions::new(file.regions).with_context(|| format!("in {}", path.display()))
    }

    /// Checks that there is at least one region and every coordinate is in range.
    pub fn new(regions: Vec<Region>) -> Result<Regions> {
        if regions.is_empty() {
            bail!("no [[regions]] entries");
        }
        for region in &regions {
            let (lat, lon) = (region.latitude, region.longitude);
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                bail!(
                    "region '{}' has coordinates {lat}, {lon} out of range",
                    region.id
                );
            }
        }
        Ok(Regions(regions))
    }

    /// The region nearest to `point` by great-circle distance, and that distance in km.
    pub fn nearest(&self, point: Point) -> (&Region, f64) {
        let mut best = (&self.0[0], self.0[0].point().distance_km(point));
        for region in &self.0[1..] {
            let distance_km = region.point().distance_km(point);
            if distance_km < best.1 {
                best = (region, distance_km);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nearest of London and Frankfurt to Paris is London.
    #[test]
    fn nearest_picks_the_closest() {
        let toml = r#"
            [[regions]]
            id = "eu-west"
            latitude = 51.51
            longitude = -0.13
            group = "europe"
            [[regions]]
            id = "eu-central"
            latitude = 50.11
            longitude = 8.68
        "#;
        let file: ConfigFile = toml::from_str(toml).expect("test TOML parses");
        let regions = Regions::new(file.regions).expect("two valid regions");
        let (region, _) = regions.nearest(Point {
            latitude: 48.86,
            longitude: 2.35,
        });
        assert_eq!(region.id, "eu-west");
    }
}

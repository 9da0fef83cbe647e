//! Address-weighted centroids of subdivisions and countries.
//!
//! The database takes one centroid per (country, subdivision) over both address families, so
//! a dual-stack client gets the same location whichever family a request arrives on.

use std::collections::HashMap;

use ipnet::IpNet;

use crate::source::{Place, Source};
use crate::sphere::{Mean, Point};

/// How much a network counts in an average of locations.
///
/// IPv4: its address count. IPv6: its number of /48s, the usual assignment to one end site, so
/// that a unit counts one site in both families (an IPv4 address is typically one home or
/// office behind NAT). A network longer than /48 still counts as one site, and one shorter
/// than /32 (the smallest allocation to an ISP) counts as a /32: DB-IP files its largest
/// IPv6 blocks, registry pools, unassigned space (up to /7) and government holdings, each at
/// one point, and uncapped they would decide their areas' centroids (a single /20 in
/// Oxfordshire held a sixth of England's /48s) while holding few clients for their size.
pub fn weight(net: &IpNet) -> f64 {
    match net {
        IpNet::V4(v4) => 2f64.powi(32 - i32::from(v4.prefix_len())),
        IpNet::V6(v6) => 2f64.powi(48 - i32::from(v6.prefix_len()).clamp(32, 48)),
    }
}

/// A country's centroid and the weight behind it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Centroid {
    /// The weighted mean of the source's coordinates.
    pub point: Point,
    /// The summed weight of the networks with coordinates.
    pub weight: f64,
}

/// Centroids of every subdivision and country of one source.
#[derive(Debug, Default)]
pub struct Centroids {
    subdivisions: HashMap<(String, String), Point>,
    countries: HashMap<String, Centroid>,
}

impl Centroids {
    /// Averages the coordinates of every network of `sources`, weighted by [`weight`].
    pub fn of(sources: &[&Source]) -> Centroids {
        let mut subdivisions: HashMap<(String, String), Mean> = HashMap::new();
        let mut countries: HashMap<String, Mean> = HashMap::new();
        for source in sources {
            for (place, weight) in source.places.iter().zip(place_weights(source)) {
                let Some(point) = place.coordinates else {
                    continue;
                };
                countries
                    .entry(place.country.clone())
                    .or_default()
                    .add(point, weight);
                if let Some(subdivision) = &place.subdivision {
                    let key = (place.country.clone(), subdivision.clone());
                    subdivisions.entry(key).or_default().add(point, weight);
                }
            }
        }
        Centroids {
            subdivisions: subdivisions
                .into_iter()
                .filter_map(|(key, mean)| Some((key, mean.point()?)))
                .collect(),
            countries: countries
                .into_iter()
                .filter_map(|(key, mean)| {
                    Some((
                        key,
                        Centroid {
                            point: mean.point()?,
                            weight: mean.weight(),
                        },
                    ))
                })
                .collect(),
        }
    }

    /// The location for `place`: its subdivision's centroid, else its country's.
    pub fn locate(&self, place: &Place) -> Option<Point> {
        let subdivision = place.subdivision.as_ref().and_then(|subdivision| {
            self.subdivisions
                .get(&(place.country.clone(), subdivision.clone()))
        });
        subdivision
            .copied()
            .or_else(|| self.country(&place.country).map(|c| c.point))
    }

    /// The centroid of one country.
    pub fn country(&self, country: &str) -> Option<&Centroid> {
        self.countries.get(country)
    }

    /// Every country's centroid, ordered by country code.
    pub fn countries(&self) -> Vec<(&str, &Centroid)> {
        let mut all: Vec<_> = self
            .countries
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }

    /// How many subdivisions have a centroid.
    pub fn subdivision_count(&self) -> usize {
        self.subdivisions.len()
    }
}

/// The summed weight of each place's networks; places are far fewer than networks.
fn place_weights(source: &Source) -> Vec<f64> {
    let mut weights = vec![0.0; source.places.len()];
    for network in &source.networks {
        weights[network.place as usize] += weight(&network.net);
    }
    weights
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Network;

    fn net(text: &str) -> IpNet {
        text.parse().expect("test network parses")
    }

    fn place(subdivision: Option<&str>, latitude: f64, longitude: f64) -> Place {
        Place {
            country: "GB".to_owned(),
            subdivision: subdivision.map(str::to_owned),
            coordinates: Some(Point {
                latitude,
                longitude,
            }),
        }
    }

    /// IPv4 counts addresses; IPv6 counts /48s, at least one and at most a /32's worth.
    #[test]
    fn weights_count_addresses_and_sites() {
        assert_eq!(weight(&net("192.0.2.0/24")), 256.0);
        assert_eq!(weight(&net("2001:db8::/40")), 256.0);
        assert_eq!(weight(&net("2001:db8::/32")), 65536.0);
        assert_eq!(weight(&net("2000::/7")), 65536.0);
        assert_eq!(weight(&net("2001:db8::/64")), 1.0);
    }

    /// A subdivision uses its own centroid; a place without one uses the country's.
    #[test]
    fn locate_prefers_the_subdivision() {
        let source = Source {
            places: vec![place(Some("England"), 51.0, 0.0), place(None, 55.0, -3.0)],
            networks: vec![
                Network {
                    net: net("192.0.2.0/24"),
                    place: 0,
                },
                Network {
                    net: net("198.51.100.0/24"),
                    place: 1,
                },
                Network {
                    net: net("203.0.113.0/25"),
                    place: 0,
                },
            ],
            ..Source::default()
        };
        let centroids = Centroids::of(&[&source]);
        let england = centroids
            .locate(&source.places[0])
            .expect("England is located");
        assert!((england.latitude - 51.0).abs() < 1e-9, "{england:?}");
        let country = centroids.locate(&source.places[1]).expect("GB is located");
        assert!(
            country.latitude > 52.0 && country.latitude < 53.0,
            "{country:?}"
        );
        assert_eq!(centroids.country("GB").map(|c| c.weight), Some(640.0));
    }
}

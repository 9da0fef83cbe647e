//! Points on the Earth: great-circle distance and weighted averages.
//!
//! Averages are taken on unit vectors rather than on raw degrees, so that a country or
//! subdivision spanning the 180° meridian (Fiji, Chukotka, the Aleutians) averages to a point
//! among its networks instead of to the far side of the globe.

/// Mean Earth radius (IUGG), in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A latitude/longitude pair in degrees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Degrees north, -90 to 90.
    pub latitude: f64,
    /// Degrees east, -180 to 180.
    pub longitude: f64,
}

impl Point {
    /// Great-circle (haversine) distance to `other`, in kilometres.
    pub fn distance_km(self, other: Point) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }

    /// The point with both coordinates rounded to `1 / steps_per_degree` degrees.
    pub fn rounded(self, steps_per_degree: f64) -> Point {
        // Dividing last gives the double nearest to the decimal (-121.49, not
        // -121.49000000000001); adding 0.0 turns a rounded -0.0 into 0.0.
        let round = |value: f64| (value * steps_per_degree).round() / steps_per_degree + 0.0;
        Point {
            latitude: round(self.latitude),
            longitude: round(self.longitude),
        }
    }

    fn to_vector(self) -> [f64; 3] {
        let (lat, lon) = (self.latitude.to_radians(), self.longitude.to_radians());
        [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
    }
}

/// A running weighted mean of points.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mean {
    sum: [f64; 3],
    weight: f64,
}

impl Mean {
    /// Adds `point` with `weight` (a non-negative number).
    pub fn add(&mut self, point: Point, weight: f64) {
        let vector = point.to_vector();
        for (sum, component) in self.sum.iter_mut().zip(vector) {
            *sum += weight * component;
        }
        self.weight += weight;
    }

    /// Total weight added so far.
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// The weighted mean, or `None` when nothing was added or the points cancel out.
    pub fn point(&self) -> Option<Point> {
        let [x, y, z] = self.sum;
        let horizontal = x.hypot(y);
        if self.weight <= 0.0 || horizontal.hypot(z) <= 1e-12 * self.weight {
            return None;
        }
        Some(Point {
            latitude: z.atan2(horizontal).to_degrees(),
            longitude: y.atan2(x).to_degrees(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(latitude: f64, longitude: f64) -> Point {
        Point {
            latitude,
            longitude,
        }
    }

    /// London to Frankfurt is about 637 km along the great circle.
    #[test]
    fn distance_matches_a_known_pair() {
        let km = point(51.51, -0.13).distance_km(point(50.11, 8.68));
        assert!((km - 637.0).abs() < 3.0, "{km}");
    }

    /// A mean across the 180° meridian stays near it instead of jumping to 0°.
    #[test]
    fn mean_handles_the_antimeridian() {
        let mut mean = Mean::default();
        mean.add(point(-17.0, 179.0), 1.0);
        mean.add(point(-17.0, -179.0), 1.0);
        let centre = mean.point().expect("two points have a mean");
        assert!(centre.longitude.abs() > 179.9, "{centre:?}");
    }

    /// Weights pull the mean toward the heavier point.
    #[test]
    fn mean_follows_weights() {
        let mut mean = Mean::default();
        mean.add(point(0.0, 0.0), 3.0);
        mean.add(point(0.0, 10.0), 1.0);
        let centre = mean.point().expect("two points have a mean");
        assert!(
            centre.longitude > 2.0 && centre.longitude < 3.0,
            "{centre:?}"
        );
        assert_eq!(mean.weight(), 4.0);
    }

    /// Rounding snaps to the grid and never yields negative zero.
    #[test]
    fn rounding_snaps_to_hundredths() {
        let rounded = point(51.5074, -0.001).rounded(100.0);
        assert_eq!(rounded, point(51.51, 0.0));
        assert_eq!(point(0.0, -121.4899).rounded(100.0).longitude, -121.49);
        assert!(rounded.longitude.is_sign_positive());
    }
}

//! Geographic points.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("coordinates out of range: latitude must be within ±90 and longitude within ±180, got ({latitude}, {longitude})")]
pub struct InvalidCoordinates {
    pub latitude: f64,
    pub longitude: f64,
}

/// A WGS 84 point; only constructible with a valid latitude and longitude, also when read
/// back from JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPoint")]
pub struct GeoPoint {
    latitude: f64,
    longitude: f64,
}

#[derive(Deserialize)]
struct RawPoint {
    latitude: f64,
    longitude: f64,
}

impl TryFrom<RawPoint> for GeoPoint {
    type Error = InvalidCoordinates;
    fn try_from(raw: RawPoint) -> Result<Self, Self::Error> {
        GeoPoint::new(raw.latitude, raw.longitude)
    }
}

impl GeoPoint {
    pub fn new(latitude: f64, longitude: f64) -> Result<Self, InvalidCoordinates> {
        let valid = latitude.is_finite()
            && longitude.is_finite()
            && (-90.0..=90.0).contains(&latitude)
            && (-180.0..=180.0).contains(&longitude);
        if valid {
            Ok(Self {
                latitude,
                longitude,
            })
        } else {
            Err(InvalidCoordinates {
                latitude,
                longitude,
            })
        }
    }

    pub fn latitude(&self) -> f64 {
        self.latitude
    }

    pub fn longitude(&self) -> f64 {
        self.longitude
    }

    /// Great-circle distance in kilometres (haversine, mean Earth radius).
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0088;
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlng = (other.longitude - self.longitude).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlng / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latitude_beyond_ninety_is_rejected() {
        assert!(GeoPoint::new(123.0, 10.0).is_err());
        assert!(GeoPoint::new(10.0, 181.0).is_err());
        assert!(GeoPoint::new(f64::NAN, 0.0).is_err());
        assert!(GeoPoint::new(-90.0, 180.0).is_ok());
    }

    #[test]
    fn invalid_points_do_not_deserialize() {
        assert!(
            serde_json::from_str::<GeoPoint>(r#"{"latitude": 123.0, "longitude": 0.0}"#).is_err()
        );
        assert!(
            serde_json::from_str::<GeoPoint>(r#"{"latitude": 45.0, "longitude": 4.0}"#).is_ok()
        );
    }

    #[test]
    fn paris_to_london_is_about_344_km() {
        let paris = GeoPoint::new(48.8566, 2.3522).unwrap();
        let london = GeoPoint::new(51.5074, -0.1278).unwrap();
        assert!((paris.distance_km(&london) - 343.5).abs() < 1.0);
    }
}

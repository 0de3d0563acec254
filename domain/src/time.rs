//! Half-open UTC time ranges `[start, end)`.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a time range must end after it starts")]
pub struct EmptyRange;

/// `[start, end)` with `start < end`. Two ranges that merely touch (`a.end == b.start`) do not
/// overlap, so back-to-back bookings of one slot are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRange")]
pub struct TimeRange {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

#[derive(Deserialize)]
struct RawRange {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl TryFrom<RawRange> for TimeRange {
    type Error = EmptyRange;
    fn try_from(raw: RawRange) -> Result<Self, Self::Error> {
        TimeRange::new(raw.start, raw.end)
    }
}

impl TimeRange {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, EmptyRange> {
        if start < end {
            Ok(Self { start, end })
        } else {
            Err(EmptyRange)
        }
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// An IANA time zone name (`Europe/Paris`, `UTC`): the calendar a lot's days are counted in.
/// Its form is checked here; that the zone exists is checked against the database's list of
/// zones when a lot is registered or changed (`Commands::register_lot`, `update_lot`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZone(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a time zone is an IANA name such as Europe/Paris or UTC")]
pub struct InvalidTimeZone;

impl TimeZone {
    pub fn utc() -> Self {
        Self("UTC".to_owned())
    }

    /// Trimmed; 1 to 64 letters, digits and `/ _ + -`, in `/`-separated non-empty parts.
    pub fn parse(raw: &str) -> Result<Self, InvalidTimeZone> {
        let name = raw.trim();
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '+' | '-');
        let well_formed = (1..=64).contains(&name.len())
            && name.chars().all(allowed)
            && name.split('/').all(|part| !part.is_empty());
        well_formed
            .then(|| Self(name.to_owned()))
            .ok_or(InvalidTimeZone)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        Self::utc()
    }
}

impl TryFrom<String> for TimeZone {
    type Error = InvalidTimeZone;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<TimeZone> for String {
    fn from(zone: TimeZone) -> Self {
        zone.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_are_iana_names() {
        use super::TimeZone;
        assert_eq!(
            TimeZone::parse(" Europe/Paris ").unwrap().as_str(),
            "Europe/Paris"
        );
        assert_eq!(TimeZone::default().as_str(), "UTC");
        for good in ["UTC", "America/Argentina/Buenos_Aires", "Etc/GMT+5"] {
            assert!(TimeZone::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Europe/",
            "/Paris",
            "Europe//Paris",
            "Europe/Par is",
            "../etc",
        ] {
            assert_eq!(TimeZone::parse(bad), Err(InvalidTimeZone), "{bad}");
        }
    }
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(minute: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minute)
    }

    #[test]
    fn touching_ranges_do_not_overlap() {
        let a = TimeRange::new(at(0), at(60)).unwrap();
        let b = TimeRange::new(at(60), at(120)).unwrap();
        assert!(!a.overlaps(&b) && !b.overlaps(&a));
    }

    #[test]
    fn empty_and_inverted_ranges_are_rejected() {
        assert!(TimeRange::new(at(5), at(5)).is_err());
        assert!(TimeRange::new(at(6), at(5)).is_err());
    }

    #[test]
    fn deserializing_an_inverted_range_fails() {
        let json = r#"{"start":"2030-01-01T02:00:00Z","end":"2030-01-01T01:00:00Z"}"#;
        assert!(serde_json::from_str::<TimeRange>(json).is_err());
    }

    proptest! {
        #[test]
        fn overlap_is_symmetric_and_matches_a_shared_minute(a in 0i64..500, la in 1i64..200, b in 0i64..500, lb in 1i64..200) {
            let x = TimeRange::new(at(a), at(a + la)).unwrap();
            let y = TimeRange::new(at(b), at(b + lb)).unwrap();
            prop_assert_eq!(x.overlaps(&y), y.overlaps(&x));
            let shares_a_minute = (a..a + la).any(|m| (b..b + lb).contains(&m));
            prop_assert_eq!(x.overlaps(&y), shares_a_minute);
        }
    }
}

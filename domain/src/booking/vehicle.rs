use serde::{Deserialize, Serialize};

use crate::personal::ERASED;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vehicle number must be 1 to 16 letters, digits, spaces or dashes")]
pub struct InvalidVehicleNumber;

/// A licence plate as written by the driver, upper-cased, inner whitespace collapsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VehicleNumber(String);

impl VehicleNumber {
    pub fn parse(raw: &str) -> Result<Self, InvalidVehicleNumber> {
        let plate = raw
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_uppercase();
        let valid_chars = plate
            .chars()
            .all(|c| c.is_alphanumeric() || c == ' ' || c == '-');
        if plate.is_empty() || plate.chars().count() > 16 || !valid_chars {
            return Err(InvalidVehicleNumber);
        }
        Ok(Self(plate))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The vehicle number of an erased person, as history reads it.
    pub fn erased() -> Self {
        Self(ERASED.to_owned())
    }
}

/// The stored form: a plate, or [`ERASED`] (lower case: no plate reads so).
impl TryFrom<String> for VehicleNumber {
    type Error = InvalidVehicleNumber;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value == ERASED {
            return Ok(Self::erased());
        }
        Self::parse(&value)
    }
}

impl From<VehicleNumber> for String {
    fn from(v: VehicleNumber) -> Self {
        v.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_are_normalized() {
        assert_eq!(
            VehicleNumber::parse("  ab-123   cd ").unwrap().as_str(),
            "AB-123 CD"
        );
    }

    #[test]
    fn empty_or_odd_plates_are_rejected() {
        for bad in ["", "   ", "AB_12", "ABCDEFGHIJKLMNOPQ", "AB;DROP"] {
            assert!(VehicleNumber::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}

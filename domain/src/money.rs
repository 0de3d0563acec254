//! Money: integer minor units with an ISO 4217 currency. Never floating point.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency must be a three-letter ISO 4217 code, got {0:?}")]
    BadCurrency(String),
    #[error("amount must not be negative")]
    Negative,
    #[error("amount is too large")]
    Overflow,
}

/// An upper-case three-letter currency code such as `EUR`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let code = code.trim();
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(code.to_ascii_uppercase()))
        } else {
            Err(MoneyError::BadCurrency(code.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.0
    }
}

/// A non-negative amount of money (also when read back from JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawMoney")]
pub struct Money {
    /// Minor units (cents).
    pub minor: i64,
    pub currency: Currency,
}

#[derive(Deserialize)]
struct RawMoney {
    minor: i64,
    currency: Currency,
}

impl TryFrom<RawMoney> for Money {
    type Error = MoneyError;
    fn try_from(raw: RawMoney) -> Result<Self, Self::Error> {
        Money::new(raw.minor, raw.currency)
    }
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(Self { minor, currency })
    }
}

impl std::fmt::Display for Money {
    /// `500 EUR minor units`: no decimal point, since currencies differ in their exponent.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} minor units", self.minor, self.currency.as_str())
    }
}

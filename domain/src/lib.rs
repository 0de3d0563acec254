//! # parking-domain
//!
//! The platform's business rules: aggregates (`User`, `EmailClaim`, `ParkingLot`, `Slot`,
//! `Booking`, `Payment`, `Review`), their commands and events, and the value objects they are made of (money in
//! integer minor units, half-open UTC time ranges, geo points, e-mail addresses).
//!
//! This crate must never do I/O: no SQL, no HTTP, no Kafka, no clock. Whatever a rule needs
//! from the outside world (the current time, a lot's rate) arrives inside the command.
#![forbid(unsafe_code)]

pub mod actor;
pub mod booking;
pub mod error;
pub mod geo;
pub mod lot;
pub mod money;
pub mod payment;
pub mod personal;
pub mod review;
pub mod slot;
pub mod text;
pub mod time;
pub mod user;

pub use actor::{Actor, Role};
pub use error::{RuleError, Violation};

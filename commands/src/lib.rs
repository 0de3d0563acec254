//! # parking-commands
//!
//! The write side's application layer: one command bus per aggregate over the event store,
//! the process managers that keep aggregates in step (sign-up ⇄ e-mail claim, booking ⇄ slot
//! reservation, payment ⇄ booking, expiry) and compensate when a step fails, retries on optimistic-concurrency conflicts,
//! event metadata, and authorization of who may issue what.
//!
//! It must never answer queries from read models: decisions are taken on aggregates loaded
//! from the event store, never on projections that may lag.
#![forbid(unsafe_code)]

mod booking_desk;
mod bookings;
mod bus;
mod cameras;
mod context;
mod error;
mod lots;
mod occupancy;
mod payments;
mod retry;
mod reviews;
mod service;
mod users;

pub use booking_desk::{BookingRequest, CreatedBooking, DeskStats};
pub use bus::Bus;
pub use cameras::CameraSetup;
pub use context::{CommandContext, PositionCell};
pub use error::CommandError;
pub use lots::SlotChanges;
pub use occupancy::Observation;
pub use payments::{ProviderNotification, ProviderRefund};
pub use reviews::Reviewed;
pub use service::{Commands, Settings};
pub use users::{password, Credentials, NewUser};

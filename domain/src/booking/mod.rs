//! Bookings: a driver's claim on one slot for one time range, and its lifecycle
//! `Pending → Confirmed → Active → Completed`, plus `Cancelled` and `Expired`.
//!
//! A booking does not decide whether its slot is free; the slot's calendar does
//! ([`crate::slot::Slot`]). The command layer's process manager reserves on the slot first,
//! then creates the booking, and releases the reservation when a later step fails.

mod aggregate;
mod policy;
mod pricing;
mod vehicle;

pub use aggregate::{
    Booking, BookingCommand, BookingError, BookingEvent, BookingState, BookingStatus,
};
pub use policy::BookingPolicy;
pub use pricing::price_for;
pub use vehicle::{InvalidVehicleNumber, VehicleNumber};

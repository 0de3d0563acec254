//! Bookings: a driver's claim on one slot for one time range, and its lifecycle
//! `Pending → Confirmed → Active → Completed`, plus `Cancelled` and `Expired`.
//!
//! A booking does not decide whether its slot is free; the slot's calendar does
//! ([`crate::slot::Slot`]). Whether a booking may be made at all is [`decide_booking`]'s
//! decision, the one home of the rules that span the slot, its lot and the policy; the command
//! layer records the slot's reservation and the booking's creation together.

mod aggregate;
mod decision;
mod policy;
mod pricing;
mod vehicle;

pub use aggregate::{
    Booking, BookingCommand, BookingError, BookingEvent, BookingState, BookingStatus,
    UnknownBookingStatus,
};
pub use decision::{decide_booking, BookingDecision, BookingRefused, NewBooking};
pub use policy::BookingPolicy;
pub use pricing::{price_for, Tariff};
pub use vehicle::{InvalidVehicleNumber, VehicleNumber};

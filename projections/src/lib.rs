//! # parking-projections
//!
//! Read models: tables shaped for the questions clients ask (a lot with its live counts, a
//! slot's status now, a driver's bookings), built only from events, and the queries that read
//! them.
//!
//! They must never decide anything: the write side does not read them, and any of them can be
//! dropped and rebuilt from the event store with the same result. Every row remembers the
//! sequence of the last event applied to it, so applying an event twice changes nothing.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod bookings;
pub mod feeds;
mod live;
pub mod lots;
mod model;
pub mod page;
pub mod rebuild;
pub mod reviews;
pub mod runtime;
pub mod slots;
pub mod users;

pub use model::{projection, Projection, ProjectionError, ReadModel};
pub use page::{Page, PageRequest, Sort};
pub use runtime::{Batch, EventSource, KafkaSource, Lagging, Projections, StoreTail};

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, EventEnvelope};
use parking_domain::booking::Booking;
use parking_domain::lot::ParkingLot;
use parking_domain::review::Review;
use parking_domain::slot::Slot;
use parking_domain::user::User;

/// Every read model of the system, as the projector runs them.
pub fn all() -> Vec<Box<dyn ReadModel>> {
    vec![
        projection::<User, _>(users::UsersProjection),
        projection::<ParkingLot, _>(lots::LotsProjection),
        projection::<Slot, _>(slots::SlotsProjection),
        projection::<Booking, _>(bookings::BookingsProjection),
        projection::<Review, _>(reviews::ReviewsProjection),
        Box::new(analytics::AnalyticsProjection),
    ]
}

/// The event's aggregate id as the UUID every one of our streams is named by.
pub(crate) fn aggregate_uuid<A: Aggregate>(
    event: &EventEnvelope<A>,
) -> Result<uuid::Uuid, sqlx::Error> {
    event
        .aggregate_id
        .parse()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// When the event happened, as recorded in its metadata by the command layer. Never "now":
/// a rebuild must give the same rows as the live run.
pub fn occurred_at<A: Aggregate>(event: &EventEnvelope<A>) -> Result<DateTime<Utc>, sqlx::Error> {
    let raw = event.metadata.get("occurred_at").ok_or_else(|| {
        sqlx::Error::Decode(
            format!(
                "{} {} #{} has no occurred_at",
                A::TYPE,
                event.aggregate_id,
                event.sequence
            )
            .into(),
        )
    })?;
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

//! Owner analytics: per lot and calendar day (in the lot's time zone), money captured and
//! refunded per currency, bookings by the day they were made and their status now, and slot
//! time in service and occupied. The figures over a window are read by [`query`].
//!
//! One projection reads four aggregates' events (lots, slots, bookings, payments) in log
//! order. A run of events is folded in memory over the entities it touches (`fold.rs`), then
//! written back with a fixed number of statements (`store.rs`); a run ends before a lot
//! changes its time zone, so that every day is computed in the zone the lot had then.
//!
//! Occupancy is time-weighted: a slot's time counts from its registration, as in service
//! unless taken out of service (or its lot deactivated), and as occupied while in service and
//! either observed occupied or holding a checked-in booking within its range (the live
//! status's rule). The time since a slot's last change is not in the day rows: queries add it
//! up to their own "now".

mod fold;
pub mod forecast;
pub mod query;
mod store;

use async_trait::async_trait;
use cqrs_es::Aggregate;
use parking_domain::booking::Booking;
use parking_domain::lot::ParkingLot;
use parking_domain::payment::Payment;
use parking_domain::slot::Slot;
use parking_infra::LoggedEvent;
use sqlx::PgConnection;

use crate::model::{ProjectionError, ReadModel};
use crate::{aggregate_uuid, occurred_at};
use fold::{Fact, Input};

pub struct AnalyticsProjection;

#[async_trait]
impl ReadModel for AnalyticsProjection {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "rm_analytics_lots",
            "rm_analytics_slots",
            "rm_analytics_bookings",
            "rm_analytics_payments",
            "rm_analytics_days",
            "rm_analytics_hours",
            "rm_analytics_booking_days",
            "rm_analytics_revenue",
        ]
    }

    async fn apply(
        &self,
        db: &mut PgConnection,
        event: &LoggedEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(db, &[event]).await
    }

    async fn apply_batch(
        &self,
        db: &mut PgConnection,
        events: &[&LoggedEvent],
    ) -> Result<(), ProjectionError> {
        let inputs = (events.iter())
            .filter(|e| store::wanted(&e.aggregate_type, &e.event_type))
            .map(|e| input(e))
            .collect::<Result<Vec<_>, _>>()?;
        for run in runs(&inputs) {
            store::apply_run(db, run).await?;
        }
        Ok(())
    }
}

/// The inputs cut before every change of a lot's time zone.
fn runs(inputs: &[Input]) -> Vec<&[Input]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for (i, input) in inputs.iter().enumerate() {
        if i > start && store::moves_a_lot(input) {
            runs.push(&inputs[start..i]);
            start = i;
        }
    }
    if start < inputs.len() {
        runs.push(&inputs[start..]);
    }
    runs
}

fn input(event: &LoggedEvent) -> Result<Input, ProjectionError> {
    let kind = event.aggregate_type.as_str();
    if kind == ParkingLot::TYPE {
        decoded::<ParkingLot>(event, Fact::Lot)
    } else if kind == Slot::TYPE {
        decoded::<Slot>(event, Fact::Slot)
    } else if kind == Booking::TYPE {
        decoded::<Booking>(event, Fact::Booking)
    } else if kind == Payment::TYPE {
        decoded::<Payment>(event, Fact::Payment)
    } else {
        Err(ProjectionError::Source(format!(
            "analytics has no use for {kind} events (position {})",
            event.global_position
        )))
    }
}

fn decoded<A: Aggregate>(
    event: &LoggedEvent,
    fact: impl FnOnce(A::Event) -> Fact,
) -> Result<Input, ProjectionError> {
    let envelope = event.decode::<A>()?;
    Ok(Input {
        position: event.global_position,
        stream: aggregate_uuid(&envelope)?,
        occurred_at: occurred_at(&envelope)?,
        fact: fact(envelope.payload),
    })
}

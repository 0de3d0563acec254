//! What deciding a review looks up in the event store itself: who may review must not lag
//! like a read model.

use sqlx::PgPool;
use uuid::Uuid;

/// The bookings `user_id` made at `lot_id` (by their creation events; index
/// `events_booking_by_driver_and_lot`).
pub async fn bookings_of(
    db: &PgPool,
    user_id: Uuid,
    lot_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM events
          WHERE aggregate_type = 'booking' AND event_type = 'BookingCreated'
            AND payload -> 'BookingCreated' ->> 'user_id' = $1
            AND payload -> 'BookingCreated' ->> 'lot_id' = $2",
    )
    .bind(user_id.to_string())
    .bind(lot_id.to_string())
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().filter_map(|id| id.parse().ok()).collect())
}

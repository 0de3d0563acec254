//! What the payment process looks up in the event store itself: these answers must not lag
//! like a read model's.

use sqlx::PgPool;
use uuid::Uuid;

/// The payment whose stream recorded Stripe's PaymentIntent `intent_id`.
pub async fn payment_for_intent(db: &PgPool, intent_id: &str) -> Result<Option<Uuid>, sqlx::Error> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM events
          WHERE aggregate_type = 'payment' AND event_type = 'PaymentIntentCreated'
            AND payload -> 'PaymentIntentCreated' ->> 'intent_id' = $1
          LIMIT 1",
    )
    .bind(intent_id)
    .fetch_optional(db)
    .await?;
    Ok(id.and_then(|id| id.parse().ok()))
}

/// Payments with a refund requested before `before` and neither done nor failed since:
/// `(payment id, refund id)`, at most `limit`.
pub async fn unanswered_refunds(
    db: &PgPool,
    before: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT r.aggregate_id, r.payload -> 'RefundRequested' ->> 'refund_id'
           FROM events r
          WHERE r.aggregate_type = 'payment' AND r.event_type = 'RefundRequested'
            AND r.recorded_at < $1
            AND NOT EXISTS (
                SELECT 1 FROM events a
                 WHERE a.aggregate_type = 'payment' AND a.aggregate_id = r.aggregate_id
                   AND a.event_type IN ('RefundSucceeded', 'RefundFailed')
                   AND a.payload -> a.event_type ->> 'refund_id'
                       = r.payload -> 'RefundRequested' ->> 'refund_id')
          ORDER BY r.recorded_at
          LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(p, r)| Some((p.parse().ok()?, r.parse().ok()?)))
        .collect())
}

/// Payments whose success was recorded before `before` but that neither confirmed their
/// booking nor have a refund requested: what follows a success did not happen (a crash in
/// between). At most `limit`.
pub async fn unsettled(
    db: &PgPool,
    before: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT s.aggregate_id FROM events s
          WHERE s.aggregate_type = 'payment' AND s.event_type = 'PaymentSucceeded'
            AND s.recorded_at < $1
            AND NOT EXISTS (
                SELECT 1 FROM events c
                 WHERE c.aggregate_type = 'booking' AND c.event_type = 'BookingConfirmed'
                   AND c.payload -> 'BookingConfirmed' ->> 'payment_id' = s.aggregate_id)
            AND NOT EXISTS (
                SELECT 1 FROM events r
                 WHERE r.aggregate_type = 'payment' AND r.aggregate_id = s.aggregate_id
                   AND r.event_type = 'RefundRequested')
          ORDER BY s.recorded_at
          LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(ids.into_iter().filter_map(|id| id.parse().ok()).collect())
}

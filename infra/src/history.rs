//! The history as auditors read it (docs/audit.md): the global log filtered by position,
//! aggregate type and time; one stream whole; and any aggregate's state at a past instant,
//! replayed from its events with the upcasters. Events are shown in the Kafka contract's
//! envelope (`kafka::envelope_text`), states with the same secrets left out.

use crate::log::{select_logged_events, DecodeError, EventLog, LoggedEvent};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use parking_domain::booking::Booking;
use parking_domain::lot::ParkingLot;
use parking_domain::payment::Payment;
use parking_domain::review::Review;
use parking_domain::slot::Slot;
use parking_domain::user::{EmailClaim, User};
use serde::Serialize;
use serde_json::Value;

/// Every aggregate type the store holds.
pub const AGGREGATE_TYPES: [&str; 7] = [
    "lot",
    "slot",
    "booking",
    "payment",
    "review",
    "user",
    "email_claim",
];

/// An aggregate type the store does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no aggregate type {0:?}; the types are {AGGREGATE_TYPES:?}")]
pub struct UnknownType(pub String);

/// `raw` as one of [`AGGREGATE_TYPES`].
pub fn aggregate_type(raw: &str) -> Result<&'static str, UnknownType> {
    AGGREGATE_TYPES
        .iter()
        .find(|t| **t == raw)
        .copied()
        .ok_or_else(|| UnknownType(raw.to_owned()))
}

/// Which events of the log to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only events after this position.
    pub after: i64,
    /// Only events at or before this position.
    pub up_to: Option<i64>,
    pub aggregate_type: Option<String>,
    /// Only events recorded at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Only events recorded before this instant.
    pub to: Option<DateTime<Utc>>,
}

/// The events `filter` selects, in log order, at most `limit`, revealed.
pub async fn read_filtered(
    log: &EventLog,
    filter: &LogFilter,
    limit: i64,
) -> Result<Vec<LoggedEvent>, sqlx::Error> {
    let mut events = sqlx::query_as(concat!(
        select_logged_events!(),
        " WHERE global_position > $1 AND global_position <= $2
            AND ($3::text IS NULL OR aggregate_type = $3)
            AND ($4::timestamptz IS NULL OR recorded_at >= $4)
            AND ($5::timestamptz IS NULL OR recorded_at < $5)
          ORDER BY global_position
          LIMIT $6"
    ))
    .bind(filter.after)
    .bind(filter.up_to.unwrap_or(i64::MAX))
    .bind(filter.aggregate_type.as_deref())
    .bind(filter.from)
    .bind(filter.to)
    .bind(limit)
    .fetch_all(log.pool())
    .await?;
    log.keys().reveal(&mut events).await?;
    Ok(events)
}

/// One stream's events, in order, up to those recorded at `until` (all of them if `None`),
/// revealed.
pub async fn read_stream(
    log: &EventLog,
    aggregate_type: &str,
    aggregate_id: &str,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<LoggedEvent>, sqlx::Error> {
    let mut events = sqlx::query_as(concat!(
        select_logged_events!(),
        " WHERE aggregate_type = $1 AND aggregate_id = $2 AND global_position IS NOT NULL
            AND ($3::timestamptz IS NULL OR recorded_at <= $3)
          ORDER BY sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(until)
    .fetch_all(log.pool())
    .await?;
    log.keys().reveal(&mut events).await?;
    Ok(events)
}

/// An aggregate's state after some of its events.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StateAt {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The instant asked about.
    pub at: DateTime<Utc>,
    /// The last event applied: its sequence in the stream, position in the log, and when it
    /// was recorded.
    pub sequence: i64,
    pub global_position: i64,
    pub recorded_at: DateTime<Utc>,
    /// The aggregate as its command handler saw it then, secrets left out.
    #[schema(value_type = Object)]
    pub state: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    UnknownType(#[from] UnknownType),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored event its aggregate cannot read (a defect: upcasters must cover every version).
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// The state of one aggregate at `at`: its events recorded at or before `at`, upcast and
/// applied in order. `None` if none was recorded by then.
pub async fn state_at(
    log: &EventLog,
    aggregate_type: &str,
    aggregate_id: &str,
    at: DateTime<Utc>,
) -> Result<Option<StateAt>, StateError> {
    let aggregate_type = self::aggregate_type(aggregate_type)?;
    let events = read_stream(log, aggregate_type, aggregate_id, Some(at)).await?;
    let Some(last) = events.last() else {
        return Ok(None);
    };
    let mut state = match aggregate_type {
        "lot" => replay::<ParkingLot>(&events)?,
        "slot" => replay::<Slot>(&events)?,
        "booking" => replay::<Booking>(&events)?,
        "payment" => replay::<Payment>(&events)?,
        "review" => replay::<Review>(&events)?,
        "user" => replay::<User>(&events)?,
        "email_claim" => replay::<EmailClaim>(&events)?,
        other => return Err(UnknownType(other.to_owned()).into()),
    };
    leave_out_secrets(aggregate_type, &mut state);
    Ok(Some(StateAt {
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: aggregate_id.to_owned(),
        at,
        sequence: last.sequence,
        global_position: last.global_position,
        recorded_at: last.recorded_at,
        state,
    }))
}

fn replay<A: Aggregate>(events: &[LoggedEvent]) -> Result<Value, DecodeError> {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(event.decode::<A>()?.payload);
    }
    Ok(serde_json::to_value(&aggregate).expect("an aggregate serializes (snapshots need it)"))
}

/// What the audit never shows of a state, as the Kafka contract never publishes it: a user's
/// password hash, a payment's client secret, the credentials in a camera's stream URL.
fn leave_out_secrets(aggregate_type: &str, state: &mut Value) {
    match aggregate_type {
        "user" => {
            if let Some(user) = state.as_object_mut() {
                user.remove("password_hash");
            }
        }
        "payment" => {
            if let Some(payment) = state.pointer_mut("/state").and_then(Value::as_object_mut) {
                payment.remove("client_secret");
            }
        }
        "lot" => {
            let cameras = state.pointer_mut("/registered/cameras");
            for camera in cameras.and_then(Value::as_object_mut).into_iter().flatten() {
                if let Some(url) = camera.1.get_mut("stream_url") {
                    if let Some(text) = url.as_str() {
                        *url = Value::String(parking_domain::lot::redact_credentials(text));
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_leave_secrets_out() {
        let mut user = json!({"registered": {"email": "a@b.c"}, "password_hash": "$2b$"});
        leave_out_secrets("user", &mut user);
        assert_eq!(user, json!({"registered": {"email": "a@b.c"}}));

        let mut payment = json!({"state": {"client_secret": "pi_1_secret_2", "amount": 1}});
        leave_out_secrets("payment", &mut payment);
        assert_eq!(payment, json!({"state": {"amount": 1}}));

        let mut lot = json!({"registered": {"cameras": {
            "c1": {"stream_url": "rtsp://cam:pw@10.0.0.5/s", "slots": []}
        }}});
        leave_out_secrets("lot", &mut lot);
        let url = lot.pointer("/registered/cameras/c1/stream_url").unwrap();
        assert!(!url.as_str().unwrap().contains("pw"), "{url}");
    }
}

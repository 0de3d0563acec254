//! What the hub sends, as JSON text frames. Every message has a `type`; those made of an event
//! carry its `position` in the global log and the `topic` they were sent on. docs/live.md
//! lists them with examples; the OpenAPI description of `GET /ws` has their schemas.

use parking_projections::bookings::BookingView;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::routes::payments::PaymentView;

/// Any message the server sends.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ServerMessage {
    Slot(SlotMessage),
    Lot(LotMessage),
    Booking(BookingMessage),
    Payment(PaymentMessage),
    Connected(Connected),
    Subscribed(Subscribed),
    Unsubscribed(Unsubscribed),
    Resync(Resync),
    Error(ErrorMessage),
}

/// A slot of a followed lot changed (topic `lot:<lot_id>`): its calendar's events, its joining
/// the lot or its label or type changing in the lot's registry, or its booking's check-in. `status` is the slot's live status
/// when the message was made, as `GET /api/v1/lots/{lot_id}/slots` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlotMessage {
    /// The event's type: `SlotReserved`, `SlotReservationConfirmed`, `SlotReleased`,
    /// `SlotOccupancyObserved`, `SlotTakenOutOfService`, `SlotReturnedToService`,
    /// `SlotAdded`, `SlotUpdated` or `BookingCheckedIn`.
    #[serde(rename = "type")]
    pub kind: String,
    pub position: i64,
    pub topic: String,
    pub lot_id: Uuid,
    pub slot_id: Uuid,
    pub label: String,
    pub slot_type: String,
    /// `free`, `reserved`, `occupied` or `out_of_service`.
    pub status: String,
    /// Whether a camera saw a car there at its last observed change.
    pub occupied: bool,
    /// The lot's free slots now, and all of them.
    pub available_slots: i64,
    pub total_slots: i64,
}

/// A followed lot changed (topic `lot:<lot_id>`): `LotUpdated` or `LotDeactivated`. The fields
/// are the lot's when the message was made.
#[derive(Debug, Serialize, ToSchema)]
pub struct LotMessage {
    #[serde(rename = "type")]
    pub kind: String,
    pub position: i64,
    pub topic: String,
    pub lot_id: Uuid,
    pub name: String,
    pub is_active: bool,
    pub hourly_rate_cents: i64,
    pub daily_cap_cents: Option<i64>,
    pub currency: String,
    pub available_slots: i64,
    pub total_slots: i64,
}

/// One of the signed-in user's bookings changed (topic `user:<user_id>`, followed without
/// subscribing): any booking event. `booking` is the booking just after that event, as
/// `GET /api/v1/bookings/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BookingMessage {
    #[serde(rename = "type")]
    pub kind: String,
    pub position: i64,
    pub topic: String,
    pub booking: BookingView,
}

/// One of the signed-in user's payments changed (topic `user:<user_id>`): any payment event.
/// `payment` is the payment just after that event, as `GET /api/v1/payments/{id}` shows it,
/// without `client_secret`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentMessage {
    #[serde(rename = "type")]
    pub kind: String,
    pub position: i64,
    pub topic: String,
    pub payment: PaymentView,
}

/// `type` `connected`: the connection is live. Every message made of an event after
/// `position` follows; with `?after=`, the missed ones came before this.
#[derive(Debug, Serialize, ToSchema)]
pub struct Connected {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub position: i64,
    pub user_id: Uuid,
    /// The topics followed: `user:<user_id>`, and the lots of `?subscribe=`.
    pub topics: Vec<String>,
}

/// `type` `subscribed`: the reply to `{"subscribe": "lot:<id>"}`. The lot's messages after
/// `position` follow.
#[derive(Debug, Serialize, ToSchema)]
pub struct Subscribed {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub topic: String,
    pub position: i64,
}

/// `type` `unsubscribed`: the reply to `{"unsubscribe": "lot:<id>"}` (also when it was not
/// followed).
#[derive(Debug, Serialize, ToSchema)]
pub struct Unsubscribed {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub topic: String,
}

/// `type` `resync`: `?after=` is further back than this process keeps messages
/// (`WS_CATCH_UP_POSITIONS`), or before it started. Reload over HTTP with
/// `X-Min-Position: <position>`, then apply the messages that follow.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resync {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub position: i64,
    pub detail: &'static str,
}

/// `type` `error`: a client message was refused; nothing changed. `code`: `bad_json`,
/// `bad_message` (not a text frame), `bad_topic`, `unknown_lot`, `too_many_subscriptions`,
/// `unavailable` (the database did not answer; try again).
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorMessage {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: &'static str,
    pub detail: String,
    /// The topic the refused request named, if it named one.
    pub topic: Option<String>,
}

impl ErrorMessage {
    pub fn new(code: &'static str, detail: impl Into<String>, topic: Option<String>) -> Self {
        Self {
            kind: "error",
            code,
            detail: detail.into(),
            topic,
        }
    }
}

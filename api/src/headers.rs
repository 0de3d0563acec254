//! The HTTP headers of our own protocol (docs/architecture.md, "The request path").

use actix_web::http::header::HeaderName;

/// The request's id: taken from the client when well formed, made otherwise; echoed.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// A client's key that makes a write safe to retry (ADR 0007).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// `true` on an answer replayed for a retried `Idempotency-Key`.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The log position that covers what a write recorded (ADR 0014).
pub const EVENT_POSITION: HeaderName = HeaderName::from_static("x-event-position");
/// A read's wish to see the log up to a position (an earlier `X-Event-Position`).
pub const MIN_POSITION: HeaderName = HeaderName::from_static("x-min-position");

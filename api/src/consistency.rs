//! Read-your-writes across the asynchronous read models.
//!
//! Commands are recorded in the event store; the read models follow the global log a few
//! milliseconds later. A write answers with `X-Event-Position`, the log position covering
//! what it recorded. Bookings answer as soon as they are recorded, with what was decided; the
//! other writes wait for the read models first (ADR 0014). A read that sends `X-Min-Position` is answered only once every read model has reached that
//! position, waiting at most `READ_WAIT_MS`; after that it gets 503 `read_model_lagging`
//! with `Retry-After`.
//!
//! Every answer that waited says how long in `Server-Timing: read-models;dur=<ms>`: for a
//! write, the time from its events being recorded to every read model showing them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};
use parking_commands::PositionCell;

use crate::error::ApiError;
use crate::headers::{EVENT_POSITION, MIN_POSITION};
use crate::state::{State, WAITED};

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

fn parse_min_position(value: &HeaderValue) -> Result<i64, ApiError> {
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|p| *p >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_min_position",
                "X-Min-Position must be a non-negative integer, as sent in X-Event-Position",
            )
        })
}

/// Middleware: honours `X-Min-Position` on reads and adds `X-Event-Position` to writes.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let waited = Arc::new(AtomicU64::new(0));
    let mut response = WAITED
        .scope(waited.clone(), honour_positions(req, next))
        .await?;
    let micros = waited.load(Ordering::Relaxed);
    if micros > 0 {
        let timing = format!("read-models;dur={:.3}", micros as f64 / 1000.0);
        if let Ok(value) = HeaderValue::from_str(&timing) {
            response.headers_mut().append(SERVER_TIMING, value);
        }
    }
    Ok(response)
}

async fn honour_positions(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if let Some(value) = req.headers().get(&MIN_POSITION).filter(|_| reads) {
        let waited = match parse_min_position(value) {
            Ok(position) => match req.app_data::<State>() {
                Some(state) => state.caught_up_to(position).await,
                None => Ok(()),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = waited {
            let response = e.error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    let written = PositionCell::default();
    req.extensions_mut().insert(written.clone());
    let mut response = next.call(req).await?;
    let position = written.get();
    if position > 0 {
        response
            .headers_mut()
            .insert(EVENT_POSITION, HeaderValue::from(position));
    }
    Ok(response.map_into_left_body())
}

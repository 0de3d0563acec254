//! Routes, one module per resource.

pub mod analytics;
pub mod audit;
pub mod auth;
pub mod bookings;
pub mod cameras;
pub mod feeds;
pub mod health;
pub mod live;
pub mod lots;
pub mod metrics;
pub mod payments;
pub mod reviews;
pub mod slots;
pub mod users;

use actix_web::http::header::{HeaderValue, LOCATION};
use actix_web::HttpResponse;
use parking_domain::lot::SlotType;
use parking_projections::{PageRequest, Sort};

use crate::error::{ApiError, ApiResult};
use serde::Serialize;

/// `201 Created` with the representation, and `Location` where the resource has its own URL.
pub(crate) fn created(location: Option<String>, body: impl Serialize) -> HttpResponse {
    let mut response = HttpResponse::Created();
    if let Some(value) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.insert_header((LOCATION, value));
    }
    response.json(body)
}

pub(crate) fn page_request(
    page: Option<u32>,
    per_page: Option<u32>,
) -> Result<PageRequest, ApiError> {
    PageRequest::new(page, per_page).map_err(|e| ApiError::bad_request("invalid_paging", e))
}

pub(crate) fn sort(
    raw: Option<&str>,
    allowed: &[(&str, &'static str)],
    default: Sort,
) -> Result<Sort, ApiError> {
    Sort::parse(raw, allowed, default).map_err(|e| ApiError::bad_request("invalid_sort", e))
}

pub(crate) fn slot_type(raw: &str) -> Result<SlotType, ApiError> {
    SlotType::parse(raw.trim()).ok_or_else(|| {
        ApiError::invalid(
            "invalid_slot_type",
            format!("unknown slot type {raw:?}; use standard, disabled or ev_charging"),
        )
    })
}

/// A free-text query parameter: blank means absent; control characters or over 200
/// characters are refused.
pub(crate) fn search_text(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if !v.trim().is_empty() => parking_domain::text::single_line(&v, 200)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "malformed_query",
                    format!("{name} must be at most 200 printable characters"),
                )
            }),
        _ => Ok(None),
    }
}

/// The read-model row of what this request just wrote. It is there unless the read model's
/// update failed (logged where it failed), which is our fault, not the client's: 500, and an
/// idempotent retry runs again instead of replaying a wrong answer.
pub(crate) fn written<T>(row: Option<T>, what: &str) -> ApiResult<T> {
    row.ok_or_else(|| {
        ApiError::internal(format!(
            "the {what} read model did not record this request's write"
        ))
    })
}

/// The API's paths, with their OpenAPI descriptions collected from the handlers.
pub fn api_v1() -> utoipa_actix_web::scope::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    utoipa_actix_web::scope("/api/v1")
        .service(auth::register)
        .service(auth::login)
        .service(auth::me)
        .service(lots::create)
        .service(lots::list)
        // Before `/lots/{lot_id}`, which would otherwise take "nearby" for an id.
        .service(lots::nearby)
        .service(lots::get)
        .service(lots::update)
        .service(lots::delete)
        .service(cameras::configure)
        .service(cameras::remove)
        .service(cameras::list)
        .service(cameras::lighting)
        .service(slots::create)
        .service(slots::list)
        .service(slots::availability)
        .service(slots::update)
        .service(slots::observe)
        .service(bookings::create)
        .service(bookings::list)
        .service(bookings::get)
        .service(bookings::cancel)
        .service(bookings::check_in)
        .service(bookings::check_out)
        // Before `/payments/{payment_id}`.
        .service(payments::webhook)
        .service(payments::create_intent)
        .service(payments::get)
        .service(payments::refund)
        .service(reviews::submit)
        .service(reviews::history)
        .service(reviews::safety)
        .service(reviews::remove)
        .service(feeds::datex2_parking)
        .service(analytics::dashboard)
        .service(analytics::lot)
        .service(analytics::lot_forecast)
        .service(audit::events)
        .service(audit::stream)
        .service(audit::state_at)
        .service(audit::verify)
        .service(users::erase)
}

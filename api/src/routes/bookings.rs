//! `/api/v1/bookings`: drivers' bookings of slots.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use parking_commands::BookingRequest;
use parking_domain::booking::{BookingStatus, VehicleNumber};
use parking_domain::time::TimeRange;
use parking_projections::bookings::{self, BookingFilter, BookingView, Visibility};
use parking_projections::Page;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::created;
use super::{page_request, sort};
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::{RequestMeta, State};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateBookingRequest {
    pub slot_id: Uuid,
    /// Inclusive start, RFC 3339.
    pub start_time: DateTime<Utc>,
    /// Exclusive end: a booking ending at 10:00 does not overlap one starting at 10:00.
    pub end_time: DateTime<Utc>,
    pub vehicle_number: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CancelBookingRequest {
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListBookingsQuery {
    /// `pending`, `confirmed`, `active`, `completed`, `cancelled` or `expired`.
    pub status: Option<String>,
    pub lot_id: Option<Uuid>,
    pub page: Option<u32>,
    /// At most 100.
    pub per_page: Option<u32>,
    /// `created_at`, `start_time`, `price_cents` or `status`; prefix `-` for descending.
    pub sort: Option<String>,
}

async fn booking_view(state: &State, booking_id: Uuid) -> ApiResult<BookingView> {
    bookings::get(&state.pool, booking_id)
        .await?
        .ok_or_else(|| ApiError::not_found("booking_not_found", "no such booking"))
}

/// Book a slot. The booking starts `pending` and holds the slot until `hold_until` unless paid.
///
/// Answered as soon as the booking is recorded, with the booking as decided; the read models
/// show it a few milliseconds later. To read it back at once, send this answer's
/// `X-Event-Position` as `X-Min-Position`.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    request_body = CreateBookingRequest,
    responses(
        (status = 201, body = BookingView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, description = "Unknown slot", body = Problem),
        (status = 409, description = "Overlaps another booking of the slot (`slot_already_reserved`); starts now while a car is in the slot (`slot_occupied`); slot out of service (`slot_out_of_service`)", body = Problem),
        (status = 422, description = "Bad range: end ≤ start, in the past, too long, too far ahead", body = Problem),
    )
)]
#[post("/bookings")]
pub async fn create(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    body: web::Json<CreateBookingRequest>,
) -> ApiResult<HttpResponse> {
    let b = body.into_inner();
    let range = TimeRange::new(b.start_time, b.end_time)
        .map_err(|e| ApiError::invalid("invalid_range", e.to_string()))?;
    let vehicle_number = VehicleNumber::parse(&b.vehicle_number)
        .map_err(|e| ApiError::invalid("invalid_vehicle_number", e.to_string()))?;
    let ctx = state.context(Some(caller.0), &meta);
    let request = BookingRequest {
        slot_id: b.slot_id,
        range,
        vehicle_number,
    };
    let booking = state.commands.book(&ctx, request).await?;
    state.recorded(&ctx).await?;
    let view = BookingView::of(
        booking.booking_id,
        &booking.booking,
        booking.booking.created_at,
    );
    Ok(created(
        Some(format!("/api/v1/bookings/{}", booking.booking_id)),
        view,
    ))
}

/// Bookings the caller may see: their own, those of lots they own; admins see all.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(ListBookingsQuery),
    responses((status = 200, body = Page<BookingView>), (status = 400, body = Problem), (status = 401, body = Problem))
)]
#[get("/bookings")]
pub async fn list(
    state: State,
    caller: Authenticated,
    query: web::Query<ListBookingsQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let page = page_request(q.page, q.per_page)?;
    let sort = sort(q.sort.as_deref(), bookings::SORTS, bookings::DEFAULT_SORT)?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            BookingStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("invalid_status", format!("unknown status {s:?}"))
            })
        })
        .transpose()?;
    let visibility = Visibility::of(&caller.0);
    let filter = BookingFilter {
        status,
        lot_id: q.lot_id,
    };
    Ok(
        HttpResponse::Ok()
            .json(bookings::list(&state.pool, visibility, &filter, page, sort).await?),
    )
}

/// One booking: its driver, the lot's owner and admins may read it.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path)),
    responses((status = 200, body = BookingView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem))
)]
#[get("/bookings/{booking_id}")]
pub async fn get(
    state: State,
    caller: Authenticated,
    path: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let booking = booking_view(&state, path.into_inner()).await?;
    if !Visibility::of(&caller.0).allows(&booking) {
        return Err(ApiError::forbidden("this booking is not yours"));
    }
    Ok(HttpResponse::Ok().json(booking))
}

/// Cancel a pending or confirmed booking and free its slot. A paid booking cancelled before
/// its start is refunded in full; after its start nothing is refunded by itself. Answered as soon as the
/// cancellation is recorded (see `POST /bookings` on reading it back).
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path)),
    request_body(content = Option<CancelBookingRequest>, description = "Optional"),
    responses(
        (status = 200, body = BookingView), (status = 401, body = Problem),
        (status = 403, description = "Not the booking's driver or an admin", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Not cancellable in its state (`booking_not_cancellable`)", body = Problem),
    )
)]
#[post("/bookings/{booking_id}/cancel")]
pub async fn cancel(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let booking_id = path.into_inner();
    // The body is optional, but a body that is sent must parse.
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<CancelBookingRequest>(&body)
            .map_err(|e| ApiError::bad_request("malformed_body", e.to_string()))?
            .reason
    };
    let ctx = state.context(Some(caller.0), &meta);
    let cancelled = state
        .commands
        .cancel_booking(&ctx, booking_id, reason)
        .await?;
    state.recorded(&ctx).await?;
    Ok(HttpResponse::Ok().json(BookingView::of(booking_id, &cancelled, ctx.now)))
}

/// Check in: `confirmed` → `active`, by the booking's driver or the lot's owner, from
/// `CHECK_IN_GRACE_SECONDS` (default 900) before its start.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path)),
    responses(
        (status = 200, body = BookingView), (status = 401, body = Problem),
        (status = 403, description = "Neither its driver nor the lot's owner", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Not confirmed (`booking_not_confirmed`) or too early (`check_in_too_early`)", body = Problem),
    )
)]
#[post("/bookings/{booking_id}/check-in")]
pub async fn check_in(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let booking_id = path.into_inner();
    let ctx = state.context(Some(caller.0), &meta);
    let booking = state.commands.check_in(&ctx, booking_id).await?;
    state.recorded(&ctx).await?;
    Ok(HttpResponse::Ok().json(BookingView::of(booking_id, &booking, ctx.now)))
}

/// Check out: `active` → `completed`, by the booking's driver or the lot's owner; the slot is
/// free for others from now on.
#[utoipa::path(
    tag = "bookings",
    security(("bearer" = [])),
    params(("booking_id" = Uuid, Path)),
    responses(
        (status = 200, body = BookingView), (status = 401, body = Problem),
        (status = 403, description = "Neither its driver nor the lot's owner", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Not checked in (`booking_not_active`)", body = Problem),
    )
)]
#[post("/bookings/{booking_id}/check-out")]
pub async fn check_out(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let booking_id = path.into_inner();
    let ctx = state.context(Some(caller.0), &meta);
    let booking = state.commands.check_out(&ctx, booking_id).await?;
    state.recorded(&ctx).await?;
    Ok(HttpResponse::Ok().json(BookingView::of(booking_id, &booking, ctx.now)))
}

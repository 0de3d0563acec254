//! Slots: those of a lot (`/api/v1/lots/{lot_id}/slots`, `/availability`) and one slot on its
//! own (`/api/v1/slots/{slot_id}`).

use actix_web::{get, patch, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use parking_commands::{Observation, SlotChanges};
use parking_domain::time::TimeRange;
use parking_projections::slots::{self, Availability, SlotView};
use parking_projections::Page;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::lots::lot_view;
use super::{created, page_request, slot_type, written};
use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::{RequestMeta, State};

/// Every field optional.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateSlotRequest {
    /// Unique within the lot, case-insensitively.
    pub label: Option<String>,
    /// `standard`, `disabled` or `ev_charging`.
    pub slot_type: Option<String>,
    /// `true` refuses new bookings of the slot (existing ones stand); `false` restores it.
    pub out_of_service: Option<bool>,
}

/// Change a slot.
#[utoipa::path(
    tag = "slots",
    security(("bearer" = [])),
    params(("slot_id" = Uuid, Path)),
    request_body = UpdateSlotRequest,
    responses(
        (status = 200, body = SlotView), (status = 401, body = Problem),
        (status = 403, description = "Not the lot's owner or an admin", body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Duplicate label or lot deactivated", body = Problem),
        (status = 422, description = "Unknown slot type or bad label", body = Problem),
    )
)]
#[patch("/slots/{slot_id}")]
pub async fn update(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
    body: web::Json<UpdateSlotRequest>,
) -> ApiResult<HttpResponse> {
    let slot_id = path.into_inner();
    let b = body.into_inner();
    let changes = SlotChanges {
        label: b.label,
        slot_type: b.slot_type.as_deref().map(slot_type).transpose()?,
        out_of_service: b.out_of_service,
    };
    let ctx = state.context(Some(caller.0), &meta);
    state.commands.update_slot(&ctx, slot_id, changes).await?;
    state.caught_up(&ctx).await?;
    let slot = written(slots::get(&state.pool, slot_id, state.now()).await?, "slot")?;
    Ok(HttpResponse::Ok().json(slot))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateSlotRequest {
    /// Unique within the lot, case-insensitively.
    pub label: String,
    /// `standard`, `disabled` or `ev_charging`.
    pub slot_type: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    pub page: Option<u32>,
    /// At most 100.
    pub per_page: Option<u32>,
}

/// Add a slot to a lot.
#[utoipa::path(
    tag = "slots",
    security(("bearer" = [])),
    params(("lot_id" = Uuid, Path)),
    request_body = CreateSlotRequest,
    responses(
        (status = 201, body = SlotView), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "Duplicate label or lot deactivated", body = Problem),
        (status = 422, description = "Unknown slot type or bad label", body = Problem),
    )
)]
#[post("/lots/{lot_id}/slots")]
pub async fn create(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
    body: web::Json<CreateSlotRequest>,
) -> ApiResult<HttpResponse> {
    let lot_id = path.into_inner();
    let b = body.into_inner();
    let slot_type = slot_type(&b.slot_type)?;
    let ctx = state.context(Some(caller.0), &meta);
    let slot_id = state
        .commands
        .add_slot(&ctx, lot_id, b.label, slot_type)
        .await?;
    state.caught_up(&ctx).await?;
    let slot = slots::get(&state.pool, slot_id, state.now())
        .await?
        .ok_or_else(|| ApiError::internal("slot read model did not record a new slot"))?;
    Ok(created(None, slot))
}

/// A lot's slots with their status now.
#[utoipa::path(
    tag = "slots",
    params(("lot_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = Page<SlotView>), (status = 404, body = Problem))
)]
#[get("/lots/{lot_id}/slots")]
pub async fn list(
    state: State,
    path: web::Path<Uuid>,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let lot_id = path.into_inner();
    let page = page_request(query.page, query.per_page)?;
    lot_view(&state, lot_id).await?;
    Ok(HttpResponse::Ok().json(slots::for_lot(&state.pool, lot_id, page, state.now()).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AvailabilityQuery {
    /// Start of the range (inclusive), RFC 3339.
    pub from: DateTime<Utc>,
    /// End of the range (exclusive), RFC 3339.
    pub to: DateTime<Utc>,
    /// `standard`, `disabled` or `ev_charging`; all types when absent.
    pub slot_type: Option<String>,
}

/// The lot's slots that are free for the whole range.
#[utoipa::path(
    tag = "slots",
    params(("lot_id" = Uuid, Path), AvailabilityQuery),
    responses(
        (status = 200, body = Availability),
        (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 422, description = "`to` not after `from`, or unknown slot type", body = Problem),
    )
)]
#[get("/lots/{lot_id}/availability")]
pub async fn availability(
    state: State,
    path: web::Path<Uuid>,
    query: web::Query<AvailabilityQuery>,
) -> ApiResult<HttpResponse> {
    let lot_id = path.into_inner();
    let q = query.into_inner();
    let range = TimeRange::new(q.from, q.to)
        .map_err(|e| ApiError::invalid("invalid_range", e.to_string()))?;
    let slot_type = q.slot_type.as_deref().map(slot_type).transpose()?;
    lot_view(&state, lot_id).await?;
    let free = slots::availability(&state.pool, lot_id, range, slot_type, state.now()).await?;
    Ok(HttpResponse::Ok().json(free))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ObservationRequest {
    /// Whether a car is in the slot.
    pub occupied: bool,
    /// The detector's confidence, 0 to 1.
    pub confidence: f64,
    /// The camera that saw it, as configured on the lot.
    pub camera_id: Option<Uuid>,
    /// When the frame was taken (RFC 3339); at most a minute ahead of the server's clock.
    pub observed_at: DateTime<Utc>,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ObservationRecorded {
    pub slot_id: Uuid,
    /// `true` when this observation changed the slot's observed state and was recorded;
    /// `false` for the same state again, or a frame older than the last recorded change.
    pub recorded: bool,
}

/// Report what a camera saw in a slot (the vision service, or an admin). Only a change of the
/// slot's observed state is recorded; the same state again, or a frame older than the last
/// recorded change, is accepted and changes nothing. Answered once recorded; the slot's
/// `status` follows in the read models (send `X-Event-Position` as `X-Min-Position`).
#[utoipa::path(
    tag = "slots",
    security(("bearer" = [])),
    params(("slot_id" = Uuid, Path)),
    request_body = ObservationRequest,
    responses(
        (status = 200, body = ObservationRecorded), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "Neither the `service` role nor an admin", body = Problem),
        (status = 404, body = Problem),
        (status = 422, description = "Confidence outside 0..1 (`invalid_confidence`) or a time in the future (`observed_in_future`)", body = Problem),
    )
)]
#[post("/slots/{slot_id}/occupancy")]
pub async fn observe(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
    body: web::Json<ObservationRequest>,
) -> ApiResult<HttpResponse> {
    let slot_id = path.into_inner();
    let b = body.into_inner();
    let ctx = state.context(Some(caller.0), &meta);
    let observation = Observation {
        slot_id,
        occupied: b.occupied,
        confidence: b.confidence,
        camera_id: b.camera_id,
        observed_at: b.observed_at,
    };
    let recorded = state.commands.observe(&ctx, observation).await?;
    state.recorded(&ctx).await?;
    Ok(HttpResponse::Ok().json(ObservationRecorded { slot_id, recorded }))
}

//! `/api/v1/slots/{slot_id}`: one slot, addressed on its own.

use actix_web::{patch, web, HttpResponse};
use parking_commands::SlotChanges;
use parking_projections::slots::{self, SlotView};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{slot_type, written};
use crate::auth::Authenticated;
use crate::error::{ApiResult, Problem};
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
    let slot = written(slots::get(&state.pool, slot_id, state.now()).await?, "slot")?;
    Ok(HttpResponse::Ok().json(slot))
}

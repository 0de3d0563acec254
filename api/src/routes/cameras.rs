//! `/api/v1/lots/{lot_id}/cameras`: which camera sees which slot, for the vision service.
//! Stream URLs may carry credentials: they are answered only to the lot's owner, admins and
//! the `service` role, and never logged.

use actix_web::{delete, get, post, put, web, HttpResponse};
use chrono::{DateTime, Utc};
use parking_commands::CameraSetup;
use parking_domain::lot::CameraConfig;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::{ApiResult, Problem};
use crate::state::{RequestMeta, State};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CameraRequest {
    /// `rtsp://`, `rtsps://`, `http(s)://` (MJPEG or snapshots) or `file://`; may carry
    /// credentials (`rtsp://user:pass@host/...`), which only the owner, admins and the vision
    /// service are shown.
    pub stream_url: String,
    /// Every slot the camera sees (slots of this lot), each at most once.
    pub slots: Vec<CameraSlotBody>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct CameraSlotBody {
    pub slot_id: Uuid,
    /// The slot's outline in the picture: 3 to 64 `[x, y]` points, normalised to 0..1 from the
    /// top left, not crossing itself.
    pub polygon: Vec<[f64; 2]>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CameraView {
    pub camera_id: Uuid,
    pub lot_id: Uuid,
    pub stream_url: String,
    pub slots: Vec<CameraSlotBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CameraList {
    /// All of the lot's cameras, by id.
    pub items: Vec<CameraView>,
    pub total: usize,
}

impl CameraView {
    fn of(lot_id: Uuid, camera_id: Uuid, config: CameraConfig) -> Self {
        Self {
            camera_id,
            lot_id,
            stream_url: config.stream_url.as_str().to_owned(),
            slots: (config.slots.into_iter())
                .map(|s| CameraSlotBody {
                    slot_id: s.slot_id,
                    polygon: s.polygon.into(),
                })
                .collect(),
        }
    }
}

/// Add a camera to the lot, or replace its configuration (its owner, an admin). The same
/// configuration again records nothing.
#[utoipa::path(
    tag = "lots",
    security(("bearer" = [])),
    params(("lot_id" = Uuid, Path), ("camera_id" = Uuid, Path)),
    request_body = CameraRequest,
    responses(
        (status = 200, body = CameraView), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "Not the lot's owner or an admin", body = Problem),
        (status = 404, description = "Unknown lot", body = Problem),
        (status = 409, description = "The lot is deactivated (`lot_inactive`)", body = Problem),
        (status = 422, description = "Bad stream URL (`invalid_stream_url`), polygon (`invalid_polygon`), a slot of another lot (`slot_not_in_lot`), a slot twice (`duplicate_camera_slot`), too many slots (`too_many_camera_slots`)", body = Problem),
    )
)]
#[put("/lots/{lot_id}/cameras/{camera_id}")]
pub async fn configure(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Json<CameraRequest>,
) -> ApiResult<HttpResponse> {
    let (lot_id, camera_id) = path.into_inner();
    let b = body.into_inner();
    let setup = CameraSetup {
        stream_url: b.stream_url,
        slots: b
            .slots
            .into_iter()
            .map(|s| (s.slot_id, s.polygon))
            .collect(),
    };
    let ctx = state.context(Some(caller.0), &meta);
    let config = (state.commands)
        .configure_camera(&ctx, lot_id, camera_id, setup)
        .await?;
    state.recorded(&ctx).await?;
    Ok(HttpResponse::Ok().json(CameraView::of(lot_id, camera_id, config)))
}

/// Remove a camera (its owner, an admin).
#[utoipa::path(
    tag = "lots",
    security(("bearer" = [])),
    params(("lot_id" = Uuid, Path), ("camera_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Removed"), (status = 401, body = Problem),
        (status = 403, description = "Not the lot's owner or an admin", body = Problem),
        (status = 404, description = "Unknown lot or camera", body = Problem),
    )
)]
#[delete("/lots/{lot_id}/cameras/{camera_id}")]
pub async fn remove(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (lot_id, camera_id) = path.into_inner();
    let ctx = state.context(Some(caller.0), &meta);
    state
        .commands
        .remove_camera(&ctx, lot_id, camera_id)
        .await?;
    state.recorded(&ctx).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The lot's cameras with their stream URLs as configured: for its owner, admins and the
/// `service` role (the vision worker).
#[utoipa::path(
    tag = "lots",
    security(("bearer" = [])),
    params(("lot_id" = Uuid, Path)),
    responses(
        (status = 200, body = CameraList), (status = 401, body = Problem),
        (status = 403, description = "Not the lot's owner, an admin or `service`", body = Problem),
        (status = 404, body = Problem),
    )
)]
#[get("/lots/{lot_id}/cameras")]
pub async fn list(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let lot_id = path.into_inner();
    let ctx = state.context(Some(caller.0), &meta);
    let cameras = state.commands.cameras(&ctx, lot_id).await?;
    let items: Vec<CameraView> = (cameras.into_iter())
        .map(|(camera_id, config)| CameraView::of(lot_id, camera_id, config))
        .collect();
    Ok(HttpResponse::Ok().json(CameraList {
        total: items.len(),
        items,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LightingRequest {
    /// How well the camera sees, 0 (dark, or washed out) to 100 (a lit lot by day), as the
    /// vision worker measures it from its frames' luminance and contrast (docs/vision.md).
    pub score: f64,
    /// When it was measured (RFC 3339); at most a minute ahead of the server's clock.
    pub observed_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LightingRecorded {
    pub lot_id: Uuid,
    pub camera_id: Uuid,
    /// `true` when the score moved 5 points or more from the last recorded one and was
    /// recorded; `false` for a smaller move or a report older than the last recorded one.
    pub recorded: bool,
}

/// Report a camera's lighting score (the vision service, or an admin): the lot's
/// `ai_safety_score` is the mean of its cameras' latest scores. A score is recorded when it
/// moves 5 points or more from the camera's last recorded one.
#[utoipa::path(
    tag = "lots",
    security(("bearer" = [])),
    params(("lot_id" = Uuid, Path), ("camera_id" = Uuid, Path)),
    request_body = LightingRequest,
    responses(
        (status = 200, body = LightingRecorded), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "Neither the `service` role nor an admin", body = Problem),
        (status = 404, description = "Unknown lot or camera", body = Problem),
        (status = 422, description = "A score outside 0..100 (`invalid_lighting_score`) or a time in the future (`observed_in_future`)", body = Problem),
    )
)]
#[post("/lots/{lot_id}/cameras/{camera_id}/lighting")]
pub async fn lighting(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Json<LightingRequest>,
) -> ApiResult<HttpResponse> {
    let (lot_id, camera_id) = path.into_inner();
    let b = body.into_inner();
    let ctx = state.context(Some(caller.0), &meta);
    let recorded = (state.commands)
        .report_lighting(&ctx, lot_id, camera_id, b.score, b.observed_at)
        .await?;
    state.recorded(&ctx).await?;
    Ok(HttpResponse::Ok().json(LightingRecorded {
        lot_id,
        camera_id,
        recorded,
    }))
}

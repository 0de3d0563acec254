//! The worker's HTTP port: `GET /metrics`, `GET /health`, `GET /openapi.json` and
//! `POST /v1/detect`, each slot's occupancy in a frame a client brings (docs/vision.md).
//!
//! Errors are `application/problem+json` as the platform's own (`type`, `title`, `status`,
//! `detail`, `code`).

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, RwLock};

use actix_web::http::{header, StatusCode};
use actix_web::{get, post, web, HttpRequest, HttpResponse, ResponseError};
use base64::Engine;
use futures::StreamExt;
use parking_domain::lot::Polygon;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::camera::{classify_frame, CameraSpec, SlotSpec};
use crate::crop::Frame;
use crate::metrics::Metrics;
use crate::model::Classifier;

/// What the handlers share.
pub struct Shared {
    pub classifier: Arc<Classifier>,
    pub metrics: Arc<Metrics>,
    /// The cameras the worker runs, by id, as last configured.
    pub cameras: RwLock<HashMap<Uuid, CameraSpec>>,
}

/// The largest request body `POST /v1/detect` reads.
pub const MAX_BODY: usize = 16 << 20;
/// The largest picture it decodes, either way.
const MAX_SIDE: u32 = 8192;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "parking-vision",
        description = "The vision worker's HTTP port: slot occupancy in a frame, and the worker's metrics."
    ),
    paths(detect, metrics, health),
    components(schemas(DetectRequest, DetectSlot, Detection, SlotOccupancy, Picture, Problem))
)]
pub struct ApiDoc;

/// The document `GET /openapi.json` answers (also `vision-worker/openapi.json`).
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the document serializes")
        + "\n"
}

pub fn routes(config: &mut web::ServiceConfig) {
    config
        .service(detect)
        .service(metrics)
        .service(health)
        .service(openapi_document);
}

/// A problem, as the platform reports one.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:parking:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct DetectError {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

impl DetectError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }
}

impl ResponseError for DetectError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status)
            .content_type("application/problem+json")
            .json(Problem {
                problem_type: format!("urn:parking:problem:{}", self.code),
                title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
                status: self.status.as_u16(),
                detail: self.detail.clone(),
                code: self.code.to_owned(),
            })
    }
}

/// A frame and the slots to judge in it, as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectRequest {
    /// The picture, JPEG or PNG, in base64.
    pub image: String,
    /// A camera the worker runs: its slots are judged. Give this or `slots`.
    #[serde(default)]
    pub camera_id: Option<Uuid>,
    /// The slots to judge, each a polygon in normalised coordinates (0..1 from the top left).
    #[serde(default)]
    pub slots: Option<Vec<DetectSlot>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectSlot {
    pub slot_id: Uuid,
    /// 3 to 64 `[x, y]` points, each 0..1, not crossing itself.
    pub polygon: Vec<[f64; 2]>,
}

/// A JPEG or PNG picture, as its bytes (a schema only: the handler reads the body itself).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Picture(#[allow(dead_code)] Vec<u8>);

#[derive(Debug, Deserialize, IntoParams)]
pub struct DetectQuery {
    /// With an image body: the camera whose slots are judged.
    pub camera_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Detection {
    pub camera_id: Option<Uuid>,
    /// The picture's size in pixels.
    pub width: usize,
    pub height: usize,
    /// In the order the camera or the request lists them.
    pub slots: Vec<SlotOccupancy>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlotOccupancy {
    pub slot_id: Uuid,
    /// The probability of occupied is 0.5 or more.
    pub occupied: bool,
    /// The probability of the answer given, 0.5 to 1.
    pub confidence: f64,
    /// The classifier's probability that the slot is occupied.
    pub p_occupied: f64,
}

/// Each slot's occupancy in one frame. The body is either the picture itself (`image/jpeg` or
/// `image/png`) with `?camera_id=` naming a camera the worker runs, or JSON with the picture
/// in base64 and `camera_id` or `slots`. One frame is judged on its own: the worker's
/// hysteresis over frames does not apply, and nothing is reported to the platform.
#[utoipa::path(
    post,
    path = "/v1/detect",
    params(DetectQuery),
    request_body(content(
        (DetectRequest = "application/json"),
        (Picture = "image/jpeg"),
        (Picture = "image/png"),
    )),
    responses(
        (status = 200, body = Detection),
        (status = 400, description = "`invalid_image` (not a JPEG or PNG that decodes, or larger than 8192 pixels a side), `malformed_body` (JSON that is not a request), `missing_slots` (neither a camera nor slots, or both)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`camera_not_found`: the worker runs no such camera", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`body_too_large`: over 16 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported_media_type`: not JSON, JPEG or PNG", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`invalid_polygon`, `duplicate_slot`, `too_many_slots` (over 500)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/detect")]
pub async fn detect(
    shared: web::Data<Shared>,
    request: HttpRequest,
    query: web::Query<DetectQuery>,
    mut payload: web::Payload,
) -> Result<HttpResponse, DetectError> {
    let content_type = (request.headers().get(header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !["application/json", "image/jpeg", "image/png"].contains(&content_type.as_str()) {
        return Err(DetectError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the picture as image/jpeg or image/png, or JSON as application/json",
        ));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            DetectError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string())
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(DetectError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over {MAX_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let (image, camera_id, slots) = if content_type == "application/json" {
        let request: DetectRequest = serde_json::from_slice(&body).map_err(|e| {
            DetectError::new(StatusCode::BAD_REQUEST, "malformed_body", e.to_string())
        })?;
        let image = base64::engine::general_purpose::STANDARD
            .decode(request.image.trim())
            .map_err(|_| {
                DetectError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_image",
                    "image is not base64",
                )
            })?;
        (image, request.camera_id, request.slots)
    } else {
        (body.to_vec(), query.camera_id, None)
    };
    let slots = match (camera_id, slots) {
        (Some(camera_id), None) => {
            let cameras = shared.cameras.read().expect("cameras lock");
            let camera = cameras.get(&camera_id).ok_or_else(|| {
                DetectError::new(
                    StatusCode::NOT_FOUND,
                    "camera_not_found",
                    format!("this worker runs no camera {camera_id}"),
                )
            })?;
            camera.slots.clone()
        }
        (None, Some(slots)) => given_slots(slots)?,
        _ => {
            return Err(DetectError::new(
                StatusCode::BAD_REQUEST,
                "missing_slots",
                "name a camera (camera_id) or give the slots, not both",
            ))
        }
    };
    let classifier = shared.classifier.clone();
    let judged = web::block(move || judge(&classifier, &image, &slots))
        .await
        .map_err(|e| DetectError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()))??;
    Ok(HttpResponse::Ok().json(Detection {
        camera_id,
        ..judged
    }))
}

fn given_slots(slots: Vec<DetectSlot>) -> Result<Vec<SlotSpec>, DetectError> {
    let unprocessable =
        |code, detail: String| DetectError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail);
    if slots.len() > parking_domain::lot::MAX_SLOTS_PER_CAMERA {
        return Err(unprocessable(
            "too_many_slots",
            format!(
                "at most {} slots",
                parking_domain::lot::MAX_SLOTS_PER_CAMERA
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    slots
        .into_iter()
        .map(|slot| {
            if !seen.insert(slot.slot_id) {
                return Err(unprocessable(
                    "duplicate_slot",
                    format!("slot {} appears twice", slot.slot_id),
                ));
            }
            let polygon = Polygon::new(slot.polygon).map_err(|reason| {
                unprocessable(
                    "invalid_polygon",
                    format!("the polygon of slot {}: {reason}", slot.slot_id),
                )
            })?;
            Ok(SlotSpec {
                slot_id: slot.slot_id,
                polygon,
            })
        })
        .collect()
}

fn judge(
    classifier: &Classifier,
    image: &[u8],
    slots: &[SlotSpec],
) -> Result<Detection, DetectError> {
    let bad = |detail: String| DetectError::new(StatusCode::BAD_REQUEST, "invalid_image", detail);
    let mut reader = image::ImageReader::new(Cursor::new(image))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    if !matches!(
        reader.format(),
        Some(image::ImageFormat::Jpeg | image::ImageFormat::Png)
    ) {
        return Err(bad("the picture is not a JPEG or PNG".into()));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let picture = reader.decode().map_err(|e| bad(e.to_string()))?.into_rgb8();
    let (width, height) = (picture.width() as usize, picture.height() as usize);
    let frame = Frame {
        width,
        height,
        rgb: picture.as_raw(),
    };
    let probabilities = classify_frame(classifier, &frame, slots).map_err(|e| {
        DetectError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    })?;
    Ok(Detection {
        camera_id: None,
        width,
        height,
        slots: slots
            .iter()
            .zip(probabilities)
            .map(|(slot, p)| {
                let p = f64::from(p);
                SlotOccupancy {
                    slot_id: slot.slot_id,
                    occupied: p >= 0.5,
                    confidence: p.max(1.0 - p),
                    p_occupied: p,
                }
            })
            .collect(),
    })
}

/// The worker's metrics, in Prometheus' text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, body = String, content_type = "text/plain")))]
#[get("/metrics")]
pub async fn metrics(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(shared.metrics.render())
}

/// 200 while the worker runs.
#[utoipa::path(get, path = "/health", responses((status = 200, body = String, content_type = "text/plain")))]
#[get("/health")]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

#[get("/openapi.json")]
pub async fn openapi_document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(openapi_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_openapi_document_is_the_served_one() {
        let committed = include_str!("../openapi.json");
        assert_eq!(
            committed,
            openapi_json(),
            "vision-worker/openapi.json is stale: remake it with `cargo run -p parking-vision -- openapi > vision-worker/openapi.json`"
        );
    }
}

//! `/api/v1/lots`: parking lots (their slots are in `slots.rs`).

use actix_web::{delete, get, patch, post, web, HttpResponse};
use parking_domain::geo::GeoPoint;
use parking_domain::lot::{LotChanges, LotDetails};
use parking_domain::money::{Currency, Money};
use parking_domain::time::TimeZone;
use parking_domain::Actor;
use parking_projections::lots::{self, LotFilter, LotView, NearbyLot};
use parking_projections::Page;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{created, page_request, search_text, sort, written};
use crate::auth::{Authenticated, MaybeAuthenticated};
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::{RequestMeta, State};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateLotRequest {
    pub name: String,
    pub address: String,
    pub city: String,
    /// −90..90
    pub latitude: f64,
    /// −180..180
    pub longitude: f64,
    /// Price of one hour in minor units; bookings pay it per started billing increment
    /// (`BILLING_INCREMENT_MINUTES`, 15 by default).
    pub hourly_rate_cents: i64,
    /// The most one day of parking costs (each 24 hours from a booking's start, and the
    /// rest); no cap when absent.
    pub daily_cap_cents: Option<i64>,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    pub description: Option<String>,
    pub camera_url: Option<String>,
    /// The IANA time zone the lot's days are counted in (`Europe/Paris`); `UTC` when absent.
    pub time_zone: Option<String>,
}

/// Every field optional; `latitude` and `longitude` go together. An empty `description` or
/// `camera_url` clears it.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateLotRequest {
    pub name: Option<String>,
    pub address: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub hourly_rate_cents: Option<i64>,
    /// A new daily cap; `0` removes the cap.
    pub daily_cap_cents: Option<i64>,
    pub currency: Option<String>,
    pub description: Option<String>,
    pub camera_url: Option<String>,
    /// An IANA time zone name.
    pub time_zone: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListLotsQuery {
    /// Exact city, case-insensitive.
    pub city: Option<String>,
    pub min_rating: Option<f64>,
    pub is_active: Option<bool>,
    /// Substring of name, address or city.
    pub q: Option<String>,
    pub page: Option<u32>,
    /// At most 100.
    pub per_page: Option<u32>,
    /// `name`, `rating`, `hourly_rate_cents` or `created_at`; prefix `-` for descending.
    pub sort: Option<String>,
}

fn location(latitude: f64, longitude: f64) -> Result<GeoPoint, ApiError> {
    GeoPoint::new(latitude, longitude)
        .map_err(|e| ApiError::invalid("invalid_coordinates", e.to_string()))
}

fn currency(code: &str) -> Result<Currency, ApiError> {
    Currency::parse(code).map_err(|e| ApiError::invalid("invalid_currency", e.to_string()))
}

pub(crate) async fn lot_view(state: &State, lot_id: Uuid) -> ApiResult<LotView> {
    lots::get(&state.pool, lot_id, state.now())
        .await?
        .ok_or_else(|| ApiError::not_found("lot_not_found", "no such lot"))
}

/// The lot as this request just wrote it.
async fn written_lot(state: &State, lot_id: Uuid, viewer: &Actor) -> ApiResult<LotView> {
    let lot = lots::get(&state.pool, lot_id, state.now()).await?;
    Ok(written(lot, "lot")?.for_viewer(Some(viewer)))
}

/// Register a lot.
#[utoipa::path(
    tag = "lots",
    security(("bearer" = [])),
    request_body = CreateLotRequest,
    responses(
        (status = 201, description = "Registered", body = LotView),
        (status = 401, body = Problem), (status = 403, description = "Not a parking owner or admin", body = Problem),
        (status = 422, description = "Invalid coordinates, rate, currency, text or time zone (`invalid_time_zone`)", body = Problem),
    )
)]
#[post("/lots")]
pub async fn create(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    body: web::Json<CreateLotRequest>,
) -> ApiResult<HttpResponse> {
    let b = body.into_inner();
    let rate = Money::new(b.hourly_rate_cents, currency(&b.currency)?)
        .map_err(|e| ApiError::invalid("invalid_rate", e.to_string()))?;
    let details = LotDetails {
        name: b.name,
        address: b.address,
        city: b.city,
        location: location(b.latitude, b.longitude)?,
        hourly_rate: rate,
        daily_cap_minor: b.daily_cap_cents,
        description: b.description,
        camera_url: b.camera_url,
        time_zone: b
            .time_zone
            .as_deref()
            .map(time_zone)
            .transpose()?
            .unwrap_or_default(),
    };
    let ctx = state.context(Some(caller.0), &meta);
    let lot_id = state.commands.register_lot(&ctx, details).await?;
    state.caught_up(&ctx).await?;
    Ok(created(
        Some(format!("/api/v1/lots/{lot_id}")),
        written_lot(&state, lot_id, &caller.0).await?,
    ))
}

/// Search lots.
#[utoipa::path(
    tag = "lots",
    params(ListLotsQuery),
    responses((status = 200, body = Page<LotView>), (status = 400, body = Problem))
)]
#[get("/lots")]
pub async fn list(
    state: State,
    viewer: MaybeAuthenticated,
    query: web::Query<ListLotsQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let page = page_request(q.page, q.per_page)?;
    let sort = sort(q.sort.as_deref(), lots::SORTS, lots::DEFAULT_SORT)?;
    let filter = LotFilter {
        city: search_text("city", q.city)?,
        is_active: q.is_active,
        min_rating: q.min_rating,
        q: search_text("q", q.q)?,
    };
    let found = lots::list(&state.pool, &filter, page, sort, state.now()).await?;
    Ok(HttpResponse::Ok().json(found.map(|lot| lot.for_viewer(viewer.0.as_ref()))))
}

/// One lot, with live slot counts.
#[utoipa::path(
    tag = "lots",
    params(("lot_id" = Uuid, Path)),
    responses((status = 200, body = LotView), (status = 404, body = Problem))
)]
#[get("/lots/{lot_id}")]
pub async fn get(
    state: State,
    viewer: MaybeAuthenticated,
    path: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let lot = lot_view(&state, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(lot.for_viewer(viewer.0.as_ref())))
}

/// Change a lot.
#[utoipa::path(
    tag = "lots",
    security(("bearer" = [])),
    params(("lot_id" = Uuid, Path)),
    request_body = UpdateLotRequest,
    responses(
        (status = 200, body = LotView), (status = 401, body = Problem),
        (status = 403, description = "Not the lot's owner or an admin", body = Problem),
        (status = 404, body = Problem), (status = 409, description = "Lot deactivated", body = Problem),
        (status = 422, body = Problem),
    )
)]
#[patch("/lots/{lot_id}")]
pub async fn update(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
    body: web::Json<UpdateLotRequest>,
) -> ApiResult<HttpResponse> {
    let lot_id = path.into_inner();
    let b = body.into_inner();
    let location = match (b.latitude, b.longitude) {
        (None, None) => None,
        (Some(lat), Some(lng)) => Some(location(lat, lng)?),
        _ => {
            return Err(ApiError::invalid(
                "invalid_coordinates",
                "latitude and longitude change together",
            ))
        }
    };
    let changes = LotChanges {
        name: b.name,
        address: b.address,
        city: b.city,
        location,
        hourly_rate_minor: b.hourly_rate_cents,
        daily_cap_minor: b.daily_cap_cents,
        currency: b.currency.as_deref().map(currency).transpose()?,
        description: b.description,
        camera_url: b.camera_url,
        time_zone: b.time_zone.as_deref().map(time_zone).transpose()?,
    };
    let ctx = state.context(Some(caller.0), &meta);
    state.commands.update_lot(&ctx, lot_id, changes).await?;
    state.caught_up(&ctx).await?;
    Ok(HttpResponse::Ok().json(written_lot(&state, lot_id, &caller.0).await?))
}

/// Deactivate a lot. Its history stays; it takes no new slots or bookings.
#[utoipa::path(
    tag = "lots",
    security(("bearer" = [])),
    params(("lot_id" = Uuid, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem))
)]
#[delete("/lots/{lot_id}")]
pub async fn delete(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let ctx = state.context(Some(caller.0), &meta);
    state
        .commands
        .deactivate_lot(&ctx, path.into_inner())
        .await?;
    state.caught_up(&ctx).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NearbyQuery {
    /// Latitude of the point, −90..90.
    pub lat: f64,
    /// Longitude of the point, −180..180.
    pub lng: f64,
    /// Search radius, 0 < radius_km ≤ 200 (default 5).
    pub radius_km: Option<f64>,
    /// At most this many lots, 1..=100 (default 20).
    pub limit: Option<u32>,
}

/// Active lots near a point, nearest first.
#[utoipa::path(
    tag = "lots",
    params(NearbyQuery),
    responses(
        (status = 200, description = "`items` carry `distance_km`; `total` counts all lots in the radius", body = Page<NearbyLot>),
        (status = 400, description = "Missing or malformed parameters", body = Problem),
        (status = 422, description = "Coordinates, radius or limit out of range", body = Problem),
    )
)]
#[get("/lots/nearby")]
pub async fn nearby(
    state: State,
    viewer: MaybeAuthenticated,
    query: web::Query<NearbyQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let center = location(q.lat, q.lng)?;
    let radius_km = q.radius_km.unwrap_or(5.0);
    if !(radius_km > 0.0 && radius_km <= 200.0) {
        return Err(ApiError::invalid(
            "invalid_radius",
            "radius_km must be more than 0 and at most 200",
        ));
    }
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", "limit must be 1 to 100"));
    }
    let found = lots::nearby(
        &state.pool,
        state.nearby,
        center,
        radius_km,
        limit,
        state.now(),
    )
    .await?;
    Ok(HttpResponse::Ok().json(found.map(|near| NearbyLot {
        lot: near.lot.for_viewer(viewer.0.as_ref()),
        ..near
    })))
}

fn time_zone(raw: &str) -> Result<TimeZone, ApiError> {
    TimeZone::parse(raw).map_err(|e| ApiError::invalid("invalid_time_zone", e.to_string()))
}

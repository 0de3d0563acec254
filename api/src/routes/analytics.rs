//! `/api/v1/analytics`: how an owner's lots earn and fill; `/api/v1/lots/{lot_id}/forecast`:
//! how full a lot will likely be.

use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Duration, DurationRound, Utc};
use parking_domain::actor::Role;
use parking_projections::analytics::forecast::{self, Forecast, HORIZON_DAYS};
use parking_projections::analytics::query::{self, Dashboard, LotSeries, WINDOWS};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::State;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// The window: the last 30, 60 or 90 calendar days up to today, in each lot's time zone.
    /// 30 when absent.
    pub days: Option<u32>,
}

impl WindowQuery {
    fn days(&self) -> Result<u32, ApiError> {
        let days = self.days.unwrap_or(WINDOWS[0]);
        if WINDOWS.contains(&days) {
            Ok(days)
        } else {
            Err(ApiError::invalid(
                "invalid_days",
                format!("days must be one of {WINDOWS:?}, not {days}"),
            ))
        }
    }
}

/// The figures of the caller's lots over the window: revenue per currency, bookings by status,
/// cancellation rate, average booked duration and time-weighted occupancy, in all and per lot.
/// A parking owner sees their own lots, an admin or auditor every lot.
#[utoipa::path(
    tag = "analytics",
    security(("bearer" = [])),
    params(WindowQuery),
    responses(
        (status = 200, body = Dashboard),
        (status = 401, body = Problem),
        (status = 403, description = "Not a parking owner, admin or auditor", body = Problem),
        (status = 422, description = "`days` not 30, 60 or 90 (`invalid_days`)", body = Problem),
    )
)]
#[get("/analytics/dashboard")]
pub async fn dashboard(
    state: State,
    caller: Authenticated,
    params: web::Query<WindowQuery>,
) -> ApiResult<HttpResponse> {
    let days = params.days()?;
    let owner = match caller.0.role {
        Role::Admin | Role::Auditor => None,
        Role::ParkingOwner => Some(caller.0.user_id),
        _ => {
            return Err(ApiError::forbidden(
                "only parking owners, admins and auditors",
            ))
        }
    };
    let figures = query::dashboard(&state.pool, owner, days, state.now()).await?;
    Ok(HttpResponse::Ok().json(figures))
}

/// One lot's figures day by day over the window, with their totals. Its owner, an admin or an
/// auditor.
#[utoipa::path(
    tag = "analytics",
    security(("bearer" = [])),
    params(("lot_id" = Uuid, Path), WindowQuery),
    responses(
        (status = 200, body = LotSeries),
        (status = 401, body = Problem),
        (status = 403, description = "Not the lot's owner, an admin or an auditor", body = Problem),
        (status = 404, description = "No such lot (`lot_not_found`)", body = Problem),
        (status = 422, description = "`days` not 30, 60 or 90 (`invalid_days`)", body = Problem),
    )
)]
#[get("/analytics/lots/{lot_id}")]
pub async fn lot(
    state: State,
    caller: Authenticated,
    path: web::Path<Uuid>,
    params: web::Query<WindowQuery>,
) -> ApiResult<HttpResponse> {
    let lot_id = path.into_inner();
    let days = params.days()?;
    let Some(owner) = query::owner_of(&state.pool, lot_id).await? else {
        return Err(ApiError::not_found("lot_not_found", "no such lot"));
    };
    if !caller.0.reads_everything() && caller.0.user_id != owner {
        return Err(ApiError::forbidden(
            "only the lot's owner, an admin or an auditor",
        ));
    }
    match query::lot_series(&state.pool, lot_id, days, state.now()).await? {
        Some(series) => Ok(HttpResponse::Ok().json(series)),
        None => Err(ApiError::not_found("lot_not_found", "no such lot")),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForecastQuery {
    /// The instant to forecast, RFC 3339: from the current hour to 90 days ahead.
    pub at: DateTime<Utc>,
}

/// How full the lot will likely be at `at`: its occupancy at that hour of the week over the
/// last eight weeks, with the weeks it rests on, and the bookings already paid for that
/// instant. No token needed.
#[utoipa::path(
    tag = "lots",
    params(("lot_id" = Uuid, Path), ForecastQuery),
    responses(
        (status = 200, body = Forecast),
        (status = 400, description = "`at` missing or not an RFC 3339 instant (`malformed_query`)", body = Problem),
        (status = 404, description = "No such lot (`lot_not_found`)", body = Problem),
        (status = 422, description = "`at` before the current hour or more than 90 days ahead (`invalid_at`)", body = Problem),
    )
)]
#[get("/lots/{lot_id}/forecast")]
pub async fn lot_forecast(
    state: State,
    path: web::Path<Uuid>,
    params: web::Query<ForecastQuery>,
) -> ApiResult<HttpResponse> {
    let now = state.now();
    let at = params.at;
    let earliest = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    if at < earliest || at > now + Duration::days(HORIZON_DAYS) {
        return Err(ApiError::invalid(
            "invalid_at",
            format!("at must be from the current hour to {HORIZON_DAYS} days ahead"),
        ));
    }
    match forecast::forecast(&state.pool, path.into_inner(), at, now).await? {
        Some(forecast) => Ok(HttpResponse::Ok().json(forecast)),
        None => Err(ApiError::not_found("lot_not_found", "no such lot")),
    }
}

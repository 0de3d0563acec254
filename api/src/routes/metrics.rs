//! `GET /metrics`: Prometheus metrics (`crate::metrics`).

use actix_web::{get, HttpResponse};

use crate::error::ApiError;
use crate::metrics::Readings;
use crate::state::State;

/// Metrics for Prometheus (OpenMetrics text). Restrict it to the monitoring network at the
/// load balancer: it tells request volumes per route.
#[utoipa::path(tag = "operations", responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
#[get("/metrics")]
pub async fn metrics(state: State) -> Result<HttpResponse, ApiError> {
    let names = state.projections.names();
    // Read at scrape time; a database that does not answer leaves the last values.
    let log = parking_projections::runtime::status(&state.pool, &names)
        .await
        .ok();
    let readings = Readings {
        pool_size: state.pool.size(),
        pool_idle: state.pool.num_idle(),
        log,
        desk: state.commands.booking_desk(),
    };
    let text = (state.metrics.render(readings)).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text))
}

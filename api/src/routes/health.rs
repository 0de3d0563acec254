//! Liveness and readiness.

use actix_web::{get, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::State;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when a dependency is down.
    pub status: &'static str,
    pub database: Option<&'static str>,
}

/// The process is alive.
#[utoipa::path(tag = "operations", responses((status = 200, body = Health)))]
#[get("/health")]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        database: None,
    })
}

/// The process can serve: the database answers.
#[utoipa::path(tag = "operations", responses((status = 200, body = Health), (status = 503, body = Health)))]
#[get("/ready")]
pub async fn ready(state: State) -> HttpResponse {
    let database_up = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
    if database_up {
        HttpResponse::Ok().json(Health {
            status: "ok",
            database: Some("ok"),
        })
    } else {
        HttpResponse::ServiceUnavailable().json(Health {
            status: "unavailable",
            database: Some("unreachable"),
        })
    }
}

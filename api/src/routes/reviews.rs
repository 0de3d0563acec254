//! `/api/v1/lots/{lot_id}/reviews` and `/safety`: how safe drivers find a lot.

use actix_web::{delete, get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use parking_domain::review::{self, Ratings};
use parking_projections::reviews::{ReviewVersion, Safety};
use parking_projections::Page;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{created, page_request};
use crate::auth::{Authenticated, MaybeAuthenticated};
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::{RequestMeta, State};

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReviewRequest {
    /// 1 (feels unsafe) to 5 (feels safe).
    pub safety_rating: i64,
    pub lighting_rating: i64,
    pub security_rating: i64,
    pub cleanliness_rating: i64,
    /// At most 2000 characters, without control characters (line breaks included); kept and
    /// returned as given, surrounding spaces trimmed; blank means none.
    pub comment: Option<String>,
}

/// A driver's review of a lot, as it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewView {
    pub review_id: Uuid,
    pub lot_id: Uuid,
    pub safety_rating: u8,
    pub lighting_rating: u8,
    pub security_rating: u8,
    pub cleanliness_rating: u8,
    pub comment: Option<String>,
    /// Whether this request revised an earlier review (the history keeps both).
    pub revised: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One version in a lot's review history. Reviewers are not named, and a review's id (which
/// is derived from its driver's) is shown only to its driver and to admins.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewHistoryItem {
    pub review_id: Option<Uuid>,
    #[serde(flatten)]
    pub version: ReviewVersion,
    /// Whether it is the caller's own review (`false` without a token).
    pub mine: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Why it is taken down: 1 to 500 characters.
    pub reason: String,
}

/// Review a lot, or revise your review of it. Only a driver with a booking at the lot that was
/// neither cancelled nor expired may. One review per driver and lot: a second request revises
/// it (200), and the history keeps every version.
#[utoipa::path(
    tag = "reviews",
    security(("bearer" = [])),
    params(("lot_id" = Uuid, Path)),
    request_body = ReviewRequest,
    responses(
        (status = 201, description = "The first review", body = ReviewView),
        (status = 200, description = "A revision", body = ReviewView),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, description = "No booking at the lot that was not cancelled or expired (`no_booking_at_lot`)", body = Problem),
        (status = 404, description = "Unknown lot", body = Problem),
        (status = 422, description = "A rating outside 1..5 (`invalid_rating`), a comment too long or with control characters (`invalid_comment`)", body = Problem),
    )
)]
#[post("/lots/{lot_id}/reviews")]
pub async fn submit(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
    body: web::Json<ReviewRequest>,
) -> ApiResult<HttpResponse> {
    let lot_id = path.into_inner();
    let b = body.into_inner();
    let ratings = Ratings::new(
        b.safety_rating,
        b.lighting_rating,
        b.security_rating,
        b.cleanliness_rating,
    )
    .map_err(|e| ApiError::invalid("invalid_rating", e.to_string()))?;
    let comment = review::comment(b.comment.as_deref())
        .map_err(|e| ApiError::invalid("invalid_comment", e.to_string()))?;
    let ctx = state.context(Some(caller.0), &meta);
    let reviewed = state
        .commands
        .review_lot(&ctx, lot_id, ratings, comment)
        .await?;
    state.caught_up(&ctx).await?;
    let r = reviewed.review;
    let view = ReviewView {
        review_id: reviewed.review_id,
        lot_id,
        safety_rating: r.ratings.safety,
        lighting_rating: r.ratings.lighting,
        security_rating: r.ratings.security,
        cleanliness_rating: r.ratings.cleanliness,
        comment: r.comment,
        revised: reviewed.revised,
        created_at: r.submitted_at,
        updated_at: r.updated_at,
    };
    Ok(if reviewed.revised {
        HttpResponse::Ok().json(view)
    } else {
        created(None, view)
    })
}

/// A lot's review history, newest first: every version of the reviews that stand (a removed
/// review leaves the history with all its versions). Reviewers are not named.
#[utoipa::path(
    tag = "reviews",
    params(("lot_id" = Uuid, Path), HistoryQuery),
    responses((status = 200, body = inline(Page<ReviewHistoryItem>)), (status = 400, body = Problem), (status = 404, body = Problem))
)]
#[get("/lots/{lot_id}/reviews")]
pub async fn history(
    state: State,
    viewer: MaybeAuthenticated,
    path: web::Path<Uuid>,
    query: web::Query<HistoryQuery>,
) -> ApiResult<HttpResponse> {
    let page = page_request(query.page, query.per_page)?;
    let lot_id = path.into_inner();
    lot_exists(&state, lot_id).await?;
    let versions = parking_projections::reviews::history(&state.pool, lot_id, page).await?;
    let me = viewer.0.map(|a| a.user_id);
    let admin = viewer.0.is_some_and(|a| a.reads_everything());
    let page = versions.map(|version| {
        let mine = me == Some(version.user_id);
        ReviewHistoryItem {
            review_id: (mine || admin).then_some(version.review_id),
            mine,
            version,
        }
    });
    Ok(HttpResponse::Ok().json(page))
}

/// How safe the lot's drivers find it: the mean of each rating over the reviews that stand,
/// their count, the overall mean, and `ai_safety_score` (the mean of the lot's cameras' latest
/// lighting scores, 0 to 100; `null` until the vision worker reports one).
#[utoipa::path(
    tag = "reviews",
    params(("lot_id" = Uuid, Path)),
    responses((status = 200, body = Safety), (status = 404, body = Problem))
)]
#[get("/lots/{lot_id}/safety")]
pub async fn safety(state: State, path: web::Path<Uuid>) -> ApiResult<HttpResponse> {
    let lot_id = path.into_inner();
    lot_exists(&state, lot_id).await?;
    Ok(HttpResponse::Ok().json(parking_projections::reviews::safety(&state.pool, lot_id).await?))
}

/// 404 `lot_not_found` for a lot the read models do not have.
async fn lot_exists(state: &State, lot_id: Uuid) -> ApiResult<()> {
    let lot = parking_projections::lots::get(&state.pool, lot_id, state.now()).await?;
    match lot {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("lot_not_found", "no such lot")),
    }
}

/// Take a review down (admins), with a reason. It stops counting and leaves the public
/// history; its events stay.
#[utoipa::path(
    tag = "reviews",
    security(("bearer" = [])),
    params(("lot_id" = Uuid, Path), ("review_id" = Uuid, Path), RemoveQuery),
    responses(
        (status = 204), (status = 401, body = Problem),
        (status = 403, description = "Not an admin", body = Problem),
        (status = 404, description = "No such review standing at this lot", body = Problem),
        (status = 422, description = "No reason (`invalid_reason`)", body = Problem),
    )
)]
#[delete("/lots/{lot_id}/reviews/{review_id}")]
pub async fn remove(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<(Uuid, Uuid)>,
    query: web::Query<RemoveQuery>,
) -> ApiResult<HttpResponse> {
    let (lot_id, review_id) = path.into_inner();
    let ctx = state.context(Some(caller.0), &meta);
    state
        .commands
        .remove_review(&ctx, lot_id, review_id, query.into_inner().reason)
        .await?;
    state.caught_up(&ctx).await?;
    Ok(HttpResponse::NoContent().finish())
}

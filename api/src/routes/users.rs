//! `/api/v1/users/{user_id}`: what a person may ask of their account beyond signing in.

use actix_web::{post, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::{ApiResult, Problem};
use crate::state::{RequestMeta, State};

/// The outcome of an erasure.
#[derive(Debug, Serialize, ToSchema)]
pub struct Erased {
    pub user_id: Uuid,
    pub erased: bool,
}

/// Erase a person (their own request, or an admin's): their data key is destroyed, so every
/// personal field of theirs (e-mail, full name, vehicle numbers, review comments) reads
/// `erased` from now on, in history, read models, exports and the messages published after
/// it; their address is free again and they can no longer sign in. History is not rewritten:
/// it still replays and its hash chain still verifies. Erasing twice is erasing once.
#[utoipa::path(
    tag = "auth",
    security(("bearer" = [])),
    params(("user_id" = Uuid, Path)),
    responses(
        (status = 200, body = Erased),
        (status = 401, body = Problem),
        (status = 403, description = "Neither that user nor an admin (`forbidden`)", body = Problem),
        (status = 404, description = "No such user (`user_not_found`)", body = Problem),
    )
)]
#[post("/users/{user_id}/erase")]
pub async fn erase(
    state: State,
    caller: Authenticated,
    meta: RequestMeta,
    path: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let user_id = path.into_inner();
    let ctx = state.context(Some(caller.0), &meta);
    state.commands.erase_user(&ctx, user_id).await?;
    state.caught_up(&ctx).await?;
    Ok(HttpResponse::Ok().json(Erased {
        user_id,
        erased: true,
    }))
}

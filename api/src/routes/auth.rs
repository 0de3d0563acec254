//! `/api/v1/auth`: sign-up, sign-in, the signed-in user.

use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpResponse};
use parking_commands::NewUser;
use parking_domain::user::Email;
use parking_domain::Role;
use parking_projections::users::{self, UserView};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::created;
use crate::auth::{Authenticated, MaybeAuthenticated};
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::{RequestMeta, State};

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    /// At least 8 characters, at most 72 bytes.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    pub full_name: String,
    /// `user` (default) or `parking_owner`. Other roles are granted by admins.
    pub role: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

pub(crate) fn parse_role(raw: Option<&str>) -> Result<Role, ApiError> {
    match raw {
        None => Ok(Role::User),
        Some(raw) => Role::parse(raw.trim())
            .ok_or_else(|| ApiError::invalid("invalid_role", format!("unknown role {raw:?}"))),
    }
}

/// Sign up.
#[utoipa::path(
    tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = UserView),
        (status = 400, description = "Malformed body", body = Problem),
        (status = 403, description = "Role may not be self-assigned", body = Problem),
        (status = 409, description = "E-mail already registered (`email_taken`)", body = Problem),
        (status = 422, description = "Invalid e-mail, password, name or role", body = Problem),
    )
)]
#[post("/auth/register")]
pub async fn register(
    state: State,
    caller: MaybeAuthenticated,
    meta: RequestMeta,
    body: web::Json<RegisterRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let email =
        Email::parse(&body.email).map_err(|e| ApiError::invalid("invalid_email", e.to_string()))?;
    let role = parse_role(body.role.as_deref())?;
    let ctx = state.context(caller.0, &meta);
    let new = NewUser {
        email,
        password: body.password,
        full_name: body.full_name,
        role,
    };
    let user_id = state.commands.register_user(&ctx, new).await?;
    state.caught_up(&ctx).await?;
    let user = users::get(&state.pool, user_id)
        .await?
        .ok_or_else(|| ApiError::internal("user read model did not record a new user"))?;
    Ok(created(None, user))
}

/// Sign in: trade e-mail and password for a bearer token.
#[utoipa::path(
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Wrong e-mail or password (`invalid_credentials`)", body = Problem),
        (status = 429, description = "Too many failed sign-ins for the account (`too_many_attempts`, `Retry-After`)", body = Problem),
    )
)]
#[post("/auth/login")]
pub async fn login(state: State, body: web::Json<LoginRequest>) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let wrong = || ApiError::unauthorized("invalid_credentials", "wrong e-mail or password");
    // A malformed address cannot belong to anyone: it is answered as any unknown one (after the
    // same decoy check), and not tracked by the throttle, which only guards real accounts.
    let email = Email::parse(&body.email).ok();
    if let Some(account) = &email {
        if let Err(wait) = state.login_throttle.attempt(account.as_str()) {
            let seconds = wait.as_secs() + 1;
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many failed sign-ins for this account; retry in {seconds} s"),
            )
            .retry_after(seconds));
        }
    }
    let found = match &email {
        Some(email) => match state.commands.credentials(email).await {
            Ok(found) => found,
            Err(e) => {
                // Not the client's failed attempt: give it back.
                state.login_throttle.refund(email.as_str());
                return Err(e.into());
            }
        },
        None => None,
    };
    let hash = found.as_ref().and_then(|c| c.password_hash.clone());
    if !state.commands.verify_password(body.password, hash).await {
        return Err(wrong());
    }
    if let Some(account) = &email {
        state.login_throttle.succeeded(account.as_str());
    }
    let user = found.ok_or_else(wrong)?;
    let issued = state.tokens.issue(user.user_id, user.role)?;
    Ok(HttpResponse::Ok().json(TokenResponse {
        access_token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
    }))
}

/// The signed-in user.
#[utoipa::path(
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 401, description = "No, invalid or expired token", body = Problem),
    )
)]
#[get("/auth/me")]
pub async fn me(state: State, caller: Authenticated) -> ApiResult<HttpResponse> {
    let user = users::get(&state.pool, caller.0.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown_user", "the token's user does not exist"))?;
    Ok(HttpResponse::Ok().json(user))
}
